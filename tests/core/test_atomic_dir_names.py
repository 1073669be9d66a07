"""remove_stale_temporaries touches only the target's own leftovers, whatever characters its name holds."""
from __future__ import annotations

import pytest

from illume.atomic_dir import remove_stale_temporaries


@pytest.mark.parametrize("name, neighbour", [("run*", "run-2"), ("run?", "run1"), ("run[12]", "run1")])
def test_a_neighbours_temporaries_survive_a_name_with_glob_characters(tmp_path, name, neighbour):
    own_tmp, own_old = tmp_path / f".{name}.tmp-abc", tmp_path / f".{name}.old-123"
    their_tmp, their_old = tmp_path / f".{neighbour}.tmp-abc", tmp_path / f".{neighbour}.old-123"
    for path in (own_tmp, own_old, their_tmp, their_old):
        path.mkdir()
    (their_old / "model.bin").write_text("theirs")

    remove_stale_temporaries(tmp_path / name)

    assert not own_tmp.exists() and not own_old.exists()
    assert (tmp_path / name).is_dir()  # its own .old-* was put back (no target existed)
    assert their_tmp.is_dir() and (their_old / "model.bin").read_text() == "theirs"
