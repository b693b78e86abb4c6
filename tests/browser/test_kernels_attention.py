"""Causal GQA attention kernels (py_engine/ops/attention.py: prefill with an online softmax, the
one-token decode step against a KV cache, the backward) in headless Chromium's WebGPU, against
the float64 numpy reference tests/reference/attention_numpy.py. The first tests (host only, no
browser) check that reference against torch's scaled_dot_product_attention, transformers'
NemotronH eager_attention_forward and torch autograd.

Tolerance: relative error <= 1e-4 of the scale (max |.|) of each reference output / gradient.
Shapes are tiny (SwiftShader is a CPU) except the long prompt (T = 4096: its T x T f32 score
matrix would be 64 MiB) and head dims 64 / 128 that prove the real shapes fit the limits.
"""
import numpy as np
import pytest

from tests.browser.kernel_harness import d64, rel_err, runner
from tests.reference import attention_numpy as an

pytestmark = pytest.mark.browser

gpu = runner()

TOL = 1e-4
rng = np.random.default_rng(77)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the reference itself (host)
# ---------------------------------------------------------------------------------------------

def test_reference_matches_torch_and_transformers():
    torch = pytest.importorskip("torch")
    nh = pytest.importorskip("transformers.models.nemotron_h.modeling_nemotron_h")
    F = torch.nn.functional
    for Bsz, T, H, KVH, Dh in [(2, 7, 4, 2, 8), (1, 5, 3, 1, 12), (1, 6, 2, 2, 16)]:
        q, k, v = (rng.standard_normal((Bsz, T, n * Dh)) for n in (H, KVH, KVH))
        o, lse = an.attention(q, k, v, H, KVH)
        tq = torch.tensor(q).view(Bsz, T, H, Dh).transpose(1, 2)
        tk = torch.tensor(k).view(Bsz, T, KVH, Dh).transpose(1, 2)
        tv = torch.tensor(v).view(Bsz, T, KVH, Dh).transpose(1, 2)
        ref = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True, enable_gqa=True)
        ref = ref.transpose(1, 2).reshape(Bsz, T, H * Dh).numpy()
        assert np.abs(o - ref).max() <= 1e-12 * np.abs(ref).max()
        # transformers' eager path (NemotronH): repeat_kv, scale Dh^-0.5, additive causal mask
        mod = torch.nn.Module()
        mod.num_key_value_groups, mod.training = H // KVH, False
        mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)[None, None]
        eo, _ = nh.eager_attention_forward(mod, tq, tk, tv, mask, scaling=Dh ** -0.5)
        # (its softmax runs in float32 by design: dtype=torch.float32, hence 1e-6 here)
        assert np.abs(o - eo.reshape(Bsz, T, H * Dh).numpy()).max() <= 1e-6 * np.abs(o).max()
        s = (tq @ tk.repeat_interleave(H // KVH, 1).transpose(2, 3)) * Dh ** -0.5 + mask
        assert np.abs(lse - torch.logsumexp(s, -1).numpy()).max() <= 1e-12 * np.abs(lse).max()
        # a cache holding the first P tokens: the last T - P queries == rows P.. of the full run
        P = T // 2
        oc, lc = an.attention(q[:, P:], k[:, P:], v[:, P:], H, KVH,
                              past_k=an.cache_of(k[:, :P], KVH, P),
                              past_v=an.cache_of(v[:, :P], KVH, P))
        assert np.abs(oc - o[:, P:]).max() <= 1e-12 * np.abs(o).max()
        assert np.abs(lc - lse[:, :, P:]).max() <= 1e-12 * np.abs(lse).max()
        # backward vs torch autograd (GQA: dk/dv summed over each group's heads)
        do = rng.standard_normal((Bsz, T, H * Dh))
        xs = [torch.tensor(a, requires_grad=True) for a in (q, k, v)]
        y = F.scaled_dot_product_attention(
            *[x.view(Bsz, T, n, Dh).transpose(1, 2) for x, n in zip(xs, (H, KVH, KVH))],
            is_causal=True, enable_gqa=True).transpose(1, 2).reshape(Bsz, T, H * Dh)
        y.backward(torch.tensor(do))
        for got, x in zip(an.attention_backward(do, q, k, v, H, KVH), xs):
            g = x.grad.numpy()
            assert np.abs(got - g).max() <= 1e-10 * np.abs(g).max()


# ---------------------------------------------------------------------------------------------
# prefill (no cache)
# ---------------------------------------------------------------------------------------------

FWD_CASES = [  # Bsz, T, H, KVH, Dh, q/k/v as Cols windows of one fused qkv output
    pytest.param(1, 1, 2, 1, 8, False, id="T1-MQA"),
    pytest.param(2, 70, 4, 2, 12, True, id="GQA-ragged-tiles-cols"),
    pytest.param(1, 20, 2, 2, 64, False, id="MHA-Dh64"),
    pytest.param(1, 9, 4, 1, 128, True, id="MQA-Dh128-cols"),
]

FWD_CODE = """
import py_engine.ops.attention as A
Bsz, Tn, H, KVH, Dh = {Bsz}, {T}, {H}, {KVH}, {Dh}
if {cols}:
    qkv = T['qkv']
    q, k, v = Cols(qkv, 0, H * Dh), Cols(qkv, H * Dh, KVH * Dh), Cols(qkv, (H + KVH) * Dh, KVH * Dh)
else:
    q, k, v = T['q'], T['k'], T['v']
kw = dict(n_heads=H, n_kv_heads=KVH, Bsz=Bsz, T=Tn)
n0 = b.dispatch_count
o, lse = A.attention_prefill(b, q, k, v, save=True, **kw)
info['dispatches'] = b.dispatch_count - n0
info['shapes'] = [list(o.shape), list(lse.shape)]
o2, none = A.attention_prefill(b, q, k, v, **kw)
info['lse_none'] = none is None
b.submit()
info['same'] = await o2.to_bytes() == await o.to_bytes()
outs.update(o=o, lse=lse)
"""


def qkv_arrays(Bsz, T, H, KVH, Dh, cols):
    qkv = f32(Bsz * T, (H + 2 * KVH) * Dh)
    q = qkv[:, :H * Dh]
    k = qkv[:, H * Dh:(H + KVH) * Dh]
    v = qkv[:, (H + KVH) * Dh:]
    arrays = dict(qkv=qkv) if cols else dict(q=np.ascontiguousarray(q), k=np.ascontiguousarray(k),
                                             v=np.ascontiguousarray(v))
    shp = lambda a: d64(a).reshape(Bsz, T, -1)   # noqa: E731
    return arrays, shp(q), shp(k), shp(v)


@pytest.mark.parametrize("Bsz,T,H,KVH,Dh,cols", FWD_CASES)
def test_attention_prefill_reference(engine, Bsz, T, H, KVH, Dh, cols):
    arrays, q, k, v = qkv_arrays(Bsz, T, H, KVH, Dh, cols)
    o, info = gpu(engine, FWD_CODE.format(Bsz=Bsz, T=T, H=H, KVH=KVH, Dh=Dh, cols=cols), **arrays)
    ro, rlse = an.attention(q, k, v, H, KVH)
    assert info["dispatches"] == 1
    assert info["shapes"] == [[Bsz * T, H * Dh], [Bsz, H, T]]
    assert info["lse_none"] and info["same"]   # save=False: no lse; rerun bit-identical
    assert rel_err(o["o"], ro) <= TOL
    assert rel_err(o["lse"], rlse) <= TOL


def test_attention_long_prompt(engine):
    """T = 4096: the T x T f32 score matrix would be 64 MiB; the online softmax never builds it.
    A few rows (tile edges, the middle, the last) against the float64 reference."""
    T, Dh = 4096, 8
    q, k, v = f32(T, Dh), f32(T, Dh), f32(T, Dh)
    code = """
import py_engine.ops.attention as A
n0 = b.dispatch_count
o, lse = A.attention_prefill(b, T['q'], T['k'], T['v'], n_heads=1, n_kv_heads=1, Bsz=1, T=4096,
                             save=True)
info['dispatches'] = b.dispatch_count - n0
info['max_binding'] = dev.limits['maxStorageBufferBindingSize']
outs.update(o=o, lse=lse)
"""
    o, info = gpu(engine, code, q=q, k=k, v=v)
    # key windows within the loop-pass budget (py_engine/ops/loop_budget.py), 4 at Dh 8
    from py_engine.ops.attention import key_window
    assert info["dispatches"] == -(-T // key_window(Dh)) == 4
    got, glse = o["o"].reshape(T, Dh), o["lse"].reshape(T)
    Q, K, V = d64(q), d64(k), d64(v)
    rows = [0, 1, 63, 64, 65, 1000, 2047, 4094, 4095]
    for t in rows:
        s = K[:t + 1] @ Q[t] * Dh ** -0.5
        m = s.max()
        e = np.exp(s - m)
        ref = e @ V[:t + 1] / e.sum()
        assert rel_err(got[t], ref, np.abs(ref).max()) <= TOL, t
        assert abs(glse[t] - (m + np.log(e.sum()))) <= TOL * max(1.0, abs(m)), t
    assert np.all(np.isfinite(got))
    print(f"T x T f32 = {T * T * 4 / 2**20:.0f} MiB; maxStorageBufferBindingSize = "
          f"{info['max_binding'] / 2**20:.0f} MiB")


# ---------------------------------------------------------------------------------------------
# KV cache: prefill continuing from start > 0, unrolled steps (plain and recorded + replayed)
# ---------------------------------------------------------------------------------------------

CACHE_CODE = """
import py_engine.ops.attention as A
import py_engine.ops.position as PS
Bsz, Tn, H, KVH, Dh, Tmax, P1, P2 = {Bsz}, {T}, {H}, {KVH}, {Dh}, {Tmax}, {P1}, {P2}
HD, KD, W = H * Dh, KVH * Dh, (H + 2 * KVH) * Dh
kw = dict(n_heads=H, n_kv_heads=KVH)
flat = Tensor(dev, (Bsz, Tn * W), buffer=T['qkv'].buffer, offset=T['qkv'].offset)
def part(t0, n):
    # tokens t0 .. t0+n-1 of every sequence, contiguous [Bsz*n, W] (copies of qkv rows)
    x = Tensor(dev, (Bsz * n, W))
    for bb in range(Bsz):
        src = T['qkv'].offset + (bb * Tn + t0) * W * 4
        b.copy(T['qkv'].buffer, src, x.buffer, x.offset + bb * n * W * 4, n * W * 4)
    return Cols(x, 0, HD), Cols(x, HD, KD), Cols(x, HD + KD, KD)
def tok(t, off, w):   # token t of every sequence straight out of qkv: [Bsz, w]
    return Cols(flat, t * W + off, w, (Bsz, w))
def mk_cache():
    shape = (Bsz, KVH, Tmax, Dh)
    if {fused}:   # one buffer [2, Bsz, KVH, Tmax, Dh]: k and v caches are views into it
        kv = Tensor(dev, (2,) + shape)
        dev.write(kv.buffer, bytes(kv.nbytes), kv.offset)
        half = kv.nbytes // 2
        assert half % 256 == 0
        return (Tensor(dev, shape, buffer=kv.buffer, offset=kv.offset),
                Tensor(dev, shape, buffer=kv.buffer, offset=kv.offset + half))
    c = Tensor(dev, shape), Tensor(dev, shape)
    for x in c:
        dev.write(x.buffer, bytes(x.nbytes), x.offset)
    return c
ck, cv = mk_cache()
# prefill in two parts: tokens 0 .. P1-1 (start 0), then P1 .. P1+P2-1 (start P1)
n0 = b.dispatch_count
o1, _ = A.attention_prefill(b, *part(0, P1), cache_k=ck, cache_v=cv, start=0, Bsz=Bsz, T=P1, **kw)
info['prefill_dispatches'] = b.dispatch_count - n0
o2, _ = A.attention_prefill(b, *part(P1, P2), cache_k=ck, cache_v=cv, start=P1, Bsz=Bsz, T=P2, **kw)
# then one token at a time (Cols windows of qkv), the slot read from pos on the GPU
pos = PS.new_positions(dev, Bsz, P1 + P2)
ys = Tensor(dev, (Bsz, Tn * HD))
steps = 0
for t in range(P1 + P2, Tn):
    n0 = b.dispatch_count
    A.attention_step(b, tok(t, 0, HD), tok(t, HD, KD), tok(t, HD + KD, KD), ck, cv, pos,
                     out=Cols(ys, t * HD, HD, (Bsz, HD)), **kw)
    steps += b.dispatch_count - n0
    PS.advance(b, pos, 1)
info['step_dispatches'] = steps
b.submit()
# the same steps from an empty cache, recorded once (fixed input/output tensors) and replayed
ck2, cv2 = mk_cache()
pos2 = PS.new_positions(dev, Bsz, 0)
xin, oin = Tensor(dev, (Bsz, W)), Tensor(dev, (Bsz, HD))
A.attention_step(b, Cols(xin, 0, HD), Cols(xin, HD, KD), Cols(xin, HD + KD, KD), ck2, cv2, pos2,
                 out=oin, **kw)
PS.advance(b, pos2, 1)
rec = b.record()
info['recorded_dispatches'] = rec.dispatch_count
yr = Tensor(dev, (Bsz, Tn * HD))
for t in range(Tn):
    for bb in range(Bsz):
        b.copy(flat.buffer, flat.offset + (bb * Tn * W + t * W) * 4, xin.buffer,
               xin.offset + bb * W * 4, W * 4)
    b.submit()
    rec.replay()
    for bb in range(Bsz):
        b.copy(oin.buffer, oin.offset + bb * HD * 4, yr.buffer, yr.offset + (bb * Tn + t) * HD * 4,
               HD * 4)
    b.submit()
info['pos2'] = await pos2.to_list()
outs.update(o1=o1, o2=o2, ys=ys, ck=ck, cv=cv, yr=yr, ck2=ck2, cv2=cv2)
"""


@pytest.mark.parametrize("Bsz,T,H,KVH,Dh,Tmax,P1,P2,fused", [
    pytest.param(2, 9, 4, 2, 12, 11, 3, 4, False, id="GQA-B2"),
    pytest.param(1, 7, 2, 1, 64, 7, 2, 3, True, id="MQA-Dh64-full-fused-cache"),
])
def test_attention_cache_prefill_and_steps(engine, Bsz, T, H, KVH, Dh, Tmax, P1, P2, fused):
    """A prefill continuing at start > 0 and unrolled steps (Cols inputs; then recorded once and
    replayed with the GPU-side position) == one prefill of the whole sequence; the caches hold
    exactly k and v. `fused`: cache_k and cache_v are views of one buffer."""
    arrays, q, k, v = qkv_arrays(Bsz, T, H, KVH, Dh, True)
    code = CACHE_CODE.format(Bsz=Bsz, T=T, H=H, KVH=KVH, Dh=Dh, Tmax=Tmax, P1=P1, P2=P2,
                             fused=fused)
    o, info = gpu(engine, code, **arrays)
    ro, _ = an.attention(q, k, v, H, KVH)
    HD = H * Dh
    assert info["prefill_dispatches"] == 2          # cache write + attention
    assert info["step_dispatches"] == T - P1 - P2   # 1 per step
    assert info["recorded_dispatches"] == 2         # step + position advance
    assert info["pos2"] == [T] * Bsz
    # prefill continuing at start = P1 == rows of one prefill of the whole sequence
    assert rel_err(o["o1"], ro[:, :P1]) <= TOL
    assert rel_err(o["o2"], ro[:, P1:P1 + P2], np.abs(ro).max()) <= TOL
    ys = o["ys"].reshape(Bsz, T, HD)
    assert rel_err(ys[:, P1 + P2:], ro[:, P1 + P2:], np.abs(ro).max()) <= TOL
    # the recorded, replayed decode graph == prefill, every token
    assert rel_err(o["yr"], ro) <= TOL
    for name in ("ck", "ck2"):
        assert np.array_equal(o[name].reshape(Bsz, KVH, Tmax, Dh), an.cache_of(k, KVH, Tmax))
    for name in ("cv", "cv2"):
        assert np.array_equal(o[name].reshape(Bsz, KVH, Tmax, Dh), an.cache_of(v, KVH, Tmax))


def test_attention_cache_limits(engine):
    """start + T > Tmax is refused on the host (naming Tmax, nothing dispatched); a step whose
    GPU-side pos is already Tmax writes nothing (the whole cache is unchanged: slot Tmax of one
    head would alias slot 0 of the next) and attends to the Tmax cached slots plus itself."""
    Bsz, H, KVH, Dh, Tmax = 2, 4, 2, 8, 5
    ck, cv = f32(Bsz, KVH, Tmax, Dh), f32(Bsz, KVH, Tmax, Dh)
    q1, k1, v1 = f32(Bsz, H * Dh), f32(Bsz, KVH * Dh), f32(Bsz, KVH * Dh)
    code = f"""
import py_engine.ops.attention as A
import py_engine.ops.position as PS
kw = dict(n_heads={H}, n_kv_heads={KVH})
errs = []
for start, Tn in ((3, 3), (0, 6), ({Tmax}, 1)):
    x = Tensor(dev, ({Bsz} * Tn, {KVH} * {Dh}))
    try:
        A.attention_prefill(b, Tensor(dev, ({Bsz} * Tn, {H} * {Dh})), x, x, cache_k=T['ck'],
                            cache_v=T['cv'], start=start, Bsz={Bsz}, T=Tn, **kw)
        errs.append(None)
    except ValueError as e:
        errs.append(str(e))
info['errs'] = errs
info['dispatches'] = b.dispatch_count
pos = PS.new_positions(dev, {Bsz}, {Tmax})
outs['o'] = A.attention_step(b, T['q1'], T['k1'], T['v1'], T['ck'], T['cv'], pos, **kw)
outs.update(ck=T['ck'], cv=T['cv'])
"""
    o, info = gpu(engine, code, ck=ck, cv=cv, q1=q1, k1=k1, v1=v1)
    assert info["dispatches"] == 0
    assert len(info["errs"]) == 3
    for e in info["errs"]:
        assert e is not None and f"Tmax={Tmax}" in e and "longer cache" in e
    assert np.array_equal(o["ck"].reshape(ck.shape), ck)
    assert np.array_equal(o["cv"].reshape(cv.shape), cv)
    ro, _ = an.attention(d64(q1)[:, None], d64(k1)[:, None], d64(v1)[:, None], H, KVH,
                         past_k=d64(ck), past_v=d64(cv))
    assert rel_err(o["o"], ro) <= TOL


# ---------------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------------

BWD_CASES = [  # Bsz, T, H, KVH, Dh, Cols inputs and gradient windows of one fused buffer
    pytest.param(1, 1, 2, 1, 8, False, id="T1-MQA"),
    pytest.param(2, 70, 4, 2, 12, True, id="GQA-ragged-cols"),
    pytest.param(1, 19, 2, 2, 64, False, id="MHA-Dh64"),
    pytest.param(1, 9, 4, 1, 128, True, id="MQA-Dh128-cols"),
]

BWD_CODE = """
import py_engine.ops.attention as A
Bsz, Tn, H, KVH, Dh = {Bsz}, {T}, {H}, {KVH}, {Dh}
HD, KD = H * Dh, KVH * Dh
kw = dict(n_heads=H, n_kv_heads=KVH, Bsz=Bsz, T=Tn)
grads = None
if {cols}:
    qkv = T['qkv']
    q, k, v = Cols(qkv, 0, HD), Cols(qkv, HD, KD), Cols(qkv, HD + KD, KD)
    g = T['g0']   # a fused [dq | dk | dv] gradient buffer (pre-filled with noise)
    grads = dict(dq=Cols(g, 0, HD), dk=Cols(g, HD, KD), dv=Cols(g, HD + KD, KD))
else:
    q, k, v = T['q'], T['k'], T['v']
o, lse = A.attention_prefill(b, q, k, v, save=True, **kw)
n0 = b.dispatch_count
gr = A.attention_backward(b, T['do'], q, k, v, o, lse, grads=grads, **kw)
info['dispatches'] = b.dispatch_count - n0
b.submit()
gr2 = A.attention_backward(b, T['do'], q, k, v, o, lse, **kw)
b.submit()
same = True
for n in ('dq', 'dk', 'dv'):
    if {cols}:   # the windows of g: compare what a fresh call computed byte for byte below
        outs[n + '_2'] = gr2[n]
    else:
        same = same and await gr2[n].to_bytes() == await gr[n].to_bytes()
        outs[n] = gr[n]
info['same'] = same
if {cols}:
    outs['g'] = T['g0']
"""


@pytest.mark.parametrize("Bsz,T,H,KVH,Dh,cols", BWD_CASES)
def test_attention_backward_reference(engine, Bsz, T, H, KVH, Dh, cols):
    arrays, q, k, v = qkv_arrays(Bsz, T, H, KVH, Dh, cols)
    do = f32(Bsz * T, H * Dh)
    HD, KD = H * Dh, KVH * Dh
    if cols:
        arrays["g0"] = f32(Bsz * T, HD + 2 * KD)
    code = BWD_CODE.format(Bsz=Bsz, T=T, H=H, KVH=KVH, Dh=Dh, cols=cols)
    o, info = gpu(engine, code, do=do, **arrays)
    rdq, rdk, rdv = an.attention_backward(d64(do).reshape(Bsz, T, HD), q, k, v, H, KVH)
    assert info["dispatches"] == 2
    if cols:
        g = o["g"].reshape(Bsz * T, HD + 2 * KD)
        got = dict(dq=g[:, :HD], dk=g[:, HD:HD + KD], dv=g[:, HD + KD:])
        for n in ("dq", "dk", "dv"):   # the window == a fresh contiguous call, bit for bit
            assert np.array_equal(got[n].reshape(-1), o[n + "_2"])
    else:
        assert info["same"]   # deterministic: a rerun is bit-identical
        got = {n: o[n] for n in ("dq", "dk", "dv")}
    for n, ref in (("dq", rdq), ("dk", rdk), ("dv", rdv)):
        # T = 1: dq and dk are exactly 0 (one key, P = 1, dP = D); judge those absolutely
        scale = np.abs(ref).max() if np.abs(ref).max() > 1e-6 else 1.0
        assert rel_err(got[n], ref, scale) <= TOL, n


# ---------------------------------------------------------------------------------------------
# the tiled kernels (the real-GPU path: 256-thread workgroups, 16 rows x 16 threads), forced
# with fast=True so software adapters test them too; fast=False forces the simple kernels
# ---------------------------------------------------------------------------------------------

def tiled(code, fast=True):
    """A test snippet with fast=... passed to every attention_prefill / attention_backward."""
    return (code.replace("T=Tn)", f"T=Tn, fast={fast})")
                .replace("T=P1, **kw)", f"T=P1, fast={fast}, **kw)")
                .replace("T=P2, **kw)", f"T=P2, fast={fast}, **kw)"))


TILED_CASES = [  # Bsz, T, H, KVH, Dh, cols: ragged 16-row tiles, Dh not a multiple of 16
    pytest.param(2, 37, 4, 2, 12, True, id="GQA-ragged-Dh12-cols"),
    pytest.param(1, 70, 2, 1, 20, False, id="MQA-T70-Dh20"),
]


@pytest.mark.parametrize("Bsz,T,H,KVH,Dh,cols", TILED_CASES)
def test_attention_prefill_tiled(engine, Bsz, T, H, KVH, Dh, cols):
    arrays, q, k, v = qkv_arrays(Bsz, T, H, KVH, Dh, cols)
    o, info = gpu(engine, tiled(FWD_CODE.format(Bsz=Bsz, T=T, H=H, KVH=KVH, Dh=Dh, cols=cols)),
                  **arrays)
    ro, rlse = an.attention(q, k, v, H, KVH)
    assert info["dispatches"] == 1
    assert info["shapes"] == [[Bsz * T, H * Dh], [Bsz, H, T]]
    assert info["lse_none"] and info["same"]   # rerun bit-identical
    assert rel_err(o["o"], ro) <= TOL
    assert rel_err(o["lse"], rlse) <= TOL


def test_attention_tiled_geometry_and_choice(engine):
    """geometry() names the path attention_prefill takes: tiled on hardware adapters, simple on
    software ones; fast=True/False force either; the tiled grids are (ceil(T/16), H|KVH, Bsz)
    of 256 threads within the device's workgroup memory."""
    code = """
import py_engine.ops.attention as A
kw = dict(n_heads=12, n_kv_heads=6, head_dim=16, Bsz=1, T=64)
info['auto'] = A.geometry(dev, **kw)['path']
info['fallback'] = bool(dev.info.get('is_fallback'))
info['tiled'] = A.geometry(dev, fast=True, **kw)
info['simple'] = A.geometry(dev, fast=False, **kw)['path']
info['limit'] = dev.limits['maxComputeWorkgroupStorageSize']
"""
    _, info = gpu(engine, code)
    assert info["auto"] == ("simple" if info["fallback"] else "tiled")
    assert info["simple"] == "simple"
    g = info["tiled"]
    assert g["path"] == "tiled"
    assert [d["grid"] for d in g["prefill"] + g["backward"]] == [[4, 12, 1], [4, 12, 1], [4, 6, 1]]
    for d in g["prefill"] + g["backward"]:
        assert d["threads"] == 256 and d["tile_rows"] in (16, 32, 48, 64)
        assert d["wg_bytes"] <= info["limit"]


def test_attention_cache_prefill_tiled(engine):
    """The tiled prefill continuing at start > 0 from a (fused) KV cache == one prefill."""
    Bsz, T, H, KVH, Dh, Tmax, P1, P2 = 1, 24, 2, 1, 12, 32, 5, 16   # fused halves: 256-B aligned
    arrays, q, k, v = qkv_arrays(Bsz, T, H, KVH, Dh, True)
    code = CACHE_CODE.format(Bsz=Bsz, T=T, H=H, KVH=KVH, Dh=Dh, Tmax=Tmax, P1=P1, P2=P2,
                             fused=True)
    assert tiled(code).count("fast=True") == 2
    o, info = gpu(engine, tiled(code), **arrays)
    ro, _ = an.attention(q, k, v, H, KVH)
    assert info["prefill_dispatches"] == 2
    assert rel_err(o["o1"], ro[:, :P1], np.abs(ro).max()) <= TOL
    assert rel_err(o["o2"], ro[:, P1:P1 + P2], np.abs(ro).max()) <= TOL
    assert rel_err(o["ys"].reshape(Bsz, T, H * Dh)[:, P1 + P2:], ro[:, P1 + P2:],
                   np.abs(ro).max()) <= TOL
    assert np.array_equal(o["ck"].reshape(Bsz, KVH, Tmax, Dh), an.cache_of(k, KVH, Tmax))


@pytest.mark.parametrize("Bsz,T,H,KVH,Dh,cols", TILED_CASES)
def test_attention_backward_tiled(engine, Bsz, T, H, KVH, Dh, cols):
    arrays, q, k, v = qkv_arrays(Bsz, T, H, KVH, Dh, cols)
    do = f32(Bsz * T, H * Dh)
    HD, KD = H * Dh, KVH * Dh
    if cols:
        arrays["g0"] = f32(Bsz * T, HD + 2 * KD)
    code = tiled(BWD_CODE.format(Bsz=Bsz, T=T, H=H, KVH=KVH, Dh=Dh, cols=cols))
    assert code.count("fast=True") == 1   # kw: the prefill and both backward calls
    o, info = gpu(engine, code, do=do, **arrays)
    rdq, rdk, rdv = an.attention_backward(d64(do).reshape(Bsz, T, HD), q, k, v, H, KVH)
    assert info["dispatches"] == 2
    if cols:
        g = o["g"].reshape(Bsz * T, HD + 2 * KD)
        got = dict(dq=g[:, :HD], dk=g[:, HD:HD + KD], dv=g[:, HD + KD:])
        for n in ("dq", "dk", "dv"):
            assert np.array_equal(got[n].reshape(-1), o[n + "_2"])
    else:
        assert info["same"]
        got = {n: o[n] for n in ("dq", "dk", "dv")}
    for n, ref in (("dq", rdq), ("dk", rdk), ("dv", rdv)):
        assert rel_err(got[n], ref) <= TOL, n
