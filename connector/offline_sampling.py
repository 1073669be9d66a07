"""Offline candidate sampling for large item sets: N processes under the deepspeed launcher.

`illume-sync predict --offline` starts `deepspeed --module connector.offline_sampling ...`
(same launcher and hostfile as training, so several machines can work). Each process loads the
model + adapter the backend serves, takes its shard of the project's open tasks that lack a
prediction of that version (task id modulo the number of processes, so shards never overlap
even when processes list the tasks at different moments), samples candidates and writes them
through the task contract the backend uses (illume.labelstudio.candidates: stored_tasks ->
write_candidates, append-only once a task is judged; then illume.labelstudio.task.prediction with the
same model version and pre-tick policy), then stores the prediction.

Resumable: a task is done once its prediction exists, and a restarted run only lists tasks
without one. Candidates are written before the prediction, so a process killed in between
leaves the task open, and the next run samples it again (aliases stay stable).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from connector.progress import announce_total, forward, progress_line
from connector.training_job import deepspeed_launcher
from illume.errors import IllumeError
from illume.options import add_arguments, as_arguments, option, take
from illume.sampling import PRODUCT_SAMPLING, SamplingConfig, preselect_option

log = logging.getLogger("offline_sampling")
FAULT_ENV = "ILLUME_OFFLINE_FAULT"  # "kill-after-first-write": rank 0 SIGKILLs itself (resume tests)
KEY_ENV = "LABEL_STUDIO_API_KEY"  # the key travels in the environment, never on a command line


@dataclass
class OfflineJob:
    """One run's settings; each is an option of the sampling processes (illume.options)."""

    url: str = option(help="Label Studio's address.")
    project: int = option(help="The project id.")
    model: str = option(help="The base model the backend serves.")
    adapter: str | None = option(None, "The adapter the backend serves (none: the base model alone).")
    version: str | None = option(None, "The served version name (default: the one the model + adapter report, as "
                                       "the backend's).", flag="model-version")
    preselect: int = preselect_option()  # the backend's pre-tick policy, same variable
    batch_size: int = option(8, "Tasks per model batch.", min=1)
    # The backend's sampling (same defaults and variables), so offline candidates are sampled like
    # the served ones.
    sampling: SamplingConfig = PRODUCT_SAMPLING


def shard(task_ids: Sequence[int], rank: int, world: int) -> list[int]:
    """This process's tasks: by id, so that every process picks the same split of any listing."""
    return sorted(t for t in task_ids if t % world == rank)


def launcher_command(job: OfflineJob, processes: int, hostfile: Path | None = None,
                     master_port: int | None = None) -> list[str]:
    """The deepspeed launcher running one sampling process per GPU (or CPU process)."""
    command = [deepspeed_launcher()]
    if hostfile:
        command += ["--hostfile", str(hostfile)]
    else:
        command += ["--num_gpus", str(processes)]
    if master_port:
        command += ["--master_port", str(master_port)]
    return command + ["--module", "connector.offline_sampling"] + as_arguments(job) + as_arguments(job.sampling)


def served_version_check(served: str, offline: str) -> None:
    if served and served != offline:
        raise IllumeError(f"the backend serves model version {served!r}, but this model/adapter is {offline!r}",
                          "Pass the --model and --adapter the backend serves (or its --model-version), so that offline "
                          "predictions count as the served version's.")


def run_shard(job: OfflineJob, rank: int, world: int, local_rank: int = 0) -> dict:
    """Sample and write this process's shard; returns counts and seconds."""
    import torch

    from illume.labelstudio.client import connect
    from connector.predicting import store_prediction, tasks_without_prediction
    from connector.project import find_project, served_model_version
    from illume.images import ImagePolicy
    from illume.labelstudio.candidates import stored_tasks, write_candidates
    from illume.vlm import VLM
    from illume.labelstudio import task as task_io

    sampling = job.sampling
    started = time.perf_counter()
    client = connect(job.url, os.environ.get(KEY_ENV, ""))
    project = find_project(client, job.project)
    fields = task_io.parse_label_config(project.get("label_config"))
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # the processes of one machine share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_SIZE", "1"))))
    vlm = VLM.load(job.model, job.adapter, device=device, keep_base=sampling.base_share > 0)
    version = job.version or vlm.version
    served_version_check(served_model_version(client, project), version)
    mine = shard(tasks_without_prediction(client, project["id"], version), rank, world)
    log.info("rank %d/%d: %d tasks lack a prediction of %r", rank, world, len(mine), version)
    policy = ImagePolicy.from_env(label_studio=client)
    done = failed = 0
    sampling_started = time.perf_counter()
    for start in range(0, len(mine), job.batch_size):
        ids = mine[start:start + job.batch_size]
        stored = stored_tasks(client, project["id"], ids)
        queries, ready = [], []
        for task_id in ids:
            if task_id not in stored:
                continue  # deleted since the listing
            try:
                pending = task_io.task_query({"id": task_id, "data": stored[task_id].data}, fields, policy)
                queries.append(pending.build(pending.fetch()))
                ready.append(task_id)
            except IllumeError as exc:
                log.warning("task %d skipped: %s", task_id, exc.what)
                failed += 1
        # Each task's draws follow its sampling key (task id, options held), as in the backend: a restarted
        # run, another shard count or the backend itself samples a task as before.
        candidates = vlm.sample(queries, sampling) if queries else []
        # the tasks as they are now, not before sampling: an annotation or another writer's options
        # stored meanwhile are what the write must keep (the narrower the window, the safer)
        now = stored_tasks(client, project["id"], ready) if ready else {}
        for task_id, found in zip(ready, candidates):
            if task_id not in now:
                continue  # deleted while sampling
            options = write_candidates(client, task_id, now[task_id], fields, found)
            result = task_io.prediction(options, found, fields, version, job.preselect)
            store_prediction(client, task_id, result)  # never twice, even after a lost answer
            done += 1
            if rank == 0 and done == 1 and os.environ.get(FAULT_ENV) == "kill-after-first-write":
                os.kill(os.getpid(), signal.SIGKILL)
        log.info("rank %d: %d/%d tasks", rank, done + failed, len(mine))
        print(progress_line(len(ids)), flush=True)  # the parent's bar (connector.progress.forward)
    return {"rank": rank, "tasks": len(mine), "predicted": done, "skipped": failed, "version": version,
            "seconds": time.perf_counter() - started, "sampling_seconds": time.perf_counter() - sampling_started}


@dataclass
class OfflineResult:
    requested: int  # tasks lacking a prediction of the version before the run
    predicted: int  # of those, tasks that have one now
    version: str
    seconds: float  # wall time of the launcher run (model loading included)


def run_offline(client, project: dict, job: OfflineJob, processes: int = 1, hostfile: Path | None = None,
                echo=None, master_port: int | None = None, progress=None) -> OfflineResult:
    """Run the sampling processes under the deepspeed launcher to the end (the parent side)."""
    import subprocess

    from connector.predicting import tasks_without_prediction
    from connector.project import follow_backend_version

    if processes < 1:
        raise IllumeError(f"--processes must be at least 1, got {processes}", "Pass e.g. --processes 8.")
    if hostfile is not None and not Path(hostfile).is_file():
        raise IllumeError(f"hostfile {hostfile} does not exist", "Pass the hostfile the training job uses.")
    version = follow_backend_version(client, project)
    missing = tasks_without_prediction(client, project["id"], job.version or version)
    announce_total(progress, len(missing))
    command = launcher_command(job, processes, hostfile, master_port)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, KEY_ENV: client.api_key}, cwd=Path(__file__).resolve().parents[1])
    assert process.stdout is not None
    tail: list[str] = []
    for line in process.stdout:
        if forward(line, progress):
            continue
        tail = (tail + [line.rstrip("\n")])[-40:]
        if echo:
            echo(line.rstrip("\n"))
    code = process.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        raise IllumeError(f"offline sampling failed (exit code {code}): " + " | ".join(tail[-5:]),
                          "Fix the cause and run the same command again: tasks already predicted are skipped.")
    still = set(tasks_without_prediction(client, project["id"], job.version or version))
    follow_backend_version(client, project)  # now that predictions of this version exist
    return OfflineResult(len(missing), len([t for t in missing if t not in still]), job.version or version, seconds)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m connector.offline_sampling",
                                description="One process of `illume-sync predict --offline` (started by the "
                                            f"deepspeed launcher; the API key comes from {KEY_ENV}).")
    add_arguments(p, OfflineJob)
    add_arguments(p, SamplingConfig, defaults=PRODUCT_SAMPLING)
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> None:
    import json

    args = vars(parser().parse_args(argv))
    local_rank = args.pop("local_rank")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        job = take(OfflineJob, args, sampling=take(SamplingConfig, args))
        summary = run_shard(job, rank, world, int(os.environ.get("LOCAL_RANK", str(local_rank or 0))))
    except IllumeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
