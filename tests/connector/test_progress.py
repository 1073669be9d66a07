"""Progress of long commands: rate and time left on a terminal, one line off it, never on stdout."""
from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from connector.progress import Progress, announce_total, forward, progress_line

REPO = Path(__file__).resolve().parents[2]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_shows_count_rate_and_time_left():
    stream = Terminal()
    progress = Progress("imported", unit="item", stream=stream)
    announce_total(progress, 40)
    for _ in range(40):
        progress(1)
    progress.end()
    shown = stream.getvalue()
    assert "imported" in shown and "40/40" in shown
    assert "item/s" in shown  # the rate
    assert "<" in shown  # tqdm's "elapsed<left"


def test_off_a_terminal_it_is_quiet_then_says_one_summary_line():
    stream = io.StringIO()
    with Progress("exported", total=3, stream=stream) as progress:
        progress(2)
        assert stream.getvalue() == ""  # no carriage-return noise in logs
        progress(1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("exported: 3 tasks in ") and "task/s" in lines[0]


def test_nothing_done_says_nothing_and_end_is_idempotent():
    stream = io.StringIO()
    progress = Progress("predicted", stream=stream)
    progress.end()
    progress.end()
    assert stream.getvalue() == ""


def test_child_process_lines_feed_the_parent_bar_and_others_are_left_to_echo():
    seen: list[int] = []
    assert forward(progress_line(8) + "\n", seen.append)
    assert forward("worker-3: " + progress_line(2), seen.append)  # a multi-host launcher's prefix
    assert not forward("rank 0: 8/10 tasks\n", seen.append)
    assert not forward(f"{progress_line(1)}x", seen.append)
    assert seen == [8, 2]
    announce_total(seen.append, 5)  # a plain callable is left alone


@pytest.mark.label_studio
def test_import_with_json_keeps_stdout_one_object_and_draws_the_bar_on_the_terminal(label_studio, illume_project,
                                                                                  tmp_path):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"item_id": f"p{i}", "image": f"https://example.org/{i}.png",
                                         "question": "what color?", "answer": "red"}) + "\n" for i in range(5)))
    env = {**os.environ, "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token,
           "COLUMNS": "120"}
    command = [sys.executable, "-c", "from connector.cli import main; main()", "import", "-p", str(illume_project.id),
               str(items), "--json"]
    leader, follower = pty.openpty()  # stderr is a terminal, stdout a pipe (as in `illume-sync ... --json | jq`)
    try:
        result = subprocess.run(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=follower, timeout=600)
        os.close(follower)
        terminal = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO once the writer is gone
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        os.close(leader)
    assert result.returncode == 0, terminal.decode(errors="replace")[-2000:]
    assert json.loads(result.stdout) == {"project": illume_project.id, "imported": 5, "skipped": 0, "gold": 0,
                                         "gold_share": 0.0, "copies_removed": 0}
    shown = terminal.decode(errors="replace")
    assert "imported" in shown and "5/5" in shown and "item/s" in shown

    # Off a terminal (a log file): stdout still one object, stderr one summary line.
    rerun = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(rerun.stdout)["skipped"] == 5
    summaries = [line for line in rerun.stderr.splitlines() if line.startswith("imported:")]
    assert len(summaries) == 1 and summaries[0].startswith("imported: 5 items in "), rerun.stderr
    assert "\r" not in rerun.stderr
