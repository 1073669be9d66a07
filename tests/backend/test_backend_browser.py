"""What an annotator gets, in headless Chromium and through the label stream of a real Label Studio.

* At a 1366x768 laptop size the labeling view shows the whole image, all 10 candidates,
  "None of these is correct" (hotkey n, which hides the candidates) and the text box without
  scrolling; reference explanations appear neither there nor in the data manager; a
  pre-ticked candidate the annotator unticks is not submitted, and the annotation records
  the prediction it started from.
* The label stream offers the task whose prediction scored lowest first (uncertainty sampling
  over the backend's real predictions, one model version from init to the predictions).

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
REFERENCE = "REFERENCE-EXPLANATION-SECRET the circle is red"
CANDIDATES = ["the circle is red.", "the square next to it is blue.", "the circle has the color of a fire truck.",
              "there are two shapes in the picture.", "the red shape is round and large.",
              "the circle is in the top left corner.", "the blue square is small.", "the picture shows a red circle.",
              "the red triangle is large.", "the shapes are on a white background."]
NONE = "None of these is correct"


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

    from connector.importing import task_data
    from illume.labeling_schema import shipped_schema
    from illume.records import Item

    shots = Path(os.environ.get("ILLUME_SCREENSHOTS") or tmp_path)
    project = ls_client.projects.create(title="illume browser test", label_config=LABEL_CONFIG)
    try:
        item = Item("scene-1", "unused", "what color is the circle?", "red", [REFERENCE])
        task = task_data(item, scene_uri(), shipped_schema())
        task["data"]["candidates"] = [{"value": text, "alias": f"c{i}"} for i, text in enumerate(CANDIDATES)]
        ls_client.projects.import_tasks(id=project.id, request=[task])
        (stored,) = list(ls_client.tasks.list(project=project.id))
        prediction = ls_client.predictions.create(task=stored.id, score=0.4, model_version="v1", result=[
            {"from_name": "rationales", "to_name": "image", "type": "choices", "value": {"choices": ["c1"]}}])
        ls_client.projects.update(id=project.id, model_version="v1")  # as `illume-sync predict` does

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport=LAPTOP)
            _login(page, label_studio)

            page.goto(f"{label_studio.url}/projects/{project.id}/data", wait_until="domcontentloaded")
            expect(page.get_by_text("what color is the circle?").first).to_be_visible(timeout=90_000)
            assert "REFERENCE-EXPLANATION-SECRET" not in page.content()
            assert page.get_by_text("references", exact=True).count() == 0  # no such column

            # "Label All Tasks": the label stream, as annotators get it
            page.goto(f"{label_studio.url}/projects/{project.id}/data?labeling=1", wait_until="domcontentloaded")
            boxes = [page.get_by_role("checkbox", name=text) for text in CANDIDATES]
            none = page.get_by_role("checkbox", name=NONE)
            expect(boxes[0]).to_be_visible(timeout=90_000)
            for element in boxes + [none, page.locator("textarea")]:
                expect(element).to_be_in_viewport(ratio=1)  # all of it, without scrolling
            image = page.locator(".illume img").first.bounding_box()
            assert image["width"] == 256 and image["x"] >= 0 and image["y"] + image["height"] <= LAPTOP["height"]
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
    from connector.client import connect
    from connector.predicting import predict_missing
    from connector.project import init_project
    from illume.images import ImagePolicy
    from ml_backend.app import create_app
    from ml_backend.model_holder import Loaded, ModelHolder

    from ml_backend.settings import Settings

    settings = make_settings(preselect=Settings(model="default").preselect,  # the default pre-annotation policy
                             images=ImagePolicy(label_studio_url=label_studio.url,
                                                label_studio_api_key=label_studio.token))
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
