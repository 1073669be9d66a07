"""GET /training and each press read a bounded part of the shared, ever-growing training log:
the run's last LOG_TAIL_CHARS characters and the first ROUND_LINE_BYTES of its output, whatever
the log holds before it and however long the run has written."""
from __future__ import annotations

from types import SimpleNamespace

from illume.training_runs import LOG_TAIL_CHARS, ROUND_LINE_BYTES, TrainingRun

FILLER = "step 1234: loss 0.4321, lr 2e-05, images/s 12.3\n"


def _run(tmp_path, before: str, after: str, project: str = "5") -> tuple[TrainingRun, str]:
    """A run of `project` whose output (`after`) follows `before` (earlier runs) in the log."""
    log = tmp_path / "illume-train.log"
    log.write_bytes(before.encode())
    offset = log.stat().st_size
    with open(log, "ab") as handle:
        handle.write(after.encode())
    return TrainingRun(project, SimpleNamespace(pid=4321), log, offset, tmp_path), after


def test_a_run_in_a_long_shared_log_shows_its_round_and_the_end_of_the_log(tmp_path):
    earlier = "round 9: exporting completed tasks of project 5 ...\n" + FILLER * 60_000  # ~3 MB
    ours = "round 4: exporting completed tasks of project 5 ...\n" + FILLER * 60_000 + "round 4 done\n"
    run, output = _run(tmp_path, earlier, ours)
    described = run.describe()
    assert described["round"] == 4  # its own round line, not the earlier run's
    assert described["log_tail"] == output[-LOG_TAIL_CHARS:] and described["log_tail"].endswith("round 4 done\n")


def test_a_short_run_shows_only_its_own_output(tmp_path):
    run, output = _run(tmp_path, "round 9: exporting completed tasks of project 5 ...\n" + FILLER * 60_000,
                       "round 2: exporting completed tasks of project 5 ...\nfailed: no tasks\n")
    assert run.describe()["log_tail"] == output and run.round == 2


def test_the_round_line_is_looked_for_only_at_the_start_of_the_run(tmp_path):
    late = FILLER * (ROUND_LINE_BYTES // len(FILLER) + 1) + "round 4: exporting completed tasks of project 5\n"
    run, _ = _run(tmp_path, "", late)
    assert run.find_round() is None
    early = FILLER * (ROUND_LINE_BYTES // len(FILLER) - 2) + "round 4: exporting completed tasks of project 5\n"
    run, _ = _run(tmp_path, "", early + FILLER * 10_000)
    assert run.find_round() == 4


def test_a_character_cut_by_the_bounded_read_does_not_fail_the_tail(tmp_path):
    run, _ = _run(tmp_path, "", "€" * 5001)  # 3 bytes each: the read starts inside one
    assert run.tail() == "€" * LOG_TAIL_CHARS


def test_a_missing_log_has_no_tail_and_no_round(tmp_path):
    run = TrainingRun("5", SimpleNamespace(pid=4321), tmp_path / "gone.log", 0, tmp_path)
    assert run.tail() == "" and run.find_round() is None
