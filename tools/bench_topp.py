"""GPU time of one draw with top-p alone (the generate page's settings with top-k off) three
ways: as passes over the whole row spread over the GPU (TOP-P PASSES in shaders/sampling.wgsl,
the rule), over the slices' top-128 candidates with the one-workgroup walk as fallback (TOP-P
ALONE), and walking the row in one workgroup -- on a peaked row (a model sure of its next
token: the candidates hold the top-p set) and a flat one (the set is most of the row).

  python -m tools.bench_topp [--V 50280] [--engine dawn|native] [--draws 200] [--top-k 0]
                            [--top-p 0.95]

With --top-k past 128 (a top-k too wide for the candidates) the arms are the passes (top-k's
four, then top-p's eight) and the row walk; "candidates" then walks the row too. With
--top-k 0 --top-p 1 (plain temperature) the passes are each slice's max, then the draw;
"candidates" walks the row.

Each arm records `draws` draws into one batch, replays it five times with the queue drained,
and prints JSON: ms a draw (the best replay), the probe (kept lists used, candidates used: 2
for the passes) and the id drawn -- the same id in every arm."""
import argparse
import json

import numpy as np

SNIPPET = """
import time
import py_engine.ops.sampling as S
from py_engine.gpu.tensor import Tensor
V, n = args['V'], args['draws']
res = {}
for name, vals in args['rows'].items():
    lg = Tensor.from_list(device, (1, V), vals)
    hist = Tensor.from_list(device, (1, 8), list(range(8)), 'u32')
    for arm, spread, passes in (("passes", True, True), ("candidates", True, False),
                                ("row", False, None)):
        device.sample_spread = spread
        device.sample_passes = passes
        ctl = S.make_control(device, 1, step=0, counts=[8])
        ids = Tensor(device, (1,), 'u32')
        scratch = Tensor(device, (1, V))
        probe = Tensor(device, (1, 2), 'u32')
        b = device.batch()
        for _ in range(n):
            S.sample(b, lg, ctl, out=ids, scratch=scratch, history=hist, probe=probe,
                     **args['kw'])
        rec = b.record()
        rec.replay()
        await device.finish()
        best = 1e9
        for _ in range(5):
            t0 = time.perf_counter()
            rec.replay()
            await device.finish()
            best = min(best, (time.perf_counter() - t0) / n * 1e3)
        res[f"{name} {arm}"] = {"ms_per_draw": best,
                                "probe": list(await probe.to_list()),
                                "id": list(await ids.to_list())}
        for t in (ctl, ids, scratch, probe):
            t.release()
    lg.release()
    hist.release()
device.sample_spread = None
device.sample_passes = None
result = res
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--V", type=int, default=50280)
    ap.add_argument("--engine", choices=("dawn", "native"), default="dawn")
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--top-k", type=int, default=0,
                    help="0: top-p alone; past 128: top-k's passes before top-p's")
    ap.add_argument("--top-p", type=float, default=0.95, help="1: off")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = {"peaked": (rng.standard_normal(args.V) * 8).astype(np.float32).tolist(),
            "flat": (rng.standard_normal(args.V) * 0.3).astype(np.float32).tolist()}
    kw = dict(temperature=0.8, top_k=args.top_k, top_p=args.top_p, repetition_penalty=1.1, seed=0)
    from tools.engines import engine_class
    with engine_class(args.engine == "dawn")() as eng:
        print(json.dumps(eng.run(SNIPPET, V=args.V, draws=args.draws, rows=rows, kw=kw)))


if __name__ == "__main__":
    main()
