"""Mamba-1 decode with workgroups warming the GPU's L2 with out_proj's weights (x_proj's
matvec_forward_warm and the scan step's selective_scan_step_dtproj_warm, shaders/lib/l2_warm.wgsl)
against the same decode without them: step logits (one sequence and two at once), the SSM
states and greedy tokens bit for bit, for each plan of who warms what
(weight_format.warm_plan), and the warming pipelines were built (the warming ran). Shared by
tests/unit/test_l2_warm_native.py (lavapipe, the real-GPU kernels forced) and
tools/device_checks.py (a real GPU)."""
import numpy as np

from tests.browser.conv_fused_cases import PROBES

RUN = PROBES + """
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
device.fuse_xproj = False         # x_proj as its own mat-vec: the dispatch that warms
device.scan_step_sg = True        # the scan step's subgroup kernel: the one with a warming entry
out = {}
asked = []                        # the entry points asked for while a setting runs
plain_pipeline = device.pipeline
device.pipeline = lambda shader, entry, constants=None: (
    asked.append(entry), plain_pipeline(shader, entry, constants))[1]
try:
    for key, groups, plan in args['settings']:
        asked.clear()
        device.matvec_warm = groups
        device.matvec_warm_plan = plan
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        out[key + '_ssm'] = [await l.ssm.to_bytes() for l in st.layers]
        st.release()
        out[key + '_b2'], st = await two_sequences(m, args['ids'])
        st.release()
        out[key + '_tokens'], out[key + '_dpt'] = await greedy(m, args['ids'])
        out[key + '_warming'] = sorted({e for e in asked if e.endswith('_warm')})
finally:
    del device.pipeline
    device.force_matvec = False
    device.fuse_xproj = None
    device.scan_step_sg = None
    device.matvec_warm = None
    device.matvec_warm_plan = None
m.release()
result = out
"""

SETTINGS = [("off", 0, None), ("x", 32, 1), ("halves", 64, 2), ("scan", 32, 3), ("next", 32, 4),
            ("next_only", 64, 5)]
ENTRIES = {"x": ["matvec_forward_warm"],
           "halves": ["matvec_forward_warm", "selective_scan_step_dtproj_warm"],
           "scan": ["selective_scan_step_dtproj_warm"],
           "next": ["matvec_forward_warm", "selective_scan_step_dtproj_warm"],
           "next_only": ["selective_scan_step_dtproj_warm"]}


def check_warm_decode(engine, folder, fmt, ids):
    """Every plan's decode equals the plain one bit for bit, with as many dispatches a token."""
    r = engine.run(RUN, folder=str(folder), fmt=fmt, ids=ids, settings=SETTINGS)
    assert r["off_warming"] == []
    for key, _, _ in SETTINGS[1:]:
        for part in ("", "_b2"):
            a = np.frombuffer(r["off" + part], np.float32)
            b = np.frombuffer(r[key + part], np.float32)
            assert np.abs(a).max() > 0.05
            assert np.array_equal(a, b), (key, part, np.abs(a - b).max())
        assert r[key + "_ssm"] == r["off_ssm"], key
        assert r[key + "_tokens"] == r["off_tokens"], key
        assert r[key + "_dpt"] == r["off_dpt"], key
        assert r[key + "_warming"] == ENTRIES[key], (key, r[key + "_warming"])
