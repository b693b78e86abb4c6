"""Mamba-2 decode with the gated RMSNorm folded into out_proj's mat-vec (GATED in
shaders/lib/matvec_rows.wgsl) against the separate gated_rmsnorm + out_proj dispatches, shared by
tests/unit/test_gated_norm_fold_native.py (lavapipe, the real-GPU kernels forced) and
tools/device_checks.py (a real GPU)."""
import numpy as np

IDS = [1, 5, 9, 2, 7, 3, 11, 4]

RUN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
device.matvec_stage = args['stage']
out = {}
try:
    for fold in (False, True):
        device.fuse_gated_norm = fold
        key = 'fold' if fold else 'plain'
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        st.release()
        st = m.new_state(Bsz=2)               # two sequences at once: the mat-vec's M = 2
        rows = []
        for a, b2 in zip(args['ids'], reversed(args['ids'])):
            t = m.ids_tensor([a, b2])
            batch = device.batch()
            logits = m.step(batch, t, st)
            batch.submit()
            rows.append(await logits.to_bytes())
            logits.release()
            t.release()
        out[key + '_b2'] = b''.join(rows)
        st.release()
        gen = Generator(m, SamplingConfig(greedy=True), max_tokens=64, group=8)
        out[key + '_tokens'] = [t async for t in gen.stream(args['ids'], 12)]
        out[key + '_dpt'] = gen.dispatches_per_token
        gen.release()
finally:
    device.force_matvec = False
    device.matvec_stage = None
    device.fuse_gated_norm = True
out['layers'] = m.cfg.num_hidden_layers
out['groups'] = m.cfg.n_groups
m.release()
result = out
"""


def check_gated(engine, folder, fmt, stage=None, ids=IDS):
    """Logits (one sequence and two) and greedy tokens with and without the fold; one dispatch
    fewer per layer with it where the norm has one group. Returns the run."""
    r = engine.run(RUN, folder=str(folder), fmt=fmt, ids=ids, stage=stage)
    for key in ("", "_b2"):
        a = np.frombuffer(r["plain" + key], np.float32)
        b = np.frombuffer(r["fold" + key], np.float32)
        assert np.abs(a).max() > 0.05
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max()), (key, np.abs(a - b).max())
    assert r["fold_tokens"] == r["plain_tokens"]
    fewer = r["layers"] if r["groups"] == 1 else 0
    assert r["fold_dpt"] == r["plain_dpt"] - fewer
    return r
