"""--resume continues a checkpointed run only on the export and batches it was checkpointed with:
its (epoch, index) would otherwise point into other data, and run.json would be overwritten."""
from __future__ import annotations

import json
import shutil

import pytest

from illume.errors import IllumeError
from illume.layout import EXPORT_ROWS
from training.config import TrainConfig
from training.data import load_export
from training.job import RUN_META, check_inputs, run_record


def _config(tmp_path, export, **kw) -> TrainConfig:
    return TrainConfig(export=str(export), base_model="m", out=str(tmp_path / "run"), device="cpu", resume=True, **kw)


def _checkpointed(tmp_path, export, **kw) -> TrainConfig:
    """A run directory as a run on `export` leaves it after a checkpoint (run.json, checkpoints/latest)."""
    config = _config(tmp_path, export, **kw)
    config.checkpoint_dir.mkdir(parents=True)
    (config.checkpoint_dir / "latest").write_text("step_3")
    (config.out_dir / RUN_META).write_text(json.dumps(run_record(config, load_export(export))))
    return config


def test_a_resume_on_another_export_is_refused_naming_both(tmp_path, make_export):
    first, second = make_export(tmp_path / "round1"), make_export(tmp_path / "round2", items=5)
    _checkpointed(tmp_path, first)
    with pytest.raises(IllumeError) as refused:
        check_inputs(_config(tmp_path, second))
    assert str(first) in refused.value.what and str(second) in refused.value.what
    assert "same --export" in refused.value.todo and "new --out" in refused.value.todo


def test_a_resume_on_an_export_rewritten_in_place_is_refused(tmp_path, make_export):
    export = make_export(tmp_path / "export")
    _checkpointed(tmp_path, export)
    shutil.rmtree(export)
    make_export(export, items=6)  # exported again into the same directory: other rows
    with pytest.raises(IllumeError, match="manifest sha256"):
        check_inputs(_config(tmp_path, export))


def test_a_resume_with_other_batches_or_epochs_is_refused_naming_each(tmp_path, export_dir):
    _checkpointed(tmp_path, export_dir, epochs=2, batch_size=4, grad_accum=1)
    with pytest.raises(IllumeError) as refused:
        check_inputs(_config(tmp_path, export_dir, epochs=7, batch_size=3, grad_accum=2))
    for change in ("--epochs 2, not 7", "--batch-size 4, not 3", "--grad-accum 1, not 2"):
        assert change in refused.value.what


def test_a_record_without_the_export_hash_is_checked_by_its_path(tmp_path, make_export):
    first, second = make_export(tmp_path / "round1"), make_export(tmp_path / "round2")
    config = _checkpointed(tmp_path, first)
    (config.out_dir / RUN_META).write_text(json.dumps({"base_model": "m", "export": str(first)}))  # older runs
    with pytest.raises(IllumeError, match="round1"):
        check_inputs(_config(tmp_path, second))
    check_inputs(_config(tmp_path, first))


def test_the_same_export_and_options_resume_even_from_another_path(tmp_path, export_dir):
    _checkpointed(tmp_path, export_dir, epochs=2, batch_size=4)
    check_inputs(_config(tmp_path, export_dir, epochs=2, batch_size=4))
    moved = shutil.copytree(export_dir, tmp_path / "moved")
    check_inputs(_config(tmp_path, moved, epochs=2, batch_size=4))


def test_without_a_checkpoint_there_is_nothing_to_resume_and_no_check(tmp_path, make_export):
    config = _checkpointed(tmp_path, make_export(tmp_path / "round1"))
    (config.checkpoint_dir / "latest").unlink()
    (tmp_path / "round1" / EXPORT_ROWS).unlink()
    check_inputs(_config(tmp_path, make_export(tmp_path / "round2"), epochs=3))


def test_the_record_a_real_run_writes_lets_its_own_resume_through_only(tmp_path, tiny_model_dir, make_export):
    from training import run

    first, second = make_export(tmp_path / "round1", items=2), make_export(tmp_path / "round2", items=3)
    config = TrainConfig(export=str(first), base_model=str(tiny_model_dir("llava")), out=str(tmp_path / "run"),
                         device="cpu", batch_size=2, select_epoch=False)
    run(config)  # leaves its final checkpoint
    assert json.loads((config.out_dir / RUN_META).read_text())["export_sha256"] == load_export(first).manifest_sha256
    again = TrainConfig(**{**vars(config), "resume": True})
    check_inputs(again)
    with pytest.raises(IllumeError, match="round1"):
        check_inputs(TrainConfig(**{**vars(again), "export": str(second)}))
