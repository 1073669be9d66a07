"""illume.text.check_text: task text refuses C0 and C1 controls and non-characters; a model's own
candidates (control_characters=True) keep them, and only lone surrogates are refused there."""
from __future__ import annotations

import pytest

from illume.errors import IllumeError
from illume.text import check_text

C1 = ["\x80", "\x85", "\x9b", "\x9f"]
NONCHARACTERS = ["\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff"]


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\x7f", *C1])
def test_control_characters_are_refused_in_task_text(char):
    with pytest.raises(IllumeError, match=f"control character U\\+{ord(char):04X} at character 4"):
        check_text(f"what{char}color ?", "q")


@pytest.mark.parametrize("char", NONCHARACTERS)
def test_noncharacters_are_refused_in_task_text(char):
    with pytest.raises(IllumeError, match=f"non-character U\\+{ord(char):04X} at character 4"):
        check_text(f"what{char}color ?", "q")


@pytest.mark.parametrize("char", ["\x1b", "\x7f", *C1, *NONCHARACTERS])
def test_model_output_keeps_control_characters(char):
    assert check_text(f"what{char}color ?", "q", control_characters=True) == f"what{char}color ?"


@pytest.mark.parametrize("text", ["tab\there\r\nnew line", "\u202bمرحبا\u202c red", "\u2067שלום\u2069 ok", "né café 中文"])
def test_ordinary_and_right_to_left_text_passes(text):
    assert check_text(text, "q") == text


def test_lone_surrogate_is_refused_everywhere():
    for control_characters in (False, True):
        with pytest.raises(IllumeError, match="lone surrogate U\\+D800"):
            check_text("a\ud800b", "q", control_characters=control_characters)
