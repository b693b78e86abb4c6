"""AdamW on the GPU against the float64 torch-equivalent reference, plus clipping and the
non-finite skip."""
import numpy as np
import pytest

from tests.reference.adamw_numpy import adamw_step

pytestmark = pytest.mark.browser

RUN = """
import struct
from py_engine.gpu.tensor import Tensor
from py_engine.train.adamw import AdamW
P = {k: Tensor.from_bytes(device, args['shapes'][k], v) for k, v in args['params'].items()}
opt = AdamW(device, P, lr=args['lr'], betas=tuple(args['betas']), eps=1e-8,
            weight_decay=args['wd'], max_grad_norm=args['clip'])
gates = []
for step_grads in args['grads']:
    G = {k: Tensor.from_bytes(device, args['shapes'][k], v) for k, v in step_grads.items()}
    b = device.batch()
    opt.step(b, G)
    b.submit()
    gates.append(await opt.read_gate())
    for g in G.values():
        g.release()
result = {'params': {k: await t.to_bytes() for k, t in P.items()}, 'gates': gates}
opt.release()
for t in P.values():
    t.release()
"""

SHAPES = {"backbone.layers.0.mixer.in_proj.weight": (6, 5), "backbone.layers.0.mixer.A_log": (6, 4),
          "backbone.layers.0.mixer.D": (6,), "backbone.layers.0.mixer.conv1d.weight": (6, 1, 4),
          "backbone.embeddings.weight": (300, 70)}


def _run(engine, params, grads, lr=1e-2, betas=(0.9, 0.95), wd=0.1, clip=0.0):
    out = engine.run(RUN, params={k: v.astype(np.float32) for k, v in params.items()},
                     grads=[{k: g.astype(np.float32) for k, g in step.items()} for step in grads],
                     shapes={k: list(v.shape) for k, v in params.items()}, lr=lr, betas=list(betas),
                     wd=wd, clip=clip)
    return {k: np.frombuffer(v, np.float32).reshape(params[k].shape) for k, v in out["params"].items()}, out["gates"]



@pytest.fixture
def setup():
    rng = np.random.default_rng(1)
    params = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    grads = [{k: rng.standard_normal(s) * 0.1 for k, s in SHAPES.items()} for _ in range(5)]
    return params, grads


def test_adamw_matches_reference(engine, setup):
    params, grads = setup
    got, gates = _run(engine, params, grads)
    ref = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    m, v = {}, {}
    for t, g in enumerate(grads, 1):
        ref = adamw_step(ref, {k: x.astype(np.float32).astype(np.float64) for k, x in g.items()},
                         m, v, t, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for k in params:
        assert np.abs(got[k] - ref[k]).max() <= 1e-5 * max(1, np.abs(ref[k]).max()), k
    assert all(g[2] for g in gates)


def test_global_norm_clipping(engine, setup):
    params, grads = setup
    got, gates = _run(engine, params, grads[:1], clip=0.05)
    norm = np.sqrt(sum((g.astype(np.float32).astype(np.float64) ** 2).sum() for g in grads[0].values()))
    assert abs(gates[0][0] - norm) <= 1e-4 * norm
    scale = 0.05 / (norm + 1e-6)
    assert abs(gates[0][1] - scale) <= 1e-5
    ref = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    ref = adamw_step(ref, {k: x.astype(np.float32).astype(np.float64) * scale for k, x in grads[0].items()},
                     {}, {}, 1, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for k in params:
        assert np.abs(got[k] - ref[k]).max() <= 1e-5 * max(1, np.abs(ref[k]).max()), k


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_gradient_skips_the_step(engine, setup, bad):
    params, grads = setup
    poisoned = {k: g.copy() for k, g in grads[0].items()}
    poisoned["backbone.layers.0.mixer.D"][2] = bad
    got, gates = _run(engine, params, [poisoned])
    assert gates[0][2] is False
    for k in params:
        assert np.array_equal(got[k], params[k].astype(np.float32)), k   # untouched
