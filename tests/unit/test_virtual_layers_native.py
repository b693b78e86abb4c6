"""Virtual layers on the engine (native backend: wgpu-py, the tab's WGSL): a model whose
logical layers reuse physical ones equals the unrolled model with copied weights -- logits on
the parallel path, logits and every layer's state on the step path, and gradients (a shared
layer's gradient is the sum of its copies') -- for a Mamba-2 schedule and a hybrid one whose
attention layer is used twice (two KV caches); transformers loads `mambaweb unroll`'s folder
with the engine's logits; a tiny virtual model trains with falling loss."""
import json
import subprocess
import sys

import numpy as np
import pytest

from py_engine.io import gpu_layout
from py_engine.io.unroll import unrolled
from py_engine.models.schedule import logical_layers
from tests.conftest import REPO

from tests.native_support import engine, native as pytestmark  # noqa: E402,F401


RUN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.train.trainer import Trainer
out = {}
for key in ('virtual', 'unrolled'):
    model = await load_model_local(device, args[key])
    ids = args['ids']
    logits = await model.logits(ids)
    state = model.new_state(1, max_tokens=64)
    step = await model.step_logits(ids, state)
    snap = await state.to_bytes()
    state.release()
    tr = Trainer(model, lr=1e-3, weight_decay=0.0, max_grad_norm=0.0)
    grads, loss = await tr.gradients(args['ids2'], args['ids2'], 2, len(args['ids2']) // 2)
    tr.release()
    model.release()
    out[key] = {'logits': logits, 'step': step, 'state': snap, 'grads': grads, 'loss': loss}
result = out
"""


def _write_pair(tmp_path, cfg, seed=3):
    """The compact (virtual) folder and its unrolled copy, weights from the one initialiser."""
    from tools import convert_host
    from tools.init_weights import init_weights
    cfg.rescale_prenorm_residual = False
    w = init_weights(cfg, seed)
    rng = np.random.default_rng(seed)
    for name in w:     # norms and D away from their constant init, so a wrong copy shows
        if name.endswith(("norm.weight", ".D")):
            w[name] = (w[name] + 0.3 * rng.standard_normal(w[name].shape)).astype(np.float32)
    compact, flat = tmp_path / "virtual", tmp_path / "unrolled"
    convert_host.write_hf(compact, cfg, w)
    cfg2, names = unrolled(cfg)
    convert_host.write_hf(flat, cfg2, {n: w[s] for n, s in names.items()})
    return compact, flat, cfg2


def _f32(b):
    return np.frombuffer(b, np.float32)


@pytest.mark.parametrize("family,pattern,virtual", [
    ("mamba2", None, "5:stretched"),          # 0 0 0 1 1
    ("hybrid", "M*", "0,1,1,0,1"),            # attention used three times: three KV caches
])
def test_virtual_equals_unrolled_copies(engine, tmp_path, family, pattern, virtual):
    from py_engine.train.init import preset_config
    cfg = preset_config("tiny", family=family, pattern=pattern, virtual=virtual,
                        num_hidden_layers=2, vocab_size=256)
    compact, flat, cfg2 = _write_pair(tmp_path, cfg)
    stored = json.loads((compact / "config.json").read_text())
    assert stored["mambaweb_virtual_layers"] == cfg.virtual_layers
    from safetensors import safe_open
    with safe_open(str(compact / "model.safetensors"), "np") as st:   # physical layers once
        layer_ids = {int(k.split(".")[2]) for k in st.keys() if ".layers." in k}
    assert layer_ids == {0, 1}
    ids = [5, 17, 200, 3, 3, 99, 42, 7, 250, 1, 64, 128]
    ids2 = ids + [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12]
    out = engine.run(RUN, virtual=str(compact), unrolled=str(flat), ids=ids, ids2=ids2)
    a, b = out["virtual"], out["unrolled"]
    for k in ("logits", "step"):
        np.testing.assert_allclose(_f32(a[k]), _f32(b[k]), rtol=0, atol=1e-5, err_msg=k)
    np.testing.assert_allclose(_f32(a["logits"]), _f32(a["step"]), rtol=0, atol=2e-4)
    # states: same layout (one per logical layer), same values
    n = int.from_bytes(a["state"][4:8], "little")
    assert a["state"][:8 + n] == b["state"][:8 + n]
    np.testing.assert_allclose(_f32(a["state"][8 + n:]), _f32(b["state"][8 + n:]),
                               rtol=0, atol=1e-5)
    assert abs(a["loss"] - b["loss"]) <= 1e-6 * max(1.0, abs(b["loss"]))
    order = logical_layers(cfg)
    summed = {}
    for piece, g in b["grads"].items():
        i = piece.split(".")[2] if piece.startswith("backbone.layers.") else None
        src = piece if i is None else piece.replace(f"layers.{i}.", f"layers.{order[int(i)]}.", 1)
        summed[src] = summed.get(src, 0) + _f32(g).astype(np.float64)
    assert set(summed) == set(a["grads"])
    for piece, g in a["grads"].items():
        ref = summed[piece]
        scale = max(np.abs(ref).max(), 1e-6)
        assert np.abs(_f32(g) - ref).max() <= 1e-4 * scale, piece
    assert cfg2.num_hidden_layers == len(order)


ENGINE_LOGITS = """
from py_engine.io.hf_loader import load_model_local
model = await load_model_local(device, args['folder'])
result = await model.logits(args['ids'])
model.release()
"""


def test_unroll_cli_folder_loads_in_transformers(engine, tmp_path):
    """`mambaweb unroll` of a compact Mamba-2 checkpoint: transformers' logits on the unrolled
    folder equal the engine's on the compact one."""
    import torch
    from transformers import AutoModelForCausalLM
    src, dst = tmp_path / "v", tmp_path / "u"
    run = lambda *a: subprocess.run([sys.executable, "-m", "tools.cli", *a], cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("generate-bin", "--family", "mamba2", "--size", "tiny", "--n-layers", "2",
            "--virtual-layers", "4:cyclic", "--seed", "5", "--out", str(src))
    assert r.returncode == 0, r.stderr
    r = run("unroll", str(src), str(dst))
    assert r.returncode == 0, r.stderr
    assert "4 logical layers over 2 physical" in r.stdout
    ids = [1, 2, 3, 4, 5, 6, 7, 8, 40, 41, 42]
    ours = _f32(engine.run(ENGINE_LOGITS, folder=str(src), ids=ids)).reshape(len(ids), -1)
    m = AutoModelForCausalLM.from_pretrained(str(dst)).eval()
    assert m.config.num_hidden_layers == 4
    with torch.no_grad():
        ref = m(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    # train-torch refuses the compact folder by name and says what to run
    r = run("train-torch", "--model", str(src), "--data", str(src / "config.json"),
            "--out", str(tmp_path / "t"), "--steps", "1")
    assert r.returncode != 0 and "mambaweb unroll" in r.stderr


TRAIN = """
from py_engine.train.init import preset_config, init_pieces
from py_engine.models.mamba import MambaModel
from py_engine.train.trainer import Trainer
cfg = preset_config('tiny', family=args['family'], vocab_size=256, **args['opts'])
model = MambaModel(device, cfg, init_pieces(device, cfg, seed=0))
tr = Trainer(model, lr=3e-3, weight_decay=0.0, warmup=0)
text = list(b'def add(a, b):\\n    return a + b\\n' * 8)
losses = []
for s in range(args['steps']):
    off = (s * 5) % 64
    ids = text[off:off + 32] + text[off + 64:off + 96]
    r = await tr.train_step([(ids, ids)], 2, 32)
    losses.append(r['loss'])
result = {'losses': losses, 'params': tr.trained_numel()}
tr.release()
model.release()
"""


def test_tiny_virtual_model_trains(engine):
    out = engine.run(TRAIN, family="mamba2", opts={"virtual": "6:cyclic"}, steps=12)
    losses = out["losses"]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
