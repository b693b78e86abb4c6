"""Rotary position embedding (py_engine/ops/rope.py, shaders/rope.wgsl) and its wiring into the
attention layer kind (py_engine/nn/attention.py with cfg.attention_rope).

Host tests (no browser): the float64 reference tests/reference/rope_numpy.py against transformers'
apply_rotary_pos_emb (Llama: full rotation; Bamba: partial) with the cos/sin of its rotary
embedding classes, the engine's inv_freq == transformers' bit for bit, inverse == transpose, and an
f32 model of the shader's cos/sin (the same constants, read from the shader) over every angle a
position < 2^17 can make. Browser tests: the kernel vs the reference and vs transformers (partial
factor 0.5 / 1.0, head_dim 12 / 64, start > 0, Cols views), the GPU position-buffer path recorded
once and replayed with position.advance, a small hybrid (M*M) with attention_rope: forward logits ==
unrolled step logits, a cached prefill in two parts == one, rope changes the logits (not at
position 0, where it is the identity), and the training gradients of the attention layer through
rope (q/k projection weights and the layer input) vs torch float64 autograd.
"""
import re

import numpy as np
import pytest

from tests.browser.kernel_harness import d64, rel_err, runner
from tests.conftest import REPO
from tests.reference import rope_numpy as rn

pytestmark = pytest.mark.browser

gpu = runner()
rng = np.random.default_rng(5)
TOL = 1e-6     # kernel vs float64 reference / transformers, relative to max |x|


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _rotary(torch, head_dim, factor, theta):
    """transformers' rotary embedding module (Bamba's handles partial_rotary_factor)."""
    from types import SimpleNamespace
    from transformers.models.bamba import modeling_bamba as mb
    cfg = SimpleNamespace(max_position_embeddings=8192, head_dim=head_dim, hidden_size=head_dim,
                          num_attention_heads=1,
                          rope_parameters={"rope_type": "default", "rope_theta": theta,
                                           "partial_rotary_factor": factor})
    return mb.BambaRotaryEmbedding(cfg)


def hf_rope(x, H, Dh, factor, theta, positions):
    """transformers: x [Bsz, T, H*Dh] f32 -> f32 numpy, via the rotary module's cos/sin and
    apply_rotary_pos_emb (Llama's when the whole head rotates, Bamba's partial one otherwise)."""
    torch = pytest.importorskip("torch")
    from transformers.models.bamba import modeling_bamba as mb
    from transformers.models.llama import modeling_llama as ml
    Bsz, T, _ = x.shape
    emb = _rotary(torch, Dh, factor, theta)
    xt = torch.tensor(np.asarray(x, np.float32)).view(Bsz, T, H, Dh).transpose(1, 2)
    cos, sin = emb(xt, torch.tensor(np.broadcast_to(positions, (Bsz, T)).copy()))
    apply = ml.apply_rotary_pos_emb if rn.rotary_dim(Dh, factor) == Dh else mb.apply_rotary_pos_emb
    y, _ = apply(xt, xt, cos, sin)
    return y.transpose(1, 2).reshape(Bsz, T, H * Dh).numpy(), emb.inv_freq.numpy()


# ---------------------------------------------------------------------------------------------
# host: the reference, the frequencies, the shader's cos/sin
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("Dh,factor,theta", [(12, 1.0, 10000.0), (12, 0.5, 10000.0),
                                             (64, 1.0, 10000.0), (64, 0.5, 500000.0)])
def test_reference_matches_transformers(Dh, factor, theta):
    pytest.importorskip("transformers")
    from py_engine.ops import rope as R
    H, Bsz, T = 2, 2, 6
    x = f32(Bsz, T, H * Dh)
    for start in (0, 4090):
        positions = start + np.arange(T)[None, :]
        ref = rn.rope(x, H, Dh, rn.rotary_dim(Dh, factor), theta, positions)
        hf, hf_inv = hf_rope(x, H, Dh, factor, theta, positions)
        # the frequencies: engine (pure Python) == reference == transformers, bit for bit
        rot = R.rotary_dim(Dh, factor)
        assert rot == rn.rotary_dim(Dh, factor) == 2 * hf_inv.size
        assert np.array_equal(np.array(R.inv_freq(rot, theta), np.float32), hf_inv)
        assert np.array_equal(rn.inv_freq(rot, theta), hf_inv)
        # transformers runs in f32 (its cos/sin within 1 ulp): 1e-6 of max |x|
        assert rel_err(hf, ref, np.abs(x).max()) <= TOL
        assert np.array_equal(ref.reshape(Bsz, T, H, Dh)[..., rot:],
                              d64(x).reshape(Bsz, T, H, Dh)[..., rot:])   # pass-through


def test_reference_inverse_is_transpose():
    """The linear map x -> rope(x) of one row, built column by column, is orthogonal and the
    inverse rotation is exactly its transpose."""
    H, Dh, rot, theta = 2, 12, 6, 10000.0
    n = H * Dh
    eye = np.eye(n)[:, None, :]                       # n rows as [n, 1, n] (Bsz = n, T = 1)
    pos = np.full((n, 1), 777)
    M = rn.rope(eye, H, Dh, rot, theta, pos).reshape(n, n).T          # column j = rope(e_j)
    Minv = rn.rope(eye, H, Dh, rot, theta, pos, inverse=True).reshape(n, n).T
    assert np.abs(Minv - M.T).max() <= 1e-15
    assert np.abs(M @ M.T - np.eye(n)).max() <= 1e-14
    assert np.abs(M - np.eye(n)).max() > 0.1          # it does rotate


def _shader_cos_sin():
    """An f32 numpy model of cos_sin (shaders/lib/trig.wgsl, included by rope.wgsl and the
    Mamba-3 kernels) with the constants read from the resolved shader text."""
    from py_engine.gpu.shaders import shader_source
    src = shader_source("rope")
    const = {m[0]: float(m[1]) for m in re.findall(r"const (\w+) = ([-0-9.e]+);", src)}
    coef = ["-1.9515295891e-4", "8.3321608736e-3", "1.6666654611e-1", "2.443315711809948e-5",
            "1.388731625493765e-3", "4.166664568298827e-2"]
    for c in coef:
        assert c in src, c
    s1, s2, s3, c1, c2, c3 = (np.float32(float(c)) for c in coef)
    f = np.float32
    P = [f(const[f"P{j}"]) for j in range(5)]
    assert sum(float(p) for p in P) == pytest.approx(np.pi / 2, abs=1e-15)
    for p in P[:4]:   # <= 7 significant bits: k * p exact in f32 for k < 2^17
        m, _ = np.frexp(float(p))
        assert (m * 2 ** 7) == int(m * 2 ** 7)

    def cos_sin(a):
        a = a.astype(f)
        k = np.floor(a * f(const["TWO_OVER_PI"]) + f(0.5)).astype(f)
        r = a - k * P[0]
        r = r - k * P[1]
        r = r - k * P[2]
        r = r - (k * P[3] + k * P[4])
        z = r * r
        s = ((s1 * z + s2) * z - s3) * z * r + r
        c = ((c1 * z - c2) * z + c3) * z * z - f(0.5) * z + f(1.0)
        q = k.astype(np.int64) & 3
        cos = np.select([q == 0, q == 1, q == 2], [c, -s, -c], s)
        sin = np.select([q == 0, q == 1, q == 2], [s, c, -s], -c)
        return cos, sin
    return cos_sin


def test_shader_cos_sin_model():
    """The shader's reduction + polynomials, in exact f32 operations, against float64 cos/sin of
    the same f32 angle: every angle positions 0 .. 2^17 make with theta 1e4 / head_dim 64, and
    random angles up to 205000 rad; within 1e-7 (numpy's own f32 cos is off by up to 7e-8)."""
    cos_sin = _shader_cos_sin()
    a = rn.angles(np.arange(1 << 17), 64, 10000.0).reshape(-1)
    a = np.concatenate([a, (rng.random(2_000_000) * 205000).astype(np.float32),
                        (np.arange(1, 200000) * np.pi / 4).astype(np.float32)])
    c, s = cos_sin(a)
    ad = a.astype(np.float64)
    assert np.abs(c - np.cos(ad)).max() <= 1e-7
    assert np.abs(s - np.sin(ad)).max() <= 1e-7


# ---------------------------------------------------------------------------------------------
# the kernel
# ---------------------------------------------------------------------------------------------

KERNEL_CODE = """
import py_engine.ops.rope as R
Bsz, Tn, H, Dh, rot, theta, start = {Bsz}, {T}, {H}, {Dh}, {rot}, {theta}, {start}
x = Cols(T['x2'], {off}, H * Dh) if {cols} else T['x']
kw = dict(n_heads=H, head_dim=Dh, rot_dim=rot, theta=theta, Bsz=Bsz, T=Tn, start=start)
n0 = b.dispatch_count
y = R.rope_apply(b, x, **kw)
info['dispatches'] = b.dispatch_count - n0
yi = R.rope_apply(b, x, inverse=True, **kw)
back = R.rope_apply(b, y, inverse=True, **kw)
g = T['g']
dx = R.rope_apply(b, g, inverse=True, **kw)
outs.update(y=y, yi=yi, back=back, dx=dx)
"""


@pytest.mark.parametrize("Bsz,T,H,Dh,factor,theta,start,cols", [
    pytest.param(2, 5, 3, 12, 1.0, 10000.0, 0, False, id="Dh12-full"),
    pytest.param(1, 6, 2, 12, 0.5, 10000.0, 4090, True, id="Dh12-half-start4090-cols"),
    pytest.param(2, 3, 2, 64, 0.5, 10000.0, 17, True, id="Dh64-half-cols"),
    pytest.param(1, 4, 1, 64, 1.0, 500000.0, 1000, False, id="Dh64-full-theta5e5"),
])
def test_rope_kernel(engine, Bsz, T, H, Dh, factor, theta, start, cols):
    """rope == float64 reference and transformers within 1e-6 of max |x|; inverse == R^T (the
    reference's backward, and <rope(x), g> == <x, rope^-1(g)>); inverse(rope(x)) == x."""
    pytest.importorskip("transformers")
    W = H * Dh
    x = f32(Bsz * T, W)
    g = f32(Bsz * T, W)
    arrays = dict(x=x, g=g)
    off = 5
    if cols:   # x as a window of a wider row (a fused projection's output)
        x2 = f32(Bsz * T, W + 9)
        x2[:, off:off + W] = x
        arrays = dict(x2=x2, g=g)
    rot = rn.rotary_dim(Dh, factor)
    code = KERNEL_CODE.format(Bsz=Bsz, T=T, H=H, Dh=Dh, rot=rot, theta=theta, start=start,
                              off=off, cols=cols)
    o, info = gpu(engine, code, **arrays)
    assert info["dispatches"] == 1
    positions = start + np.arange(T)[None, :]
    X, G = d64(x).reshape(Bsz, T, W), d64(g).reshape(Bsz, T, W)
    ref = rn.rope(X, H, Dh, rot, theta, positions)
    hf, _ = hf_rope(x.reshape(Bsz, T, W), H, Dh, factor, theta, positions)
    scale = np.abs(X).max()
    assert rel_err(o["y"], ref, scale) <= TOL
    assert rel_err(o["y"], hf, scale) <= 2 * TOL
    assert rel_err(o["yi"], rn.rope_backward(X, H, Dh, rot, theta, positions), scale) <= TOL
    assert rel_err(o["dx"], rn.rope_backward(G, H, Dh, rot, theta, positions),
                   np.abs(G).max()) <= TOL
    assert rel_err(o["back"], X, scale) <= 2 * TOL
    # adjoint: <R x, g> == <x, R^T g> (R^T g from the GPU, R x from the GPU)
    lhs, rhs = np.dot(o["y"], G.reshape(-1)), np.dot(X.reshape(-1), o["dx"])
    assert abs(lhs - rhs) <= 1e-5 * np.abs(X).sum() * np.abs(G).max()
    # the channels past rot pass through bit for bit
    got = o["y"].reshape(Bsz, T, H, Dh)
    assert np.array_equal(got[..., rot:], X.reshape(Bsz, T, H, Dh)[..., rot:])


POS_CODE = """
import py_engine.ops.rope as R
import py_engine.ops.position as PS
Bsz, Tn, H, Dh, rot, theta = {Bsz}, {T}, {H}, {Dh}, {rot}, {theta}
W = H * Dh
pos = T['pos']
xin, yin = Tensor(dev, (Bsz, W)), Tensor(dev, (Bsz, W))
n0 = b.dispatch_count
R.rope_apply(b, xin, n_heads=H, head_dim=Dh, rot_dim=rot, theta=theta, Bsz=Bsz, T=1, pos=pos,
             out=yin)
PS.advance(b, pos, 1)
rec = b.record()
info['recorded_dispatches'] = rec.dispatch_count
ys = Tensor(dev, (Bsz * Tn, W))
xs = T['xs']   # [Bsz, Tn, W]: token t of sequence bb at row bb*Tn + t
for t in range(Tn):
    for bb in range(Bsz):
        b.copy(xs.buffer, xs.offset + (bb * Tn + t) * W * 4, xin.buffer, xin.offset + bb * W * 4,
               W * 4)
    b.submit()
    rec.replay()
    for bb in range(Bsz):
        b.copy(yin.buffer, yin.offset + bb * W * 4, ys.buffer, ys.offset + (bb * Tn + t) * W * 4,
               W * 4)
    b.submit()
info['pos'] = await pos.to_list()
outs['ys'] = ys
"""


def test_rope_pos_buffer_recorded_replay(engine):
    """The decode form: positions read from the GPU-side [Bsz] u32 buffer (different per sequence),
    one dispatch recorded with position.advance and replayed token after token, no host writes."""
    Bsz, T, H, Dh, theta = 2, 5, 2, 12, 10000.0
    rot = rn.rotary_dim(Dh, 0.5)
    p0 = np.array([3, 2041], np.uint32)
    xs = f32(Bsz * T, H * Dh)
    code = POS_CODE.format(Bsz=Bsz, T=T, H=H, Dh=Dh, rot=rot, theta=theta)
    o, info = gpu(engine, code, xs=xs, pos=p0)
    assert info["recorded_dispatches"] == 2
    assert info["pos"] == [int(p) + T for p in p0]
    positions = p0[:, None].astype(np.int64) + np.arange(T)[None, :]
    X = d64(xs).reshape(Bsz, T, H * Dh)
    assert rel_err(o["ys"], rn.rope(X, H, Dh, rot, theta, positions), np.abs(X).max()) <= TOL
    hf, _ = hf_rope(xs.reshape(Bsz, T, -1), H, Dh, 0.5, theta, positions)
    assert rel_err(o["ys"], hf, np.abs(X).max()) <= 2 * TOL


# ---------------------------------------------------------------------------------------------
# the attention layer with rope: a small hybrid model
# ---------------------------------------------------------------------------------------------

MODEL_CODE = """
from py_engine.train.init import preset_config, init_model
ids = [int(i) for i in args['ids']]
out, info = {}, {}
for rope in (True, False):
    cfg = preset_config("tiny", family="hybrid", pattern="M*M", hidden_size=64, vocab_size=64,
                        max_position_embeddings=32)
    cfg.attention_rope, cfg.partial_rotary_factor, cfg.rope_theta = rope, 0.5, 10000.0
    cfg.validate()
    model = init_model(device, cfg, seed=3)
    info.setdefault('rot', model.mixers[1].spec.rot)
    fwd = await model.logits(ids)                        # training-style path: start 0, no cache
    st = model.new_state(max_tokens=16)
    cached = await model.logits(ids, st)                 # prefill writing the KV cache
    st2 = model.new_state(max_tokens=16)
    two = await model.logits(ids[:3], st2) + await model.logits(ids[3:], st2)   # start = 3
    st3 = model.new_state(max_tokens=16)
    stp = await model.step_logits(ids, st3)              # the step path: positions from pos
    kc = [await t.to_bytes() for t in (st.layers[1].k, st3.layers[1].k)]
    out[rope] = dict(fwd=fwd, cached=cached, two=two, stp=stp, kc=kc)
    for s in (st, st2, st3):
        s.release()
    model.release()
result = {'outs': out[True], 'off': out[False], 'info': info}
"""


def test_hybrid_model_with_rope(engine):
    ids = [5, 17, 3, 60, 9, 22, 41]
    T = len(ids)
    res = engine.run(MODEL_CODE, ids=ids)
    assert res["info"]["rot"] == 16          # head_dim 32 * 0.5
    arr = lambda b: np.frombuffer(b, np.float32).astype(np.float64).reshape(T, -1)  # noqa: E731
    on, off = res["outs"], res["off"]
    fwd = arr(on["fwd"])
    for name in ("cached", "two", "stp"):
        assert np.abs(arr(on[name]) - fwd).max() <= 1e-4, name
    # the cache holds rotated keys: the prefill's cache == the unrolled steps' cache (to the
    # Mamba-2 layer below it, whose chunked and recurrent forms agree to ~1e-5 relative; an
    # unrotated cache would be off by O(1))
    kp, ks = (np.frombuffer(b, np.float32).astype(np.float64) for b in on["kc"])
    assert np.abs(kp).max() > 0.1 and rel_err(ks, kp) <= 1e-4
    # rope changes the logits, except at position 0 (angle 0: the identity rotation)
    ref_off = arr(off["fwd"])
    assert np.abs(fwd[0] - ref_off[0]).max() <= 1e-5
    assert np.abs(fwd[1:] - ref_off[1:]).max() > 1e-3
    assert np.abs(arr(off["stp"]) - ref_off).max() <= 1e-4   # rope off: still forward == step


GRAD_CODE = """
from py_engine.autograd.functional import Ctx
from py_engine.autograd.tape import Tape
from py_engine.models.config import MambaConfig
from py_engine.nn.attention import AttentionMixer
cfg = MambaConfig(model_type="nemotron_h", vocab_size=16, hidden_size={D}, num_hidden_layers=1,
                  layers=["attention"], attention_heads={H}, attention_kv_heads={KVH},
                  attention_head_dim={Dh}, attention_rope=True, partial_rotary_factor={factor},
                  rope_theta=10000.0, mlp_intermediate_size=8)
pre = "backbone.layers.0.mixer."
W = {{pre + n + "_proj.weight": T[n] for n in ("q", "k", "v", "o")}}
mix = AttentionMixer(cfg, W, pre)
tape = Tape(dev, {{T['q']: T['gq'], T['k']: T['gk'], T['h']: T['gh']}})
ctx = Ctx(b, tape)
out = mix.forward(ctx, T['h'], T['res'], {Bsz}, {T_})
G = Tensor(dev, T['G'].shape)          # dL/dout = G, a copy the tape owns (and releases)
b.copy(T['G'].buffer, T['G'].offset, G.buffer, G.offset, T['G'].nbytes)
tape.grads[id(out)] = G
tape.backward(b)
outs.update(out=out, gq=T['gq'], gk=T['gk'], gh=T['gh'])
"""


def test_attention_rope_gradients(engine):
    """The attention layer (nn/attention.py) with rope under a tape: out = res + attn(rope(h Wq^T),
    rope(h Wk^T), h Wv^T) Wo^T, L = sum(G * out); dL/dWq, dL/dWk, dL/dh vs torch float64 autograd
    (rope there written as transformers does, with the reference's angles)."""
    torch = pytest.importorskip("torch")
    Bsz, T, D, H, KVH, Dh, factor = 2, 5, 16, 2, 1, 12, 0.5
    rot = rn.rotary_dim(Dh, factor)
    a = lambda *s: f32(*s, scale=0.5)  # noqa: E731
    h, res = a(Bsz * T, D), a(Bsz * T, D)
    wq, wk, wv, wo = a(H * Dh, D), a(KVH * Dh, D), a(KVH * Dh, D), a(D, H * Dh)
    G = a(Bsz * T, D)
    z = lambda x: np.zeros_like(x)  # noqa: E731
    code = GRAD_CODE.format(D=D, H=H, KVH=KVH, Dh=Dh, factor=factor, Bsz=Bsz, T_=T)
    o, _ = gpu(engine, code, h=h, res=res, q=wq, k=wk, v=wv, o=wo, G=G, gq=z(wq), gk=z(wk),
               gh=z(h))
    t = lambda x, g=False: torch.tensor(d64(x), requires_grad=g)  # noqa: E731
    th, tq, tk = t(h, True), t(wq, True), t(wk, True)
    ang = torch.tensor(rn.angles(np.arange(T), rot, 10000.0).astype(np.float64))   # [T, rot/2]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(x, n):   # [Bsz, n, T, Dh]
        xr, xp = x[..., :rot], x[..., rot:]
        rh = torch.cat([-xr[..., rot // 2:], xr[..., :rot // 2]], -1)
        return torch.cat([xr * cos + rh * sin, xp], -1)

    heads = lambda x, n: x.view(Bsz, T, n, Dh).transpose(1, 2)  # noqa: E731
    q = rope(heads(th @ tq.T, H), H)
    k = rope(heads(th @ tk.T, KVH), KVH)
    v = heads(th @ t(wv).T, KVH)
    att = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                           enable_gqa=True)
    out = t(res) + att.transpose(1, 2).reshape(Bsz * T, H * Dh) @ t(wo).T
    (out * t(G)).sum().backward()
    assert rel_err(o["out"], out.detach().numpy()) <= 1e-5
    for name, ref in (("gq", tq.grad), ("gk", tk.grad), ("gh", th.grad)):
        assert rel_err(o[name], ref.numpy()) <= 1e-4, name
    # and rope mattered for the gradient: without it dWq differs
    q0 = heads(th @ tq.T, H)
    v0 = heads(th @ t(wv).T, KVH)
    att0 = torch.nn.functional.scaled_dot_product_attention(q0, heads(th @ tk.T, KVH), v0,
                                                            is_causal=True, enable_gqa=True)
    tq.grad = None
    (att0.transpose(1, 2).reshape(Bsz * T, H * Dh) @ t(wo).T * t(G)).sum().backward()
    assert rel_err(o["gq"], tq.grad.numpy()) > 1e-2
