"""The report's tables for annotator-seconds, diversity and the preference loss's diagnostics."""
from __future__ import annotations

from connector.report import render


def test_effort_diversity_and_preference_tables(tmp_path):
    rounds = {0: {"metrics": {"rouge_l": 40.0}},
              1: {"diversity": {"candidates_per_item": 6.2, "distinct_2": 0.41},
                  "preference": [{"epoch": 1, "rewards/margins": 0.125, "rewards/accuracies": 0.75}]},
              2: {"diversity": {"candidates_per_item": 5.5, "distinct_2": 0.38},
                  "effort": {"annotator_seconds": 600.0, "annotations_timed": 40, "accepted_rationales": 12,
                             "seconds_per_accepted_rationale": 50.0}}}
    page = render(tmp_path, rounds, {})
    effort = page.split("<h2>Annotation effort</h2>")[1].split("</table>")[0]
    assert "<td>2</td><td>600.0</td><td>40</td><td>12</td><td>50.0</td>" in effort
    assert "<td>1</td>" not in effort  # simulated round: no effort row
    diversity = page.split("<h2>Candidate diversity</h2>")[1].split("</table>")[0]
    assert "<td>1</td><td>6.2</td><td>0.410</td>" in diversity and "<td>2</td><td>5.5</td><td>0.380</td>" in diversity
    assert "rewards/margins" in page and "<td>1</td><td>1</td><td>0.750</td><td>0.125</td>" in page
