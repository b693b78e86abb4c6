"""attention_step's split walk over a long KV cache as a real GPU takes it (py_engine/ops/
attention.step_span: caches of GPU_SPLIT_MIN slots or more split every GPU_SPLIT_SLOTS slots, for
speed; software adapters split only for the loop-pass budget), forced on the native backend here:
the output against float64 numpy and against the one-split walk, for sequences whose position
sits before, on and after split boundaries, GQA 2:1, and the new k/v written into the cache.
"""
import numpy as np
import pytest

from py_engine.ops import attention as A
from tests.browser.kernel_harness import d64, rel_err, runner
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")

gpu = runner("import py_engine.ops.attention as A")
rng = np.random.default_rng(1024)

CODE = """
dev.force_step_splits = args['split']
n0 = b.dispatch_count
o = A.attention_step(b, T['q'], T['k'], T['v'], T['ck'], T['cv'], T['pos'], n_heads=4,
                     n_kv_heads=2)
info['dispatches'] = b.dispatch_count - n0
dev.force_step_splits = None
outs.update(o=o, ck=T['ck'], cv=T['cv'])
"""


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


def test_the_split_rule():
    class Dev:
        info = {"is_fallback": False}
    gpu_dev, soft = Dev(), Dev()
    soft.info = {"is_fallback": True}
    assert A.step_span(gpu_dev, A.GPU_SPLIT_MIN - 1, 64) >= A.GPU_SPLIT_MIN   # short: one split
    assert A.step_span(gpu_dev, A.GPU_SPLIT_MIN, 64) == A.GPU_SPLIT_SLOTS
    assert A.step_span(soft, 4096, 64) > 4097                   # software: the budget's only
    soft.force_step_splits = True
    assert A.step_span(soft, 4096, 64) == A.GPU_SPLIT_SLOTS


def test_split_walk_equals_float64_and_the_one_split_walk(engine):
    H, KVH, Dh, Tmax = 4, 2, 64, 1100
    positions = [255, 256, 257, 1099, 3]          # around split edges, the last slot, a short one
    Bsz = len(positions)
    ck = rng.standard_normal((Bsz, KVH, Tmax, Dh)).astype(np.float32)
    cv = rng.standard_normal((Bsz, KVH, Tmax, Dh)).astype(np.float32)
    q = rng.standard_normal((Bsz, H * Dh)).astype(np.float32)
    k = rng.standard_normal((Bsz, KVH * Dh)).astype(np.float32)
    v = rng.standard_normal((Bsz, KVH * Dh)).astype(np.float32)
    pos = np.array(positions, np.uint32)
    args = dict(q=q, k=k, v=v, ck=ck, cv=cv, pos=pos)
    split, info_s = gpu(engine, CODE.replace("args['split']", "True"), **args)
    whole, info_w = gpu(engine, CODE.replace("args['split']", "False"), **args)
    assert info_s["dispatches"] == 2 and info_w["dispatches"] == 1
    ref = np.zeros((Bsz, H * Dh))
    for b, n in enumerate(positions):
        for h in range(H):
            g = h // (H // KVH)
            K = np.concatenate([d64(ck[b, g, :n]), d64(k[b, g * Dh:(g + 1) * Dh])[None]])
            V = np.concatenate([d64(cv[b, g, :n]), d64(v[b, g * Dh:(g + 1) * Dh])[None]])
            s = K @ d64(q[b, h * Dh:(h + 1) * Dh]) * Dh ** -0.5
            e = np.exp(s - s.max())
            ref[b, h * Dh:(h + 1) * Dh] = e @ V / e.sum()
    assert rel_err(split["o"], ref.ravel()) <= 1e-5
    assert rel_err(split["o"], whole["o"]) <= 1e-5
    got_k = split["ck"].reshape(Bsz, KVH, Tmax, Dh)
    got_v = split["cv"].reshape(Bsz, KVH, Tmax, Dh)
    for b, n in enumerate(positions):          # the new k/v in slot n, written once
        assert np.array_equal(got_k[b, :, n], d64(k[b]).reshape(KVH, Dh))
        assert np.array_equal(got_v[b, :, n], d64(v[b]).reshape(KVH, Dh))
