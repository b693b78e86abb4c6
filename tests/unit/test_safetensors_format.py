"""safetensors header parser/writer: agreement with the safetensors library, malformed files."""
import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save, save_file

from py_engine.io.safetensors_format import (NeedMoreBytes, build_header, build_index,
                                             parse_header, parse_index, read_header,
                                             safetensors_order)


def _tensors():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((3, 5)).astype(np.float32),
            "h": rng.standard_normal(7).astype(np.float16),
            "q": np.arange(-4, 5, dtype=np.int8),
            "é": np.zeros((2, 0), np.float32),
            "a": rng.standard_normal((2, 2)).astype(np.float32)}


def test_parse_matches_library_layout(tmp_path):
    t = _tensors()
    path = tmp_path / "m.safetensors"
    save_file(t, path, metadata={"format": "pt", "k": "v"})
    h = read_header(path)
    blob = path.read_bytes()
    assert h.metadata == {"format": "pt", "k": "v"}
    by = h.by_name()
    for name, arr in t.items():
        info = by[name]
        assert info.shape == arr.shape
        assert blob[info.start:info.end] == arr.tobytes()
    assert [x.start for x in h.tensors] == sorted(x.start for x in h.tensors)


def test_writer_is_byte_identical_to_library():
    t = _tensors()
    entries = [(n, {"float32": "F32", "float16": "F16", "int8": "I8"}[a.dtype.name], a.shape)
               for n, a in t.items()]
    head, infos = build_header(safetensors_order(entries), {"format": "pt"})
    ours = head + b"".join(t[i.name].tobytes() for i in infos)
    assert ours == save(t, metadata={"format": "pt"})
    assert len(head) % 8 == 0
    # offsets are absolute and reparse to the same thing
    again = parse_header(ours, len(ours))
    assert again.tensors == sorted(infos, key=lambda i: (i.start, i.end))


def test_need_more_bytes_then_parse():
    blob = save({"x": np.ones(4, np.float32)})
    with pytest.raises(NeedMoreBytes) as e:
        parse_header(blob[:8], len(blob), "f.safetensors")
    n = e.value.needed
    assert parse_header(blob[:n], len(blob)).tensors[0].name == "x"


def _blob(header_obj, data=b"", pad=True):
    body = json.dumps(header_obj).encode()
    if pad:
        body += b" " * ((8 - len(body) % 8) % 8)
    return struct.pack("<Q", len(body)) + body + data


@pytest.mark.parametrize("blob, size, msg", [
    (b"\1\0", 2, "f.st: 2 bytes is too short"),
    (struct.pack("<Q", 10**12) + b"{}", 10, "exceeds the 100000000-byte limit"),
    (struct.pack("<Q", 64) + b"{}", 10, "header length 64 runs past the end"),
    (_blob({"x": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8), None,
     "tensor 'x': dtype 'F64' is not supported; supported: F32, F16, BF16, I8"),
    (_blob({"x": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8), None,
     "shape [3] x F32 is 12 bytes but data_offsets [0, 8] hold 8"),
    (_blob({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), None,
     "run past the end of the data (8 bytes after the header; file truncated?)"),
    (_blob({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12), None,
     "overlap"),
    (_blob({"x": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}}), None,
     "shape must be a list of non-negative integers"),
    (_blob({"x": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}, b"\0" * 8), None,
     "end 4 is before begin 8"),
    (_blob({"__metadata__": {"a": 1}}), None, "__metadata__ must map strings to strings"),
    (struct.pack("<Q", 8) + b"not json", None, "header is not valid UTF-8 JSON"),
    (_blob([1, 2]), None, "header must be a JSON object"),
])
def test_malformed(blob, size, msg):
    with pytest.raises(ValueError) as e:
        parse_header(blob, len(blob) if size is None else size, "f.st")
    assert msg in str(e.value) and str(e.value).startswith("f.st")


def test_index_round_trip_and_traversal():
    text = build_index({"b": "model-00002-of-00002.safetensors",
                        "a": "model-00001-of-00002.safetensors"}, 123)
    assert json.loads(text)["metadata"]["total_size"] == 123
    assert parse_index(text) == {"a": "model-00001-of-00002.safetensors",
                                 "b": "model-00002-of-00002.safetensors"}
    with pytest.raises(ValueError, match="points outside the model folder"):
        parse_index(json.dumps({"weight_map": {"a": "../x.safetensors"}}))
    with pytest.raises(ValueError, match="missing a non-empty 'weight_map'"):
        parse_index("{}", "idx.json")
    with pytest.raises(ValueError, match="idx.json: not valid JSON"):
        parse_index("{", "idx.json")
