"""`illume-sync init` gives the project the annotators' instructions from an editable file."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from connector.cli import main
from connector.project import read_instructions, read_label_config
from illume.errors import IllumeError


def test_the_shipped_config_has_short_instructions_beside_it():
    text = read_instructions()
    assert text and "Tick every rationale" in text and len(text) < 2000


def test_a_custom_config_without_instructions_leaves_them_alone_and_an_empty_file_is_refused(tmp_path):
    config = tmp_path / "mine.xml"
    config.write_text(read_label_config())
    assert read_instructions(None, config) is None
    (tmp_path / "instructions.html").write_text("<p>ours</p>\n")
    assert read_instructions(None, config) == "<p>ours</p>"
    empty = tmp_path / "empty.html"
    empty.write_text("  \n")
    with pytest.raises(IllumeError, match="is empty"):
        read_instructions(empty, config)


@pytest.mark.label_studio
def test_init_sets_the_instructions_shown_before_labeling_and_follows_edits(label_studio, sync_client, tmp_path):
    env = {"LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token}
    title = f"guided-{tmp_path.name}"
    result = CliRunner().invoke(main, ["init", "-p", title, "--json"], env=env)
    assert result.exit_code == 0, result.output
    project_id = json.loads(result.stdout)["project"]
    project = sync_client.get(f"/api/projects/{project_id}")
    assert project["show_instruction"] is True
    assert "Tick every rationale that is true of the image" in project["expert_instruction"]

    edited = tmp_path / "instructions.html"
    edited.write_text("<p>Team rule: tick only what you can see.</p>")
    result = CliRunner().invoke(main, ["init", "-p", title, "--instructions", str(edited), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"project": project_id, "created": False, "model_version": None}
    project = sync_client.get(f"/api/projects/{project_id}")
    assert project["expert_instruction"] == "<p>Team rule: tick only what you can see.</p>"
    assert project["show_instruction"] is True
