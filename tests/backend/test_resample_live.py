"""Candidates in a per-task order, and `illume-sync resample` against a real Label Studio and the
backend over the tiny model: an annotated task gets new candidates, its annotation keeps its text."""
from __future__ import annotations

import json

import pytest

from backend_helpers import LABEL_CONFIG, ServerThread, data_uri

pytestmark = pytest.mark.label_studio


def test_candidates_are_shuffled_per_task_and_resampled_without_losing_an_annotation(
        label_studio, ls_client, llava, make_settings, tmp_path):
    from click.testing import CliRunner

    from connector.cli import main
    from connector.export_project import export_project
    from connector.predicting import predict_missing
    from connector.project import get_project
    from illume.labelstudio.candidates import RESAMPLE
    from illume.labelstudio.client import LabelStudioClient, connect
    from illume.layout import EXPORT_FEEDBACK, EXPORT_ROWS
    from illume.records import Feedback, TrainingRow, iter_jsonl
    from illume.text import normalise
    from ml_backend.app import create_app
    from ml_backend.model_holder import Loaded, ModelHolder

    colors = ["red", "blue", "green", "yellow", "white"]
    project = ls_client.projects.create(title="illume resample", label_config=LABEL_CONFIG)
    ls_client.projects.import_tasks(id=project.id, request=[
        {"image": data_uri(c), "question": f"what color is the {c} shape ?", "answer": c, "candidates": [],
         "item_id": f"shape-{c}"} for c in colors])
    ids = sorted(t.id for t in ls_client.tasks.list(project=project.id))
    # preselect every candidate: the prediction's ticks then list the options in score order
    settings = make_settings(preselect=99, label_studio=LabelStudioClient(label_studio.url, label_studio.token))
    holder = ModelHolder(Loaded(llava, "tiny-llava-v1"), device="cpu")
    client = connect(label_studio.url, label_studio.token)

    def options(task: int) -> list[dict]:
        return ls_client.tasks.get(id=str(task)).data["candidates"]

    def score_order(task: int) -> list[str]:
        (found,) = ls_client.predictions.list(task=task)
        return found.result[0]["value"]["choices"]

    try:
        with ServerThread(create_app(settings, holder)) as backend:
            ls_client.ml.create(project=project.id, url=backend.url, title="illume", is_interactive=False)
            assert predict_missing(client, get_project(client, project.id)).predicted == len(ids)
            shown = {task: options(task) for task in ids}
            scored = {task: score_order(task) for task in ids}
            for task in ids:
                assert sorted(o["alias"] for o in shown[task]) == sorted(scored[task])
            assert min(len(s) for s in scored.values()) >= 2, "too few candidates to see an order (sampling)"
            assert [t for t in ids if [o["alias"] for o in shown[t]] != scored[t]], "every task in score order"

            task, untouched = ids[0], ids[2:]
            ticked = shown[task][-1]
            annotation = ls_client.annotations.create(id=task, result=[{
                "from_name": "rationales", "to_name": "image", "type": "choices",
                "value": {"choices": [ticked["alias"]]}}]).id
            retrieve = dict(id="retrieve_tasks_predictions", project=project.id,
                            selected_items={"all": False, "included": ids})
            ls_client.actions.create(**retrieve)  # Label Studio asked again: the same version changes nothing
            assert {t: options(t) for t in ids} == shown

            args = ["resample", "--project", str(project.id), "--url", label_studio.url,
                    "--api-key", label_studio.token, "--task", str(task), "--task", str(ids[1]), "--json"]
            run = CliRunner().invoke(main, args)
            assert run.exit_code == 0, run.output
            summary = json.loads(run.stdout)
            assert summary["version"] == "tiny-llava-v1" and summary["unanswered"] == []
            assert summary["added"] > 0, "the new sample repeated every text (sampling)"
            for asked in (task, ids[1]):
                after = options(asked)
                by_alias = {o["alias"]: o for o in after}
                assert all(by_alias[o["alias"]] == o for o in shown[asked])  # every option kept, word for word
                (entry,) = [e for e in summary["tasks"] if e["task"] == asked]
                assert entry["kept"] == len(shown[asked])
                fresh = [o for o in after if o not in shown[asked]]
                assert entry["added"] == [o["value"] for o in fresh] and after[:len(fresh)] == fresh  # shown first
                assert len({normalise(o["value"]) for o in after}) == len(after)  # no text twice
                assert len({o["alias"] for o in after}) == len(after)  # no alias twice
                assert RESAMPLE not in (ls_client.tasks.get(id=str(asked)).meta or {})  # the request is answered
                assert [p.model_version for p in ls_client.predictions.list(task=asked)] == ["tiny-llava-v1"]
            assert {t: options(t) for t in untouched} == {t: shown[t] for t in untouched}
            stored = ls_client.annotations.get(id=annotation)
            assert stored.result[0]["value"]["choices"] == [ticked["alias"]]
            assert {o["alias"]: o["value"] for o in options(task)}[ticked["alias"]] == ticked["value"]

            export_project(client, get_project(client, project.id), tmp_path / "export", method="sync")
        rows = list(iter_jsonl(tmp_path / "export" / EXPORT_ROWS, TrainingRow))
        assert [(r.item_id, r.rationale) for r in rows if r.rationale] == [("shape-red", ticked["value"])]
        (feedback,) = iter_jsonl(tmp_path / "export" / EXPORT_FEEDBACK, Feedback)  # judged on what it saw
        assert feedback.candidates == [o["value"] for o in shown[task]] and feedback.accepted == [ticked["value"]]
    finally:
        ls_client.projects.delete(id=project.id)
