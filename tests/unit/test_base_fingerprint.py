"""Is a re-opened folder the base a LoRA fine-tune was trained on (py_engine/app/
base_fingerprint.py)? The same folder, or a copy of it, agrees; a folder that differs in its
config.json, the set of weight files, a file's size, its header or its weight values is told
apart, and the clause says which. Each check is shown to matter: the difference it names is
the only one the folder has."""
import json
import shutil
import struct

import numpy as np
import pytest

from py_engine.app import base_fingerprint as BF
from py_engine.io.byte_sources import LocalSource
from tests.async_run import run
from tests.conftest import REPO

BASE = REPO / "tests" / "fixtures" / "models" / "bytes-tiny-stdlib"


def fp(folder):
    return run(BF.fingerprint(LocalSource(folder)))


@pytest.fixture(scope="module")
def saved():
    return fp(BASE)


def copy(tmp_path, name="copy"):
    out = tmp_path / name
    shutil.copytree(BASE, out)
    return out


def header_end(path):
    raw = path.read_bytes()
    return 8 + struct.unpack("<Q", raw[:8])[0]


def test_a_copy_of_the_folder_is_the_same_base(saved, tmp_path):
    again = fp(copy(tmp_path))
    assert again == saved and BF.difference(saved, again) is None
    assert saved["config"] == json.loads((BASE / "config.json").read_text())
    size = (BASE / "model.safetensors").stat().st_size
    assert list(saved["files"]) == ["model.safetensors"]
    assert saved["files"]["model.safetensors"]["bytes"] == size
    # json round trip (the autosave's info.json and the state's metadata hold it)
    assert BF.difference(json.loads(json.dumps(saved)), again) is None
    # a tokenizer.json edited or added is not the base's weights: the run keeps its own
    folder = tmp_path / "copy"
    (folder / "tokenizer_config.json").write_text("{}")
    assert BF.difference(saved, fp(folder)) is None


def test_a_config_key_that_differs_is_named(saved, tmp_path):
    folder = copy(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 1e-6
    cfg["mambaweb_note"] = "x"
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))
    why = BF.difference(saved, fp(folder))
    assert why == ("its config.json differs (layer_norm_epsilon 1e-06 here, 1e-05 in the run's "
                   "base; mambaweb_note \"x\" here, absent in the run's base)")
    # whitespace and key order alone are not a difference
    cfg = json.loads((BASE / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(reversed(list(cfg.items())))))
    assert BF.difference(saved, fp(folder)) is None


def test_other_weight_values_with_the_same_layout_are_told_apart(saved, tmp_path):
    """Another checkpoint of the same model: header and size equal, values not."""
    folder = copy(tmp_path)
    path = folder / "model.safetensors"
    raw = bytearray(path.read_bytes())
    start = header_end(path)
    body = np.frombuffer(bytes(raw[start:]), np.float32) * np.float32(1.001)
    raw[start:] = body.tobytes()
    path.write_bytes(bytes(raw))
    found = fp(folder)
    assert found["files"]["model.safetensors"]["header"] == saved["files"]["model.safetensors"]["header"]
    assert BF.difference(saved, found) == (
        "its model.safetensors has the same tensors with other values (the weights differ "
        "from the run's base: another checkpoint of the same model?)")


def test_a_different_header_and_a_different_size_are_named(saved, tmp_path):
    folder = copy(tmp_path)
    path = folder / "model.safetensors"
    raw = path.read_bytes()
    end = header_end(path)
    # the same number of bytes, one tensor renamed: a different model layout
    head = raw[:end].replace(b"layers.1.mixer.D", b"layers.1.mixer.E")
    assert head != raw[:end] and len(head) == end
    path.write_bytes(head + raw[end:])
    assert BF.difference(saved, run(BF.fingerprint(LocalSource(folder)))) == (
        "its model.safetensors lists other tensors (names, dtypes, shapes or offsets differ "
        "from the run's base)")
    path.write_bytes(raw + b"\0" * 16)
    size = len(raw)
    assert BF.difference(saved, fp(folder)) == (
        f"its model.safetensors is {size + 16:,} bytes, the run's base's was {size:,}")


def test_another_set_of_weight_files_is_named(saved):
    shards = dict(saved, files={"model-00001-of-00002.safetensors": {"bytes": 1, "header": "a",
                                                                      "sample": "b"},
                                "model-00002-of-00002.safetensors": {"bytes": 1, "header": "a",
                                                                      "sample": "b"}})
    assert BF.difference(saved, shards) == (
        "it has the weight files model-00001-of-00002.safetensors, "
        "model-00002-of-00002.safetensors, the run's base had model.safetensors")


def test_a_folder_without_its_weights_is_refused_by_name(tmp_path):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(BASE / "config.json", folder)
    with pytest.raises(OSError, match="model.safetensors: not among the chosen files"):
        fp(folder)


def test_the_refusal_is_one_sentence():
    text = BF.refusal({"name": "my-base"}, "other", "its config.json differs (a 1 here, 2 in "
                      "the run's base)")
    assert text == ("the folder other is not the base this run was trained on (my-base): its "
                    "config.json differs (a 1 here, 2 in the run's base); open that folder "
                    "again, or discard the saved run, which is kept until then")
    assert "\n" not in text and text.count(". ") == 0


def test_a_state_saved_before_fingerprints_is_checked_by_its_config(tmp_path):
    """A downloaded training state from before fingerprints names only its config: the folder
    opened to resume it must have the same (normalised) config, or the key is named."""
    from py_engine.app import finetune_session as FS
    from py_engine.models.config import MambaConfig
    saved_config = MambaConfig.from_hf_dict(json.loads((BASE / "config.json").read_text())).to_hf_dict()
    same = run(FS._same_base({"name": "b"}, {"path": str(copy(tmp_path)), "name": "c"}, saved_config))
    assert isinstance(same, LocalSource)
    folder = copy(tmp_path, "other")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 1e-6
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError) as e:
        run(FS._same_base({"name": "b"}, {"path": str(folder), "name": "other"}, saved_config))
    assert str(e.value) == (
        "the folder other is not the base this run was trained on (b): its config.json differs "
        "(layer_norm_epsilon 1e-06 here, 1e-05 in the run's base); open that folder again, or "
        "discard the saved run, which is kept until then")
    with pytest.raises(ValueError, match="^this LoRA run's base is the folder b from this "
                                         "computer: open that folder again to resume it"):
        run(FS._same_base({"name": "b"}, None, saved_config))
