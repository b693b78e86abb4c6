"""Would a decode token run faster as one dispatch? GPU time of a chain of dependent f16
mat-vecs shaped like a Mamba-1 decode token (per layer in_proj [4d, d], x_proj [R + 2N, 2d],
dt [2d, R], out_proj [d, 2d]; each stage's input the outputs of the stage before), run as one
dispatch a stage (the engine's decode) and as one dispatch of G resident workgroups that wait
for each stage's input inside the kernel (shaders/bench_chain.wgsl says how, without a grid
barrier) -- with thread 0 waiting on a count of the workgroups done before the words are read
(`persistent`), or every thread spinning on its own words at once (`words`) -- and as one such
dispatch a layer (`layer`: what a layer kernel in the engine would be). The same row code every
way, so the difference is the dispatch boundaries.

  python -m tools.bench_chain [--dawn] [--d 2048] [--layers 48] [--grids 132,264,528]
                              [--tpr 64] [--tokens 8]

The weights are random f16 made on the GPU, in as many distinct sets (cycled over the layers)
as the device's binding limit allows; at 2048 x 48 a token reads 2.54 GB, mamba-1.4b's layers.
Prints JSON lines: the device's read ceiling and dispatch floor, then per form and grid: GPU ms
a token (a recorded batch of --tokens tokens replayed, the wait to a readback behind it less
that readback's own latency, best of --reps), GB/s of weights and % of the ceiling, the spins
that gave up (`fails`: 0, or the form's result is wrong: the workgroups were not all resident)
and whether its output matches the one-dispatch-a-stage form bit for bit. On lavapipe a spin
also spends the driver's 65,535 loop passes an invocation (shaders/LOOP_BUDGET.md), after which
the kernel's loops stop silently: there a wrong result can show no give-ups, and only tiny shapes
with short spins (the test's) mean anything.
"""
import argparse
import json
import sys

SNIPPET = r"""
import time
from py_engine.gpu.tensor import Tensor
from py_engine.ops import elementwise as ew
from py_engine.ops._common import params
from py_engine.benchmarks import ceilings

d, L, R, NS, T = args['d'], args['layers'], args['R'], args['N'], args['tokens']
KINDS = [(4 * d, d), (R + 2 * NS, 2 * d), (2 * d, R), (d, 2 * d)]   # (rows, inputs) a layer
for n, k in KINDS:
    assert k % 8 == 0 and k <= 4096, (n, k)
sets = max(1, min(L, device.max_binding // max(n * k * 2 for n, k in KINDS)))
W = []
for kind, (n, k) in enumerate(KINDS):
    w = Tensor(device, (sets * n * k // 2,), 'u32')
    b = device.batch()
    u = device.uniform(params(w.numel, 1000 + kind, (3.0 / k) ** 0.5, 0))
    b.run('bench_chain_init', 'chain_init', [u, w.binding], min(4096, -(-w.numel // 256)))
    b.submit()
    W.append(w)
stages, off, prev = [], 0, 0
for l in range(L):
    for kind, (n, k) in enumerate(KINDS):
        stages.append((n, k, kind, (l % sets) * n * k // 8, prev, off))
        prev, off = off, off + n
S = len(stages)
assert S <= 512, S
table = b''.join(params(*s, 0, 0) for s in stages)
table = device.uniform(table + bytes(16384 - len(table)))
x0 = Tensor.from_list(device, (d,), [((i * 7919) % 2003) / 1001.5 - 1.0 for i in range(d)])
act = Tensor(device, (off,))
done = Tensor(device, (S,))
fails = Tensor(device, (4,))
zeros = Tensor(device, (max(off, S, 4),))
b = device.batch()
for t in (zeros, fails):
    ew.fill(b, t, 0.0)
b.submit()
wbytes = sum(n * k * 2 for n, k, *_ in stages)
spin = args['spin']
U = [device.uniform(params(s, S, spin, 0)) for s in range(S)]      # a stage, or stages s..S-1
UL = [device.uniform(params(4 * l, 4, spin, 0)) for l in range(L)]  # layer l's four stages

def res(u):
    return [u, table, x0.binding, act.binding, done.binding, fails.binding] + [w.binding for w in W]

def token(b, form, G, consts):
    b.copy(zeros.buffer, zeros.offset, act.buffer, act.offset, act.nbytes)
    if form == 'clear':
        return
    if form == 'stage':
        for s, (n, *_rest) in enumerate(stages):
            b.run('bench_chain', 'chain_stage', res(U[s]), -(-n // (256 // consts['TPR'])),
                  constants=consts)
        return
    b.copy(zeros.buffer, zeros.offset, done.buffer, done.offset, done.nbytes)
    if form == 'layer':
        for l in range(L):
            b.run('bench_chain', 'chain_persistent', res(UL[l]), G, constants=consts)
    else:                                        # 'persistent' or 'words': the whole chain
        b.run('bench_chain', 'chain_persistent', res(U[0]), G, constants=consts)

async def gpu_ms(form, G, consts):
    b = device.batch()
    for _ in range(T):
        token(b, form, G, consts)
    rec = b.record()
    rec.replay()
    await device.finish()
    idle = await ceilings.readback_latency(device, fails)
    best = float('inf')
    for _ in range(args['reps']):
        rec.replay()
        t0 = time.perf_counter()
        await device.read_begin(fails.buffer, fails.offset, 4)
        best = min(best, time.perf_counter() - t0)
    return max(0.0, (best - idle) / T * 1e3)

out = []
if args['ceilings']:
    read = await ceilings.device_read_bandwidth(device)
    floor = await ceilings.dispatch_floor(device)
    out.append({'read_gb_per_s': read['gb_per_s'], 'floor_us': floor['gpu_us_per_dispatch'],
                'sets': sets, 'stages': S, 'weight_mb_per_token': wbytes / 1e6})
gbps = out[0]['read_gb_per_s'] if out else None
for tpr in args['tprs']:
    ref = None                     # the one-dispatch-a-stage form's output at this TPR
    consts = {'TPR': tpr, 'SG': int(args['sg'])}
    clear = await gpu_ms('clear', 0, consts)
    forms = [('stage', None)] + [(f, G) for f in ('persistent', 'words', 'layer')
                                 for G in args['grids']]
    for form, G in forms:
        ms = await gpu_ms(form, G, dict(consts, COUNTER=int(form != 'words')))
        y = await act.to_bytes()
        last = y[4 * stages[-1][5]:4 * (stages[-1][5] + stages[-1][0])]
        if ref is None:
            ref = last
        nfail = int.from_bytes((await fails.to_bytes())[:4], 'little')
        b = device.batch()
        ew.fill(b, fails, 0.0)
        b.submit()
        row = {'form': form, 'G': G, 'tpr': tpr, 'gpu_ms_per_token': ms,
               'less_clear_ms': ms - clear, 'fails': nfail, 'same_as_stage_form': last == ref}
        if ms - clear > 0:
            row['gb_per_s'] = wbytes / ((ms - clear) * 1e6)
            if gbps:
                row['pct_of_read_ceiling'] = 100 * row['gb_per_s'] / gbps
        if args['dump']:
            row['y'] = list(memoryview(last).cast('f'))
        out.append(row)
if args['dump']:
    out.append({'x0': await x0.to_list(),
                'w': [list(memoryview(await w.to_bytes()).cast('I')) for w in W],
                'stages': stages, 'sets': sets})
for t in W + [x0, act, done, fails, zeros]:
    t.release()
result = out
"""


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dawn", action="store_true",
                    help="through Dawn under Node (the tab's path) instead of wgpu-py")
    ap.add_argument("--d", type=int, default=2048, help="model width (default 2048: mamba-1.4b)")
    ap.add_argument("--layers", type=int, default=48)
    ap.add_argument("--R", type=int, default=None, help="dt rank (default d / 16)")
    ap.add_argument("--N", type=int, default=16, help="state size")
    ap.add_argument("--grids", default="132,264,528",
                    help="workgroups of the persistent form, comma-separated")
    ap.add_argument("--tpr", default="64", help="threads a row, comma-separated")
    ap.add_argument("--no-sg", action="store_true", help="the row sums' tree without shuffles")
    ap.add_argument("--tokens", type=int, default=8, help="tokens a timed replay")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--spin", type=int, default=1 << 16,
                    help="loads a waiting thread makes before it gives up")
    ap.add_argument("--no-ceilings", action="store_true")
    ap.add_argument("--dump", action="store_true",
                    help="also print inputs, weights and outputs (tiny shapes: the tests)")
    a = ap.parse_args(argv)
    from tools.engines import adapter_name, engine_class
    with engine_class(a.dawn)() as eng:
        print(json.dumps({"adapter": adapter_name(eng)}), flush=True)
        rows = eng.run(SNIPPET, d=a.d, layers=a.layers, R=a.R or a.d // 16, N=a.N,
                       tokens=a.tokens, reps=a.reps, spin=a.spin, sg=not a.no_sg,
                       grids=[int(g) for g in a.grids.split(",") if g],
                       tprs=[int(t) for t in a.tpr.split(",")],
                       ceilings=not a.no_ceilings, dump=a.dump)
        for row in rows:
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
