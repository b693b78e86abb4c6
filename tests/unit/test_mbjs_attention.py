"""MBJS attention layers (type 3) in the npm engine's AttentionBlock parameter order
(@seanhogg/builderforce-memory-engine 2026.7.14, src/model/attention_block.ts lines 308-329):
wQKV [3D, D] = q | k | v rows, bQKV, wO, bO, normWeight, next to Mamba-1 layers.

  * HF (Mamba-1 + attention, our names) -> MBJS -> HF is bit-identical, biases or none; the head
    count, which MBJS does not store, comes back from a hint;
  * npm's real reader and writer (HybridMambaModel.loadWeights / exportWeights under node, a
    memory-backed GPUDevice as in tests/unit/test_mbjs.py) load our file and write it back byte
    for byte, listing exactly our parameter names and numels; a file npm wrote from scratch
    goes through HF and back to the same bytes;
  * what does not map is refused by name (grouped-query heads, heads x head_dim != d_model,
    RoPE, npm's hasFfn FFN, a missing head count, attention next to Mamba-3, MLP layers).
The engine running such a file: tests/unit/test_mbjs_attention_native.py.
"""
import json
import shutil
import subprocess

import numpy as np
import pytest
from safetensors.numpy import load_file

from py_engine.io import hf_names, mbjs
from py_engine.models.config import MambaConfig
from tests.conftest import REPO
from tools import convert_host
from tools.init_weights import init_weights
from tests.unit.npm_fake_device import FAKE_DEVICE_JS

NPM = REPO / "node_modules" / "@seanhogg" / "builderforce-memory-engine"
SCHEDULE = ["mamba1", "attention", "mamba1"]


def _cfg(bias=True, **kw):
    d = dict(model_type="mamba", hidden_size=32, num_hidden_layers=3, vocab_size=64,
             state_size=8, conv_kernel=4, layers=SCHEDULE, attention_heads=4,
             attention_kv_heads=4, attention_head_dim=8, attention_qkv_bias=bias,
             attention_out_bias=bias)
    d.update(kw)
    return MambaConfig(**d)


def _model(folder, bias=True, seed=1):
    """An HF folder (our names) of a Mamba-1 + attention + Mamba-1 model; nonzero biases."""
    cfg = _cfg(bias)
    w = init_weights(cfg, seed)
    rng = np.random.RandomState(seed)
    for name in w:
        if name.endswith(("_proj.bias",)) and ".layers.1." in name:
            w[name] = rng.normal(0, 0.1, w[name].shape).astype(np.float32)
    cfg.rescale_prenorm_residual = False
    convert_host.write_hf(str(folder), cfg, w, "F32")
    return cfg, w


@pytest.mark.parametrize("bias", [True, False])
def test_hf_to_mbjs_to_hf_is_bit_identical(tmp_path, bias):
    cfg, w = _model(tmp_path / "hf", bias)
    log = []
    convert_host.convert(tmp_path / "hf", tmp_path / "m.bin", log=log.append)
    assert any("MBJS layer type 3 in the npm AttentionBlock's parameter order" in n for n in log)
    layout = mbjs.read_layout(tmp_path / "m.bin")
    assert layout.layer_types == SCHEDULE
    assert layout.numels[1 + 13:1 + 13 + 5] == [3 * 32 * 32, 3 * 32, 32 * 32, 32, 32]
    # wQKV is q_proj, k_proj, v_proj stacked by rows; bQKV their biases (zeros without)
    raw = (tmp_path / "m.bin").read_bytes()
    at = lambda k: np.frombuffer(raw, "<f4", layout.numels[k], layout.offsets[k])  # noqa: E731
    p = "backbone.layers.1.mixer."
    wqkv = at(14).reshape(96, 32)
    assert np.array_equal(wqkv, np.concatenate([w[p + f"{r}_proj.weight"] for r in "qkv"]))
    bqkv = at(15)
    assert np.array_equal(bqkv, np.concatenate([w[p + f"{r}_proj.bias"] for r in "qkv"])
                          if bias else np.zeros(96, np.float32))
    # back: without the head count it is refused by name; with it, the same tensors
    with pytest.raises(ValueError, match="MBJS does not store its head count: give "
                                         "attention_heads"):
        convert_host.convert(tmp_path / "m.bin", tmp_path / "x", log=lambda *_: None)
    log = []
    back = convert_host.convert(tmp_path / "m.bin", tmp_path / "back",
                                hints={"attention_heads": 4}, log=log.append)
    assert back.layers == SCHEDULE and back.attention_heads == 4
    assert (back.attention_qkv_bias, back.attention_out_bias) == (bias, bias)
    a = load_file(tmp_path / "hf" / "model.safetensors")
    b = load_file(tmp_path / "back" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    conf = json.loads((tmp_path / "back" / "config.json").read_text())
    assert conf["layers"] == SCHEDULE and conf["attention_kv_heads"] == 4
    assert any("head count is not in the file" in n for n in log)
    # the CLI spells the hint --attention-heads
    from tools.cli import main as cli
    assert cli(["convert", str(tmp_path / "m.bin"), str(tmp_path / "cli"),
                "--attention-heads", "4"]) == 0
    c = load_file(tmp_path / "cli" / "model.safetensors")
    assert all(np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("change, words", [
    (dict(attention_kv_heads=2), "2 key/value heads for 4 query heads \\(grouped-query\\)"),
    (dict(attention_head_dim=4), "4 heads x head_dim 4 = 16, and the npm engine's "
                                 "AttentionBlock needs heads x head_dim = d_model \\(32\\)"),
    (dict(attention_rope=True), "rotary position embedding"),
    (dict(layers=["mamba1", "attention", "mlp"], mlp_intermediate_size=64),
     "layer 2 is 'mlp': MBJS conversion covers Mamba-1, Mamba-3 and attention"),
    (dict(model_type="mamba3", layers=["mamba3", "attention", "mamba3"], head_dim=16,
          num_heads=4, expand=2), "attention in a Mamba-3 model"),
])
def test_what_does_not_map_is_refused_by_name(change, words):
    with pytest.raises(ValueError, match=words):
        hf_names.mbjs_plan(_cfg(**change))


def test_mamba_ssm_gqa_fixture_is_refused_by_name(tmp_path):
    src = REPO / "tests" / "fixtures" / "mamba_ssm" / "m1-attn-untied"   # 2 heads, 1 KV head
    with pytest.raises(ValueError, match="layer 0 is attention with 1 key/value heads for 2 query "
                                         "heads"):
        convert_host.convert(src, tmp_path / "m.bin", drop_untied_head=True, log=lambda *_: None)


def _file(layer_types, layer_numels, D=8, V=10):
    numels = [V * D] + [n for ns in layer_numels for n in ns] + [D]
    head = mbjs.build_header(numels, layer_types, 2)
    size = len(head) + 4 * sum(numels)
    return mbjs.parse_header(head + b"\0" * (size - len(head)), size, "a.bin")


def test_reading_refuses_what_does_not_map_by_name():
    D = 8
    attn5 = [3 * D * D, 3 * D, D * D, D, D]
    ffn = attn5 + [4 * D * D, 4 * D, 4 * D * D, D]
    with pytest.raises(ValueError, match="a.bin: layer 0 is an AttentionBlock with hasFfn "
                                         r"\(9 parameters"):
        mbjs.infer_config(_file(["attention"], [ffn]))
    with pytest.raises(ValueError, match="give attention_heads"):
        mbjs.infer_config(_file(["attention"], [attn5]))
    with pytest.raises(ValueError, match="attention_heads 3 does not divide d_model 8"):
        mbjs.infer_config(_file(["attention"], [attn5]), {"attention_heads": 3})
    with pytest.raises(ValueError, match="hint attention_kv_heads=1 disagrees"):
        mbjs.infer_config(_file(["attention"], [attn5]),
                          {"attention_heads": 2, "attention_kv_heads": 1})
    with pytest.raises(ValueError, match="numel mismatch: layer 0 \\(attention\\) wO has 65"):
        mbjs.infer_config(_file(["attention"], [[3 * D * D, 3 * D, D * D + 1, D, D]]),
                          {"attention_heads": 2})
    cfg = mbjs.infer_config(_file(["attention"], [attn5]), {"attention_heads": 2})
    assert (cfg.layers, cfg.attention_heads, cfg.attention_kv_heads,
            cfg.attention_head_dim) == (["attention"], 2, 2, 4)


# --- the npm engine's own reader and writer ---------------------------------------------------

NODE_SCRIPT = r"""
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [pkg, cfgJson, inPath, outPath, freshPath] = process.argv.slice(2);
const { HybridMambaModel } = await import(pathToFileURL(`${pkg}/dist/model/mamba_model.js`).href);
""" + FAKE_DEVICE_JS + r"""const cfg = JSON.parse(cfgJson);
const fresh = new HybridMambaModel(device, { ...cfg, seed: 99 });
writeFileSync(freshPath, Buffer.from(await fresh.exportWeights()));
const model = new HybridMambaModel(device, cfg);
const b = readFileSync(inPath);
await model.loadWeights(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
writeFileSync(outPath, Buffer.from(await model.exportWeights()));
console.log(JSON.stringify(model.parameters().map(p => [p.name, p.numel])));
"""


def test_npm_engine_reads_ours_and_we_read_its(tmp_path):
    if not (NPM / "dist/model/mamba_model.js").is_file() or shutil.which("node") is None:
        pytest.fail("needs node and @seanhogg/builderforce-memory-engine, a devDependency that "
                    "`make test` installs with `npm ci`")
    cfg, _ = _model(tmp_path / "hf", bias=True)
    ours = tmp_path / "ours.bin"
    convert_host.convert(tmp_path / "hf", ours, log=lambda *_: None)
    script = tmp_path / "interop.mjs"
    script.write_text(NODE_SCRIPT)
    # npm's Mamba1Block: dt_rank = ceil(D/16), inner = expand * D; its attention: nHeads
    js_cfg = {"vocabSize": 64, "dModel": 32, "numLayers": 3, "dState": 8, "dConv": 4,
              "expand": 2, "nHeads": 4, "layers": [{"type": t} for t in SCHEDULE]}
    out, fresh = tmp_path / "npm_out.bin", tmp_path / "npm_fresh.bin"
    res = subprocess.run(["node", str(script), str(NPM), json.dumps(js_cfg), str(ours), str(out),
                          str(fresh)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    names = [tuple(x) for x in json.loads(res.stdout)]
    assert names == [(m, int(np.prod(s))) for m, s, _, _, _ in hf_names.mbjs_plan(cfg)]
    assert out.read_bytes() == ours.read_bytes()        # loaded and written back byte for byte
    # a file npm initialised itself: through HF (with the head count) and back, the same bytes
    assert mbjs.read_layout(fresh).layer_types == SCHEDULE
    back = convert_host.convert(fresh, tmp_path / "npm_hf", hints={"attention_heads": 4},
                                log=lambda *_: None)
    assert back.layers == SCHEDULE and back.attention_head_dim == 8
    convert_host.convert(tmp_path / "npm_hf", tmp_path / "again.bin", log=lambda *_: None)
    assert (tmp_path / "again.bin").read_bytes() == fresh.read_bytes()
