"""Label Studio's lead_time (seconds an annotator spent) survives export and sums to annotator-seconds."""
from __future__ import annotations

import base64
import io

from PIL import Image

from connector.export import convert
from illume.metrics import annotation_effort
from illume.records import Feedback, read_jsonl
from illume.layout import EXPORT_FEEDBACK


def _png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _task(task_id, item, ticks_and_seconds):
    return {"id": task_id, "data": {"item_id": item, "image": _png(), "question": "q?", "answer": "a",
                                    "candidates": [{"value": "it is red .", "alias": "c0"},
                                                   {"value": "a dog .", "alias": "c1"}]},
            "annotations": [{"id": 10 * task_id + k, "completed_by": k, "lead_time": seconds,
                             "result": [{"from_name": "rationales", "type": "choices", "value": {"choices": ticks}}]}
                            for k, (ticks, seconds) in enumerate(ticks_and_seconds, start=1)]}


def test_lead_time_survives_export_and_gives_seconds_per_accepted_rationale(tmp_path):
    convert([_task(1, "x", [(["c0"], 12.5), (["c0"], 7.5)]), _task(2, "y", [([], 30.0)]),
             _task(3, "z", [(["c0"], None)])], tmp_path / "export")
    feedback = {f.item_id: f for f in read_jsonl(tmp_path / "export" / EXPORT_FEEDBACK, Feedback)}
    assert feedback["x"].lead_times == [12.5, 7.5] and feedback["y"].lead_times == [30.0]
    assert feedback["z"].lead_times == [None]  # not reported: not counted as zero seconds
    effort = annotation_effort(list(feedback.values()))
    assert effort == {"annotator_seconds": 50.0, "annotations_timed": 3, "accepted_rationales": 2,
                      "seconds_per_accepted_rationale": 25.0}


def test_status_shows_effort_only_for_rounds_label_studio_timed():
    from connector.status import _round_summary

    timed = Feedback("x", "x.png", "q?", "a", ["it is red .", "a dog ."], ["it is red ."], ["a dog ."],
                     lead_times=[20.0])
    simulated = Feedback("y", "y.png", "q?", "a", ["it is red ."], ["it is red ."], [], lead_times=[None])
    summary = _round_summary([timed, simulated])
    assert summary["completed"] == 2 and summary["diversity"]["candidates_per_item"] == 1.5
    assert summary["effort"]["annotator_seconds"] == 20.0 and summary["effort"]["seconds_per_accepted_rationale"] == 10.0
    assert "effort" not in _round_summary([simulated])
