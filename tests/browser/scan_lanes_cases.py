"""The lanes variant of Mamba-1's sequence scan (shaders/selective_scan_lanes.wgsl: F1 and F3 with
16 threads per channel, what real GPUs run for prefill), shared by the native test (lavapipe,
tests/unit/test_scan_lanes_native.py) and the browser one (SwiftShader,
tests/browser/test_kernels_scan_lanes.py). Software adapters would pick the classic kernel, so
both force the variant (`device.force_scan_lanes`) and run the same inputs through the classic
kernel in the same snippet: lanes vs float64 numpy (tests/reference/selective_scan_numpy.py,
Falcon's B/C RMSNorm from rmsnorm_numpy.py) and lanes vs classic."""
import numpy as np

from tests.browser.kernel_harness import EPILOGUE, PRELUDE, d64, rel_err, tensor_args
from tests.reference import rmsnorm_numpy as rms_ref
from tests.reference import selective_scan_numpy as scan_ref

TOL_REF = 1e-4       # vs float64, relative to max |ref| (the classic kernel's tolerance)
TOL_CLASSIC = 1e-5   # vs the classic kernel: the same f32 operations in the same order

CODE = """
import py_engine.ops.selective_scan as ss
R, N, I, nb, Tn = args['R'], args['N'], args['I'], args['nb'], args['T']
Bv = Cols(T['xproj'], R, N, (nb, Tn, N))
Cv = Cols(T['xproj'], R + N, N, (nb, Tn, N))
zv = Cols(T['xz'], I, I, (nb, Tn, I)) if args['gate'] else None
D = T['D'] if args['with_D'] else None
bias = T['dt_bias'] if args['with_bias'] else None
h0 = T.get('h0')
eps = args['eps']
for kernel, force in (('lanes', True), ('lanesloop', True), ('classic', False)):
    dev.force_scan_lanes = force
    dev.scan_red16 = kernel != 'lanesloop'   # the 16 lane terms summed by the loop instead
    info[kernel + '_picked'] = ss.scan_kernel(dev)
    n0 = b.dispatch_count
    y, hT, saved = ss.selective_scan_forward(b, T['u'], T['delta'], T['A_log'], Bv, Cv, D, zv, bias,
                                             h0=h0, chunk=args['chunk'], save=args['backward'],
                                             norm_bc_eps=eps)
    info[kernel + '_dispatches'] = b.dispatch_count - n0
    info[kernel + '_nc'] = saved.nc if saved is not None else None
    outs[kernel + '_y'], outs[kernel + '_h'] = y, hT
    if args['backward'] and kernel == 'lanesloop':
        b.submit()
        saved.release()
    elif args['backward']:   # the backward from the lanes forward's saved chunk states
        g = ss.selective_scan_backward(b, T['dy'], T['u'], T['delta'], T['A_log'], Bv, Cv, D, zv,
                                       bias, h0=h0, saved=saved, want_dh0=True, norm_bc_eps=eps)
        for k in ('du', 'ddelta', 'dA_log', 'dB', 'dC', 'dh0'):
            outs[kernel + '_' + k] = g[k]
        b.submit()
        saved.release()
dev.force_scan_lanes = dev.scan_red16 = None
info['entries'] = sorted(k[1] for k in dev._pipelines if k[0] == 'selective_scan_lanes')
"""


def scan_case(rng, nb, T, I, N, h0=True):
    """Inputs as the model feeds them: B and C read as column views of x_proj's
    [dt_low | B | C] output, z of in_proj's [x | z]; both softplus branches in delta."""
    R = 3
    d = {
        "u": rng.standard_normal((nb, T, I)),
        "delta": 0.5 * rng.standard_normal((nb, T, I)),
        "A_log": np.log(np.arange(1, N + 1, dtype=np.float64))[None, :] +
        0.1 * rng.standard_normal((I, N)),
        "xproj": rng.standard_normal((nb * T, R + 2 * N)),
        "D": 0.5 * rng.standard_normal(I) + 1.0,
        "xz": rng.standard_normal((nb * T, 2 * I)),
        "dt_bias": rng.uniform(-4.0, -1.0, I),
        "h0": 0.5 * rng.standard_normal((nb, I, N)),
        "dy": rng.standard_normal((nb, T, I)),
    }
    d["delta"][0, 0, :3] = [25.0, -30.0, 22.0][:min(3, I)]
    if not h0:
        del d["h0"]
    return {k: np.asarray(v, dtype=np.float32) for k, v in d.items()}, R


def check_lanes(engine, nb, T, I, N, chunk, gate=True, with_h0=True, with_D=True, with_bias=True,
                eps=None, backward=False, seed=0):
    """Forward (and, with backward, the gradients from the lanes forward's ScanSaved) on both
    kernels, against float64 and against each other. Returns the run's info."""
    rng = np.random.default_rng(seed)
    d, R = scan_case(rng, nb, T, I, N, h0=with_h0)
    spec, data = tensor_args(d)
    res = engine.run(PRELUDE + CODE + EPILOGUE, spec=spec, data=data, R=R, N=N, I=I, nb=nb, T=T,
                     gate=gate, with_D=with_D, with_bias=with_bias, eps=eps, chunk=chunk,
                     backward=backward)
    o = {k: np.frombuffer(v, dtype=np.float32).astype(np.float64) for k, v in res["outs"].items()}
    info = res["info"]
    xp = d64(d["xproj"]).reshape(nb, T, R + 2 * N)
    Bm, Cm = xp[..., R:R + N], xp[..., R + N:]
    if eps is not None:
        Bn, Cn = rms_ref.rmsnorm(Bm, eps=eps), rms_ref.rmsnorm(Cm, eps=eps)
    else:
        Bn, Cn = Bm, Cm
    z = d64(d["xz"]).reshape(nb, T, 2 * I)[..., I:] if gate else None
    D = d64(d["D"]) if with_D else np.zeros(I)
    bias = d64(d["dt_bias"]) if with_bias else None
    h0 = d64(d.get("h0"))
    ry, rh = scan_ref.selective_scan(d64(d["u"]), d64(d["delta"]), d64(d["A_log"]), Bn, Cn, D, z,
                                     bias, h0)
    assert info["lanes_picked"] == "lanes" and info["classic_picked"] == "classic"
    assert "selective_scan_forward_lanes" in info["entries"]
    nc = -(-T // min(chunk or T, T))
    if chunk is not None:
        assert info["lanes_dispatches"] == info["classic_dispatches"] == (1 if nc == 1 else 3)
        if nc > 1:
            assert "selective_scan_forward_chunk_lanes" in info["entries"]
    for name in ("y", "h"):          # the written-out sum of the lanes' terms: the loop's bits
        assert np.array_equal(o["lanes_" + name], o["lanesloop_" + name]), name
    for name, ref in (("y", ry), ("h", rh)):
        assert rel_err(o["lanes_" + name], ref) <= TOL_REF, (name, rel_err(o["lanes_" + name], ref))
        assert rel_err(o["lanes_" + name], o["classic_" + name], scale=np.abs(ref).max()) \
            <= TOL_CLASSIC, (name, "vs classic")
    if backward:
        g = scan_ref.selective_scan_backward(d64(d["dy"]), d64(d["u"]), d64(d["delta"]),
                                             d64(d["A_log"]), Bn, Cn, D, z, bias, h0)
        if eps is not None:
            g["dB"] = rms_ref.rmsnorm_backward(g["dB"], Bm, eps=eps)[0]
            g["dC"] = rms_ref.rmsnorm_backward(g["dC"], Cm, eps=eps)[0]
        for k in ("du", "ddelta", "dA_log", "dB", "dC", "dh0"):
            assert rel_err(o["lanes_" + k], g[k]) <= TOL_REF, (k, rel_err(o["lanes_" + k], g[k]))
            assert rel_err(o["lanes_" + k], o["classic_" + k], scale=np.abs(g[k]).max()) \
                <= TOL_CLASSIC, (k, "vs classic")
        assert info["lanes_nc"] == info["classic_nc"]
    return info
