"""Labeling config parsing, stable aliases, prediction results, and the batcher on its own."""
from __future__ import annotations

import pytest

from backend_helpers import LABEL_CONFIG
from illume.errors import IllumeError
from illume.records import Candidate
from ml_backend.batcher import Batcher, QueueFull
from illume.labelstudio.candidates import assign_aliases, display_order, merge_options, order_key
from illume.labelstudio.task import parse_label_config, prediction


def test_the_shipped_config_names_the_fields():
    fields = parse_label_config(LABEL_CONFIG)
    assert (fields.image, fields.question, fields.answer, fields.candidates, fields.rationales, fields.to_name) == (
        "image", "question", "answer", "candidates", "rationales", "image")
    assert (fields.none_control, fields.none_choice, fields.written) == ("none_correct", "none", "written_rationale")
    assert "$candidates" in LABEL_CONFIG and "$explanation" not in LABEL_CONFIG
    assert 'name="none_correct"' in LABEL_CONFIG and "<TextArea" in LABEL_CONFIG


def test_a_broken_config_is_refused():
    with pytest.raises(IllumeError, match="cannot be read"):
        parse_label_config("<View><Image")
    with pytest.raises(IllumeError, match="lacks a <Choices value=.*candidates"):
        parse_label_config('<View><Image name="i" value="$i"/><Text name="q" value="$q"/><Text name="a" value="$a"/></View>')


def test_aliases_are_stable_and_never_reused():
    first = assign_aliases(["the sky is blue.", "it is red."], None)
    assert first == [{"value": "the sky is blue.", "alias": "c0"}, {"value": "it is red.", "alias": "c1"}]
    again = assign_aliases(["It is red", "a new one."], first)
    assert again == [{"value": "It is red", "alias": "c1"}, {"value": "a new one.", "alias": "c2"}]


def test_a_judged_task_keeps_every_option_and_shows_the_current_ones_first():
    first = assign_aliases(["the square is red.", "it is round."], None)
    stored, current = merge_options(["It is round", "a new one."], first, judged=True, order_key="task 1")
    assert current == [{"value": "it is round.", "alias": "c1"}, {"value": "a new one.", "alias": "c2"}]
    # the current version's options first (shuffled, in their stored wording), then what was seen before
    assert stored == display_order(current, "task 1") + [{"value": "the square is red.", "alias": "c0"}]
    again, _ = merge_options(["third.", "fourth.", "fifth."], stored, judged=True, order_key="task 1")
    assert sorted(o["alias"] for o in again[:3]) == ["c3", "c4", "c5"]  # aliases are never reused
    assert again[:3] == display_order(again[:3], "task 1")  # the new ones shuffled among themselves
    assert again[3:] == stored  # every earlier option kept, word for word, in its stored order
    assert merge_options(["third.", "fourth.", "fifth."], again, judged=True, order_key="task 1")[0] == again
    replaced, current = merge_options(["It is round", "a new one."], first, judged=False, order_key="task 1")
    assert sorted(replaced, key=lambda o: o["alias"]) == current == [{"value": "It is round", "alias": "c1"},
                                                                      {"value": "a new one.", "alias": "c2"}]


def test_options_are_shown_in_a_per_task_order_that_never_changes():
    texts = [f"rationale number {n}." for n in range(6)]  # in score order, best first
    orders = {}
    for task in range(1, 21):
        stored, current = merge_options(texts, None, judged=False, order_key=order_key(task))
        assert [o["value"] for o in current] == texts  # the prediction still sees the score order
        assert sorted(o["value"] for o in stored) == sorted(texts)
        again, _ = merge_options(texts, stored, judged=False, order_key=order_key(task))  # a re-predict, a retry
        assert again == stored
        rescored, _ = merge_options(texts[::-1], None, judged=False, order_key=order_key(task))  # other scores
        assert [o["value"] for o in rescored] == [o["value"] for o in stored]
        orders[task] = tuple(o["value"] for o in stored)
    assert sum(order != tuple(texts) for order in orders.values()) >= 18  # rarely the score order
    assert sum(order[0] == texts[0] for order in orders.values()) < 10  # the best is not always on top
    assert len(set(orders.values())) >= 15  # each task its own order


def test_prediction_preticks_the_best_candidates():
    candidates = [Candidate("a b c.", -0.5, 0.3), Candidate("d e f.", -1.0, 0.8), Candidate("g h i.", -2.0, 0.8)]
    options = assign_aliases([c.text for c in candidates], None)
    result = prediction(options, candidates, parse_label_config(None), "v1", preselect=2)
    assert result["result"][0]["value"]["choices"] == ["c0", "c1"]
    assert result["model_version"] == "v1" and result["score"] == pytest.approx(0.606531, abs=1e-5)
    assert prediction([], [], parse_label_config(None), "v1", 2)["result"] == []


def test_batcher_splits_large_requests_and_bounds_the_queue():
    sizes = []

    def run(queries):
        sizes.append(len(queries))
        return [[Candidate(f"answer {q}", 0.0, 1.0)] for q in queries], "v"

    batcher = Batcher(run, batch_size=3, queue_size=7)  # the queue is bounded in tasks
    try:
        with pytest.raises(QueueFull, match="adds 8 .limit 7."):
            batcher.submit(list(range(8)))
        result = batcher.submit(list(range(7))).result(30)
        assert [c[0].text for c in result.candidates] == [f"answer {i}" for i in range(7)]
        assert result.versions == ["v"] * 7 and sizes == [3, 3, 1]
        assert batcher.submit([]).result(1).candidates == []
    finally:
        batcher.stop()

    import threading
    gate = threading.Event()
    blocked = Batcher(lambda q: (gate.wait(30), ([[]] * len(q), "v"))[1], batch_size=1, queue_size=1)
    try:
        future = blocked.submit([1])
        with pytest.raises(QueueFull):
            blocked.submit([2])
        gate.set()
        assert future.result(30).versions == ["v"]
    finally:
        gate.set()
        blocked.stop()


def test_a_failing_batch_is_retried_in_halves_so_only_the_bad_task_fails():
    calls = []

    def run(queries):
        calls.append(list(queries))
        if "bad" in queries:
            raise RuntimeError("model exploded")
        return [[Candidate(q, 0.0, 1.0)] for q in queries], "v"

    batcher = Batcher(run, batch_size=4, queue_size=4)
    try:
        result = batcher.submit(["a", "b", "bad", "c"]).result(30)
        assert result.errors == [None, None, "the model failed on this task: RuntimeError: model exploded", None]
        assert [[c.text for c in cands] for cands in result.candidates] == [["a"], ["b"], [], ["c"]]
        assert calls == [["a", "b", "bad", "c"], ["a", "b"], ["bad", "c"], ["bad"], ["c"]]
        assert batcher.submit(["good"]).result(30).versions == ["v"]
        assert batcher.jobs_in_flight == 0 and batcher.tasks_in_flight == 0
    finally:
        batcher.stop()


@pytest.mark.label_studio
def test_label_studio_repredicting_an_annotated_task_keeps_its_ticked_text(label_studio, ls_client, llava, make_settings,
                                                                          tmp_path):
    """Annotate, reload another model version, let Label Studio retrieve predictions for the
    annotated task (its own action), export: the ticked text is still an accepted row."""
    from backend_helpers import ServerThread, data_uri
    from illume.labelstudio.client import connect
    from connector.export_project import export_project
    from connector.project import get_project
    from illume.labelstudio.client import LabelStudioClient
    from illume.records import Feedback, TrainingRow, iter_jsonl
    from illume.layout import EXPORT_FEEDBACK, EXPORT_ROWS
    from illume.tiny_models import build_tiny_model
    from ml_backend.app import create_app
    from ml_backend.model_holder import Loaded, ModelHolder

    project = ls_client.projects.create(title="illume append-only candidates", label_config=LABEL_CONFIG)
    ls_client.projects.import_tasks(id=project.id, request=[
        {"image": data_uri("red"), "question": "what color is the shape ?", "answer": "red", "candidates": [],
         "item_id": "square-1"}])
    (task_id,) = [t.id for t in ls_client.tasks.list(project=project.id)]
    settings = make_settings(preselect=1, label_studio=LabelStudioClient(label_studio.url, label_studio.token))
    holder = ModelHolder(Loaded(llava, "tiny-llava-v1"), device="cpu")
    other_model = build_tiny_model("llava", tmp_path / "other-llava", seed=1)  # samples other texts
    try:
        with ServerThread(create_app(settings, holder)) as backend:
            ls_client.ml.create(project=project.id, url=backend.url, title="illume", is_interactive=False)
            retrieve = dict(id="retrieve_tasks_predictions", project=project.id,
                            selected_items={"all": False, "included": [task_id]})
            ls_client.actions.create(**retrieve)
            first = ls_client.tasks.get(id=str(task_id)).data["candidates"]
            ticked = first[-1]  # the one not pre-ticked
            ls_client.annotations.create(id=task_id, result=[{"from_name": "rationales", "to_name": "image",
                                                              "type": "choices",
                                                              "value": {"choices": [ticked["alias"]]}}])
            holder.start_reload(str(other_model), None, "tiny-llava-v2")
            assert holder.wait_reload(120).state == "ready"
            ls_client.actions.create(**retrieve)

            predictions = {p.model_version: p for p in ls_client.predictions.list(task=task_id)}
            assert sorted(predictions) == ["tiny-llava-v1", "tiny-llava-v2"]
            after = ls_client.tasks.get(id=str(task_id)).data["candidates"]
            by_alias = {o["alias"]: o for o in after}
            assert all(by_alias.get(o["alias"]) == o for o in first)  # every earlier option, unchanged
            fresh = [o for o in after if o not in first]
            assert fresh, "the second version offered no new text (pick another seed)"
            assert after[:len(fresh)] == fresh  # the served version's new candidates are shown first
            assert len({o["alias"] for o in after}) == len(after)  # no alias means two texts
            (pretick,) = predictions["tiny-llava-v2"].result  # its best candidate, wherever it is shown
            assert pretick["value"]["choices"][0] in {o["alias"] for o in after}

            client = connect(label_studio.url, label_studio.token)
            export_project(client, get_project(client, project.id), tmp_path / "export", method="sync")
        rows = list(iter_jsonl(tmp_path / "export" / EXPORT_ROWS, TrainingRow))
        assert [(r.item_id, r.rationale) for r in rows if r.rationale] == [("square-1", ticked["value"])]
        (feedback,) = iter_jsonl(tmp_path / "export" / EXPORT_FEEDBACK, Feedback)  # judged on what it saw
        assert feedback.candidates == [o["value"] for o in first] and feedback.accepted == [ticked["value"]]
    finally:
        ls_client.projects.delete(id=project.id)
