"""illume-sync from the outside: --help, exit codes and clear errors against a real Label Studio."""
from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from connector.cli import main

COMMANDS = ["init", "import", "predict", "annotate", "export", "train", "round", "reload", "status", "loop", "report"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.splitlines()) > 5
    assert "--json" in result.output  # every command that prints results can print JSON


def test_group_help_lists_commands_and_exit_codes():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert all(command in result.output for command in COMMANDS) and "Exit codes" in result.output


def test_usage_error_exits_2():
    assert CliRunner().invoke(main, ["export"]).exit_code == 2


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env or {})


def test_wrong_url(tmp_path):
    result = run("status", "--url", f"http://127.0.0.1:{closed_port()}", "--api-key", "abc", "-p", "1")
    assert result.exit_code == 1
    assert "Cannot reach Label Studio" in result.output and "LABEL_STUDIO_URL" in result.output


def test_missing_key_and_bad_scheme():
    result = run("status", "--url", "http://127.0.0.1:1", "-p", "1", env={"LABEL_STUDIO_API_KEY": ""})
    assert result.exit_code == 1 and "No Label Studio API key" in result.output
    result = run("status", "--url", "localhost:8080", "--api-key", "k", "-p", "1")
    assert result.exit_code == 1 and "http://" in result.output


@pytest.mark.label_studio
def test_wrong_token(label_studio):
    result = run("status", "--url", label_studio.url, "--api-key", "0" * 40, "-p", "1")
    assert result.exit_code == 1
    assert "refused the API key" in result.output and "LABEL_STUDIO_API_KEY" in result.output


@pytest.mark.label_studio
def test_wrong_personal_access_token(label_studio):
    fake_jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"
    result = run("status", "--url", label_studio.url, "--api-key", fake_jwt, "-p", "1")
    assert result.exit_code == 1 and "personal access token" in result.output


@pytest.mark.label_studio
def test_unknown_project(label_studio):
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    for ref in ("987654", "no such project title"):
        result = run("export", "-p", ref, "--out", "unused", env=env)
        assert result.exit_code == 1, result.output
        assert "has no project" in result.output and "illume-sync init" in result.output


@pytest.mark.label_studio
def test_config_without_candidates(label_studio, sync_client, tmp_path):
    project = sync_client.post("/api/projects", {"title": "plain classification", "label_config":
                               '<View><Image name="image" value="$image"/><Choices name="c" toName="image">'
                               '<Choice value="cat"/></Choices></View>'})
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    result = run("export", "-p", str(project["id"]), "--out", str(tmp_path / "out"), env=env)
    assert result.exit_code == 1
    assert "lacks a <Choices value=\"$...\">" in result.output and "illume_rationales.xml" in result.output


@pytest.mark.label_studio
def test_export_command_and_nothing_completed(label_studio, illume_project, tmp_path):
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    task = illume_project.add_task("a", ["r0", "r1"])
    result = run("export", "-p", illume_project.project["title"], "--out", str(tmp_path / "out"), env=env)
    assert result.exit_code == 1 and "Nothing to export" in result.output
    illume_project.annotate(task, ["c1"])
    result = run("export", "-p", str(illume_project.id), "--out", str(tmp_path / "out"), env=env)
    assert result.exit_code == 0, result.output
    assert "1 rationale rows" in result.output
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["pairs"] == 1 and manifest["project"]["id"] == illume_project.id


@pytest.mark.label_studio
def test_status_reports_counts(label_studio, illume_project):
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    task = illume_project.add_task("a", ["r0", "r1"])
    illume_project.add_task("b", ["s0"])
    illume_project.annotate(task, ["c1"])
    result = run("status", "-p", str(illume_project.id), "--json", env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["tasks"], report["completed"], report["open"], report["acceptance_rate"]) == (2, 1, 1, 0.5)


@pytest.mark.label_studio
def test_init_and_import_refuse_a_config_lacking_what_the_method_needs(label_studio, sync_client, tmp_path):
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    config = tmp_path / "no-image.xml"
    config.write_text('<View><Text name="q" value="$q"/><Text name="a" value="$a"/>'
                      '<Choices name="picks" toName="q" choice="multiple" value="$opts"/></View>')
    result = run("init", "-p", "no image", "--label-config", str(config), env=env)
    assert result.exit_code == 1 and 'lacks an <Image value="$...">' in result.output
    project = sync_client.post("/api/projects", {"title": "text only", "label_config": config.read_text()})
    items = tmp_path / "items.jsonl"
    items.write_text('{"item_id": "1", "image": "https://example.org/x.png", "question": "q?", "answer": "a"}\n')
    result = run("import", "-p", str(project["id"]), str(items), env=env)
    assert result.exit_code == 1 and "lacks an <Image" in result.output
    assert sync_client.get(f"/api/projects/{project['id']}")["task_number"] == 0
