"""MBJS: header layout, dimension inference, defensive reading, and interop with npm's engine.

Facts checked against @seanhogg/builderforce-memory-engine 2026.7.14 (src/model/mamba_model.ts,
mamba1_block.ts, kernels/conv1d.ts, utils/crc32.ts) and, where node + the package are
present, by running its own loadWeights/exportWeights (test_npm_engine_*):
  - magic is u32 0x4D424A53 little-endian: the file starts with b"SJBM"            (true)
  - order: embedding [V*D], per layer params, final norm [D]; head tied, not stored (true)
  - Mamba-1 layer: wInProj [2I,D], bInProj, wConv [I,K], bConv, wXProj [R+2N,I], bXProj,
    wDtProj [I,R], bDtProj, A_log [I,N], D_vec [I], wOutProj [D,I], bOutProj, normWeight [D]
                                                                                   (true)
  - conv applies w[c,k] to x[t-k]: PyTorch's taps reversed                           (true)
  - exportWeights appends "EVCR" + CRC-32 of everything before it                    (true)
  - v3 = the v2 header with f16 data                                                 (true)
"""
import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from py_engine.io import mbjs
from py_engine.models.config import MambaConfig
from tools import convert_host
from tools.init_weights import init_weights
from tests.unit.npm_fake_device import FAKE_DEVICE_JS

CFG = MambaConfig(vocab_size=48, hidden_size=16, num_hidden_layers=3, state_size=4,
                  conv_kernel=3, time_step_rank=2)


def _write(tmp_path, cfg=CFG, dtype="f32", version=None, name="m.bin"):
    w = init_weights(cfg, seed=1)
    path = tmp_path / name
    convert_host.write_mbjs(path, cfg, w.__getitem__, dtype, version)
    return path, w


@pytest.mark.parametrize("version, dtype", [(1, "f32"), (2, "f32"), (3, "f16")])
def test_header_round_trip_and_inference(tmp_path, version, dtype):
    path, _ = _write(tmp_path, dtype=dtype, version=version)
    blob = path.read_bytes()
    assert blob[:4] == b"SJBM" and struct.unpack_from("<I", blob, 4)[0] == version
    layout = mbjs.read_layout(path)
    assert layout.version == version and layout.dtype == dtype and layout.has_trailer
    assert layout.header_size % 4 == 0
    assert layout.layer_types == ([] if version == 1 else ["mamba1"] * 3)
    assert blob[-8:-4] == b"EVCR"
    assert struct.unpack("<I", blob[-4:])[0] == zlib.crc32(blob[:-8])
    cfg = mbjs.infer_config(layout)
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "state_size", "conv_kernel",
                "expand", "time_step_rank"):
        assert getattr(cfg, key) == getattr(CFG, key), key


def test_layer_type_padding():
    for n in range(0, 9):
        head = mbjs.build_header([1, 1], ["mamba1"] * n, 2)
        assert len(head) == 12 + (n + 3) // 4 * 4 + 4 + 8
        layout = mbjs.parse_header(head + b"\0" * 8, len(head) + 8)
        assert layout.layer_types == ["mamba1"] * n


def test_hints_fill_and_cross_check(tmp_path):
    path, _ = _write(tmp_path)
    layout = mbjs.read_layout(path)
    cfg = mbjs.infer_config(layout, {"layer_norm_epsilon": 1e-6, "vocab_size": 48})
    assert cfg.layer_norm_epsilon == 1e-6
    with pytest.raises(ValueError, match="hint state_size=8 disagrees with the file, which "
                                         "implies state_size=4"):
        mbjs.infer_config(layout, {"state_size": 8})


def _tamper(path, offset, data):
    blob = bytearray(path.read_bytes())
    blob[offset:offset + len(data)] = data
    path.write_bytes(bytes(blob))


def test_wrong_magic(tmp_path):
    path, _ = _write(tmp_path)
    _tamper(path, 0, b"MBJS")
    with pytest.raises(ValueError, match=r"m.bin: not an MBJS file \(first bytes b'MBJS', "
                                         r"expected b'SJBM'\)"):
        mbjs.read_layout(path)


def test_unknown_version(tmp_path):
    path, _ = _write(tmp_path)
    _tamper(path, 4, struct.pack("<I", 9))
    with pytest.raises(ValueError, match="m.bin: unsupported MBJS version 9; supported: 1, 2, 3"):
        mbjs.read_layout(path)


def test_truncated_data_and_header(tmp_path):
    path, _ = _write(tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[:-100])
    with pytest.raises(ValueError, match="m.bin: truncated MBJS data: the numel list needs"):
        mbjs.read_layout(path)
    path.write_bytes(blob[:20])
    with pytest.raises(ValueError, match="m.bin: truncated MBJS header"):
        mbjs.read_layout(path)


def test_crc_mismatch(tmp_path):
    path, _ = _write(tmp_path)
    layout = mbjs.read_layout(path)
    _tamper(path, layout.header_size + 5, b"\x7f")
    with pytest.raises(ValueError, match="m.bin: CRC mismatch: trailer says"):
        mbjs.read_layout(path)
    assert mbjs.read_layout(path, verify_crc=False).has_trailer


def test_trailing_garbage_and_bad_trailer(tmp_path):
    path, _ = _write(tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob + b"xyz")
    with pytest.raises(ValueError, match="11 unexpected bytes after the MBJS data"):
        mbjs.read_layout(path)
    path.write_bytes(blob[:-8] + b"JUNKJUNK")
    with pytest.raises(ValueError, match="is not the EVCR trailer magic"):
        mbjs.read_layout(path)
    path.write_bytes(blob[:-8])           # no trailer at all: legacy files are fine
    assert not mbjs.read_layout(path).has_trailer


def test_numel_mismatch(tmp_path):
    path, _ = _write(tmp_path)
    layout = mbjs.read_layout(path)
    numels = list(layout.numels)
    numels[1 + 9] += 1                    # layer0 D_vec one too long
    numels[1 + 10] -= 1                   # keep the total (and so the file size) unchanged
    head = mbjs.build_header(numels, layout.layer_types, 2)
    blob = path.read_bytes()
    path.write_bytes(head + blob[layout.header_size:-8])
    with pytest.raises(ValueError, match="m.bin: numel mismatch: layer 0 D_vec has 33, "
                                         "expected 32"):
        mbjs.infer_config(mbjs.read_layout(path))


def test_unknown_layer_type_and_v1_count():
    head = mbjs.build_header([1, 1], ["mamba1"], 2)
    bad = bytearray(head)
    bad[12] = 7
    with pytest.raises(ValueError, match="x.bin: layer 0 has unknown layer type id 7"):
        mbjs.parse_header(bytes(bad) + b"\0" * 8, len(bad) + 8, "x.bin")
    head = mbjs.build_header([4] * 5, None, 1)
    layout = mbjs.parse_header(head + b"\0" * 80, len(head) + 80, "v1.bin")
    with pytest.raises(ValueError, match="v1.bin: MBJS v1 with 5 parameters is not 2 \\+ 13"):
        mbjs.infer_config(layout)


def test_npm_mamba3_layers_are_refused_by_name():
    # the npm engine's Mamba3Block (layer type 2): 9 parameters, complex B/C conv channels
    D, I, H, G, N, K = 8, 16, 2, 1, 4, 4
    conv = I + 4 * G * N
    mamba3 = [(I + 4 * G * N + H) * D, conv * K, conv, H, H, H, D * I, I, D]
    numels = [10 * D] + mamba3 + [D]
    head = mbjs.build_header(numels, ["npm-mamba3"], 2)
    assert head[12] == 2                  # npm's id, read back under a name that says whose
    layout = mbjs.parse_header(head + b"\0" * 4 * sum(numels), len(head) + 4 * sum(numels),
                               "m3.bin")
    assert layout.layer_types == ["npm-mamba3"]
    for hints in ({}, {"n_groups": 1}):
        with pytest.raises(ValueError, match="m3.bin: layer 0 is the npm engine's own "
                                             "\"Mamba-3\" block \\(MBJS layer type 2"):
            mbjs.infer_config(layout, hints)


def test_npm_mamba2_layers_are_refused_with_the_reason():
    # the npm engine's Mamba2Block: in_proj [x | B | C | dt], no gate z
    D, I, H, G, N, K = 8, 16, 2, 1, 4, 4
    conv = I + 2 * G * N
    mamba2 = [(I + 2 * G * N + H) * D, conv * K, conv, H, H, H, D * I, I, D]
    numels = [10 * D] + mamba2 + [D]
    head = mbjs.build_header(numels, ["mamba2"], 2)
    layout = mbjs.parse_header(head + b"\0" * 4 * sum(numels), len(head) + 4 * sum(numels),
                               "m2.bin")
    with pytest.raises(ValueError, match="m2.bin: layer 0 is the npm engine's Mamba-2 block, "
                                         "which has no gate z"):
        mbjs.infer_config(layout, {"n_groups": 1})


def test_attention_layers_name_the_hint():
    D = 8
    attn5, attn9 = [3 * D * D, 3 * D, D * D, D, D], [3 * D * D, 3 * D, D * D, D, D, 1, 1, 1, 1]
    numels = [10 * D] + attn5 + attn9[:4] + [D]      # 9 layer params: 5+? or 9+? -> neither
    head = mbjs.build_header(numels, ["attention", "attention"], 2)
    size = len(head) + 4 * sum(numels)
    with pytest.raises(ValueError, match="give the hint attention_ffn=true or false"):
        mbjs.infer_config(mbjs.parse_header(head + b"\0" * (size - len(head)), size, "a.bin"))


# --- interop with npm's engine -------------------------------------------------------

def _npm_package():
    for cand in (os.environ.get("MAMBAWEB_MBJS_NPM"),
                 Path(__file__).resolve().parents[2] / "node_modules/@seanhogg/builderforce-memory-engine"):
        if cand and (Path(cand) / "dist/model/mamba_model.js").is_file():
            return Path(cand).resolve()
    return None


# Runs npm's real MBJS reader/writer (HybridMambaModel.loadWeights / exportWeights) under
# node with a memory-backed stand-in for GPUDevice: buffers are ArrayBuffers, writeBuffer and
# copyBufferToBuffer copy bytes, kernels are no-ops. Neither function needs a real GPU for
# the bytes; model construction only compiles (here: ignores) pipelines.
NODE_SCRIPT = r"""
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [pkg, cfgJson, inPath, outPath, freshPath, fp16] = process.argv.slice(2);
const { MambaModel } = await import(pathToFileURL(`${pkg}/dist/model/mamba_model.js`).href);
""" + FAKE_DEVICE_JS + r"""const cfg = JSON.parse(cfgJson);
const opts = { fp16: fp16 === "1" };
const fresh = new MambaModel(device, { ...cfg, seed: 1234 });
writeFileSync(freshPath, Buffer.from(await fresh.exportWeights(opts)));
const model = new MambaModel(device, cfg);
const b = readFileSync(inPath);
await model.loadWeights(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
writeFileSync(outPath, Buffer.from(await model.exportWeights(opts)));
console.log(JSON.stringify(model.parameters().map(p => [p.name, p.numel])));
"""


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_npm_engine_reads_ours_and_we_read_its(tmp_path, dtype):
    pkg = _npm_package()
    if pkg is None or shutil.which("node") is None:
        pytest.fail("needs node and @seanhogg/builderforce-memory-engine, a devDependency that "
                    "`make test` installs with `npm ci` (or set MAMBAWEB_MBJS_NPM to an unpacked "
                    "`npm pack` of it)")
    # npm's Mamba1Block derives dt_rank = ceil(D/16) and I = expand*D: match that
    cfg = MambaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, state_size=8,
                      conv_kernel=4)
    ours, _ = _write(tmp_path, cfg, dtype)
    script = tmp_path / "interop.mjs"
    script.write_text(NODE_SCRIPT)
    js_cfg = {"vocabSize": 40, "dModel": 32, "numLayers": 2, "dState": 8, "dConv": 4,
              "expand": 2}
    out, fresh = tmp_path / "npm_out.bin", tmp_path / "npm_fresh.bin"
    res = subprocess.run(["node", str(script), str(pkg), json.dumps(js_cfg), str(ours),
                          str(out), str(fresh), "1" if dtype == "f16" else "0"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    names = json.loads(res.stdout)
    from py_engine.io.hf_names import mbjs_plan
    assert [(n, s) for n, s in names] == [(m, int(np.prod(shape)))
                                          for m, shape, _, _, _ in mbjs_plan(cfg)]
    # npm loaded our file and wrote it back byte for byte, CRC trailer included
    assert out.read_bytes() == ours.read_bytes()
    # and we read a file npm wrote from scratch, trailer and all ...
    layout = mbjs.read_layout(fresh)
    assert layout.has_trailer and layout.version == (3 if dtype == "f16" else 2)
    got = mbjs.infer_config(layout)
    assert (got.vocab_size, got.hidden_size, got.num_hidden_layers, got.state_size,
            got.conv_kernel, got.time_step_rank) == (40, 32, 2, 8, 4, 2)
    # ... and through HF back to MBJS reproduces it exactly
    convert_host.convert(fresh, tmp_path / "hf", log=lambda *_: None)
    convert_host.convert(tmp_path / "hf", tmp_path / "again.bin", dtype=dtype,
                         log=lambda *_: None)
    assert (tmp_path / "again.bin").read_bytes() == fresh.read_bytes()
