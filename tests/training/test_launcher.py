"""The job as its users start it: the deepspeed launcher with two CPU ranks, kill and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from connector.training_job import deepspeed_launcher
from illume.ports import free_port
from training.job import FAULT_ENV

REPO = Path(__file__).resolve().parents[2]


def _job_args(export: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--export", str(export), "--base-model", str(model), "--out", str(out), "--batch-size", "2",
            "--lr", "5e-3", "--seed", "3", *extra]


def _ranks(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "ranks").glob("rank_*.json"))]


def test_deepspeed_launcher_runs_two_ranks_that_end_with_identical_weights(tmp_path, export_dir, tiny_model_dir):
    out = tmp_path / "out"
    port = free_port()
    command = [deepspeed_launcher(), "--num_gpus", "2", "--master_port", str(port), "--module", "training",
               *_job_args(export_dir, tiny_model_dir("llava"), out, "--epochs", "1", "--zero", "2")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = _ranks(out)
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3  # 12 rows / (2 ranks x batch 2)
    assert ranks[0]["trainable_sha256"] == ranks[1]["trainable_sha256"]
    assert ranks[0]["losses"] != ranks[1]["losses"]  # each rank saw its own shard
    assert (out / "adapter" / "adapter_config.json").is_file()
    # DeepSpeed's CPU all-reduce buffers (66 MB per rank) are released, not left in /dev/shm
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_*_{port}_*"))


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_end(tmp_path, export_dir, tiny_model_dir):
    model = tiny_model_dir("llava")
    job = [sys.executable, "-m", "training"]
    extra = ("--epochs", "2", "--checkpoint-every", "2")  # 6 micro-batches per epoch -> 12 steps
    env = dict(os.environ, **{FAULT_ENV: "kill-after-checkpoint"})
    killed = subprocess.run(job + _job_args(export_dir, model, tmp_path / "run", *extra), cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_2"
    assert not (tmp_path / "run" / "adapter").exists()

    resumed = subprocess.run(job + _job_args(export_dir, model, tmp_path / "run", *extra, "--resume"), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr
    straight = subprocess.run(job + _job_args(export_dir, model, tmp_path / "straight", *extra), cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    (resumed_rank,), (straight_rank,) = _ranks(tmp_path / "run"), _ranks(tmp_path / "straight")
    assert resumed_rank["steps"] == straight_rank["steps"] == 12
    assert resumed_rank["losses"] == straight_rank["losses"][2:]
    assert resumed_rank["trainable_sha256"] == straight_rank["trainable_sha256"]


def test_the_cli_exits_1_for_a_fixable_problem_and_version_means_the_program(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "training", "--export", str(tmp_path / "nowhere"),
                              "--base-model", "m", "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.startswith("error: ")
    usage = subprocess.run([sys.executable, "-m", "training"], capture_output=True, text=True)
    assert usage.returncode == 2  # argparse's usage error
    shown = subprocess.run([sys.executable, "-m", "training", "--version"], capture_output=True, text=True)
    assert shown.returncode == 0 and "illume-studio" in shown.stdout
