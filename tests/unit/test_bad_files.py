"""Bad input files, each refused with one message naming the file, the tensor or field, and
expected vs found (issue 13, "Bad files").

Every broken checkpoint is built from a good fixture by one edit, then read through the
host-side entry points that the CLI and pages share:
  load     py_engine.io.hf_loader.load_from_source (what `mambaweb run` and the generate page
           run), with device=None: every refusal must come before the first GPU call, so
           nothing can be half-allocated
  convert  tools.convert_host.convert (what `mambaweb convert` and the convert page plan),
           which must also leave no output behind
MBJS files go through py_engine.io.mbjs.read_layout and convert; tokenizer files through
Tokenizer.from_file and the pretrain path (train.data.tokenizer_from_json); corpora through
train.data.corpus_from_files. tests/unit/test_bad_files_cli.py runs a subset through the CLI,
tests/browser/test_bad_files_browser.py through the engine in the browser.
"""
import asyncio
import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest

from py_engine.io import mbjs
from py_engine.io.byte_sources import LocalSource
from py_engine.io.hf_loader import load_from_source
from py_engine.models.config import MAX_PARAMETERS, MambaConfig
from py_engine.tokenizer import Tokenizer, TokenizerError
from py_engine.train import data
from tests.conftest import REPO
from tools import convert_host

FIXTURES = REPO / "tests" / "fixtures" / "models"
TOKENIZERS = REPO / "tests" / "fixtures" / "tokenizers"
BASE = "mamba-d40-tied"          # Mamba-1, 2 layers, d_model 40, vocab 101, N 8, f32, tied
BIN_BASE = "mamba2-g1-tied-ssm-bin"   # mamba_ssm layout with a pytorch_model.bin


# --- building bad folders ---------------------------------------------------------------------

def copy_model(tmp_path, base=BASE):
    d = tmp_path / "bad-model"
    shutil.copytree(FIXTURES / base, d)
    return d


def edit_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    for k, v in changes.items():
        if v is _DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))


_DELETE = object()


def read_st(path):
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def write_st(path, header, body, pad=True):
    raw = json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def edit_header(d, mutate, name="model.safetensors"):
    header, body = read_st(d / name)
    body = mutate(header, body) or body
    write_st(d / name, header, body)


def shard(d):
    """Split the fixture's model.safetensors into two shards + an index (a valid checkpoint)."""
    header, body = read_st(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    names = sorted(k for k in header if k != "__metadata__")
    weight_map = {}
    for k, part in enumerate((names[: len(names) // 2], names[len(names) // 2:]), 1):
        fname = f"model-0000{k}-of-00002.safetensors"
        sub, chunks, off = {}, [], 0
        for n in part:
            a, b = header[n]["data_offsets"]
            sub[n] = dict(header[n], data_offsets=[off, off + b - a])
            chunks.append(body[a:b])
            off += b - a
            weight_map[n] = fname
        write_st(d / fname, sub, b"".join(chunks))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return weight_map


# --- the entry points ---------------------------------------------------------------------------

def _run(coro):
    """asyncio.run in a fresh thread: the browser tests' Playwright session may already own
    this thread's event loop when the whole suite runs."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def load_error(d):
    """The loader's message (browser/CLI `run` path), raised before any GPU call."""
    with pytest.raises(Exception) as e:
        _run(load_from_source(None, LocalSource(d)))
    assert isinstance(e.value, (ValueError, OSError)), repr(e.value)
    return str(e.value)


def convert_error(d, tmp_path):
    """The converter's message (`mambaweb convert`, the convert page's plan); no output left."""
    out = tmp_path / "converted"
    with pytest.raises(ValueError) as e:
        convert_host.convert(d, out, log=lambda *a: None)
    assert not out.exists(), f"{out} was left behind"
    return str(e.value)


def assert_words(msg, words):
    for w in words:
        assert w in msg, f"{w!r} missing from the message:\n{msg}"
    assert "Traceback" not in msg


# --- safetensors and config.json cases ------------------------------------------------------------
# Each: (id, build(d), words in both messages, extra words for load, extra words for convert).

def _len_past_file(d):
    p = d / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[:8] = struct.pack("<Q", len(data))
    p.write_bytes(bytes(data))


def _len_2_62(d):
    p = d / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[:8] = struct.pack("<Q", 2**62)
    p.write_bytes(bytes(data))


def _not_json(d):
    p = d / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[8:12] = b"\xff{[x"
    p.write_bytes(bytes(data))


def _header_list(d):
    write_st(d / "model.safetensors", [1, 2, 3], b"")


def _dtype(header, body, dtype):
    header["backbone.norm_f.weight"]["dtype"] = dtype


def _shape_bytes(header, body):
    header["backbone.layers.0.mixer.D"]["shape"] = [81]


def _offsets_past(header, body):
    a, b = header["backbone.norm_f.weight"]["data_offsets"]
    header["backbone.norm_f.weight"]["data_offsets"] = [a + 1000, b + 1000]


def _offsets_reversed(header, body):
    a, b = header["backbone.layers.1.mixer.D"]["data_offsets"]
    header["backbone.layers.1.mixer.D"]["data_offsets"] = [b, a]


def _overlap(header, body):
    # D of layer 1 reads the same 320 bytes as conv1d.bias of layer 0, shifted by 160
    a, b = header["backbone.layers.0.mixer.conv1d.bias"]["data_offsets"]
    header["backbone.layers.1.mixer.D"]["data_offsets"] = [a + 160, b + 160]


def _negative_shape(header, body):
    header["backbone.norm_f.weight"]["shape"] = [-40]


def _metadata(header, body):
    header["__metadata__"] = {"format": 3}


def _truncated(d):
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def _empty(d):
    (d / "model.safetensors").write_bytes(b"")


def _drop(name):
    def f(header, body):
        del header[name]
    return f


def _extra(header, body):
    header["backbone.layers.0.mixer.extra_proj.weight"] = {
        "dtype": "F32", "shape": [80], "data_offsets": [len(body), len(body) + 320]}
    return body + bytes(320)


def _transpose(header, body):
    header["backbone.layers.0.mixer.out_proj.weight"]["shape"] = [80, 40]


def _missing_shard(d):
    shard(d)
    (d / "model-00002-of-00002.safetensors").unlink()


def _index_not_json(d):
    shard(d)
    (d / "model.safetensors.index.json").write_text('{"weight_map": {"a": ')


def _index_escapes(d):
    wm = shard(d)
    wm["backbone.norm_f.weight"] = "../../secret.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))


def _tensor_twice(d):
    shard(d)
    # copy one tensor of shard 1 into shard 2 too
    h1, b1 = read_st(d / "model-00001-of-00002.safetensors")
    h2, b2 = read_st(d / "model-00002-of-00002.safetensors")
    name = sorted(h1)[0]
    a, b = h1[name]["data_offsets"]
    h2[name] = dict(h1[name], data_offsets=[len(b2), len(b2) + b - a])
    write_st(d / "model-00002-of-00002.safetensors", h2, b2 + b1[a:b])


def _int8_weight(header, body):
    e = header["backbone.layers.0.norm.weight"]
    e["dtype"] = "I8"
    e["shape"] = [160]


def _cfg(**changes):
    return lambda d: edit_config(d, **changes)


def _cfg_not_json(d):
    (d / "config.json").write_text('{"model_type": "mamba", "hidden_size": 40,')


def _cfg_missing(d):
    (d / "config.json").unlink()


def _cfg_array(d):
    (d / "config.json").write_text("[1, 2]")


def _h(mutate):
    return lambda d: edit_header(d, mutate)


ST = "model.safetensors"
CASES = [
    ("st-header-length-past-file", _len_past_file,
     [ST, "header length 119280", "runs past the end of the 119280-byte file"], [], []),
    ("st-header-length-2^62", _len_2_62,
     [ST, f"header length {2**62}", "exceeds the 100000000-byte limit"], [], []),
    ("st-header-not-json", _not_json, [ST, "header is not valid UTF-8 JSON"], [], []),
    ("st-header-not-object", _header_list, [ST, "header must be a JSON object, got list"], [], []),
    ("st-unknown-dtype", _h(lambda h, b: _dtype(h, b, "Q4_K")),
     [ST, "'backbone.norm_f.weight'", "dtype 'Q4_K' is not supported", "F32, F16, BF16, I8"],
     [], []),
    ("st-f64-dtype", _h(lambda h, b: _dtype(h, b, "F64")),
     [ST, "'backbone.norm_f.weight'", "dtype 'F64' is not supported"], [], []),
    ("st-shape-times-dtype-not-bytes", _h(_shape_bytes),
     [ST, "'backbone.layers.0.mixer.D'", "shape [81] x F32 is 324 bytes",
      "[18720, 19040] hold 320"], [], []),
    ("st-offsets-out-of-range", _h(_offsets_past),
     [ST, "'backbone.norm_f.weight'", "[117960, 118120] run past the end of the data",
      "117120 bytes after the header"], [], []),
    ("st-offsets-reversed", _h(_offsets_reversed),
     [ST, "'backbone.layers.1.mixer.D'", "end 69120 is before begin 69440"], [], []),
    ("st-overlapping-tensors", _h(_overlap),
     [ST, "'backbone.layers.1.mixer.D'", "overlap", "'backbone.layers.0.mixer.conv1d"], [], []),
    ("st-negative-shape", _h(_negative_shape),
     [ST, "'backbone.norm_f.weight'", "shape must be a list of non-negative integers",
      "[-40]"], [], []),
    ("st-metadata-not-strings", _h(_metadata),
     [ST, "__metadata__ must map strings to strings"], [], []),
    ("st-truncated-data", _truncated,
     [ST, "'backbone.norm_f.weight'", "run past the end of the data", "file truncated?"],
     [], []),
    ("st-empty-file", _empty,
     [ST, "0 bytes is too short for a safetensors file"], [], []),
    ("st-missing-tensor", _h(_drop("backbone.layers.1.mixer.A_log")),
     ["missing tensor backbone.layers.1.mixer.A_log (expected shape [80, 8])"], [], []),
    ("st-extra-tensor", _h(_extra),
     ["unexpected tensor backbone.layers.0.mixer.extra_proj.weight [80]"], [], []),
    ("st-transposed-tensor", _h(_transpose),
     ["backbone.layers.0.mixer.out_proj.weight: expected shape [40, 80], found [80, 40]",
      "(transposed?)"], [], []),
    ("st-wrong-dtype-for-a-weight", _h(_int8_weight),
     [ST, "backbone.layers.0.norm.weight", "I8"], ["F32, F16 and BF16"],
     ["F32, F16 and BF16"]),
    ("shard-missing", _missing_shard,
     ["model-00002-of-00002.safetensors"], ["not found"], ["not dropped"]),
    ("shard-index-not-json", _index_not_json,
     ["model.safetensors.index.json", "not valid JSON"], [], []),
    ("shard-index-points-outside", _index_escapes,
     ["model.safetensors.index.json", "'../../secret.safetensors'", "outside the model folder"],
     [], []),
    ("shard-tensor-in-two-shards", _tensor_twice,
     ["model-00002-of-00002.safetensors", "backbone.embeddings.weight", "also",
      "model-00001-of-00002.safetensors"], [], []),
    ("config-not-json", _cfg_not_json, ["config.json", "not valid JSON"], [], []),
    ("config-missing", _cfg_missing, ["config.json"], ["not found"],
     ["came without config.json"]),
    ("config-not-an-object", _cfg_array, ["config.json", "expected a JSON object, got list"],
     [], []),
    ("config-unknown-model-type", _cfg(model_type="llama"),
     ["config.json", "model_type 'llama' is not supported", "'mamba' (MambaForCausalLM)"],
     [], []),
    ("config-wrong-architecture", _cfg(architectures=["LlamaForCausalLM"]),
     ["config.json", "'LlamaForCausalLM'", "supported: MambaForCausalLM"], [], []),
    ("config-no-model-type", _cfg(model_type=_DELETE),
     ["config.json", "model_type None is not supported"], [], []),
    ("config-negative-size", _cfg(hidden_size=-40),
     ["config.json", "hidden_size must be a positive integer, got -40"], [], []),
    ("config-zero-layers", _cfg(num_hidden_layers=0),
     ["config.json", "num_hidden_layers must be a positive integer, got 0"], [], []),
    ("config-string-size", _cfg(hidden_size="40"),
     ["config.json", "hidden_size must be a positive integer, got '40'"], [], []),
    ("config-fractional-size", _cfg(state_size=8.5),
     ["config.json", "state_size must be a positive integer, got 8.5"], [], []),
    ("config-boolean-size", _cfg(conv_kernel=True),
     ["config.json", "conv_kernel must be a positive integer, got True"], [], []),
    ("config-string-expand", _cfg(expand="2"),
     ["config.json", "expand must be a positive number, got '2'"], [], []),
    ("config-contradicts-tensors", _cfg(num_hidden_layers=3),
     ["tensors do not match config", "missing tensor backbone.layers.2.mixer.in_proj.weight"],
     [], []),
    ("config-state-size-contradicts", _cfg(state_size=16),
     ["backbone.layers.0.mixer.A_log: expected shape [80, 16], found [80, 8]"], [], []),
    ("config-vocab-smaller-than-embedding", _cfg(vocab_size=64),
     ["backbone.embeddings.weight: expected shape [64, 40], found [101, 40]",
      "vocab_size is 64 but the tensor has 101 rows"], [], []),
    ("config-untied-but-no-head", _cfg(tie_word_embeddings=False),
     ["missing tensor lm_head.weight (expected shape [101, 40])"], [], []),
    ("config-10^12-parameters", _cfg(vocab_size=25_000_000_000),
     ["config.json", "describe 1,000,000,025,240 parameters", "embedding 1,000,000,000,000",
      "vocab_size 25,000,000,000", "4,000 GB as float32", f"more than {MAX_PARAMETERS:,}"],
     [], []),
    ("config-absurd-layer-count", _cfg(num_hidden_layers=10**9),
     ["config.json", "num_hidden_layers is 1,000,000,000, above the 65,536"], [], []),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_checkpoint_is_refused_by_name(tmp_path, case):
    _, build, words, load_words, convert_words = case
    d = copy_model(tmp_path)
    build(d)
    assert_words(load_error(d), words + load_words)
    assert_words(convert_error(d, tmp_path), words + convert_words)


def test_absurd_config_is_refused_without_allocating():
    """A 10^12-parameter config is refused from its sizes alone, in milliseconds: the check
    multiplies shapes, it does not build them (nor a 10^9-entry layer schedule)."""
    import time
    cfg = json.loads((FIXTURES / BASE / "config.json").read_text())
    for change in ({"vocab_size": 10**12}, {"hidden_size": 10**7},
                   {"num_hidden_layers": 10**9},
                   {"num_hidden_layers": 60_000, "hidden_size": 4096}):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="config.json: "):
            MambaConfig.from_hf_dict(dict(cfg, **change), "config.json")
        assert time.perf_counter() - t0 < 0.5, change


# --- pytorch_model.bin that is not plain tensors -------------------------------------------------

def _torch_save(obj, path, **kw):
    torch = pytest.importorskip("torch")
    torch.save(obj, path, **kw)


def _bin_cases():
    torch = pytest.importorskip("torch")
    t = torch.zeros(3)
    return [
        ("bin-random-bytes", lambda p: p.write_bytes(os.urandom(4096)),
         ["pytorch_model.bin", "not a ZIP archive, so not a torch.save checkpoint"]),
        ("bin-empty", lambda p: p.write_bytes(b""),
         ["pytorch_model.bin", "0 bytes is too short for a torch.save checkpoint"]),
        ("bin-legacy-pickle", lambda p: _torch_save({"w": t}, p,
                                                    _use_new_zipfile_serialization=False),
         ["pytorch_model.bin", "the legacy (non-ZIP) torch.save format"]),
        ("bin-a-list", lambda p: _torch_save([t, t], p),
         ["pytorch_model.bin", "holds a list, not a dict of tensors"]),
        ("bin-code-reference", lambda p: _torch_save({"w": t, "f": os.system}, p),
         ["pytorch_model.bin", "references the global posix.system", "refuses"]),
        ("bin-non-tensor-entry", lambda p: _torch_save({"w": t, "step": "three"}, p),
         ["pytorch_model.bin", "entry 'step' holds str, not a tensor"]),
        ("bin-truncated-zip", lambda p: p.write_bytes(
            (FIXTURES / BIN_BASE / "pytorch_model.bin").read_bytes()[:30000]),
         ["pytorch_model.bin", "no ZIP end-of-central-directory record: the file is "
                               "truncated"]),
    ]


BIN_IDS = ["bin-random-bytes", "bin-empty", "bin-legacy-pickle", "bin-a-list",
           "bin-code-reference", "bin-non-tensor-entry", "bin-truncated-zip"]


@pytest.mark.parametrize("case_id", BIN_IDS)
def test_bad_pytorch_bin_is_refused_by_name(tmp_path, case_id):
    case = next(c for c in _bin_cases() if c[0] == case_id)
    d = copy_model(tmp_path, BIN_BASE)
    case[1](d / "pytorch_model.bin")
    assert_words(load_error(d), case[2])
    assert_words(convert_error(d, tmp_path), case[2])


# --- MBJS ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_mbjs(tmp_path_factory):
    """An MBJS v2 file with the CRC trailer, converted from the Mamba-1 fixture."""
    path = tmp_path_factory.mktemp("mbjs") / "good.bin"
    convert_host.convert(FIXTURES / BASE, path, log=lambda *a: None)
    return path.read_bytes()


def _patch(blob, offset, data):
    return blob[:offset] + data + blob[offset + len(data):]


def _mbjs_cases(good):
    n_params = struct.unpack_from("<I", good, 16)[0]
    return [
        ("mbjs-wrong-magic", b"MBJS" + good[4:], ["m.bin", "not an MBJS file", "b'MBJS'",
                                                  "expected b'SJBM'"]),
        ("mbjs-unknown-version", _patch(good, 4, struct.pack("<I", 9)),
         ["m.bin", "unsupported MBJS version 9; supported: 1, 2, 3"]),
        ("mbjs-truncated-header", good[:6],
         ["m.bin", "truncated MBJS header: needs 8 bytes, file has 6"]),
        ("mbjs-truncated-numel-list", good[:40],
         ["m.bin", "truncated MBJS header", f"declares {n_params} parameters", "file has 40"]),
        ("mbjs-truncated-data", good[:-1000],
         ["m.bin", "truncated MBJS data: the numel list needs"]),
        ("mbjs-absurd-layer-count", _patch(good, 8, struct.pack("<I", 2**32 - 1)),
         ["m.bin", "declares 4,294,967,295 layers", f"file has {len(good)}"]),
        ("mbjs-absurd-param-count", _patch(good, 16, struct.pack("<I", 2**31)),
         ["m.bin", "declares 2,147,483,648 parameters", f"file has {len(good)}"]),
        ("mbjs-absurd-numel", _patch(good, 20, struct.pack("<I", 2**32 - 1)),
         ["m.bin", "truncated MBJS data: the numel list needs", f"file has {len(good)}"]),
        ("mbjs-unknown-layer-type", _patch(good, 12, b"\x07"),
         ["m.bin", "layer 0 has unknown layer type id 7"]),
        ("mbjs-bad-crc", _patch(good, 200, bytes([good[200] ^ 0xFF])),
         ["m.bin", "CRC mismatch: trailer says", "file corrupt or truncated"]),
        ("mbjs-bad-trailer-magic", good[:-8] + b"XXXX" + good[-4:],
         ["m.bin", "is not the EVCR trailer magic"]),
        ("mbjs-extra-bytes", good + b"\0" * 5,
         ["m.bin", "13 unexpected bytes after the MBJS data"]),
        ("mbjs-random-bytes", np.random.default_rng(0).bytes(5000),
         ["m.bin", "not an MBJS file"]),
        ("mbjs-empty", b"", ["m.bin", "truncated MBJS header: needs 8 bytes, file has 0"]),
    ]


MBJS_IDS = ["mbjs-wrong-magic", "mbjs-unknown-version", "mbjs-truncated-header",
            "mbjs-truncated-numel-list", "mbjs-truncated-data", "mbjs-absurd-layer-count",
            "mbjs-absurd-param-count", "mbjs-absurd-numel", "mbjs-unknown-layer-type",
            "mbjs-bad-crc", "mbjs-bad-trailer-magic", "mbjs-extra-bytes", "mbjs-random-bytes",
            "mbjs-empty"]


@pytest.mark.parametrize("case_id", MBJS_IDS)
def test_bad_mbjs_is_refused_by_name(tmp_path, good_mbjs, case_id):
    _, blob, words = next(c for c in _mbjs_cases(good_mbjs) if c[0] == case_id)
    path = tmp_path / "m.bin"
    path.write_bytes(blob)
    with pytest.raises(ValueError) as e:
        mbjs.read_layout(path)
    assert_words(str(e.value), words)
    # the converter reads it the way the convert page does (a file without the magic is not
    # taken for MBJS at all: it says what it is not)
    out = tmp_path / "out"
    with pytest.raises(ValueError) as e:
        convert_host.convert(path, out, log=lambda *a: None)
    assert "m.bin" in str(e.value) and not out.exists()


def test_mbjs_crc_is_checked_against_the_data(tmp_path, good_mbjs):
    """The flipped byte is reported with both CRCs: what the trailer says, what the data gives."""
    blob = _patch(good_mbjs, 200, bytes([good_mbjs[200] ^ 0xFF]))
    path = tmp_path / "m.bin"
    path.write_bytes(blob)
    stored = struct.unpack("<I", blob[-4:])[0]
    actual = zlib.crc32(blob[:-8]) & 0xFFFFFFFF
    with pytest.raises(ValueError, match=f"trailer says {stored:08x}, data hashes to "
                                         f"{actual:08x}"):
        mbjs.read_layout(path)


# --- tokenizer.json / vocab + merges -------------------------------------------------------------

def _tok_cases():
    gpt2 = json.loads((TOKENIZERS / "gpt2.json").read_text())

    def edited(f):
        d = json.loads(json.dumps(gpt2))
        f(d)
        return json.dumps(d)

    return [
        ("tok-not-json", '{"model": {"type": "BPE", "vocab": {',
         ["tokenizer.json", "not valid JSON"]),
        ("tok-not-an-object", "[1, 2, 3]", ["tokenizer.json", "JSON object"]),
        ("tok-wordpiece", edited(lambda d: d["model"].update(type="WordPiece")),
         ["tokenizer.json", "model type 'WordPiece' is not supported (only BPE)"]),
        ("tok-unigram", edited(lambda d: d.update(model={"type": "Unigram", "vocab": []})),
         ["tokenizer.json", "model type 'Unigram' is not supported"]),
        ("tok-whitespace-pretokenizer",
         edited(lambda d: d.update(pre_tokenizer={"type": "Whitespace"})),
         ["tokenizer.json", "pre_tokenizer type 'Whitespace' is not supported"]),
        ("tok-metaspace-pretokenizer",
         edited(lambda d: d.update(pre_tokenizer={"type": "Metaspace", "replacement": "_"})),
         ["tokenizer.json", "pre_tokenizer type 'Metaspace' is not supported"]),
        ("tok-merge-unknown-token",
         edited(lambda d: d["model"]["merges"].insert(0, "Ġzzqx Ġqqzz")),
         ["tokenizer.json", "merge 0", "'Ġzzqx'", "not in the vocab"]),
        ("tok-merge-malformed", edited(lambda d: d["model"]["merges"].insert(3, "one")),
         ["tokenizer.json", "merge 3 is 'one', expected 'a b' or [a, b]"]),
        ("tok-vocab-not-object", edited(lambda d: d["model"].update(vocab=[1, 2])),
         ["tokenizer.json", "vocab must be an object"]),
        ("tok-dropout", edited(lambda d: d["model"].update(dropout=0.1)),
         ["tokenizer.json", "dropout 0.1 is not supported"]),
        ("tok-not-utf8", b"\xff\xfe{}", ["tokenizer.json", "not UTF-8"]),
    ]


TOK_IDS = ["tok-not-json", "tok-not-an-object", "tok-wordpiece", "tok-unigram",
           "tok-whitespace-pretokenizer", "tok-metaspace-pretokenizer", "tok-merge-unknown-token",
           "tok-merge-malformed", "tok-vocab-not-object", "tok-dropout", "tok-not-utf8"]


@pytest.mark.parametrize("case_id", TOK_IDS)
def test_bad_tokenizer_is_refused_by_name(tmp_path, case_id):
    _, text, words = next(c for c in _tok_cases() if c[0] == case_id)
    path = tmp_path / "tokenizer.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    with pytest.raises(TokenizerError) as e:
        Tokenizer.from_file(path)
    assert_words(str(e.value), [w.replace("tokenizer.json", str(path)) for w in words])
    if isinstance(text, str):       # the pretrain page's path: a plain ValueError, same words
        with pytest.raises(ValueError) as e:
            data.tokenizer_from_json(text, "tokenizer.json")
        assert_words(str(e.value), words)


def test_merges_txt_naming_unknown_tokens(tmp_path):
    folder = TOKENIZERS / "gpt2_folder"
    (tmp_path / "vocab.json").write_bytes((folder / "vocab.json").read_bytes())
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠzzqx Ġqqzz\n")
    with pytest.raises(TokenizerError, match="merge 0 .*'Ġzzqx'.* not in the vocab"):
        Tokenizer.from_file(tmp_path)


# --- corpora -------------------------------------------------------------------------------------

def test_corpus_binary_and_non_utf8_files_are_skipped_and_named():
    good = "def f(x):\n    return x\n" * 20
    files = [("src/a.py", good.encode()),
             ("img/logo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(200)),
             ("notes/latin1.txt", "café crème brûlée ".encode("latin-1") * 30),
             ("notes/one-bad-byte.md", good.encode() + b"\xff" + good.encode()),
             ("empty.txt", b"")]
    texts, info = data.corpus_from_files(files)
    assert texts[0] == good and len(texts) == 2
    assert texts[1] == good + "\ufffd" + good          # kept: 1 bad byte in 921
    assert info["files"] == 2 and info["skipped_count"] == 3
    assert info["skipped"] == ["img/logo.png: binary (a NUL byte at offset 8)",
                               "notes/latin1.txt: not UTF-8 text (120 invalid UTF-8 sequences, "
                               "the first at byte 3; save it as UTF-8)",
                               "empty.txt: empty"]
    assert info["notes"] == ["notes/one-bad-byte.md: 1 invalid UTF-8 sequence(s) replaced with "
                             "U+FFFD (the first at byte 460)"]
    line = data.skipped_summary(info)
    assert line.startswith("skipped 3 corpus files: img/logo.png: binary")


def test_corpus_with_nothing_usable_says_what_it_skipped():
    files = [(f"blob{i}.bin", bytes([0, 1, 2, 3]) * 10) for i in range(7)]
    with pytest.raises(ValueError) as e:
        data.corpus_from_files(files)
    msg = str(e.value)
    assert msg.startswith("no usable text in the corpus (skipped blob0.bin: binary (a NUL byte "
                          "at offset 0);")
    assert "and 2 more" in msg and "UTF-8 text files" in msg
