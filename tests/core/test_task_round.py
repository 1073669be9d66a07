"""A task's labeling round, as tasks written by other tools may hold it."""
from __future__ import annotations

from illume.labelstudio.task import task_round


def test_a_round_that_cannot_read_as_a_number_is_round_one():
    """Python's JSON reads 1e999 as inf, which int() refuses with OverflowError."""
    assert [task_round({"round": r}) for r in (float("inf"), float("nan"), "2", 3, None, [1])] == [1, 1, 2, 3, 1, 1]
