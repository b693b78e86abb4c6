"""Mamba-1's folded x_proj with its shares gathered inside the in_proj dispatch
(shaders/lib/matvec_xproj_gather.wgsl) against the same dispatch's plain shares
(lib/matvec_xproj.wgsl): each group's total is its shares added in order (the same f32 bits),
every share word and count is zero again after the dispatch, no word was given up on, the
totals add up to x_proj(u) (float64), and in_proj's u and z are the plain dispatch's. Shared by
tests/unit/test_xproj_fold_native.py (lavapipe) and tests/browser/test_kernels_weight_format.py
(SwiftShader: Chromium's Tint compiles the atomics and the workgroup-uniform reads)."""
import numpy as np

from tests.browser.kernel_harness import runner
from tests.reference import weight_format_numpy as ref

gpu = runner("from py_engine.ops import weight_format as wf\n"
             "from py_engine.ops import elementwise as ew\n"
             "from py_engine.ops.rmsnorm import NormedRows\n"
             "from py_engine.ops.weight_pack import pack_params, pack_rows", decode=False)

CODE = """
K, I, O, S, F, FMT = INFO
dev.matvec_rpt = RPT                                 # q4: two rows a thread, 32-channel blocks
dev.xproj_early = EARLY                              # x_proj's chunks loaded at the start
pack_params(dev, [T['nw'], T['cw'], T['cb']])      # the conv fold reads them through one binding
Q = [wf.quantize(b, T[n], FMT) for n in ('wx', 'wz', 'dt', 'xb', 'xc')]
b.submit()
b = dev.batch()
pack_rows(dev, Q[2:])                               # x_proj's rows side by side, as at load
x = NormedRows(T['x'], T['nw'], 1e-5)
cb = wf.xproj_block(dev, FMT, K, [I, I], 1, O, rule=False)
P = -(-I // cb)
O4 = -(-O // 4) * 4
shares = Tensor(dev, (1, P, O4))
words = Tensor(dev, (wf.xproj_words(1, P, F, O),))
ew.fill(b, words, 0.0)
if STALE:   # a share word left non-zero (a reader gave up on it, its store landed after)
    b.submit()
    b = dev.batch()
    import struct
    dev.write(words.buffer, struct.pack('<I', 0x3F800000), words.offset + 4 * (-(-P // F)) * O4)
outs['u0'], outs['z0'], outs['u1'], outs['z1'] = (Tensor(dev, (1, I)) for _ in range(4))
for u, z, st, out, f in ((outs['u0'], outs['z0'], T['s0'], shares, 0),
                         (outs['u1'], outs['z1'], T['s1'], words, F)):
    wf.matvec(b, x, Q[:2], [u, z], 1, conv=(T['cw'], T['cb'], st, 0),
              xproj=(Q[2], Q[3], Q[4], out, S, f))
outs['shares'], outs['words'] = shares, words
outs.update({f'q{i}': q for i, q in enumerate(Q) if FMT != 'f32'})
info['P'], info['O4'] = P, O4
dev.matvec_rpt = None
dev.xproj_early = None
"""


def check_gather(engine, fmt, F, K=64, I=128, R=4, S=16, seed=3, stale=False, early=False):
    """stale: the first share word holds 1.0 before the dispatch, as a give-up's late store
    would leave it: the share store replaces it, the totals as always, nothing given up on.
    q4 runs at two rows a thread (blocks of 32 channels: its groups). early: x_proj's chunks
    loaded at the kernel's start (XP_EARLY in lib/matvec_xproj.wgsl). Returns the outputs'
    bytes."""
    rng = np.random.default_rng(seed)
    O = R + 2 * S

    def w(*shape, scale=0.1):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    arrays = dict(x=w(1, K, scale=1.0), nw=rng.uniform(0.5, 1.5, K).astype(np.float32),
                  wx=w(I, K), wz=w(I, K), cw=w(I, 4, scale=0.5), cb=w(I), dt=w(R, I),
                  xb=w(S, I), xc=w(S, I))
    state = w(1, I, 4, scale=1.0)
    arrays.update(s0=state, s1=state.copy())
    code = (CODE.replace("INFO", repr((K, I, O, S, F, fmt))).replace("STALE", repr(stale))
            .replace("EARLY", repr(early))
            .replace("RPT", repr(2 if fmt == "q4" else None)))
    outs, info = gpu(engine, code, **arrays)
    f32 = {k: np.frombuffer(v, np.float32) for k, v in outs.items()}
    P, O4 = info["P"], info["O4"]
    PG = -(-P // F)
    assert np.array_equal(f32["u0"], f32["u1"]) and np.array_equal(f32["z0"], f32["z1"])
    shares = f32["shares"].reshape(P, O4)[:, :O]
    words = np.frombuffer(outs["words"], np.uint32)
    totals = f32["words"][:PG * O4].reshape(PG, O4)[:, :O]
    for g in range(PG):                    # the group's shares added in order, f32 as the GPU
        acc = np.zeros(O, np.float32)
        for s in range(g * F, min(P, g * F + F)):
            acc = (acc + shares[s]).astype(np.float32)
        assert np.array_equal(totals[g], acc), (g, np.abs(totals[g] - acc).max())
    assert not words[PG * O4:-1].any(), "share words or counts left non-zero"
    assert words[-1] == 0, f"{words[-1]} share words given up on"
    # the totals are x_proj of the conv's output u (float64 reference of the format's rows)
    W = np.concatenate([ref.unpack(outs[f"q{i}"], a.shape, fmt) if fmt != "f32"
                        else a.astype(np.float64)
                        for i, a in ((2, arrays["dt"]), (3, arrays["xb"]), (4, arrays["xc"]))])
    want = W @ f32["u0"].astype(np.float64)
    got = totals.astype(np.float64).sum(axis=0)
    assert np.allclose(got, want, atol=1e-5 * max(1.0, np.abs(want).max()), rtol=1e-5), \
        np.abs(got - want).max()
    return outs


def check_early_same_bits(engine, fmt, F, R=4):
    """x_proj's chunks loaded at the kernel's start (XP_EARLY) against loaded after the rows'
    sums: every output of check_gather's plain and gathered dispatches the same bytes."""
    late = check_gather(engine, fmt, F, R=R)
    early = check_gather(engine, fmt, F, R=R, early=True)
    differ = [k for k in late if late[k] != early[k]]
    assert not differ, f"outputs differ with the chunks loaded early: {differ}"
