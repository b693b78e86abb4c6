"""An MBJS file with attention layers (type 3, the npm engine's AttentionBlock order; see
tests/unit/test_mbjs_attention.py) runs in the engine (native backend: wgpu-py, the same WGSL as
the tab) as the attention those weights define. Skips, saying why, only without any
Vulkan/Metal/D3D12 adapter."""
import numpy as np
from safetensors.numpy import load_file

from py_engine.io import mbjs
from tests.native_support import engine, native as pytestmark  # noqa: F401
from tests.unit.test_mbjs_attention import SCHEDULE, _model
from tools import convert_host

LOGITS = """
from py_engine.io.hf_loader import load_model_local
model = await load_model_local(device, args['src'])
result = {'logits': await model.logits(args['ids']), 'layers': model.cfg.layers}
model.release()
"""


def test_engine_runs_the_mbjs_attention_as_mamba_ssm_mha(engine, tmp_path):
    """The engine on the MBJS -> HF folder equals the float64 mamba_ssm re-implementation given
    the MBJS tensors themselves: wQKV as MHA's fused in_proj (rows q | k | v), bQKV its bias,
    wO / bO out_proj (tools/make_mamba_ssm_hybrid_fixtures.forward)."""
    import torch
    from tools.make_mamba_ssm_hybrid_fixtures import forward
    _model(tmp_path / "hf", bias=True, seed=4)
    convert_host.convert(tmp_path / "hf", tmp_path / "m.bin", log=lambda *_: None)
    convert_host.convert(tmp_path / "m.bin", tmp_path / "back", hints={"attention_heads": 4},
                         log=lambda *_: None)
    layout = mbjs.read_layout(tmp_path / "m.bin")
    raw = (tmp_path / "m.bin").read_bytes()
    at = lambda k: np.frombuffer(raw, "<f4", layout.numels[k], layout.offsets[k])  # noqa: E731
    hf = load_file(tmp_path / "back" / "model.safetensors")
    W = {k: torch.from_numpy(v.astype(np.float64)) for k, v in hf.items()
         if ".layers.1." not in k}                 # the Mamba-1 layers as HF (= mamba_ssm) names
    D = 32
    t = lambda a, *s: torch.from_numpy(a.astype(np.float64).reshape(*s))  # noqa: E731
    W["backbone.embedding.weight"] = t(at(0), 64, D)
    W["lm_head.weight"] = W["backbone.embedding.weight"]
    p = "backbone.layers.1."
    W[p + "mixer.in_proj.weight"] = t(at(14), 3 * D, D)
    W[p + "mixer.in_proj.bias"] = t(at(15), 3 * D)
    W[p + "mixer.out_proj.weight"] = t(at(16), D, D)
    W[p + "mixer.out_proj.bias"] = t(at(17), D)
    W[p + "norm.weight"] = t(at(18), D)
    conf = {"d_model": D, "n_layer": 3, "d_intermediate": 0, "vocab_size": 64,
            "ssm_cfg": {"layer": "Mamba1", "d_state": 8, "d_conv": 4, "expand": 2, "dt_rank": 2},
            "attn_layer_idx": [1], "attn_cfg": {"num_heads": 4, "num_heads_kv": 4, "head_dim": 8,
                                                "qkv_proj_bias": True, "out_proj_bias": True,
                                                "causal": True}}
    ids = [(5 * i + 2) % 64 for i in range(37)]
    with torch.no_grad():
        ref, _ = forward(conf, W, torch.tensor(ids))
    got = engine.run(LOGITS, src=str(tmp_path / "back"), ids=ids)
    assert got["layers"] == SCHEDULE
    logits = np.frombuffer(got["logits"], np.float32).reshape(len(ids), -1)
    ref = ref.numpy()
    assert np.abs(ref).max() > 0.05
    assert np.abs(logits - ref).max() <= 1e-4


EXPORT = """
from py_engine.io.hf_loader import load_model_local
from py_engine.train import checkpoint as ckpt
model = await load_model_local(device, args['src'])
result = await ckpt.parts_bytes(await ckpt.mbjs_parts(model), crc_trailer=True)
model.release()
"""


def test_tab_export_writes_the_host_converters_bytes(engine, tmp_path):
    """The tab's MBJS download (py_engine/train/checkpoint.mbjs_parts, the pretrain page's) of a
    loaded Mamba-1 + attention model is the host converter's file, byte for byte."""
    _model(tmp_path / "hf", bias=True, seed=6)
    convert_host.convert(tmp_path / "hf", tmp_path / "m.bin", log=lambda *_: None)
    assert engine.run(EXPORT, src=str(tmp_path / "hf")) == (tmp_path / "m.bin").read_bytes()
