"""A Mamba-1 decode layer in one dispatch (ops/mamba1_persist.py) against the engine's
dispatch-a-step decode: shared by tests/unit/test_mamba1_persist_native.py (lavapipe: one and two
workgroups) and tools/device_checks.py (a real GPU: the grids a GPU runs)."""
import numpy as np

from tests.browser.conv_fused_cases import PROBES

IDS = [1, 5, 9, 2, 7, 3, 11, 4]

RUN = PROBES + """
from py_engine.ops import mamba1_persist as MP
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
device.persist_groups = args['groups']
device.persist_tpr = args.get('tpr')
device.persist_static = args.get('static')
device.persist_ahead = args.get('ahead')
device.persist_last = args.get('last')
device.persist_count = args.get('count')
device.persist_written_out = args.get('written_out')
out = {'layers': m.cfg.num_hidden_layers}
try:
    for on in (False, True):
        device.mamba1_persist = on
        key = 'persist' if on else 'plain'
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        out[key + '_conv'] = [await l.conv.to_bytes() for l in st.layers]
        out[key + '_ssm'] = [await l.ssm.to_bytes() for l in st.layers]
        out[key + '_why'] = MP.applies(device, m.mixers[0], 1, st.layers[0])
        st.release()
        out[key + '_b2'], st = await two_sequences(m, args['ids'])
        st.release()
        out[key + '_tokens'], out[key + '_dpt'] = await greedy(m, args['ids'])
    sc = getattr(m, '_persist_scratch', None)
    out['fails'] = await sc.fails() if sc is not None else None
finally:
    device.force_matvec = False
    device.mamba1_persist = None
    device.persist_groups = None
    device.persist_tpr = None
    device.persist_static = None
    device.persist_ahead = None
    device.persist_last = None
    device.persist_count = None
    device.persist_written_out = None
m.release()
result = out
"""


def close(a, b, tol=1e-5):
    a, b = np.frombuffer(a, np.float32), np.frombuffer(b, np.float32)
    assert np.abs(a).max() > 0.01
    assert np.abs(a - b).max() <= tol * max(1.0, np.abs(a).max()), np.abs(a - b).max()


def check_persist(r):
    """The run's persistent logits, states and greedy tokens against the engine's step; two
    sequences (not taken) the same bytes; 2 or 3 dispatches fewer a layer."""
    assert r["plain_why"] == "off" and r["persist_why"] is None, r["persist_why"]
    close(r["plain"], r["persist"])
    for a, b in zip(r["plain_conv"] + r["plain_ssm"], r["persist_conv"] + r["persist_ssm"]):
        close(a, b)
    assert r["plain_b2"] == r["persist_b2"]
    assert r["persist_tokens"] == r["plain_tokens"]
    L = r["layers"]
    fewer = r["plain_dpt"] - r["persist_dpt"]        # the engine's 3 or 4 a layer -> 1
    assert fewer in (2 * L, 3 * L), (r["plain_dpt"], r["persist_dpt"])


def check_on_gpu(engine, folder, fmt, groups):
    """A real GPU (tools/device_checks): every workgroup resident, so no spin may give up."""
    r = engine.run(RUN, folder=str(folder), fmt=fmt, ids=IDS, groups=groups)
    assert r["fails"] == 0, f"{r['fails']} spins gave up at {groups} workgroups"
    check_persist(r)
