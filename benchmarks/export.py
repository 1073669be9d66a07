"""Export speed: conversion rate of a Label Studio JSON export, and a live project exported
both ways Label Studio offers (its synchronous export, and an export snapshot).

    python benchmarks/export.py                 # both parts (starts a local Label Studio)
    python benchmarks/export.py --skip-live     # conversion only
    python benchmarks/export.py --url URL --api-key KEY   # live part against a running server

Live: a project of --live-tasks (10,000) annotated tasks is exported by each path into a
fresh directory; tasks/s is the whole export (reading the tasks, conversion, images) per path.

Conversion: a synthetic export of 10,000 annotated tasks (6 candidates each, 1-3 annotators,
cancelled annotations, written rationales, 50 shared images) streamed through
connector.export.convert. Floor: >= 2,000 tasks/s. Peak Python memory is measured in a
second run under tracemalloc (which slows the run, so it is not timed).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector.export import ExportOptions, convert, iter_tasks  # noqa: E402
from connector.export_images import ImageCollector  # noqa: E402
from illume.images import ImagePolicy  # noqa: E402

FLOOR_TASKS_PER_S = 2000


def synthetic_task(index: int, rng: random.Random, images: list[str]) -> dict:
    candidates = [{"value": f"rationale {index} number {k} because the {rng.choice(['red', 'blue', 'big'])} thing",
                   "alias": f"c{k}"} for k in range(6)]
    annotations = []
    for a in range(rng.choice([1, 1, 2, 3])):
        ticks = [c["alias"] for c in candidates if rng.random() < 0.3]
        result = [{"from_name": "rationales", "to_name": "image", "type": "choices", "value": {"choices": ticks}}]
        if rng.random() < 0.1:
            result.append({"from_name": "written_rationale", "to_name": "image", "type": "textarea",
                           "value": {"text": [f"written rationale {index}-{a}"]}})
        annotations.append({"id": index * 10 + a, "completed_by": a + 1, "result": result,
                            "was_cancelled": rng.random() < 0.05})
    return {"id": index + 1, "annotations": annotations, "predictions": [],
            "data": {"image": images[index % len(images)], "question": f"question {index}?", "answer": "yes",
                     "item_id": f"item-{index}", "references": [f"reference {index}"], "candidates": candidates}}


def write_synthetic_export(path: Path, tasks: int, image_dir: Path, images: int = 50) -> None:
    image_dir.mkdir(parents=True, exist_ok=True)
    sources = []
    for k in range(images):
        target = image_dir / f"img{k}.png"
        Image.new("RGB", (16, 16), (k * 5 % 256, 0, 0)).save(target)
        sources.append(str(target))
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for index in range(tasks):
            handle.write(("," if index else "") + json.dumps(synthetic_task(index, rng, sources)))
        handle.write("]")


def conversion(tasks: int, work: Path) -> dict:
    source = work / "export.json"
    write_synthetic_export(source, tasks, work / "source-images")
    out = work / "out"

    def run() -> dict:
        with open(source, "rb") as stream:
            return convert(iter_tasks(stream), out, ExportOptions(),
                           images=lambda d: ImageCollector(d, ImagePolicy(allowed_roots=[work / "source-images"])))

    start, cpu_start = time.perf_counter(), time.process_time()
    manifest = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"tasks": tasks, "export_mb": round(source.stat().st_size / 2 ** 20, 1), "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3), "tasks_per_cpu_s": round(tasks / cpu),
            "tasks_per_s": round(tasks / seconds), "rows_per_s": round(
                (manifest["counts"]["rationale_rows"] + manifest["counts"]["answer_rows"]) / seconds),
            "peak_python_mb": round(peak / 2 ** 20, 1), "counts": manifest["counts"]}


def fill_project(client, server, tasks: int) -> dict:
    """A new project of `tasks` annotated tasks (images served by Label Studio, or data: URIs)."""
    from connector.project import init_project, read_label_config

    project = init_project(client, f"benchmark-export-{int(time.time())}", read_label_config()).project
    if server is not None:  # 50 images served by Label Studio's local-files storage
        from connector.importing import ImagePlacer

        folder = server.data_dir / "benchmark-images"
        folder.mkdir(exist_ok=True)
        placer = ImagePlacer(client, project["id"], server.data_dir)
        sources = []
        for k in range(50):
            Image.new("RGB", (16, 16), (k * 5, 0, 0)).save(folder / f"img{k}.png")
            sources.append(placer.url(str(folder / f"img{k}.png")))
    else:
        sources = [f"data:image/png;base64,{_tiny_png()}"]
    rng = random.Random(1)
    batch = []
    for index in range(tasks):
        task = synthetic_task(index, rng, sources)
        batch.append({"data": task["data"], "annotations": [
            {"result": a["result"], "was_cancelled": a["was_cancelled"]} for a in task["annotations"]]})
        if len(batch) == 500 or index == tasks - 1:
            client.post(f"/api/projects/{project['id']}/import", batch, timeout=600)
            batch = []
    return project


def live(tasks: int, work: Path, url: str | None, api_key: str | None, project_id: int | None = None) -> dict:
    from illume.labelstudio.client import connect
    from connector.export_project import export_project
    from connector.local_label_studio import LocalLabelStudio

    server = None
    if url is None:
        server = LocalLabelStudio(work / "label-studio").start()
        url, api_key = server.url, server.token
    try:
        client = connect(url, api_key)
        project_id = project_id or fill_project(client, server, tasks)["id"]
        project = client.get(f"/api/projects/{project_id}")
        tasks = int(project.get("task_number") or tasks)
        timings = {}
        for method in ("sync", "snapshot"):
            start = time.perf_counter()
            manifest = export_project(client, project, work / f"live-{method}", method=method)
            seconds = time.perf_counter() - start
            timings[method] = {"tasks": tasks, "seconds": round(seconds, 2), "tasks_per_s": round(tasks / seconds),
                               "completed": manifest["counts"]["completed"], "project": project_id}
            print(f"live export ({method}): {tasks} tasks from Label Studio in {timings[method]['seconds']} s "
                  f"({timings[method]['tasks_per_s']} tasks/s, {manifest['counts']['completed']} completed)",
                  flush=True)
        return timings
    finally:
        if server is not None:
            server.stop()


_PNG: str | None = None


def _tiny_png() -> str:
    global _PNG
    if _PNG is None:
        import base64
        import io

        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), "red").save(buffer, "PNG")
        _PNG = base64.b64encode(buffer.getvalue()).decode()
    return _PNG


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--live-tasks", type=int, default=10_000)
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--api-key")
    parser.add_argument("--project", type=int, help="export this existing project instead of filling a new one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = conversion(args.tasks, work)
        print(f"conversion: {result['tasks']} tasks ({result['export_mb']} MB JSON) in {result['seconds']} s = "
              f"{result['tasks_per_s']} tasks/s ({result['rows_per_s']} rows/s; {result['tasks_per_cpu_s']} tasks per CPU second), peak Python memory "
              f"{result['peak_python_mb']} MB; floor {FLOOR_TASKS_PER_S} tasks/s: "
              f"{'met' if result['tasks_per_s'] >= FLOOR_TASKS_PER_S else 'MISSED'} "
              f"(x{result['tasks_per_s'] / FLOOR_TASKS_PER_S:.2f})")
        print(json.dumps(result), flush=True)
        if not args.skip_live:
            print(json.dumps(live(args.live_tasks, work, args.url, args.api_key, args.project)))
    return 0 if result["tasks_per_s"] >= FLOOR_TASKS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
