"""Mamba-1/Mamba-2 decode with the conv step folded into in_proj's mat-vec (matvec_forward_conv in
shaders/lib/matvec_rows.wgsl) against the separate in_proj + conv1d_step dispatches, shared by
tests/unit/test_conv_fused_decode_native.py (lavapipe, the real-GPU kernels forced) and
tools/device_checks.py (a real GPU, which picks them by itself)."""
import json
from pathlib import Path

import numpy as np

# Snippet helpers the decode checks share (tests/browser/decode_fold_cases.py too): two
# sequences stepped at once (the mat-vec's x rows M = 2) -> (their logits' bytes, the state),
# and a greedy stream -> (tokens, dispatches per token).
PROBES = """
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig


async def two_sequences(m, ids):
    st = m.new_state(Bsz=2)
    rows = []
    for a, b2 in zip(ids, reversed(ids)):
        t = m.ids_tensor([a, b2])
        batch = device.batch()
        logits = m.step(batch, t, st)
        batch.submit()
        rows.append(await logits.to_bytes())
        logits.release()
        t.release()
    return b''.join(rows), st


async def greedy(m, ids):
    gen = Generator(m, SamplingConfig(greedy=True), max_tokens=64, group=8)
    tokens = [t async for t in gen.stream(ids, 12)]
    dpt = gen.dispatches_per_token
    gen.release()
    return tokens, dpt
"""

RUN = PROBES + """
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
device.matvec_stage = args.get('stage')
device.matvec_rpt = args.get('rpt')
device.matvec_prefetch = args.get('prefetch')
device.fuse_xproj = False     # the conv fold alone (x_proj's: tests/browser/decode_fold_cases.py)
out = {}
try:
    for fuse in (False, True):
        device.fuse_conv_step = fuse
        key = 'fused' if fuse else 'plain'
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        out[key + '_conv'] = [await l.conv.to_bytes() for l in st.layers]
        out[key + '_ssm'] = [await l.ssm.to_bytes() for l in st.layers]
        st.release()
        out[key + '_b2'], st = await two_sequences(m, args['ids'])
        out[key + '_b2_conv'] = [await l.conv.to_bytes() for l in st.layers]
        st.release()
        out[key + '_tokens'], out[key + '_dpt'] = await greedy(m, args['ids'])
finally:
    device.force_matvec = False
    device.matvec_stage = None
    device.matvec_rpt = None
    device.matvec_prefetch = None
    device.fuse_conv_step = True
    device.fuse_xproj = None      # the rule's choice again
out['layers'] = m.cfg.num_hidden_layers
m.release()
result = out
"""


def check_fused(engine, folder, fmt, ids, stage=None, rpt=None, prefetch=None):
    """Step logits (one sequence and two at once), conv and SSM states and greedy tokens equal bit
    for bit with and without the fold, one dispatch fewer per layer with it (none fewer when
    in_proj has biases: that layer keeps the separate conv step). stage: the mat-vec's x staged
    in workgroup memory (True), or the engine's choice (None); rpt: rows per thread asked for
    (4: one sequence at 4, two at 2; the rule gives 1 below 4,096 rows); prefetch: the
    mat-vec's load level (weight_format.prefetch_level), else the rule's. Returns the run."""
    r = engine.run(RUN, folder=str(folder), fmt=fmt, ids=ids, stage=stage, rpt=rpt,
                   prefetch=prefetch)
    for key in ("", "_b2"):
        a = np.frombuffer(r["plain" + key], np.float32)
        b = np.frombuffer(r["fused" + key], np.float32)
        assert np.abs(a).max() > 0.05
        assert np.array_equal(a, b), (key, np.abs(a - b).max())
    for key in ("_conv", "_ssm", "_b2_conv"):
        assert r["plain" + key] == r["fused" + key], key
    assert r["fused_tokens"] == r["plain_tokens"]
    # one dispatch fewer per layer; an in_proj with biases keeps the separate conv step
    biased = json.loads((Path(folder) / "config.json").read_text()).get("use_bias", False)
    assert r["fused_dpt"] == r["plain_dpt"] - (0 if biased else r["layers"])
    return r
