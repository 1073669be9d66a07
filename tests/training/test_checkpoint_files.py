"""A --base-model folder with a cut or damaged safetensors checkpoint (a partly downloaded model)
fails with an IllumeError naming the file and what to do, never a struct/JSON/memory traceback;
an index's shard names stay inside the model folder."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from illume.errors import IllumeError
from training.model import SafetensorsFile, safetensors_files


def _valid(path):
    save_file({"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.bfloat16)},
              str(path), metadata={"format": "pt"})
    return path


def _header(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def _damaged(excinfo, path):
    assert f"the checkpoint file {path} is incomplete or damaged" in excinfo.value.what
    assert excinfo.value.todo.startswith("Download or save the model again")
    return excinfo.value.what


def test_a_valid_file_reads_any_element_range(tmp_path):
    path = _valid(tmp_path / "model.safetensors")
    reader = SafetensorsFile(path)
    assert sorted(reader.tensors) == ["a", "b"] and reader.numel("a") == 6
    assert reader.read("a", 1, 3).tolist() == [1.0, 2.0, 3.0]
    assert reader.read("b", 0, 4).tolist() == [1.0] * 4
    assert safetensors_files(tmp_path) == [path]


@pytest.mark.parametrize("content, reason", [
    (b"abc", "it has 3 bytes, fewer than the 8 of its header length"),
    (struct.pack("<Q", 2 ** 62) + b"{}", "its header length (4611686018427387904 bytes) does not fit"),
    (struct.pack("<Q", 100) + b"{}", "its header length (100 bytes) does not fit the file (10 bytes)"),
    (struct.pack("<Q", 0) + b"{}", "its header length (0 bytes)"),
    (_header(b"{bad}"), "JSONDecodeError"),
    (_header(b"[1, 2]"), "its header is not a JSON object"),
    (_header(b'{"a": {"dtype": "F32", "shape": [2]}}'), "KeyError: 'data_offsets'"),
    (_header(b'{"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}', bytes(8)),
     "tensor 'a' has a malformed entry"),
    (_header(b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', bytes(4)),
     "tensor 'a' lies at bytes 0-8, past the 4 bytes of data"),
])
def test_a_damaged_file_is_named_with_what_is_wrong(tmp_path, content, reason):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(IllumeError) as excinfo:
        SafetensorsFile(path)
    assert reason in _damaged(excinfo, path)


def test_a_cut_download_is_caught_at_its_header(tmp_path):
    path = _valid(tmp_path / "model.safetensors")
    path.write_bytes(path.read_bytes()[:-4])  # the last tensor's bytes are incomplete
    with pytest.raises(IllumeError) as excinfo:
        SafetensorsFile(path)
    assert "past the" in _damaged(excinfo, path)


def _index(directory, weight_map) -> None:
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_a_sharded_checkpoint_lists_its_shards_once_in_order(tmp_path):
    _index(tmp_path, {"a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                      "c": "model-00002-of-00002.safetensors"})
    assert safetensors_files(tmp_path) == [tmp_path / "model-00001-of-00002.safetensors",
                                           tmp_path / "model-00002-of-00002.safetensors"]


def test_a_shard_linked_elsewhere_is_accepted(tmp_path):
    """The Hugging Face cache links a snapshot's files to its blobs folder: the name is checked, not the target."""
    (tmp_path / "blobs").mkdir()
    blob = _valid(tmp_path / "blobs" / "0123abcd")
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    (snapshot / "model-00001-of-00001.safetensors").symlink_to(blob)
    _index(snapshot, {"a": "model-00001-of-00001.safetensors", "b": "model-00001-of-00001.safetensors"})
    [shard] = safetensors_files(snapshot)
    assert SafetensorsFile(shard).read("a", 0, 2).tolist() == [0.0, 1.0]


@pytest.mark.parametrize("index, reason", [
    ("not json", "JSONDecodeError"),
    (json.dumps({"metadata": {}}), "KeyError: 'weight_map'"),
    (json.dumps({"weight_map": {"a": ["x.safetensors"]}}), "its weight_map is not an object of file names"),
    (json.dumps({"weight_map": {"a": "../x.safetensors"}}), "its weight_map names '../x.safetensors', which is not"),
    (json.dumps({"weight_map": {"a": "/etc/x.safetensors"}}), "its weight_map names '/etc/x.safetensors'"),
    (json.dumps({"weight_map": {"a": "sub/../../x"}}), "its weight_map names 'sub/../../x'"),
])
def test_a_damaged_index_is_named_with_what_is_wrong(tmp_path, index, reason):
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(index)
    with pytest.raises(IllumeError) as excinfo:
        safetensors_files(tmp_path)
    assert reason in _damaged(excinfo, path)


def test_a_shard_missing_from_the_folder_is_named(tmp_path):
    _index(tmp_path, {"a": "model-00001-of-00002.safetensors"})
    [shard] = safetensors_files(tmp_path)
    with pytest.raises(IllumeError) as excinfo:
        SafetensorsFile(shard)
    assert "FileNotFoundError" in _damaged(excinfo, shard)
