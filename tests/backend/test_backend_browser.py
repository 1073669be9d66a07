"""An annotator in headless Chromium ticks two candidates; the stored annotation holds exactly those."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from backend_helpers import LABEL_CONFIG, REPO, data_uri

pytestmark = [pytest.mark.browser, pytest.mark.label_studio]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CANDIDATES = ["the shape has the color of a fire truck.", "the sky behind it is blue.",
              "its surface is red all over.", "there are two dogs on the grass."]
SCREENSHOT = REPO / "docs" / "annotator_view.png"


def _stored_annotation(ls_client, task_id: int, deadline_s: float = 30):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        annotations = ls_client.annotations.list(id=task_id)
        if annotations:
            return annotations
        time.sleep(0.2)  # the submit request is asynchronous in the page
    raise AssertionError(f"no annotation stored for task {task_id}")


def test_annotator_ticks_two_candidates(label_studio, ls_client):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import expect, sync_playwright

    project = ls_client.projects.create(title="illume browser test", label_config=LABEL_CONFIG)
    try:
        ls_client.projects.import_tasks(id=project.id, request=[{
            "image": data_uri("red", (320, 240)), "question": "what color is the shape?", "answer": "red",
            "explanation": "REFERENCE-EXPLANATION-SECRET",
            "candidates": [{"value": text, "alias": f"c{i}"} for i, text in enumerate(CANDIDATES)]}])
        (task,) = list(ls_client.tasks.list(project=project.id))

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{label_studio.url}/user/login", wait_until="domcontentloaded")
            page.fill("input[name=email]", label_studio.username)
            page.fill("input[name=password]", label_studio.password)
            page.click("button[type=submit]")
            page.wait_for_url(lambda url: "/user/login" not in url, timeout=60_000)

            # The annotator's view: "Label All Tasks" (the label stream), no data table around it.
            page.goto(f"{label_studio.url}/projects/{project.id}/data?labeling=1", wait_until="domcontentloaded")
            checkboxes = {text: page.get_by_role("checkbox", name=text) for text in CANDIDATES}
            for box in checkboxes.values():
                expect(box).to_be_visible(timeout=90_000)
                expect(box).to_be_in_viewport()  # visible without scrolling
            expect(page.get_by_role("checkbox", name="None of these is correct")).to_be_visible()
            expect(page.get_by_text("what color is the shape?", exact=True)).to_be_visible()
            assert page.get_by_text("REFERENCE-EXPLANATION-SECRET").count() == 0

            checkboxes[CANDIDATES[0]].click()
            checkboxes[CANDIDATES[2]].click()
            expect(checkboxes[CANDIDATES[0]]).to_be_checked()
            expect(checkboxes[CANDIDATES[2]]).to_be_checked()
            expect(checkboxes[CANDIDATES[1]]).not_to_be_checked()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            page.get_by_role("button", name="Submit current annotation").click()
            annotations = _stored_annotation(ls_client, task.id)
            browser.close()

        (annotation,) = annotations
        (result,) = [r for r in annotation.result if r["from_name"] == "rationales"]
        assert sorted(result["value"]["choices"]) == ["c0", "c2"]
        assert not [r for r in annotation.result if r["from_name"] == "none_correct"]
    finally:
        ls_client.projects.delete(id=project.id)
