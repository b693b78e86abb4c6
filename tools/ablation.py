"""What the kernel-ablation tools share (tools/ablate_ssd.py, tools/ablate_mamba3.py): a text
fragment of engine-side code (it runs inside the engine -- wgpu-py natively or Dawn's Pyodide,
which has no numpy -- after the tool's own set-up), defining

  set_src(name)                  the shaders in args['edits'] as they are, then edit `name`
                                 applied: (shader, text, replacement) replaces the text, found
                                 once; (shader, None, entry) makes that entry point return at once
                                 (its dispatch still runs); dropped pipelines and modules
                                 (Device.forget_shader), so the next dispatch compiles the edit
  await one(label, **attrs)      device attributes set, us a call of the tool's `record(batch)`
                                 (many calls in one submit, timed to a readback of `output()`,
                                 less a shorter run: no host time; the best of args['reps'] =
                                 (long, short, rounds) of each), then the attributes cleared;
                                 appends {'v': label, 'us_per_call', 'y_mean_abs', **info()} --
                                 or {'v', 'error'} -- to `out`

The tool's set-up defines record(batch) (records one call), output() (the tensor read back)
and info() (a dict of what else to report).
"""

HARNESS = r"""
import struct
import sys
import time
from py_engine.gpu import shaders as S
EDITS = {k: tuple(e) for k, e in args['edits'].items()}
SHADERS = sorted({e[0] for e in EDITS.values()})
BASE = {n: S.shader_source(n) for n in SHADERS}
def set_src(name):
    for n in SHADERS:
        S._cache[n] = BASE[n]
    if name in EDITS:
        shader, old, new = EDITS[name]
        src = BASE[shader]
        if old is None:            # the entry point `new` returns at once
            i = src.index('fn ' + new + '(')
            j = src.index('{', i) + 1
            old, new = src[i:j], src[i:j] + '\n  if (p.T > 0u) { return; }'
        assert src.count(old) == 1, name
        S._cache[shader] = src.replace(old, new, 1)
    for n in SHADERS:
        device.forget_shader(n)
async def timed(reps):
    b = device.batch()
    for _ in range(reps):
        record(b)
    t0 = time.perf_counter()
    b.submit()
    await output().to_bytes()
    return time.perf_counter() - t0
async def per_call():
    n_long, n_short, rounds = args['reps']
    await timed(n_short)                             # pipelines made, caches warm
    # the best of the runs of each length, then their difference (a difference per pair went
    # negative once on the H200: one pair's short run met a slow moment)
    long_runs, short_runs = [], []
    for _ in range(rounds):
        long_runs.append(await timed(n_long))
        short_runs.append(await timed(n_short))
    return round((min(long_runs) - min(short_runs)) / (n_long - n_short) * 1e6, 1)
out = []
async def one(label, **dev_attrs):
    print('variant', label, file=sys.stderr, flush=True)
    for k, v in dev_attrs.items():
        setattr(device, k, v)
    try:
        us = await per_call()
        raw = await output().to_bytes()
        ys = struct.unpack(f'<{len(raw) // 4}f', raw)
        out.append(dict({'v': label, 'us_per_call': us,
                         'y_mean_abs': sum(map(abs, ys)) / len(ys)}, **info()))
    except Exception as e:
        out.append({'v': label, 'error': repr(e)[:300]})
    for k in dev_attrs:
        setattr(device, k, None)
"""
