"""`illume-sync report`: a self-contained page with plots, rendered by headless Chromium."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from connector.cli import main
from illume.records import Feedback, write_jsonl
from illume.layout import EXPORT_FEEDBACK

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def fake_run(run_dir: Path) -> None:
    """A loop run of two rounds, as the round step records it (rounds.json)."""
    metrics = lambda r: {"rouge_l": 30 + 10 * r, "cider": 40 + 15 * r, "bleu_4": 10 + r, "meteor": 15 + r,  # noqa: E731
                         "accuracy": 90 - r}
    rounds = {"0": {"done": [], "metrics": metrics(0), "version": "base", "promoted": True}}
    for r in (1, 2):
        export = run_dir / f"round-{r}" / "export"
        (export / "images").mkdir(parents=True)
        Image.new("RGB", (64, 64), (200, 40 * r, 40)).save(export / "images" / "a.png")
        write_jsonl(export / EXPORT_FEEDBACK, [
            Feedback("item-a", "images/a.png", "what color is the circle?", "red",
                     ["the circle is red", "the sky is blue"], ["the circle is red"], ["the sky is blue"], iteration=r),
            Feedback("item-b", "images/a.png", "how many shapes?", "two", ["there are two shapes"], [],
                     ["there are two shapes"], written=["i count two shapes"], iteration=r)])
        rounds[str(r)] = {"done": [], "metrics": metrics(r), "version": f"illume-round-{r}", "promoted": r == 1,
                          "acceptance": {"rate": 0.2 * r}, "items_with_accepted": r, "items_judged": 2,
                          "preticks": {"accepted_preticked_unchanged": r, "accepted": 4},
                          "diversity": {"candidates_per_item": 1.5, "distinct_2": 0.8},
                          "agreement": {"fleiss_kappa": 0.61}, "sampled_by": "base" if r == 1 else "illume-round-1"}
    (run_dir / "rounds.json").write_text(json.dumps({"rounds": rounds, "serving": {}, "trained_tasks": []}))


def test_report_renders_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    fake_run(tmp_path)
    result = CliRunner().invoke(main, ["report", "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    page_path = Path(result.output.strip().splitlines()[-1])
    assert page_path == tmp_path / "report" / "index.html"
    assert {p.name for p in page_path.parent.glob("*.png")} == {"feedback.png", "metrics.png"}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(page_path.as_uri())
        # Every image (plots and thumbnails) is embedded and decodes.
        widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
        assert len(widths) == 2 + 4 and all(w > 0 for w in widths)
        rows = page.eval_on_selector_all("table:first-of-type tbody tr", "rows => rows.map(r => r.innerText)")
        assert len(rows) == 3 and "illume-round-2 (kept old)" in rows[2] and "40.0" in rows[1]
        assert "1 / 4" in rows[1] and "2 / 4" in rows[2]  # accepted as untouched pre-ticks, of all accepted
        assert page.locator("li.yes", has_text="the circle is red").count() == 2
        assert page.locator("li.yes", has_text="i count two shapes").count() == 2
        shots = Path(os.environ.get("ILLUME_SCREENSHOTS") or tmp_path / "shots")  # scripts/screenshots.sh: docs/
        shots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shots / "report.png"), full_page=True)
        assert (shots / "report.png").stat().st_size > 10_000
        browser.close()


def test_report_of_a_directory_without_a_loop_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["report", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "has no rounds.json" in result.output
