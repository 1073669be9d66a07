"""Preference pairs never mix items: chosen and rejected come from the same item's candidates."""
from __future__ import annotations

from connector.judging import preference_pairs
from illume.records import Feedback


def test_pairs_come_only_from_the_same_item():
    red = Feedback("red", "red.png", "what color is it ?", "red", candidates=["it is red .", "it is blue .", "a dog ."],
                   accepted=["it is red ."], rejected=["it is blue .", "a dog ."], written=["the square is red ."])
    blue = Feedback("blue", "blue.png", "what color is it ?", "blue", candidates=["it is blue .", "it is red ."],
                    accepted=["it is blue ."], rejected=["it is red ."])
    none_accepted = Feedback("gray", "gray.png", "what shape is it ?", "circle", candidates=["a square ."],
                             accepted=[], rejected=["a square ."])
    for record in (red, blue, none_accepted):
        pairs = preference_pairs(record)
        good, bad = record.accepted + record.written, record.rejected
        assert len(pairs) == len(good) * len(bad)
        for pair in pairs:
            assert (pair.item_id, pair.images, pair.question, pair.answer) == (
                record.item_id, [record.image], record.question, record.answer)
            assert pair.chosen in good and pair.rejected in bad and pair.chosen != pair.rejected
    # "it is blue ." is wrong for the red item and right for the blue one: never chosen against red's own
    assert {p.chosen for p in preference_pairs(red)} == {"it is red .", "the square is red ."}
