"""Row blocks packed side by side in one buffer (py_engine/ops/weight_pack.py) multiplied in ONE
mat-vec dispatch (matvec_forward_pieces in shaders/lib/matvec_rows.wgsl, linear.linear_pieces)
against the same blocks three to a dispatch (linear_multi) and float64 numpy: every format, one
and two x rows, normalised and plain x. Shared by tests/unit/test_matvec_pieces_native.py
(lavapipe, the real-GPU kernel forced) and tools/device_checks.py (a real GPU)."""
import numpy as np

from tests.browser.kernel_harness import runner
from tests.browser.matvec_cases import with_knobs
from tests.reference import weight_format_numpy as ref

gpu = runner("from py_engine.ops import weight_format as wf\nfrom py_engine.ops import linear as L\n"
             "from py_engine.ops.rmsnorm import NormedRows\n"
             "from py_engine.ops.weight_pack import pack_rows, is_packed", decode=False)

# Mamba-3's eight blocks in miniature: z and x tall, B and C short, four of a few rows
ROWS = (37, 37, 8, 8, 3, 3, 3, 5)

CODE = """
Q = [wf.quantize(b, T[f'w{i}'], FMT) for i in range(NW)]
b.submit()                # (f32: Q are T's own tensors, which packing moves)
info['packed'] = pack_rows(dev, Q) and is_packed(dev, Q)
info['again'] = not pack_rows(dev, Q)            # packed already: nothing moves
info['owner'] = [q.pooled for q in Q]            # the first block owns the buffer
for i, q in enumerate(Q):
    outs[f'q{i}'] = q if FMT != 'f32' else None
a = dev.align // 4
info['dispatches'] = {}
for M, xkey in ((1, 'x'), (2, 'x2')):
    for normed in (False, True):
        xin = NormedRows(T[xkey], T['nw'], 1e-5) if normed else T[xkey]
        offs, end = [], 0
        for q in Q:
            offs.append(end)
            end += -(-M * q.shape[0] // a) * a
        block = Tensor(dev, (end,))
        views = [Tensor(dev, (M, q.shape[0]), buffer=block.buffer, offset=block.offset + 4 * o)
                 for q, o in zip(Q, offs)]
        key = f'{M}{"n" if normed else "m"}'
        dev.matvec_pieces = True
        c0 = b.dispatch_count
        L.linear_pieces(b, xin, Q, views)
        info['dispatches'][key] = b.dispatch_count - c0
        dev.matvec_pieces = False
        sep = [Tensor(dev, (M, q.shape[0])) for q in Q]
        c0 = b.dispatch_count
        L.linear_pieces(b, xin, Q, sep)
        info['dispatches'][key + 'sep'] = b.dispatch_count - c0
        for i in range(len(Q)):
            outs[f'p{key}{i}'] = views[i]
            outs[f's{key}{i}'] = sep[i]
dev.matvec_pieces = None
"""


def check_pieces(engine, fmt, K=512, rows=ROWS, seed=7, same_bits=True, **knobs):
    """The pieces dispatch against three-to-a-dispatch and float64. same_bits (with tpr, rpt and
    stage pinned by knobs): the two forms sum each row in the same order, so the same bits."""
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((n, K)).astype(np.float32) * 0.1 for n in rows]
    x2 = rng.standard_normal((2, K)).astype(np.float32)
    nw = rng.uniform(0.5, 1.5, K).astype(np.float32)
    code = with_knobs(CODE.replace("FMT", repr(fmt)).replace("NW", str(len(rows))), **knobs)
    arrays = {f"w{i}": w for i, w in enumerate(ws)}
    outs, info = gpu(engine, code, x=x2[:1], x2=x2, nw=nw, **arrays)
    assert info["packed"] and info["again"], info
    assert info["owner"] == [True] + [False] * (len(rows) - 1), info
    for key in ("1m", "1n", "2m", "2n"):
        assert info["dispatches"][key] == 1, info["dispatches"]
        assert info["dispatches"][key + "sep"] == -(-len(rows) // 3), info["dispatches"]
    W = [ref.unpack(outs[f"q{i}"], w.shape, fmt) if fmt != "f32" else w.astype(np.float64)
         for i, w in enumerate(ws)]
    tol = 2e-6 * np.sqrt(K)
    for M in (1, 2):
        x64 = x2[:M].astype(np.float64)
        xn = x64 / np.sqrt((x64 ** 2).mean(axis=1, keepdims=True) + 1e-5) * nw
        for kind, xin in (("m", x64), ("n", xn)):
            for i in range(len(rows)):
                got = np.frombuffer(outs[f"p{M}{kind}{i}"], np.float32)
                sep = np.frombuffer(outs[f"s{M}{kind}{i}"], np.float32)
                want = (xin @ W[i].T).reshape(-1)
                assert np.abs(want).max() > 1e-3
                assert np.allclose(got, want, atol=tol, rtol=1e-5), \
                    (fmt, M, kind, i, np.abs(got - want).max())
                if same_bits:
                    assert got.tobytes() == sep.tobytes(), \
                        (fmt, M, kind, i, np.abs(got.astype(np.float64) - sep).max())
