"""Narrow weight formats (py_engine/ops/weight_format.py): quantize stores exactly what the numpy
reference stores, every kernel that reads a narrow weight (decode mat-vec, dequantized GEMM,
embedding gather) sees exactly the reference's values, and a model loaded narrow decodes as its
own parallel path does."""
import numpy as np
import pytest

from tests.browser.kernel_harness import runner
from tests.browser.matvec_cases import check_staged
from tests.browser.matvec_pieces_cases import check_pieces
from tests.browser.xproj_gather_cases import check_gather
from tests.reference import weight_format_numpy as ref

rng = np.random.default_rng(11)
FORMATS = ["f16", "bf16", "q8", "q4"]
gpu = runner("from py_engine.ops import weight_format as wf\nfrom py_engine.ops import linear as L\n"
             "from py_engine.ops.embedding import embedding_forward", decode=False)


def weights(N, K):
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.1
    w[0, :5] = [0.0, 1e-8, -3.0, 2.5, 1.0]     # a zero, a tiny value, the largest magnitudes
    return w


def f64(raw):
    return np.frombuffer(raw, np.float32).astype(np.float64)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_stores_the_reference_bytes(engine, fmt):
    w = weights(5, 64)
    outs, info = gpu(engine, "q = wf.quantize(b, T['w'], %r)\nouts['q'] = q\n"
                             "info['nbytes'] = q.nbytes\nouts['back'] = wf.dequantize(b, q)" % fmt, w=w)
    assert info["nbytes"] == len(ref.packed(w, fmt))
    got = ref.unpack(outs["q"], w.shape, fmt)
    want = ref.roundtrip(w, fmt)
    # the reference's value everywhere but at rounding ties, where a neighbour level is fine
    tie = ref.near_tie(w, fmt)
    assert np.array_equal(got[~tie], want[~tie])
    level = np.abs(want - got)[tie]
    assert level.size == 0 or level.max() <= 1.01 * np.abs(w).max() / (7 if fmt == "q4" else 126)
    # and every reader sees exactly the stored values
    assert np.array_equal(f64(outs["back"]).reshape(w.shape), got)


@pytest.mark.parametrize("fmt", FORMATS + ["f32"])
@pytest.mark.parametrize("M", [1, 2, 3])
@pytest.mark.parametrize("rpt", [None, 4])
def test_decode_matvec_reads_the_narrow_weight(engine, fmt, M, rpt):
    """The mat-vec kernels (forced on, as on a real GPU), with bias and accumulate, and three
    weights of one format in one dispatch, against the reference's values in float64; each
    thread reading the format's own number of rows, or as many as M allows (rpt 4)."""
    K = 96 if fmt != "q4" else 128
    ws = [weights(n, K) for n in (37, 8, 70)]
    x = rng.standard_normal((M, K)).astype(np.float32)
    bias = rng.standard_normal(37).astype(np.float32)
    acc = rng.standard_normal((M, 37)).astype(np.float32)
    code = ("dev.force_matvec = True\n"
            f"dev.matvec_rpt = {rpt}\n"
            "Q = [wf.quantize(b, T[n], %r) for n in ('w0', 'w1', 'w2')]\n"
            "outs['q0'], outs['q1'], outs['q2'] = (Q if Q[0].dtype != 'f32' else (None,) * 3)\n"
            "outs['one'] = L.linear_forward(b, T['x'], Q[0], T['bias'])\n"
            "L.linear_accumulate(b, T['x'], Q[0], T['acc'])\n"
            "outs['acc'] = T['acc']\n"
            "outs['m0'], outs['m1'], outs['m2'] = L.linear_multi(b, T['x'], Q)\n"
            "dev.force_matvec = False\n"
            "dev.matvec_rpt = None\n" % fmt)
    outs, _ = gpu(engine, code, x=x, w0=ws[0], w1=ws[1], w2=ws[2], bias=bias, acc=acc)
    W = [ref.unpack(outs[f"q{g}"], w.shape, fmt) if fmt != "f32" else w.astype(np.float64)
         for g, w in enumerate(ws)]
    x64 = x.astype(np.float64)
    tol = 2e-6 * np.sqrt(K)
    assert np.allclose(f64(outs["one"]).reshape(M, 37), x64 @ W[0].T + bias, atol=tol, rtol=1e-5)
    assert np.allclose(f64(outs["acc"]).reshape(M, 37), acc + x64 @ W[0].T, atol=tol, rtol=1e-5)
    for g in range(3):
        assert np.allclose(f64(outs[f"m{g}"]).reshape(M, -1), x64 @ W[g].T, atol=tol, rtol=1e-5)


# The staging / trip / prefetch grid of the decode mat-vec runs natively
# (tests/unit/test_matvec_staged_native.py: lavapipe, several times faster than SwiftShader);
# here one case of each, so Chromium's Tint compiles and runs those code paths too.
def test_decode_matvec_with_x_staged_in_workgroup_memory(engine):
    """The staged mat-vec (weight_format.stage_x): tests/browser/matvec_cases.py."""
    check_staged(engine, "f16", None, K=2304, seed=5)


def test_decode_matvec_walks_several_trips(engine):
    """16 threads per row: each thread sums several trips of four loads, several tiles."""
    check_staged(engine, "f16", 1, K=2304, seed=9, rows=(37, 8, 19), tpr=16, stage=True)


def test_packed_blocks_in_one_dispatch(engine):
    """Row blocks side by side in one buffer, one dispatch (matvec_forward_pieces: Mamba-3's
    in_proj), Tint's compile of it: the same bits as three to a dispatch (q4: the scales of
    each block after its own values). The grid: tests/unit/test_matvec_pieces_native.py."""
    check_pieces(engine, "q4", tpr=16, rpt=1, stage=True)


@pytest.mark.parametrize("fmt,F", [("f32", 2), ("f16", 3), ("bf16", 8), ("q8", 3), ("q4", 2)])
def test_xproj_shares_gathered_in_one_dispatch(engine, fmt, F):
    """Mamba-1's x_proj shares gathered inside the in_proj dispatch (lib/matvec_xproj_gather.wgsl:
    atomic words, a group's last workgroup adds up its shares), Tint's compile of it and of the
    plain fold, and SwiftShader's threads running its workgroups side by side: groups of 3 of 8
    shares (f32 in 2s, bf16 in one group of all 8; q4: 2 of 4, its blocks being 32 channels) --
    every format's module, each compiled apart (shaders/matvec_<fmt>_gather.wgsl). The grid:
    tests/unit/test_xproj_fold_native.py."""
    check_gather(engine, fmt, F)


@pytest.mark.parametrize("fmt", ["f32", "q4"])
def test_xproj_chunks_loaded_early(engine, fmt):
    """x_proj's chunks loaded at the kernel's start (XP_EARLY, weight_format.xproj_early): Tint's
    compile of it (four chunks a block in f32, one in q4), gathered in groups of two. The same
    bits as loaded late: tests/unit/test_xproj_fold_native.py."""
    check_gather(engine, fmt, 2, early=True)


def test_decode_matvec_prefetch_levels(engine):
    """The next trip's loads in flight while summing one (level 2; level 1 is its first half)."""
    check_staged(engine, "f16", 2, K=2304, seed=9, rows=(37, 8, 19), tpr=16, stage=False,
                 prefetch=2)


@pytest.mark.parametrize("fmt", FORMATS)
def test_gemm_and_gather_dequantize(engine, fmt):
    """Prefill-sized products (a temporary f32 copy), the input gradient through a frozen narrow
    weight (LoRA on a narrow base), and the embedding gather."""
    N, K, M = 40, 64, 9
    w = weights(N, K)
    x = rng.standard_normal((M, K)).astype(np.float32)
    dy = rng.standard_normal((M, N)).astype(np.float32)
    ids = np.array([3, 0, 39, 3, 17], np.uint32)
    code = ("q = wf.quantize(b, T['w'], %r)\n"
            "outs['y'] = L.linear_forward(b, T['x'], q)\n"
            "outs['dx'] = L.linear_backward_input(b, T['dy'], q)\n"
            "outs['e'] = embedding_forward(b, T['ids'], q)\n"
            "outs['q'] = q" % fmt)
    outs, _ = gpu(engine, code, w=w, x=x, dy=dy, ids=ids)
    W = ref.unpack(outs["q"], w.shape, fmt)
    assert np.allclose(f64(outs["y"]).reshape(M, N), x.astype(np.float64) @ W.T, atol=1e-5, rtol=1e-5)
    assert np.allclose(f64(outs["dx"]).reshape(M, K), dy.astype(np.float64) @ W, atol=1e-5, rtol=1e-5)
    assert np.array_equal(f64(outs["e"]).reshape(len(ids), K), W[ids])


def test_unsuitable_shape_is_refused_by_name(engine):
    outs, info = gpu(engine, "try:\n    wf.quantize(b, T['w'], 'q4')\nexcept ValueError as e:\n"
                             "    info['err'] = str(e)", w=weights(4, 48))
    assert "multiple of 32" in info["err"] and "[4, 48]" in info["err"]
