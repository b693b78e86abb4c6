"""Mamba-2 SSD kernels (py_engine/ops/ssd.py: chunked forward, one-token step) in headless
Chromium's WebGPU, against the float64 numpy reference tests/reference/ssd_numpy.py (itself checked
against transformers' mamba2_chunk_scan in tests/unit/test_ssd_reference.py).

Tolerance: relative error <= 1e-4 of the scale (max |.|) of the reference output, as the other
scans. Shapes are tiny (SwiftShader is a CPU) except one case at the real head shape (N = 128,
P = 64) that proves those shapes run within the workgroup-memory limit.
"""
import numpy as np
import pytest

from tests.browser.kernel_harness import d64, rel_err, runner
from tests.reference import ssd_numpy as sn

pytestmark = pytest.mark.browser

gpu = runner()

TOL = 1e-4
rng = np.random.default_rng(2024)


def f32(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


FWD_CASES = [  # nb, T, H, P, G, N, chunk, with h0, h_out = h0 (in place), Cols views, dt (min, max)
    pytest.param(1, 1, 4, 12, 1, 8, 256, False, False, True, (0.0, None), id="T1-default-chunk"),
    pytest.param(2, 5, 4, 20, 2, 6, 16, True, True, False, (0.0, None), id="T<L-G2-inplace"),
    pytest.param(1, 37, 2, 12, 1, 8, 16, False, False, True, (0.0, None), id="3chunks-ragged"),
    pytest.param(2, 24, 4, 12, 2, 4, 8, True, True, True, (0.05, 0.6), id="dt-clamp-B2"),
    pytest.param(2, 21, 6, 3, 3, 5, 4, True, False, False, (0.0, None), id="6chunks-G3"),
    pytest.param(1, 40, 2, 64, 1, 128, 16, True, False, True, (0.0, None), id="real-head-N128-P64"),
    # 12 chunks: the carry's blocks of eight chunks and a tail of four
    pytest.param(2, 45, 2, 6, 1, 4, 4, True, False, True, (0.0, None), id="12chunks-carry8"),
    # the real head at 8-token chunks: ssd_chunked.wgsl's tiles fit 16 KiB there
    pytest.param(1, 21, 2, 64, 1, 128, 8, True, False, False, (0.0, None), id="real-head-L8"),
    # N 5 at L 8 and P 12: neither a multiple of 4 (tests/unit/test_ssd_chunked_native.py also
    # runs it with ssd_chunked.wgsl's operands in blocks of one dim)
    pytest.param(1, 20, 2, 12, 1, 5, 8, True, False, True, (0.0, None), id="N5-P12-L8"),
]

CODE = """
import py_engine.ops.ssd as ssd
nb, Tn, H, P, G, N, L = {nb}, {T}, {H}, {P}, {G}, {N}, {L}
HP, GN = H * P, G * N
W, WD = HP + 2 * GN, {WD}                 # conv output [x | B | C]; in_proj output, dt last
cols, inplace = {cols}, {inplace}
kw = dict(n_groups=G, D=T['D'], dt_bias=T['dt_bias'], dt_min={dt_min}, dt_max={dt_max})
flat = lambda t, w: Tensor(dev, (nb, Tn * w), buffer=t.buffer, offset=t.offset)
tok = lambda a, off, w: Cols(a, off, w, (nb, w))   # token t of every sequence: a [nb, Tn*w]
if cols:
    xv = Cols(T['xbc'], 0, HP, (nb, Tn, HP))
    Bv = Cols(T['xbc'], HP, GN, (nb, Tn, GN))
    Cv = Cols(T['xbc'], HP + GN, GN, (nb, Tn, GN))
    dtv = Cols(T['proj'], WD - H, H, (nb, Tn, H))
    xf, pf = flat(T['xbc'], W), flat(T['proj'], WD)
    step_in = lambda t: (tok(xf, t * W, HP), tok(pf, t * WD + WD - H, H), tok(xf, t * W + HP, GN),
                         tok(xf, t * W + HP + GN, GN))
else:
    xv, Bv, Cv, dtv = T['x'], T['B'], T['C'], T['dt']
    step_in = lambda t: (tok(flat(T['x'], HP), t * HP, HP), tok(flat(T['dt'], H), t * H, H),
                         tok(flat(T['B'], GN), t * GN, GN), tok(flat(T['C'], GN), t * GN, GN))
h0 = T.get('h0')
st = Tensor(dev, (nb, H, P, N))           # the step's state: a copy of h0 (or zeros)
if h0 is not None:
    b.copy(h0.buffer, h0.offset, st.buffer, st.offset, h0.nbytes)
else:
    dev.write(st.buffer, bytes(nb * H * P * N * 4), st.offset)
Lk = ssd.loop_chunk(dev, L, P, N, H // G)
info['spread_fits'] = ssd.spread_chunk(dev, Lk, P, N) == Lk
info['limit'] = dev.limits['maxComputeWorkgroupStorageSize']
dev.ssd_parallel = {spread}
try:
    info['path'] = ssd.forward_path(dev, Tn, Lk, P, N)
    n0 = b.dispatch_count
    y, hT, saved = ssd.ssd_forward(b, xv, dtv, T['A_log'], Bv, Cv, chunk=L, h0=h0,
                                   h_out=h0 if inplace else None, save=True, **kw)
    info['fwd_dispatches'] = b.dispatch_count - n0
    info['in_place'] = hT is h0
    info['saved'] = [saved.chunk, saved.nc, list(saved.hc.shape)]
    b.submit()
    if not inplace:   # a rerun is bit-identical (fixed-order sums, no atomics)
        y2, hT2, _ = ssd.ssd_forward(b, xv, dtv, T['A_log'], Bv, Cv, chunk=L, h0=h0, **kw)
        b.submit()
        info['same'] = (await y2.to_bytes() == await y.to_bytes() and
                        await hT2.to_bytes() == await hT.to_bytes())
finally:
    dev.ssd_parallel = None
# unrolled one-token steps from the same initial state, outputs into a [nb, Tn, HP] tensor
ys = Tensor(dev, (nb, Tn, HP))
n0 = b.dispatch_count
for t in range(Tn):
    xt, dtt, Bt, Ct = step_in(t)
    ssd.ssd_step(b, xt, dtt, T['A_log'], Bt, Ct, st, out=tok(flat(ys, HP), t * HP, HP), **kw)
info['step_dispatches'] = b.dispatch_count - n0
# one more step on a copy of the forward's final state, plain tensors, a new output tensor
s2 = Tensor(dev, (nb, H, P, N))
b.copy(hT.buffer, hT.offset, s2.buffer, s2.offset, hT.nbytes)
y1 = ssd.ssd_step(b, T['x1'], T['dt1'], T['A_log'], T['B1'], T['C1'], s2, **kw)
outs.update(y=y, hT=hT, hc=saved.hc, ys=ys, st=st, y1=y1, s2=s2)
"""


# each case on ssd_forward.wgsl's chunk kernels; those of several chunks on ssd_chunked.wgsl's
RUNS = [pytest.param(*c.values, False, id=c.id) for c in FWD_CASES] + \
    [pytest.param(*c.values, True, id=c.id + "-spread") for c in FWD_CASES
     if c.values[1] > c.values[6]]


@pytest.mark.parametrize("nb,T,H,P,G,N,L,with_h0,inplace,cols,dt_lim,spread", RUNS)
def test_ssd_forward_step_reference(engine, nb, T, H, P, G, N, L, with_h0, inplace, cols, dt_lim,
                                    spread):
    """The forward (both chunk paths: ssd_forward.wgsl's 64 threads a chunk, and ssd_chunked.wgsl's
    256, which real GPUs run -- forced here), the unrolled steps and one more step, against the
    float64 recurrence; the forward's chunk start states too."""
    HP, GN = H * P, G * N
    WD = H + 7
    xbc = f32(nb * T, HP + 2 * GN)
    proj = f32(nb * T, WD)
    proj[0, WD - H] = 25.0                # softplus' linear branch (> 20)
    proj[-1, WD - 1] = -8.0               # a tiny dt, below the dt_min of the clamp case
    x = xbc[:, :HP].reshape(nb, T, HP)
    Bm = xbc[:, HP:HP + GN].reshape(nb, T, GN)
    Cm = xbc[:, HP + GN:].reshape(nb, T, GN)
    dt = proj[:, WD - H:].reshape(nb, T, H)
    d = dict(A_log=rng.uniform(-1.0, 1.0, H).astype(np.float32), D=f32(H),
             dt_bias=rng.uniform(-1.0, 0.5, H).astype(np.float32),
             x1=f32(nb, HP), dt1=f32(nb, H), B1=f32(nb, GN), C1=f32(nb, GN))
    if cols:
        d.update(xbc=xbc, proj=proj)
    else:
        d.update(x=x, B=Bm, C=Cm, dt=dt)
    if with_h0:
        d["h0"] = f32(nb, H, P, N)
    dt_min, dt_max = dt_lim
    code = CODE.format(nb=nb, T=T, H=H, P=P, G=G, N=N, L=L, WD=WD, cols=cols, inplace=inplace,
                       spread=spread,
                       dt_min=dt_min, dt_max=dt_max if dt_max is not None else "float('inf')")
    o, info = gpu(engine, code, **d)

    lim = dict(dt_min=dt_min, dt_max=dt_max if dt_max is not None else float("inf"))
    par = dict(D=d64(d["D"]), dt_bias=d64(d["dt_bias"]), **lim)
    h0 = d64(d.get("h0"))
    path, L = info["path"]               # the chunk the forward ran (a bench setting may shorten it)
    if spread:                           # its blocks fit WebGPU's default 16 KiB at these heads
        assert info["spread_fits"], info["limit"]
    assert path == ("one" if T <= L else "parallel" if spread and info["spread_fits"] else
                    "chunked")
    ry, rh, rhc = sn.ssd_sequential(d64(x), d64(dt), d64(d["A_log"]), d64(Bm), d64(Cm), G,
                                    h0=h0, chunk=L, **par)
    nc = -(-T // L)
    if dt_max is not None:   # the clamp binds somewhere, or this case tests nothing
        assert sn.process_dt(d64(dt), d64(d["dt_bias"])).max() > dt_max
        assert sn.process_dt(d64(dt), d64(d["dt_bias"])).min() < dt_min
    assert info["fwd_dispatches"] == (1 if nc == 1 else 3)
    assert info["step_dispatches"] == T
    assert info["in_place"] == inplace
    assert info["saved"] == [L, nc, [nb, nc, H, P, N]]
    if not inplace:
        assert info["same"]
    # forward vs the float64 recurrence: outputs, final state, chunk start states
    assert rel_err(o["y"], ry) <= TOL
    assert rel_err(o["hT"], rh) <= TOL
    assert rel_err(o["hc"], rhc) <= TOL
    if not with_h0:
        assert np.all(o["hc"].reshape(rhc.shape)[:, 0] == 0)
    # unrolled steps vs the reference and vs the forward (outputs and final state)
    assert rel_err(o["ys"], ry) <= TOL
    assert rel_err(o["st"], rh) <= TOL
    assert rel_err(o["ys"], o["y"].reshape(ry.shape), np.abs(ry).max()) <= TOL
    assert rel_err(o["st"], o["hT"].reshape(rh.shape), np.abs(rh).max()) <= TOL
    # one step vs the reference step
    r1, rs1 = sn.ssd_step(d64(d["x1"]), d64(d["dt1"]), d64(d["A_log"]), d64(d["B1"]),
                          d64(d["C1"]), rh, G, **par)
    assert rel_err(o["y1"], r1) <= TOL
    assert rel_err(o["s2"], rs1) <= TOL


def test_ssd_chunk_limit_and_shape_errors(engine):
    """A chunk that cannot fit the workgroup memory says so, naming the limit; bad shapes say
    which tensor is wrong. Nothing is dispatched."""
    code = """
import py_engine.ops.ssd as ssd
lim = dev.limits['maxComputeWorkgroupStorageSize']
info['limit'] = lim
info['max_chunk'] = ssd.max_chunk(dev)
info['tile_256'] = ssd.tile_rows(dev, 256)
x, dt, A = Tensor(dev, (1, 4, 12)), Tensor(dev, (1, 4, 2)), Tensor(dev, (2,))
Bm = Tensor(dev, (1, 4, 8))
errs = []
for kw in (dict(chunk=ssd.max_chunk(dev) + 1), dict(chunk=16, n_groups=3)):
    try:
        ssd.ssd_forward(b, x, dt, A, Bm, Bm, **dict(dict(n_groups=1), **kw))
        errs.append(None)
    except ValueError as e:
        errs.append(str(e))
try:
    ssd.ssd_forward(b, x, Tensor(dev, (1, 4, 3)), A, Bm, Bm, n_groups=1, chunk=16)
    errs.append(None)
except ValueError as e:
    errs.append(str(e))
info['errs'] = errs
info['dispatches'] = b.dispatch_count
"""
    _, info = gpu(engine, code, dummy=np.zeros(1, np.float32))
    assert info["dispatches"] == 0
    assert info["max_chunk"] == info["limit"] // 12
    assert 1 <= info["tile_256"] <= 16 and (2 + info["tile_256"]) * 256 * 4 <= info["limit"]
    big, groups, dt_shape = info["errs"]
    assert big is not None and "maxComputeWorkgroupStorageSize" in big and str(info["limit"]) in big
    assert groups is not None and "n_groups=3" in groups
    assert dt_shape is not None and "dt has shape [1, 4, 3]" in dt_shape
