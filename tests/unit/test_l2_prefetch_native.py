"""Reading the next decode dispatch's weight into the GPU's L2 from extra workgroups
(py_engine/ops/l2_prefetch.py, shaders/lib/l2_prefetch.wgsl): Mamba-1's x_proj mat-vec and
fused scan step, each with and without the extra workgroups, give the same bits, and the weight
read ahead is left as it was -- in one dispatch the extra workgroups' reads, over one or several
trips of eight a thread, a ragged last one, a range cut at the cap or split between the two
sites. Native backend (lavapipe here: no L2 to warm, the kernels forced on by the device
flags); whether it pays is the bench's (`--variant nopf:MAMBAWEB_L2_PREFETCH_MB=0`)."""
import numpy as np
import pytest

from tests.browser.conv_fused_cases import PROBES
from tests.browser.kernel_harness import runner
from tests.conftest import REPO
from tests.browser.matvec_cases import random_case, with_knobs
from tests.native_support import engine, native as pytestmark  # noqa: F401

scan = runner("import py_engine.ops.selective_scan as ss\nfrom py_engine.ops import l2_prefetch")
FIX = REPO / "tests" / "fixtures" / "models"
mv = runner("from py_engine.ops import weight_format as wf\nfrom py_engine.ops import linear as L\n"
            "from py_engine.ops import l2_prefetch", decode=False)

SCAN = """
device.l2_prefetch_mb = {mb}
device.l2_prefetch_at = {at!r}
try:
    info['plan'] = l2_prefetch.plan(device, T['w'], ss.STEP_THREADS) is not None
    y = ss.selective_scan_step(b, T['u'], T['dl'], T['A_log'], T['B'], T['C'], T['h'], T['D'],
                               T['z'], dt_bias=T['bias'], dt_w=T['dt_w'], prefetch=T['w'])
finally:
    device.l2_prefetch_mb = None
    device.l2_prefetch_at = None
outs.update(y=y, h=T['h'], w=T['w'])
"""


@pytest.mark.parametrize("words,at", [(1024, "scan"), (5000, "scan"), (70000, "scan"),
                                      (70000, "both")])
def test_scan_step_reading_ahead_changes_no_result(engine, words, at):
    """The fused scan step (selective_scan_step_dtproj_pf): one extra workgroup (1,024 words,
    one trip of eight a thread), three with a ragged last trip (5,000), a weight past the 1 MB
    cap (70,000 words: the first 65,536 read) and the second half of that range ("both")."""
    rng = np.random.default_rng(13)
    nb, I, N, R = 2, 40, 16, 48
    f = lambda *s, sc=1.0: (rng.standard_normal(s) * sc).astype(np.float32)
    d = dict(u=f(nb, I), dl=f(nb, R, sc=0.3), A_log=f(I, N, sc=0.5), B=f(nb, N), C=f(nb, N),
             h=f(nb, I, N), D=f(I), z=f(nb, I), bias=f(I, sc=0.5), dt_w=f(I, R, sc=0.1),
             w=f(words, 4))
    base, info0 = scan(engine, SCAN.format(mb=0, at=at), **d)
    pf, info = scan(engine, SCAN.format(mb=1, at=at), **d)
    assert info["plan"] and not info0["plan"]       # the reading-ahead kernel ran, then not
    assert np.abs(base["y"]).max() > 0.01
    assert np.array_equal(base["y"], pf["y"]) and np.array_equal(base["h"], pf["h"])
    assert np.array_equal(pf["w"], d["w"].ravel().astype(np.float64))


XPROJ = """
Q = [wf.quantize(b, T[n], FMT) for n in ('w0', 'w1', 'w2')]
for k, mb in (('a', 0), ('b', 1)):
    dev.l2_prefetch_mb = mb
    dev.l2_prefetch_at = AT
    try:
        info[k] = l2_prefetch.plan(dev, T['w'], wf.THREADS, at='xproj') is not None
        outs[k + '0'], outs[k + '1'], outs[k + '2'] = L.linear_multi(b, T['x'], Q, prefetch=T['w'])
    finally:
        dev.l2_prefetch_mb = None
        dev.l2_prefetch_at = None
outs['w'] = T['w']
"""


@pytest.mark.parametrize("fmt", ["f16", "q4"])
@pytest.mark.parametrize("words,at", [(2048, "xproj"), (70000, "both")])
def test_x_proj_reading_ahead_changes_no_result(engine, fmt, words, at):
    """x_proj's three matrices in one mat-vec (matvec_forward_pf: a slice of workgroups more,
    as many as a matrix's, reads the weight): the same bits, the weight untouched -- a range of
    one trip a thread, and the first half of a capped one ("both")."""
    ws, x, _ = random_case(7, (12, 5, 5), 256)
    w = np.random.default_rng(8).standard_normal((words, 4)).astype(np.float32)
    code = with_knobs(XPROJ.replace("FMT", repr(fmt)).replace("AT", repr(at)), tpr=64)
    outs, info = mv(engine, code, x=x, w0=ws[0], w1=ws[1], w2=ws[2], w=w)
    assert info["b"] and not info["a"]
    for g in range(3):
        assert np.abs(np.frombuffer(outs[f"a{g}"], np.float32)).max() > 0.05
        assert outs[f"a{g}"] == outs[f"b{g}"]
    assert outs["w"] == w.tobytes()


MODEL = PROBES + """
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
out = {}
try:
    for key, mb, at in (('off', 0, None), ('scan', 1, 'scan'), ('both', 1, 'both'), ('nextin', 1, 'nextin')):
        device.l2_prefetch_mb, device.l2_prefetch_at = mb, at
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        out[key + '_ssm'] = [await l.ssm.to_bytes() for l in st.layers]
        st.release()
        out[key + '_b2'], st = await two_sequences(m, args['ids'])
        st.release()
        out[key + '_tokens'], out[key + '_dpt'] = await greedy(m, args['ids'])
finally:
    device.force_matvec = False
    device.l2_prefetch_mb = device.l2_prefetch_at = None
m.release()
result = out
"""


@pytest.mark.parametrize("fmt", ["f16", "q4"])
@pytest.mark.parametrize("name", ["mamba-d40-tied", "falcon-d40-untied"])
def test_decode_reading_out_proj_ahead_changes_nothing(engine, name, fmt):
    """A Mamba-1 (and Falcon-Mamba) decode with out_proj's weight read ahead by the scan step,
    or half by x_proj and half by the scan step: step logits (one sequence and two at once),
    SSM states and greedy tokens bit for bit those without, in as many dispatches."""
    if engine.device.limits.get("maxStorageBuffersPerShaderStage", 8) < 12:
        pytest.skip("this adapter binds fewer than 12 storage buffers per stage")
    r = engine.run(MODEL, folder=str(FIX / name), fmt=fmt, ids=[1, 5, 9, 2, 7, 3])
    assert len(r["off_tokens"]) == 12
    for key in ("scan", "both", "nextin"):
        for part in ("", "_ssm", "_b2", "_tokens", "_dpt"):
            assert r[key + part] == r["off" + part], key + part
