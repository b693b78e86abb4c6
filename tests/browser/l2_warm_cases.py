"""Mamba-1 decode with L2 warming on (py_engine/ops/l2_warm.py: extra workgroups of x_proj, the
scan step and out_proj read a later dispatch's weights) against it off: the warming workgroups
compute nothing anyone reads, so the logits (one sequence and two), the states and the greedy
tokens are the same bits, with the same dispatches a token -- and the warm entry points did
run. Shared by tests/unit/test_l2_warm_native.py (lavapipe, the real-GPU kernels forced) and
tools/device_checks.py (a real GPU)."""
from tests.browser.conv_fused_cases import PROBES

IDS = [1, 5, 9, 2, 7, 3, 11, 4]
# every stage warms something: the 4-dispatch layer (x_proj its own dispatch) and the
# 3-dispatch one (x_proj folded into in_proj: only s and o exist)
PLAN = "x:out;s:inx;s:inz/2-6;o:in"

RUN = PROBES + """
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
device.fuse_xproj = args['xproj']
out = {}
asked = []                      # the entry points recorded (built or not)
plain_pipeline = device.pipeline
def spy(shader, entry, constants=None):
    asked.append(entry)
    return plain_pipeline(shader, entry, constants)
device.pipeline = spy
try:
    for key, plan in (('plain', '0'), ('warm', args['plan'])):
        device.l2_warm = plan
        asked.clear()
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        out[key + '_ssm'] = [await l.ssm.to_bytes() for l in st.layers]
        st.release()
        out[key + '_b2'], st = await two_sequences(m, args['ids'])
        st.release()
        out[key + '_tokens'], out[key + '_dpt'] = await greedy(m, args['ids'])
        out[key + '_entries'] = sorted(set(asked))
finally:
    del device.pipeline
    device.force_matvec = False
    device.fuse_xproj = None
    device.l2_warm = None
m.release()
result = out
"""


def check_warm(engine, folder, fmt, xproj, plan=PLAN, ids=IDS):
    """The same bits and dispatches with warming on as off; the warm entries were built (the
    x_proj stage only where x_proj is a dispatch of its own)."""
    r = engine.run(RUN, folder=str(folder), fmt=fmt, xproj=xproj, plan=plan, ids=list(ids))
    for key in ("", "_ssm", "_b2", "_tokens", "_dpt"):
        assert r["warm" + key] == r["plain" + key], key
    warm_entries = {e for e in r["warm_entries"] if e.endswith("_warm")}
    want = {"selective_scan_step_dtproj_warm", "matvec_forward_warm"}
    assert want <= warm_entries, r["warm_entries"]
    assert not any(e.endswith("_warm") for e in r["plain_entries"])
    return r
