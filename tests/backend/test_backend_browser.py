"""What an annotator gets, in headless Chromium and through the label stream of a real Label Studio.

* At 1366x768 and at 1280x720 the labeling view shows the whole image, all 10 candidates at
  150 characters each (two lines), "None of these is correct" (hotkey n, which hides the
  candidates) and the text box without scrolling; reference explanations appear neither there
  nor in the data manager; a pre-ticked candidate the annotator unticks is not submitted, and
  the annotation records the prediction it started from.
* The label stream, opened as people open it (the data manager's "Label All Tasks" button),
  offers the task whose prediction scored lowest first; /next does the same over the
  backend's real predictions, one model version from init to the predictions. (A bookmarked
  `/data?labeling=1` address is Label Studio's data-manager queue in task-id order instead.)

Screenshots go to a temporary directory; `scripts/screenshots.sh` points ILLUME_SCREENSHOTS at
docs/ to regenerate docs/annotator_view.png on purpose.
"""
from __future__ import annotations

import base64
import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from backend_helpers import LABEL_CONFIG, ServerThread, data_uri

pytestmark = [pytest.mark.label_studio]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LAPTOP = {"width": 1366, "height": 768}
SMALL_LAPTOP = {"width": 1280, "height": 720}
REFERENCE = "REFERENCE-EXPLANATION-SECRET the circle is red"
# Ten candidates of 150 characters each, as a real model writes them: two lines in the view.
ENDINGS = [" and nothing else in the picture changes that answer, whatever the other shapes are.",
           " and nothing else in the picture changes that answer, whatever their size.",
           " and nothing else in the picture changes that answer, whatever its size.",
           " and nothing else in the picture changes that answer in any way at all.",
           " and nothing else in the picture changes that answer in any way."]
CANDIDATES = [next(text + end for end in ENDINGS if len(text + end) <= 150)
              for text in ["the circle is red, the same bright red as the fire truck parked outside,",
                           "the square next to the circle is blue, so the red shape must be the circle,",
                           "the circle has the colour of a fire truck or a ripe tomato on a white plate,",
                           "there are two shapes in the picture and only the round one is coloured red,",
                           "the red shape is round and large, which is what the question calls a circle,",
                           "the circle is in the top left corner and its whole surface is painted red,",
                           "the blue square is small and sits below the circle, away from the red area,",
                           "the picture shows a red circle on a white background with a thin black frame,",
                           "the red triangle is large, though there is no triangle anywhere in the picture,",
                           "the shapes are on a white background, so the red of the circle stands out well,"]]
NONE = "None of these is correct"
assert all(140 <= len(text) <= 150 for text in CANDIDATES)


def scene_uri() -> str:
    """A 64x64 scene whose edges are marked, so a cropped image would show."""
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 6, 34, 34), fill="red")
    draw.rectangle((40, 36, 56, 52), fill="blue")
    draw.rectangle((0, 0, 63, 63), outline="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _stored_annotation(ls_client, task_id: int, deadline_s: float = 30):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        annotations = ls_client.annotations.list(id=task_id)
        if annotations:
            return annotations
        time.sleep(0.2)  # the submit request is asynchronous in the page
    raise AssertionError(f"no annotation stored for task {task_id}")


def _login(page, label_studio) -> None:
    page.goto(f"{label_studio.url}/user/login", wait_until="domcontentloaded")
    page.fill("input[name=email]", label_studio.username)
    page.fill("input[name=password]", label_studio.password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)


@pytest.mark.browser
def test_annotator_view_at_laptop_size(label_studio, ls_client, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import expect, sync_playwright

    from illume.labelstudio.task import task_data
    from illume.labeling_schema import shipped_schema
    from illume.records import Item

    shots = Path(os.environ.get("ILLUME_SCREENSHOTS") or tmp_path)
    project = ls_client.projects.create(title="illume browser test", label_config=LABEL_CONFIG,
                                        sampling="Uncertainty sampling")  # as `illume-sync init` sets it
    try:
        schema = shipped_schema()
        # The model is surer of this task, imported first: the data manager's id order would offer it first.
        sure = task_data(Item("sure-1", "unused", "is there a square?", "yes", [REFERENCE]), scene_uri(), schema)
        item = Item("scene-1", "unused", "what color is the circle?", "red", [REFERENCE])
        task = task_data(item, scene_uri(), schema)
        for data in (sure, task):
            data["data"]["candidates"] = [{"value": text, "alias": f"c{i}"} for i, text in enumerate(CANDIDATES)]
        ls_client.projects.import_tasks(id=project.id, request=[sure, task])
        first, stored = sorted(ls_client.tasks.list(project=project.id), key=lambda t: t.id)
        ls_client.predictions.create(task=first.id, score=0.9, model_version="v1", result=[])
        prediction = ls_client.predictions.create(task=stored.id, score=0.4, model_version="v1", result=[
            {"from_name": "rationales", "to_name": "image", "type": "choices", "value": {"choices": ["c1"]}}])
        ls_client.projects.update(id=project.id, model_version="v1")  # as `illume-sync predict` does

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport=SMALL_LAPTOP)
            _login(page, label_studio)

            page.goto(f"{label_studio.url}/projects/{project.id}/data", wait_until="domcontentloaded")
            expect(page.get_by_text("what color is the circle?").first).to_be_visible(timeout=90_000)
            assert "REFERENCE-EXPLANATION-SECRET" not in page.content()
            assert page.get_by_text("references", exact=True).count() == 0  # no such column

            # The label stream as annotators open it: lowest model score first (the README says so)
            page.get_by_role("button", name="Label All Tasks").click()
            boxes = [page.get_by_role("checkbox", name=text) for text in CANDIDATES]
            none = page.get_by_role("checkbox", name=NONE)
            expect(boxes[0]).to_be_visible(timeout=90_000)
            expect(page.get_by_text("what color is the circle?").first).to_be_visible()
            expect(page.get_by_text("is there a square?")).to_have_count(0)
            for size in (SMALL_LAPTOP, LAPTOP):
                page.set_viewport_size(size)
                for element in boxes + [none, page.locator("textarea")]:
                    expect(element).to_be_in_viewport(ratio=1)  # all of it, without scrolling
                rows = [page.locator(".lsf-choice", has_text=text).first.bounding_box()["height"] for text in CANDIDATES]
                assert all(30 < height <= 48 for height in rows), rows  # each candidate on two lines
                image = page.locator(".illume img").first.bounding_box()
                assert image["width"] == 256 and image["x"] >= 0 and image["y"] + image["height"] <= size["height"]
            assert page.locator(".lsf-toolbar:visible").count() == 0  # no zoom toolbar eating the frame
            expect(page.locator(".lsf-choice", has_text=NONE)).to_contain_text("[n]")
            assert page.get_by_text("Shift+Enter").count() == 0  # Submit saves the text: no separate "Add"
            assert "REFERENCE-EXPLANATION-SECRET" not in page.content()
            expect(boxes[1]).to_be_checked()  # the pre-tick of the prediction

            page.keyboard.press("n")  # "None": the candidates go away
            expect(none).to_be_checked()
            expect(boxes[1]).to_be_hidden()
            page.keyboard.press("n")
            expect(boxes[1]).to_be_visible()

            boxes[1].click()  # untick the pre-tick
            boxes[0].click()
            boxes[2].click()
            page.locator("textarea").fill("the circle is painted red all over")
            page.mouse.click(LAPTOP["width"] // 2, 10)  # leave the text box, as a person reaching for Submit does
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "annotator_view.png"))
            page.get_by_role("button", name="Submit current annotation").click()
            annotations = _stored_annotation(ls_client, stored.id)
            browser.close()
        assert (shots / "annotator_view.png").stat().st_size > 10_000

        (annotation,) = annotations
        by_control = {r["from_name"]: r["value"] for r in annotation.result}
        assert sorted(by_control["rationales"]["choices"]) == ["c0", "c2"]
        assert by_control["written_rationale"]["text"] == ["the circle is painted red all over"]
        assert "none_correct" not in by_control
        assert annotation.parent_prediction == prediction.id  # what export compares the ticks with
    finally:
        ls_client.projects.delete(id=project.id)


def test_label_stream_offers_lowest_score_first(label_studio, ls_client, llava, make_settings):
    """init -> backend -> predictions share one model version, so Label Studio's uncertainty
    sampling is in force: /next walks the tasks from the lowest prediction score up."""
    from illume.labelstudio.client import connect
    from connector.predicting import predict_missing
    from connector.project import init_project
    from illume.labelstudio.client import LabelStudioClient
    from ml_backend.app import create_app
    from ml_backend.model_holder import Loaded, ModelHolder

    from ml_backend.settings import Settings

    settings = make_settings(preselect=Settings(model="default").preselect,  # the default pre-annotation policy
                             label_studio=LabelStudioClient(label_studio.url, label_studio.token))
    app = create_app(settings, ModelHolder(Loaded(llava, "tiny-llava-stream"), device="cpu"))
    client = connect(label_studio.url, label_studio.token)
    with ServerThread(app) as backend:
        project = init_project(client, f"label stream {time.time_ns()}", LABEL_CONFIG, backend_url=backend.url).project
        try:
            colors = ["red", "blue", "green", "yellow", "purple"]
            client.post(f"/api/projects/{project['id']}/import", [
                {"image": data_uri(color), "question": f"what color is shape {k} ?", "answer": color, "candidates": []}
                for k, color in enumerate(colors)])
            assert predict_missing(client, project, batch_size=8).predicted == len(colors)

            assert client.get(f"/api/projects/{project['id']}")["model_version"] == "tiny-llava-stream"
            predictions = client.get("/api/predictions", params={"project": project["id"]})
            assert {p["model_version"] for p in predictions} == {"tiny-llava-stream"}
            assert all(p["result"] == [] for p in predictions)  # no pre-ticks by default
            assert len({p["score"] for p in predictions}) == len(colors), "tied scores cannot show an order"
            by_score = [p["task"] for p in sorted(predictions, key=lambda p: p["score"])]
            offered = []
            for _ in by_score:
                task = client.get(f"/api/projects/{project['id']}/next")
                offered.append(task["id"])
                client.post(f"/api/tasks/{task['id']}/annotations", {"result": []})
            assert offered == by_score
        finally:
            client.delete(f"/api/projects/{project['id']}")
