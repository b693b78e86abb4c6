"""Mamba-1 decode with x_proj folded into the scan step (py_engine/ops/scan_step_xproj.py)
against the two-dispatch decode (x_proj's mat-vec, then the step), shared by
tests/unit/test_scan_step_xproj_native.py (lavapipe, the real-GPU kernels forced) and
tools/device_checks.py (a real GPU)."""
import numpy as np

from tests.browser.conv_fused_cases import PROBES

RUN = PROBES + """
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
out = {}
try:
    for fold in (False, True):
        device.scan_step_xproj = fold
        key = 'fold' if fold else 'plain'
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        out[key + '_ssm'] = [await l.ssm.to_bytes() for l in st.layers]
        st.release()
        out[key + '_b2'], st = await two_sequences(m, args['ids'])
        st.release()
        out[key + '_tokens'], out[key + '_dpt'] = await greedy(m, args['ids'])
finally:
    device.force_matvec = False
    device.scan_step_xproj = None
out['layers'] = m.cfg.num_hidden_layers
m.release()
result = out
"""


def check_x_proj_fold(engine, folder, fmt):
    """Step logits (one sequence and two at once) and SSM states equal the two-dispatch
    decode's to f32 rounding (x_proj summed in another order), the greedy tokens are the same,
    one dispatch fewer per layer; and with f32 weights the folded decode stepped through the
    prompt gives transformers' logits (the fixture's expected.npz). Returns the run."""
    exp = np.load(folder / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    r = engine.run(RUN, folder=str(folder), fmt=fmt, ids=ids)
    for key in ("", "_b2"):
        a = np.frombuffer(r["plain" + key], np.float32).astype(np.float64)
        b = np.frombuffer(r["fold" + key], np.float32).astype(np.float64)
        assert np.abs(a).max() > 0.05
        assert np.abs(a - b).max() <= 2e-5 * np.abs(a).max(), (key, np.abs(a - b).max())
    for pa, pb in zip(r["plain_ssm"], r["fold_ssm"]):
        a, b = (np.frombuffer(x, np.float32).astype(np.float64) for x in (pa, pb))
        assert np.abs(a - b).max() <= 2e-5 * max(1.0, np.abs(a).max())
    assert r["fold_tokens"] == r["plain_tokens"]
    assert r["fold_dpt"] == r["plain_dpt"] - r["layers"], (r["fold_dpt"], r["plain_dpt"])
    if fmt == "f32":
        got = np.frombuffer(r["fold"], np.float32).reshape(len(ids), -1)
        assert np.abs(got - exp["logits"].reshape(len(ids), -1)).max() <= 1e-4
    return r
