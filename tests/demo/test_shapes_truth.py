"""The Shapes-X statement checker: true of the scene and supporting the answer, or not accepted."""
from __future__ import annotations

import random

import pytest

from illume.datasets import shapes
from illume.datasets.shapes_truth import is_true, judge, parse, scene_of, Unparsed

# circle (red, large) top left; square (blue, small) bottom right; triangle (red, small) top right
SCENE = {"size": 64, "grid": 4, "shapes": [
    {"kind": "circle", "color": "red", "size": "large", "row": 0, "col": 0},
    {"kind": "square", "color": "blue", "size": "small", "row": 3, "col": 3},
    {"kind": "triangle", "color": "red", "size": "small", "row": 0, "col": 3}]}


def _generated(scenes: int = 150, seed: int = 5):
    rng = random.Random(seed)
    for _ in range(scenes):
        scene = shapes.make_scene(rng)
        yield scene, shapes.questions_for(scene, rng), [shapes.remark(scene, rng)["text"] for _ in range(3)]


def test_every_reference_explanation_is_accepted_and_every_remark_is_true():
    checked = 0
    for scene, questions, remarks in _generated():
        for q in questions:
            for text in q["explanations"]:
                verdict = judge(text, q["question"], q["answer"], scene)
                assert verdict.accepted, (q["question"], q["answer"], text, verdict.why)
                checked += 1
        assert all(is_true(text, scene) for text in remarks), remarks
    assert checked > 2000


def test_a_reference_with_the_answer_swapped_for_another_value_is_false():
    other = {"red": "green", "green": "blue", "blue": "purple", "purple": "yellow", "yellow": "red",
             "large": "small", "small": "large", "left": "right", "right": "left", "above": "below", "below": "above"}
    swapped = 0
    for scene, questions, _ in _generated(80, seed=9):
        for q in questions:
            if q["answer"] not in other:
                continue
            for text in q["explanations"]:
                words = text.rstrip(".").split()
                if q["answer"] not in words:
                    continue
                wrong = " ".join(other[w] if w == q["answer"] else w for w in words) + "."
                verdict = judge(wrong, q["question"], q["answer"], scene)
                assert not verdict.true, (q["question"], text, wrong, verdict)  # false, or (rarely) nonsense
                swapped += 1
    assert swapped > 300


@pytest.mark.parametrize("statement, question, answer, accepted, why", [
    # the examples: false, though one word away from a reference
    ("the red circle is to the right of the red circle.", "Is the circle left or right of the square?", "left",
     False, "false"),
    ("the blue square is large.", "What color is the square?", "blue", False, "false"),
    ("the square is blue and small.", "What color is the square?", "blue", True, ""),
    ("the circle is red.", "What color is the square?", "blue", False, "does not support"),  # true, beside the point
    ("the red object at the top right is a triangle.", "What shape is the blue object?", "square", False, "does not"),
    ("the blue object is a small square.", "What shape is the blue object?", "square", True, ""),
    ("the circle is to the left of the blue square.", "Is the square left or right of the circle?", "right", True, ""),
    ("the blue square sits below the triangle in the picture.", "Is the square above or below the triangle?",
     "below", True, ""),
    ("the triangle is drawn higher than the blue square.", "Is the square above or below the triangle?",
     "below", True, ""),
    ("there are three shapes: a circle, a square and a triangle.", "How many shapes are there?", "3", True, ""),
    ("there are two shapes: a circle and a square.", "How many shapes are there?", "2", False, "false"),
    ("i can see a red circle, a blue square and a red triangle.", "How many shapes are there?", "3", True, ""),
    ("i can see a red circle and a red circle.", "How many shapes are there?", "2", False, "false"),
    ("there is no diamond in the picture.", "Is there a green diamond?", "no", True, ""),
    ("the square is blue, not green.", "Is there a green square?", "no", True, ""),
    ("the only square in the picture is blue.", "Is there a green square?", "no", True, ""),
    ("the shapes are a red circle, a blue square and a red triangle.", "Is there a green diamond?", "no", True, ""),
    ("there is a red circle at the top left.", "Is there a red circle?", "yes", True, ""),
    ("there is a red circle at the bottom left.", "Is there a red circle?", "yes", False, "false"),
    ("the triangle is the only red shape and it is small.", "What shape is the red object?", "triangle",
     False, "false"),  # the circle is red too
    ("the large circle takes up most of its space.", "Is the circle large or small?", "large", True, ""),
    ("the circle is happy.", "Is the circle large or small?", "large", False, "not understood"),
    ("a large red circle at the top left", "Is the circle large or small?", "large", False, "not understood"),
    ("the red object is a circle.", "Is the circle large or small?", "large", False, "does not support"),
])
def test_statements_against_a_known_scene(statement, question, answer, accepted, why):
    verdict = judge(statement, question, answer, SCENE)
    assert verdict.accepted is accepted, verdict
    assert why in verdict.why


def test_ambiguous_the_is_true_when_it_holds_of_one_but_states_no_fact():
    # two red shapes: "the red object is a circle" holds of one of them, but identifies nothing
    assert is_true("the red object is a circle.", SCENE) is True
    assert is_true("the red object is a diamond.", SCENE) is False
    assert not judge("the red object is a circle.", "What shape is the red object?", "circle", SCENE).supports


def test_unparseable_statements_raise_and_questions_outside_shapes_x_are_never_supported():
    with pytest.raises(Unparsed):
        parse("the giraffe has a long neck")
    with pytest.raises(Unparsed):
        parse("")
    assert not judge("the circle is red.", "What is the giraffe eating?", "leaves", SCENE).accepted
    assert scene_of({"scene": SCENE}) is SCENE and scene_of({"references": []}) is None and scene_of(None) is None


def test_generated_items_carry_their_scene_in_meta():
    item, _ = shapes.generate_split("val", 1, seed=2)[0]
    assert judge(item.explanations[0], item.question, item.answer, scene_of(item.meta)).accepted
