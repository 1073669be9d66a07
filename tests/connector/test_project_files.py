"""Files a user names for a project (labeling config, instructions) are read bounded and as UTF-8: a
file that is not fails with what is wrong and what to do, never a traceback."""
from __future__ import annotations

import pytest

from connector.project import MAX_INSTRUCTIONS_BYTES, read_instructions, read_label_config
from illume.errors import IllumeError
from illume.labeling_schema import MAX_CONFIG_CHARS


def test_a_config_saved_with_a_byte_order_mark_reads_as_the_same_config(tmp_path):
    shipped = read_label_config()
    path = tmp_path / "config.xml"
    path.write_bytes(b"\xef\xbb\xbf" + shipped.encode())
    assert read_label_config(path) == shipped


@pytest.mark.parametrize("content, message", [
    (b"<View>\xff</View>", r"Labeling config .*config.xml is not UTF-8 text"),
    (b"<View>" + b" " * (MAX_CONFIG_CHARS * 4) + b"</View>", r"config.xml is larger than 800,000 bytes"),
])
def test_an_unreadable_config_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "config.xml"
    path.write_bytes(content)
    with pytest.raises(IllumeError, match=message) as refused:
        read_label_config(path)
    assert "--label-config" in refused.value.todo


@pytest.mark.parametrize("content, message", [
    (b"<p>caf\xe9</p>", "is not UTF-8 text"),
    (b"<p>" + b"x" * MAX_INSTRUCTIONS_BYTES + b"</p>", f"is larger than {MAX_INSTRUCTIONS_BYTES:,} bytes"),
    (b"\xef\xbb\xbf \n", "is empty"),
])
def test_unusable_instructions_are_a_clear_error(tmp_path, content, message):
    path = tmp_path / "instructions.html"
    path.write_bytes(content)
    with pytest.raises(IllumeError, match=message):
        read_instructions(path)
    path.write_bytes("<p>Tick what is true of the picture.</p>".encode())
    assert read_instructions(path) == "<p>Tick what is true of the picture.</p>"


def test_a_folder_named_as_a_file_is_a_clear_error(tmp_path):
    with pytest.raises(IllumeError, match="does not exist"):
        read_label_config(tmp_path)
