"""Issue 13 regression: kernels whose single invocation walks a long axis, at shapes past lavapipe's
per-invocation loop cap (65535 passes, py_engine/ops/loop_budget.py), on the native backend
(wgpu-py on lavapipe here), against float64 numpy.

Each case also runs once with the windows switched off (LOOP_PASS_BUDGET raised past the limit)
and, on llvmpipe, asserts that THAT result is wrong: the shape really is past the cap, so the
windowed result being right proves the fix, not luck. SwiftShader (the browser tests) has no cap.
Skips, saying why, only without any Vulkan/Metal/D3D12 adapter. The audit: shaders/LOOP_BUDGET.md.
"""
import numpy as np
import pytest

import py_engine.ops.loop_budget as LB
from tests.browser.kernel_harness import d64, rel_err, runner
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")

gpu = runner()
gpu_raw = runner(decode=False)
TOL = 1e-4
ROWS = 70_000          # past 65535: one thread summing every row stops early on lavapipe
rng = np.random.default_rng(1313)


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


def on_llvmpipe(engine):
    return "llvmpipe" in str(engine.device.info.get("device", "")).lower()


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def run_both(engine, monkeypatch, fn):
    """fn() with the windows (the product) and without them (LOOP_PASS_BUDGET past the limit)."""
    good = fn()
    with monkeypatch.context() as m:
        m.setattr(LB, "LOOP_PASS_BUDGET", 10 ** 9)
        bad = fn()
    return good, bad


def check(engine, good, bad, ref, tol=TOL):
    assert rel_err(good, ref) <= tol
    if on_llvmpipe(engine):   # the unwindowed kernel is cut short: the case is past the cap
        assert rel_err(bad, ref) > 1e-2


def test_windows_split_and_align():
    """Windows cover the axis, start on 64-row boundaries, and one window for short inputs."""
    n = LB.window_len(1, fixed=8, align=LB.ALIGN_ROWS)
    assert n % 64 == 0 and n <= LB.LOOP_PASS_BUDGET
    ws = LB.spans(ROWS, n)
    assert ws[0] == (0, n) and sum(c for _, c in ws) == ROWS and len(ws) == 3
    assert all(s % 64 == 0 for s, _ in ws)
    assert LB.spans(1000, n) == [(0, 1000)]
    with pytest.raises(ValueError, match="256-byte"):
        LB.shifted((None, 0, 1024), 4)


def test_bias_and_weight_gradient_over_many_rows(engine, monkeypatch):
    """Linear's db = sum_rows dy and dW = dy^T x (the matmul's K is the row count), 70,000 rows."""
    N, K = 8, 12
    dy, x = f32(ROWS, N), f32(ROWS, K)
    code = """
import py_engine.ops.linear as L
n0 = b.dispatch_count
outs['db'] = L.linear_backward_bias(b, T['dy'])
outs['dw'] = L.linear_backward_weight(b, T['dy'], T['x'])
info['dispatches'] = b.dispatch_count - n0
"""
    good, bad = run_both(engine, monkeypatch, lambda: gpu(engine, code, dy=dy, x=x))
    assert good[1]["dispatches"] == 6 and bad[1]["dispatches"] == 2   # 3 row windows each
    check(engine, good[0]["db"], bad[0]["db"], d64(dy).sum(0))
    check(engine, good[0]["dw"], bad[0]["dw"], d64(dy).T @ d64(x))


def test_rmsnorm_weight_gradient_over_many_rows(engine, monkeypatch):
    """RMSNorm's dw_j = sum_rows dy_j x_j rstd_row at 70,000 rows, accumulated into a given dw."""
    D = 8
    x, dy = f32(ROWS, D), f32(ROWS, D)
    w, dw0 = f32(D), f32(D)
    code = """
import py_engine.ops.rmsnorm as R
y, rstd = R.rmsnorm_forward(b, T['x'], T['w'])
dx, dw = R.rmsnorm_backward(b, T['dy'], T['x'], rstd, T['w'], dw=T['dw0'], accumulate_dw=True)
outs['dw'] = dw
"""
    good, bad = run_both(engine, monkeypatch, lambda: gpu(engine, code, x=x, dy=dy, w=w, dw0=dw0))
    xd = d64(x)
    rstd = 1.0 / np.sqrt((xd * xd).mean(1) + 1e-5)
    ref = d64(dw0) + (d64(dy) * xd * rstd[:, None]).sum(0)
    check(engine, good[0]["dw"], bad[0]["dw"], ref)


def test_embedding_gradient_over_many_tokens(engine, monkeypatch):
    """The embedding's scatter-add over 70,000 token ids (one thread per column walks them all)."""
    V, D = 16, 8
    ids = rng.integers(0, V, ROWS).astype(np.uint32)
    dy = f32(ROWS, D)
    code = """
import py_engine.ops.embedding as E
dw = Tensor(dev, (16, 8))
dev.write(dw.buffer, bytes(dw.nbytes), dw.offset)
E.embedding_backward(b, T['ids'], T['dy'], dw)
outs['dw'] = dw
"""
    good, bad = run_both(engine, monkeypatch, lambda: gpu(engine, code, ids=ids, dy=dy))
    ref = np.zeros((V, D))
    np.add.at(ref, ids, d64(dy))
    check(engine, good[0]["dw"], bad[0]["dw"], ref)


ATTN_CODE = """
import py_engine.ops.attention as A
kw = dict(n_heads={H}, n_kv_heads={KVH}, Bsz={Bsz}, T={T}, fast=False)
n0 = b.dispatch_count
o, lse = A.attention_prefill(b, T['q'], T['k'], T['v'], save=True, **kw)
n1 = b.dispatch_count
gr = A.attention_backward(b, T['do'], T['q'], T['k'], T['v'], o, lse, **kw)
info['dispatches'] = [n1 - n0, b.dispatch_count - n1]
outs.update(o=o, lse=lse, **gr)
"""


def test_attention_long_prompt_and_backward(engine, monkeypatch):
    """The simple attention kernels (software adapters' path) at T = 600, head_dim 64, GQA 2:1:
    a query row walking 600 keys (~131 passes each) went wrong from row ~448. Prefill output and
    logsumexp, and dq / dk / dv, vs float64; each key (query) window is one dispatch."""
    from py_engine.ops.attention import key_window
    from tests.reference import attention_numpy as an
    Bsz, T, H, KVH, Dh = 1, 600, 2, 1, 64
    q, k, v = f32(T, H * Dh), f32(T, KVH * Dh), f32(T, KVH * Dh)
    do = f32(T, H * Dh)
    code = ATTN_CODE.format(H=H, KVH=KVH, Bsz=Bsz, T=T)
    good, bad = run_both(engine, monkeypatch, lambda: gpu(engine, code, q=q, k=k, v=v, do=do))
    n_fwd = len(LB.spans(T, key_window(Dh)))
    assert n_fwd > 1 and good[1]["dispatches"][0] == n_fwd
    assert bad[1]["dispatches"] == [1, 2]
    shp = lambda a: d64(a).reshape(Bsz, T, -1)   # noqa: E731
    ro, rlse = an.attention(shp(q), shp(k), shp(v), H, KVH)
    rdq, rdk, rdv = an.attention_backward(shp(do), shp(q), shp(k), shp(v), H, KVH)
    for name, ref in (("o", ro), ("lse", rlse), ("dq", rdq), ("dk", rdk), ("dv", rdv)):
        check(engine, good[0][name], bad[0][name], ref)


def test_mamba1_scan_one_long_chunk(engine, monkeypatch):
    """Mamba-1's selective scan at T = 4000 with Bsz*I = 256 (one chunk by default on a software
    adapter): a single thread walking 4000 tokens (a chunk of 3640 already failed at N 16). The
    chunk is now capped (selective_scan.max_chunk); forward, unrolled steps and every gradient
    vs float64 (the browser tests' case functions, Falcon's B/C norms on in the backward)."""
    from py_engine.ops.selective_scan import max_chunk
    from tests.browser import test_kernels_mamba as KM
    assert max_chunk(16) < 4000
    fwd = (1, 4000, 256, 16, None, True, True, None)
    bwd = (1, 4000, 256, 16, None, True, True, True, 1e-6, True)
    KM.test_selective_scan_forward_and_step(engine, *fwd)
    KM.test_selective_scan_backward(engine, *bwd)
    if on_llvmpipe(engine):   # without the cap the same cases fail
        monkeypatch.setattr(LB, "LOOP_PASS_BUDGET", 10 ** 9)
        for fn, a in ((KM.test_selective_scan_forward_and_step, fwd),
                      (KM.test_selective_scan_backward, bwd)):
            with pytest.raises(AssertionError):
                fn(engine, *a)


SSD_FWD = """
import py_engine.ops.ssd as S
y, hT, _ = S.ssd_forward(b, T['x'], T['dt'], T['A_log'], T['B'], T['C'], n_groups=1, D=T['D'],
                         dt_bias=T['dt_bias'])
info['chunk'] = S.loop_chunk(dev, S.DEFAULT_CHUNK, {P}, {N})
outs.update(y=y, h=hT)
"""


def test_ssd_forward_default_chunk_real_head(engine, monkeypatch):
    """Mamba-2's SSD forward with the op's default chunk (transformers' 256) at the real head
    (P 64, N 128), T = 300: the 256-token chunk's threads made ~200k passes and the output went
    wrong from token 160. The chunk is now halved to fit (64 here); y and the final state vs
    the float64 recurrence."""
    from tests.reference import ssd_numpy as sn
    nb, T, H, P, N = 1, 300, 1, 64, 128
    x, dt, B, C = f32(nb, T, H * P), f32(nb, T, H) * 0.5, f32(nb, T, N), f32(nb, T, N)
    A_log = np.log(rng.uniform(1, 4, H)).astype(np.float32)
    D, dt_bias = f32(H), rng.uniform(-2, 0, H).astype(np.float32)
    code = SSD_FWD.format(P=P, N=N)
    args = dict(x=x, dt=dt, B=B, C=C, A_log=A_log, D=D, dt_bias=dt_bias)
    good, bad = run_both(engine, monkeypatch, lambda: gpu(engine, code, **args))
    assert good[1]["chunk"] == 64 and bad[1]["chunk"] == 256
    ry, rh, _ = sn.ssd_sequential(d64(x), d64(dt), d64(A_log), d64(B), d64(C), 1, D=d64(D),
                                  dt_bias=d64(dt_bias))
    check(engine, good[0]["y"], bad[0]["y"], ry)
    assert rel_err(good[0]["h"], rh) <= TOL


@pytest.mark.parametrize("nb,T,N,L", [pytest.param(1, 300, 256, 1, id="carry-300-chunks"),
                                      pytest.param(64, 1100, 1, 8, id="params-70400-tokens")])
def test_ssd_backward_long_walks(engine, monkeypatch, nb, T, N, L):
    """The SSD backward's serial carry over chunks (300 chunks x N 256: ~77k passes) and its
    per-head parameter sums over Bsz*T tokens (70,400) run in windows; every gradient vs torch
    float64 autograd (the browser test's harness). Without the windows they are wrong."""
    from tests.browser import test_kernels_ssd_backward as KS
    d = KS.make_inputs(7, nb, T, 1, 1, 1, N)
    ref = KS.reference(d, 0.0, float("inf"))
    good, bad = run_both(engine, monkeypatch, lambda: KS.run_case(engine, d, L, False))
    assert good[1]["dispatches"] > 10 and bad[1]["dispatches"] == 10
    keys = ("dx", "ddt", "dB", "dC", "dA_log", "dD", "ddt_bias", "dh0")
    for k in keys:
        assert rel_err(good[0][k], ref[k]) <= TOL, k
    if on_llvmpipe(engine):
        assert max(rel_err(bad[0][k], ref[k]) for k in keys) > 1e-3


STEP_CODE = """
import py_engine.ops.attention as A
n0 = b.dispatch_count
o = A.attention_step(b, T['q'], T['k'], T['v'], T['ck'], T['cv'], T['pos'], n_heads=2,
                     n_kv_heads=1)
info['dispatches'] = b.dispatch_count - n0
outs.update(o=o, ck=T['ck'])
"""


def test_decode_step_over_a_long_kv_cache(engine, monkeypatch):
    """One decode step of GQA 2:1 attention at head_dim 256 after 8,500 cached tokens (Tmax
    8,501): each of 64 threads walked ~133 slots of 2-3 Dh passes and the output came out wrong
    (measured: a cache of 8,000 at Dh 256, 20,000 at Dh 128). Long caches now split their slots
    over workgroups and merge them: o vs float64, and the new k/v written into slot 8,500."""
    Dh, n, H = 256, 8500, 2
    ck, cv = f32(1, 1, n + 1, Dh), f32(1, 1, n + 1, Dh)
    q, k, v = f32(1, H * Dh), f32(1, Dh), f32(1, Dh)
    pos = np.array([n], np.uint32)
    args = dict(q=q, k=k, v=v, ck=ck, cv=cv, pos=pos)
    good, bad = run_both(engine, monkeypatch, lambda: gpu(engine, STEP_CODE, **args))
    assert good[1]["dispatches"] == 2 and bad[1]["dispatches"] == 1
    K = np.concatenate([d64(ck[0, 0, :n]), d64(k)])
    V = np.concatenate([d64(cv[0, 0, :n]), d64(v)])
    ref = []
    for h in range(H):
        s = K @ d64(q[0, h * Dh:(h + 1) * Dh]) * Dh ** -0.5
        e = np.exp(s - s.max())
        ref.append(e @ V / e.sum())
    check(engine, good[0]["o"], bad[0]["o"], np.concatenate(ref))
    assert np.array_equal(good[0]["ck"].reshape(n + 1, Dh)[n], d64(k[0]))


def test_mamba3_backward_parameter_sums_over_many_rows(engine, monkeypatch):
    """Mamba-3's mamba3_bwd_par: one thread sums ddt_bias / dB_bias / dC_bias over all Bsz*T rows
    (70,400 here: 1,100 sequences of 64 tokens, a tiny head so the scan itself stays cheap) and dD
    over the sequences. Row windows (par_windows, 9 here) each add to the last; the four parameter
    gradients vs torch float64 autograd of the reference recurrence. Without the windows the row
    sums are wrong (dD, over 1,100 sequences, fits either way)."""
    import torch
    from py_engine.ops.mamba3_backward import _scan_windows, par_windows
    from tests.browser import test_kernels_mamba3_backward as KB
    nb, T, H, P, G, N, rf = 1100, 64, 1, 2, 1, 4, 0.5
    S = KB.n_angles(N, rf)
    raw = dict(x=f32(nb, T, H * P), Bn=f32(nb, T, G * N), Cn=f32(nb, T, G * N),
               dd_dt=f32(nb, T, H), dd_A=f32(nb, T, H), trap=f32(nb, T, H), angles=f32(nb, T, S))
    par = dict(dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32), D=f32(H),
               B_bias=0.5 * f32(H, N), C_bias=0.5 * f32(H, N))
    dy = f32(nb, T, H * P)
    inp = {k: torch.tensor(d64(v), requires_grad=True) for k, v in dict(raw, **par).items()}
    zero = dict(angle=(nb, H, S), ssm=(nb, H, P, N), k=(nb, H, N), v=(nb, H, P))
    ty = KB.torch_scan(inp, {k: torch.zeros(s, dtype=torch.float64) for k, s in zero.items()},
                       H, G, True)
    (ty * torch.tensor(d64(dy))).sum().backward()
    names = dict(ddt_bias="dt_bias", dB_bias="B_bias", dC_bias="C_bias", dD="D")
    ref = {g: inp[n].grad.numpy() for g, n in names.items()}
    code = KB.CODE.format(nb=nb, T=T, H=H, P=P, G=G, N=N, S=S, WP=0, cols=False,
                          with_state=False, A_floor=KB.A_FLOOR, heavy=True, ckpt=None)
    good, bad = run_both(engine, monkeypatch, lambda: gpu(engine, code, dy=dy, **raw, **par))
    n_scan, n_par = len(_scan_windows(T, N, P, S, 1)), len(par_windows(nb * T))
    assert n_par == 9 and good[1]["bwd_dispatches"] == 7 + n_scan + n_par
    assert bad[1]["bwd_dispatches"] == 8 + n_scan
    for k, r in ref.items():
        assert rel_err(good[0][k], r) <= TOL, k
    if on_llvmpipe(engine):   # the row sums stop short without the windows
        for k in ("ddt_bias", "dB_bias", "dC_bias"):
            assert rel_err(bad[0][k], ref[k]) > 1e-2, k


def test_mamba3_mimo_backward_parameter_windows_split_sequences(engine, monkeypatch):
    """The windowed sums of mamba3_bwd_par with MIMO's dmimo_x, at windows forced to 7 rows (the
    budget lowered) over 2 sequences of 9 tokens: windows [0, 7) [7, 14) [14, 18) cut through the
    sequences, and each (b, h) partial of dD / dmimo_x must be added exactly once. Every gradient
    vs torch float64 autograd (the browser test's MIMO case)."""
    from py_engine.ops.mamba3_backward import PAR_PASSES_PER_ROW, par_windows
    from tests.browser import test_kernels_mamba3_backward as KB
    monkeypatch.setattr(LB, "LOOP_PASS_BUDGET", 64 + 7 * PAR_PASSES_PER_ROW)
    assert par_windows(18) == [(0, 7), (7, 7), (14, 4)]
    KB.test_mamba3_mimo_backward_vs_torch(engine, 2, 9, 2, 3, 1, 8, 2, 0.5, True, True, None)


MIMO_OUT_CODE = """
from py_engine.ops.mamba3_mimo import mamba3_mimo_out_backward
n0 = b.dispatch_count
g = mamba3_mimo_out_backward(b, T['dout'], T['y'], T['z'], T['mimo_z'], T['mimo_o'], T['norm_w'],
                             1e-5)
info['dispatches'] = b.dispatch_count - n0
outs.update(g)
"""


def test_mamba3_mimo_out_weight_sums_over_many_rows(engine, monkeypatch):
    """The MIMO output backward's weight sums (rank 2, the head-wise norm on) over 70,000 rows: a
    dnorm_w thread makes R + 2 passes a row (wrong from ~22k rows unwindowed), a dmimo_z / dmimo_o
    thread one. Row windows (par_windows, 11 here) each add to the last; dmimo_z, dmimo_o,
    dnorm_w (and the per-row dy, dz) vs torch float64 autograd. Without the windows all three
    weight sums are wrong."""
    import torch
    from py_engine.ops.mamba3_mimo import par_windows
    rows, H, R, P = ROWS, 1, 2, 4
    HP = H * P
    y, z, dout = f32(rows, R * HP), f32(rows, HP), f32(rows, HP)
    par = dict(mimo_z=1 + 0.5 * f32(H, R, P), mimo_o=0.5 * f32(H, R, P), norm_w=1 + 0.3 * f32(HP))
    t = {k: torch.tensor(d64(v), requires_grad=True) for k, v in dict(par, y=y, z=z).items()}
    yr = t["y"].reshape(rows, R, H, P)
    yr = yr * torch.rsqrt(yr.pow(2).mean(-1, keepdim=True) + 1e-5) * t["norm_w"].reshape(H, P)
    zr = t["z"].reshape(rows, 1, H, P) * t["mimo_z"].transpose(0, 1)
    out = (yr * torch.nn.functional.silu(zr) * t["mimo_o"].transpose(0, 1)).sum(1)
    (out.reshape(rows, HP) * torch.tensor(d64(dout))).sum().backward()
    ref = dict(dmimo_z=t["mimo_z"].grad, dmimo_o=t["mimo_o"].grad, dnorm_w=t["norm_w"].grad,
               dy=t["y"].grad, dz=t["z"].grad)
    args = dict(y=y, z=z, dout=dout, **par)
    good, bad = run_both(engine, monkeypatch, lambda: gpu(engine, MIMO_OUT_CODE, **args))
    n_par = len(par_windows(rows, R))
    assert n_par == 11 and good[1]["dispatches"] == 1 + n_par and bad[1]["dispatches"] == 2
    for k in ("dmimo_z", "dmimo_o", "dnorm_w"):
        check(engine, good[0][k], bad[0][k], ref[k].numpy())
    for k in ("dy", "dz"):
        assert rel_err(good[0][k], ref[k].numpy()) <= TOL, k
