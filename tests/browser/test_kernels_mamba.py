"""Mamba-1 / Falcon-Mamba kernels (conv1d, selective scan: forward, step, backward) in headless
Chromium's WebGPU, against the float64 numpy references in tests/reference/ (conv1d_numpy.py,
selective_scan_numpy.py, rmsnorm_numpy.py, elementwise_numpy.py).

Tolerances (issue 4/6): relative error <= 1e-5 for elementwise kernels (conv), <= 1e-4 for scans
and reductions, relative to the scale (max |.|) of the reference output. Shapes are tiny on
purpose (SwiftShader is a CPU): I not a multiple of 64, N = 8 and 16, T crossing chunk edges.
"""
import numpy as np
import pytest

from tests.browser.kernel_harness import d64, rel_err, runner
from tests.reference import conv1d_numpy as conv_ref
from tests.reference import elementwise_numpy as ew_ref
from tests.reference import rmsnorm_numpy as rms_ref
from tests.reference import selective_scan_numpy as scan_ref

pytestmark = pytest.mark.browser

gpu = runner("""
import py_engine.ops.conv1d as conv
import py_engine.ops.selective_scan as ss
""")


rng = np.random.default_rng(1234)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# conv1d
# ---------------------------------------------------------------------------------------------

CONV_CASES = [  # nb, T, I, silu, x as a Cols view of [x | z]
    (1, 1, 40, True, False),
    (3, 5, 80, False, True),
    (1, 37, 40, True, True),
    (3, 2, 40, True, False),   # T < K: zero-padded state
]


@pytest.mark.parametrize("nb,T,I,silu,cols", CONV_CASES)
def test_conv1d_forward_state_step(engine, nb, T, I, silu, cols):
    K, T2 = 4, 3
    xz = f32(nb, T + T2, 2 * I)
    w, bias = f32(I, K, scale=0.5), f32(I)
    x = xz[..., :I]
    x1, x2 = x[:, :T], x[:, T:]
    xa = "Cols(T['xz1'], 0, I, ({nb}, {T}, I))" if cols else "T['x1']"
    code = f"""
I, silu = {I}, {silu}
x1 = {xa.format(nb=nb, T=T)}
y1, st = conv.conv1d_forward(b, x1, T['w'], T['bias'], silu=silu, write_state=True)
# continue from the state with the next T2 tokens
y2, st2 = conv.conv1d_forward(b, T['x2'], T['w'], T['bias'], silu=silu, state_in=st, write_state=True)
# unrolled steps over all T + T2 tokens from a zero state
ss_state = Tensor.from_bytes(dev, ({nb}, I, {K}), bytes({nb} * I * {K} * 4))
ys = Tensor(dev, ({nb}, {T + T2}, I))
ysf = Tensor(dev, ({nb}, {T + T2} * I), buffer=ys.buffer, offset=ys.offset)
for t in range({T + T2}):
    yt = conv.conv1d_step(b, Cols(T['xall'], t * I, I, ({nb}, I)), ss_state, T['w'], T['bias'],
                          silu=silu, out=Cols(ysf, t * I, I, ({nb}, I)))
info['step_dispatches'] = b.dispatch_count
outs.update(y1=y1, st=st, y2=y2, st2=st2, ys=ys, ss_state=ss_state)
"""
    # xall viewed as [nb, (T+T2)*I] so token t of sequence b is columns t*I..t*I+I of row b
    o, info = gpu(engine, code, xz1=np.ascontiguousarray(xz[:, :T]).reshape(nb * T, 2 * I),
                  x1=x1, x2=x2, xall=np.ascontiguousarray(x).reshape(nb, (T + T2) * I), w=w,
                  bias=bias)
    act = ew_ref.silu if silu else (lambda v: v)
    X, W, Bb = d64(x), d64(w), d64(bias)
    ref_all = act(conv_ref.causal_conv1d(X, W, Bb))
    assert rel_err(o["y1"], ref_all[:, :T]) <= 1e-5
    assert rel_err(o["st"], conv_ref.conv_state_from_inputs(X[:, :T], K)) == 0.0
    assert rel_err(o["y2"], ref_all[:, T:]) <= 1e-5
    assert rel_err(o["st2"], conv_ref.conv_state_from_inputs(X, K)) == 0.0
    assert rel_err(o["ys"], ref_all) <= 1e-5
    assert rel_err(o["ss_state"], conv_ref.conv_state_from_inputs(X, K)) == 0.0
    assert info["step_dispatches"] == 2 + (T + T2)   # 1 dispatch per conv step (SiLU fused)


@pytest.mark.parametrize("nb,T,I,silu,with_state", [(1, 5, 40, False, False), (3, 37, 80, True, True),
                                                     (2, 130, 40, True, False)])
def test_conv1d_backward(engine, nb, T, I, silu, with_state):
    K = 4
    x, dy = f32(nb, T, I), f32(nb, T, I)
    w, bias = f32(I, K, scale=0.5), f32(I)
    st = f32(nb, I, K)
    dx0, dw0, db0 = f32(nb, T, I), f32(I, K), f32(I)
    sarg = "T['st']" if with_state else "None"
    code = f"""
dx, dw, db = conv.conv1d_backward(b, T['dy'], T['x'], T['w'], T['bias'], silu={silu}, state_in={sarg})
info['dispatches'] = b.dispatch_count
b.submit()
dx2, dw2, db2 = conv.conv1d_backward(b, T['dy'], T['x'], T['w'], T['bias'], silu={silu}, state_in={sarg},
                                     dx=T['dx0'], dw=T['dw0'], db=T['db0'], accumulate=True)
# dx written straight into the x half of in_proj's [x | z] gradient
dxz = Tensor.from_bytes(dev, ({nb} * {T}, 2 * {I}), bytes({nb} * {T} * 2 * {I} * 4))
conv.conv1d_backward(b, T['dy'], T['x'], T['w'], T['bias'], silu={silu}, state_in={sarg},
                     dx=Cols(dxz, 0, {I}, ({nb}, {T}, {I})))
outs.update(dx=dx, dw=dw, db=db, dx2=dx2, dw2=dw2, db2=db2, dxz=dxz)
"""
    o, info = gpu(engine, code, x=x, dy=dy, w=w, bias=bias, st=st, dx0=dx0, dw0=dw0, db0=db0)
    X, W, Bb, DY = d64(x), d64(w), d64(bias), d64(dy)
    left = np.swapaxes(d64(st)[..., 1:], -1, -2) if with_state else None  # inputs x[-(K-1)..-1]
    g = DY
    if silu:
        g = ew_ref.silu_backward(DY, conv_ref.causal_conv1d(X, W, Bb, left=left))
    rdx, rdw, rdb, _ = conv_ref.causal_conv1d_backward(g, X, W, True, left=left)
    assert info["dispatches"] == 3
    assert rel_err(o["dx"], rdx) <= 1e-5
    assert rel_err(o["dw"], rdw) <= 1e-4
    assert rel_err(o["db"], rdb) <= 1e-4
    assert rel_err(o["dx2"], rdx + dx0) <= 1e-5
    assert rel_err(o["dw2"], rdw + dw0) <= 1e-4
    assert rel_err(o["db2"], rdb + db0) <= 1e-4
    dxz = o["dxz"].reshape(nb, T, 2 * I)
    assert rel_err(dxz[..., :I], rdx) <= 1e-5 and np.all(dxz[..., I:] == 0)


def test_fd_conv1d_reference():
    """The numpy conv backward used above, against central differences (float64)."""
    r = np.random.default_rng(5)
    x, w, b_, dy = r.standard_normal((2, 6, 3)), r.standard_normal((3, 4)), r.standard_normal(3), \
        r.standard_normal((2, 6, 3))
    dx, dw, db, _ = conv_ref.causal_conv1d_backward(dy, x, w, True)
    loss = lambda x_, w_, b2: np.sum(dy * conv_ref.causal_conv1d(x_, w_, b2))  # noqa: E731
    eps = 1e-6
    for arr, grad in ((x, dx), (w, dw), (b_, db)):
        v = r.standard_normal(arr.shape)
        args = lambda s: [(a + s * v if a is arr else a) for a in (x, w, b_)]  # noqa: E731
        fd = (loss(*args(eps)) - loss(*args(-eps))) / (2 * eps)
        assert abs(fd - np.sum(grad * v)) <= 1e-7 * max(1.0, abs(fd))


# ---------------------------------------------------------------------------------------------
# selective scan
# ---------------------------------------------------------------------------------------------


def scan_inputs(nb, T, I, N, h0=True, extreme=True):
    R = 3  # dt_rank: B and C live in x_proj's [dt_low | B | C] output, read as views
    d = {
        "u": f32(nb, T, I),
        "delta": f32(nb, T, I, scale=0.5),
        "A_log": (np.log(np.arange(1, N + 1, dtype=np.float64))[None, :] +
                  0.1 * rng.standard_normal((I, N))).astype(np.float32),
        "xproj": f32(nb * T, R + 2 * N),
        "D": f32(I, scale=0.5) + 1.0,
        "xz": f32(nb * T, 2 * I),
        "dt_bias": rng.uniform(-4.0, -1.0, I).astype(np.float32),
        "h0": f32(nb, I, N, scale=0.5),
    }
    if extreme:  # both softplus branches and tails
        d["delta"][0, 0, :3] = [25.0, -30.0, 22.0]
    if not h0:
        del d["h0"]
    return d, R


def ref_parts(d, nb, T, I, N, R):
    xp = d64(d["xproj"]).reshape(nb, T, R + 2 * N)
    z = d64(d["xz"]).reshape(nb, T, 2 * I)[..., I:]
    return xp[..., R:R + N], xp[..., R + N:], z


SCAN_VIEWS = """
nb, Tn, I, N, R = {nb}, {T}, {I}, {N}, {R}
Bv = Cols(T['xproj'], R, N, (nb, Tn, N))
Cv = Cols(T['xproj'], R + N, N, (nb, Tn, N))
zv = Cols(T['xz'], I, I, (nb, Tn, I)) if {gate} else None
h0 = T.get('h0')
bias = T['dt_bias']
eps = {eps}
"""

SCAN_CASES = [  # nb, T, I, N, chunk, gate, h0, norm eps
    (1, 1, 40, 16, None, True, True, None),
    (3, 5, 80, 8, None, True, False, None),
    (1, 37, 40, 16, 16, True, True, None),
    (3, 37, 40, 8, 8, False, True, None),
    (1, 130, 80, 16, 32, True, False, None),
    (3, 130, 40, 16, None, True, True, None),
    (1, 37, 40, 16, 16, True, True, 1e-6),   # Falcon-Mamba: B/C RMSNorm fused
]


@pytest.mark.parametrize("nb,T,I,N,chunk,gate,with_h0,eps", SCAN_CASES)
def test_selective_scan_forward_and_step(engine, nb, T, I, N, chunk, gate, with_h0, eps):
    d, R = scan_inputs(nb, T, I, N, h0=with_h0)
    code = SCAN_VIEWS.format(nb=nb, T=T, I=I, N=N, R=R, gate=gate, eps=eps) + f"""
y, hT, _ = ss.selective_scan_forward(b, T['u'], T['delta'], T['A_log'], Bv, Cv, T['D'], zv, bias,
                                     h0=h0, chunk={chunk}, norm_bc_eps=eps)
info['fwd_dispatches'] = b.dispatch_count
b.submit()
# unrolled one-token steps, state in place
st = Tensor(dev, (nb, I, N))
if h0 is not None:
    b.copy(h0.buffer, h0.offset, st.buffer, st.offset, h0.nbytes)
else:
    dev.write(st.buffer, bytes(nb * I * N * 4), st.offset)
ys = Tensor(dev, (nb, Tn, I))
flat = lambda t, w: Tensor(dev, (nb, Tn * w), buffer=t.buffer, offset=t.offset)
xpf = Tensor(dev, (nb, Tn * (R + 2 * N)), buffer=T['xproj'].buffer)
xzf = Tensor(dev, (nb, Tn * 2 * I), buffer=T['xz'].buffer)
n0 = b.dispatch_count
for t in range(Tn):
    tok = lambda a, off, w: Cols(a, off, w, (nb, w))
    ss.selective_scan_step(b, tok(flat(T['u'], I), t * I, I), tok(flat(T['delta'], I), t * I, I),
                           T['A_log'], tok(xpf, t * (R + 2 * N) + R, N),
                           tok(xpf, t * (R + 2 * N) + R + N, N), st, T['D'],
                           tok(xzf, t * 2 * I + I, I) if zv is not None else None, bias,
                           out=tok(flat(ys, I), t * I, I), norm_bc_eps=eps)
info['step_dispatches'] = b.dispatch_count - n0
outs.update(y=y, hT=hT, ys=ys, st=st)
"""
    o, info = gpu(engine, code, **d)
    Bm, Cm, z = ref_parts(d, nb, T, I, N, R)
    if eps is not None:
        Bm, Cm = rms_ref.rmsnorm(Bm, eps=eps), rms_ref.rmsnorm(Cm, eps=eps)
    ry, rh = scan_ref.selective_scan(d64(d["u"]), d64(d["delta"]), d64(d["A_log"]), Bm, Cm, d64(d["D"]),
                               z if gate else None, d64(d["dt_bias"]), d64(d.get("h0")))
    nc = -(-T // (chunk or T)) if chunk else None
    if nc is not None:
        assert info["fwd_dispatches"] == (1 if nc == 1 else 3)
    assert info["step_dispatches"] == T
    assert rel_err(o["y"], ry) <= 1e-4
    assert rel_err(o["hT"], rh) <= 1e-4
    assert rel_err(o["ys"], ry) <= 1e-4
    assert rel_err(o["st"], rh) <= 1e-4


def test_scan_and_conv_continue_from_prefill_state(engine):
    """Prefill T1 tokens (forward writing conv + ssm state), then one decode step == the
    forward over T1 + 1 tokens at its last position; the states match too."""
    nb, T1, I, N, K = 3, 37, 40, 16, 4
    d, R = scan_inputs(nb, T1 + 1, I, N, h0=False, extreme=False)
    xc = f32(nb, T1 + 1, I)
    w, cb = f32(I, K, scale=0.5), f32(I)
    code = SCAN_VIEWS.format(nb=nb, T=T1 + 1, I=I, N=N, R=R, gate=True, eps=None) + f"""
T1 = {T1}
sub = lambda t, n, w, lo=0: Tensor(dev, (n, T1 + 1, w), buffer=t.buffer)
# full forward over T1 + 1 tokens
yc, _ = conv.conv1d_forward(b, T['xc'], T['w'], T['cb'], silu=True)
y_full, h_full, _ = ss.selective_scan_forward(b, yc, T['delta'], T['A_log'], Bv, Cv, T['D'], zv, bias,
                                              chunk=16)
b.submit()
# prefill T1 tokens: inputs are the first T1 rows of each sequence -> copy into [nb, T1, .]
def head(t, w):
    o = Tensor(dev, (nb, T1, w))
    for s in range(nb):
        b.copy(t.buffer, t.offset + s * (T1 + 1) * w * 4, o.buffer, o.offset + s * T1 * w * 4, T1 * w * 4)
    return o
def last(t, w):
    o = Tensor(dev, (nb, w))
    for s in range(nb):
        b.copy(t.buffer, t.offset + (s * (T1 + 1) + T1) * w * 4, o.buffer, o.offset + s * w * 4, w * 4)
    return o
xc1, d1, xp1, xz1 = head(T['xc'], I), head(T['delta'], I), head(T['xproj'], R + 2 * N), head(T['xz'], 2 * I)
yc1, cst = conv.conv1d_forward(b, xc1, T['w'], T['cb'], silu=True, write_state=True)
xp1f = Tensor(dev, (nb * T1, R + 2 * N), buffer=xp1.buffer)
xz1f = Tensor(dev, (nb * T1, 2 * I), buffer=xz1.buffer)
_, hst, _ = ss.selective_scan_forward(b, yc1, d1, T['A_log'], Cols(xp1f, R, N, (nb, T1, N)),
                                      Cols(xp1f, R + N, N, (nb, T1, N)), T['D'],
                                      Cols(xz1f, I, I, (nb, T1, I)), bias, chunk=16)
# one decode step
xt, dt_, xpt, xzt = last(T['xc'], I), last(T['delta'], I), last(T['xproj'], R + 2 * N), last(T['xz'], 2 * I)
n0 = b.dispatch_count
ut = conv.conv1d_step(b, xt, cst, T['w'], T['cb'], silu=True)
yt = ss.selective_scan_step(b, ut, dt_, T['A_log'], Cols(xpt, R, N), Cols(xpt, R + N, N), hst, T['D'],
                            Cols(xzt, I, I), bias)
info['decode_dispatches'] = b.dispatch_count - n0
outs.update(y_full=y_full, h_full=h_full, yt=yt, hst=hst, cst=cst)
"""
    o, info = gpu(engine, code, xc=xc, w=w, cb=cb, **d)
    Bm, Cm, z = ref_parts(d, nb, T1 + 1, I, N, R)
    u = ew_ref.silu(conv_ref.causal_conv1d(d64(xc), d64(w), d64(cb)))
    ry, rh = scan_ref.selective_scan(u, d64(d["delta"]), d64(d["A_log"]), Bm, Cm, d64(d["D"]), z,
                               d64(d["dt_bias"]))
    assert info["decode_dispatches"] == 2
    assert rel_err(o["y_full"], ry) <= 1e-4
    assert rel_err(o["h_full"], rh) <= 1e-4
    assert rel_err(o["yt"], ry[:, -1]) <= 1e-4
    assert rel_err(o["hst"], rh) <= 1e-4
    assert rel_err(o["cst"], conv_ref.conv_state_from_inputs(d64(xc), K)) == 0.0


BWD_CASES = [  # nb, T, I, N, chunk, gate, h0, dh_last, norm eps, save
    (1, 1, 40, 16, None, True, True, True, None, True),
    (3, 5, 80, 8, None, False, False, False, None, True),
    (1, 37, 40, 16, 16, True, True, True, None, True),
    (3, 37, 40, 8, 8, True, True, False, None, False),
    (1, 130, 80, 16, 32, True, False, True, None, True),
    (3, 130, 40, 16, None, True, True, True, None, False),
    (2, 37, 40, 16, 16, True, True, True, 1e-6, True),
]


def ref_backward(d, nb, T, I, N, R, gate, eps, dy, dh_last):
    Bm, Cm, z = ref_parts(d, nb, T, I, N, R)
    Bn, Cn = (rms_ref.rmsnorm(Bm, eps=eps), rms_ref.rmsnorm(Cm, eps=eps)) if eps else (Bm, Cm)
    g = scan_ref.selective_scan_backward(dy, d64(d["u"]), d64(d["delta"]), d64(d["A_log"]), Bn, Cn,
                                   d64(d["D"]), z if gate else None, d64(d["dt_bias"]),
                                   d64(d.get("h0")), dh_last)
    g["ddt_bias"] = g["ddelta_bias"]
    if eps:
        g["dB"] = rms_ref.rmsnorm_backward(g["dB"], Bm, eps=eps)[0]
        g["dC"] = rms_ref.rmsnorm_backward(g["dC"], Cm, eps=eps)[0]
    return g


@pytest.mark.parametrize("nb,T,I,N,chunk,gate,with_h0,with_dh,eps,save", BWD_CASES)
def test_selective_scan_backward(engine, nb, T, I, N, chunk, gate, with_h0, with_dh, eps, save):
    d, R = scan_inputs(nb, T, I, N, h0=with_h0)
    dy = f32(nb, T, I)
    dh = f32(nb, I, N) if with_dh else None
    extra = {"dy": dy}
    if with_dh:
        extra["dh"] = dh
    code = SCAN_VIEWS.format(nb=nb, T=T, I=I, N=N, R=R, gate=gate, eps=eps) + f"""
y, hT, saved = ss.selective_scan_forward(b, T['u'], T['delta'], T['A_log'], Bv, Cv, T['D'], zv, bias,
                                         h0=h0, chunk={chunk}, save={save}, norm_bc_eps=eps)
b.submit()
n0 = b.dispatch_count
dxz = Tensor.from_bytes(dev, (nb * Tn, 2 * I), bytes(nb * Tn * 2 * I * 4))
dxp = Tensor.from_bytes(dev, (nb * Tn, R + 2 * N), bytes(nb * Tn * (R + 2 * N) * 4))
grads = dict(dB=Cols(dxp, R, N, (nb, Tn, N)), dC=Cols(dxp, R + N, N, (nb, Tn, N)))
if zv is not None:
    grads['dz'] = Cols(dxz, I, I, (nb, Tn, I))
g = ss.selective_scan_backward(b, T['dy'], T['u'], T['delta'], T['A_log'], Bv, Cv, T['D'], zv, bias,
                               h0=h0, saved=saved if {save} else None, dh_last=T.get('dh'),
                               want_dh0=True, grads=grads, norm_bc_eps=eps, chunk={chunk})
info['bwd_dispatches'] = b.dispatch_count - n0
b.submit()
first = {{k: await g[k].to_bytes() for k in ('du', 'ddelta', 'dA_log', 'dD', 'ddt_bias', 'dh0')}}
first['dxp'] = await dxp.to_bytes()
# again, accumulating the parameter gradients: bit-identical reruns, then 2x
g2 = ss.selective_scan_backward(b, T['dy'], T['u'], T['delta'], T['A_log'], Bv, Cv, T['D'], zv, bias,
                                h0=h0, saved=saved if {save} else None, dh_last=T.get('dh'),
                                want_dh0=True, norm_bc_eps=eps, chunk={chunk},
                                grads=dict(dA_log=g['dA_log'], dD=g['dD'], ddt_bias=g['ddt_bias']),
                                accumulate=True)
b.submit()
info['same'] = all([await g2[k].to_bytes() == first[k] for k in ('du', 'ddelta', 'dh0')])
outs.update({{k: v for k, v in g.items() if k not in ('dB', 'dC', 'dz')}})
outs.update(dxz=dxz, dxp=dxp)
outs.update({{k + '_1': Tensor.from_bytes(dev, (len(first[k]) // 4,), first[k]) for k in first}})
"""
    o, info = gpu(engine, code, **d, **extra)
    ref = ref_backward(d, nb, T, I, N, R, gate, eps, d64(dy), d64(dh))
    assert info["same"]
    if chunk:
        nc = -(-T // chunk)
        assert info["bwd_dispatches"] == 7 + (0 if save or nc == 1 else 2)
    for k in ("du", "ddelta", "dh0"):
        assert rel_err(o[k], ref[k]) <= 1e-4, k
    for k in ("dA_log", "dD", "ddt_bias"):
        assert rel_err(o[k + "_1"], ref[k]) <= 1e-4, k
        assert rel_err(o[k], 2 * ref[k]) <= 1e-4, k   # accumulated twice
    dxp = o["dxp_1"].reshape(nb, T, R + 2 * N)
    assert np.all(dxp[..., :R] == 0)                 # only the B/C columns were written
    assert rel_err(dxp[..., R:R + N], ref["dB"]) <= 1e-4
    assert rel_err(dxp[..., R + N:], ref["dC"]) <= 1e-4
    dxz = o["dxz"].reshape(nb, T, 2 * I)
    assert np.all(dxz[..., :I] == 0)
    if gate:
        assert rel_err(dxz[..., I:], ref["dz"]) <= 1e-4
    else:
        assert np.all(dxz == 0)


def test_fd_selective_scan_reference():
    """The numpy scan backward used above, against central differences (float64), with h0,
    gating, dt_bias and a gradient on the final state."""
    r = np.random.default_rng(7)
    nb, T, I, N = 2, 6, 3, 4
    a = dict(u=r.standard_normal((nb, T, I)), delta=r.standard_normal((nb, T, I)),
             A_log=r.standard_normal((I, N)) * 0.3, B=r.standard_normal((nb, T, N)),
             C=r.standard_normal((nb, T, N)), D=r.standard_normal(I), z=r.standard_normal((nb, T, I)),
             delta_bias=r.standard_normal(I), h0=r.standard_normal((nb, I, N)))
    dy, dh = r.standard_normal((nb, T, I)), r.standard_normal((nb, I, N))

    def loss(p):
        y, h = scan_ref.selective_scan(p["u"], p["delta"], p["A_log"], p["B"], p["C"], p["D"], p["z"],
                                 p["delta_bias"], p["h0"])
        return np.sum(dy * y) + np.sum(dh * h)

    g = scan_ref.selective_scan_backward(dy, a["u"], a["delta"], a["A_log"], a["B"], a["C"], a["D"], a["z"],
                                   a["delta_bias"], a["h0"], dh)
    names = {"u": "du", "delta": "ddelta", "A_log": "dA_log", "B": "dB", "C": "dC", "D": "dD",
             "z": "dz", "delta_bias": "ddelta_bias", "h0": "dh0"}
    eps = 1e-6
    for k, gk in names.items():
        v = r.standard_normal(a[k].shape)
        fd = (loss({**a, k: a[k] + eps * v}) - loss({**a, k: a[k] - eps * v})) / (2 * eps)
        assert abs(fd - np.sum(g[gk] * v)) <= 1e-6 * max(1.0, abs(fd)), k
