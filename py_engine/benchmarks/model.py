"""Model benchmarks inside the engine: prefill and decode throughput, dispatches per token."""
import os
import time

from py_engine.benchmarks.ceilings import readback_latency
from py_engine.benchmarks.pipeline_model import pipeline_report
from py_engine.models.generate import Generator, SamplingConfig
from py_engine.models.mamba import MambaModel
from py_engine.io.hf_loader import load_model, load_model_local
from py_engine.autograd.functional import Ctx
from py_engine.models.names import EMBED


def _prompt_ids(model, T):
    """The bench's T-token prompt (ids spread over the vocabulary)."""
    return model.ids_tensor([(i * 7919) % model.cfg.vocab_size for i in range(T)])


async def _prefill_seconds(model, ids, state, recorded):
    """One prefill of `ids` from a reset `state` to its last logits on the host: streamed
    (recorded = False: the clock starts before the recording, chunks go to the GPU as they are
    recorded, as the app prefills) or recorded whole first (the clock starts at its submit)."""
    state.reset()
    t0 = time.perf_counter()
    batch = model.device.batch(stream=not recorded)
    logits = model.forward(Ctx(batch), ids, 1, state, last_only=True)
    if recorded:
        t0 = time.perf_counter()
    batch.submit()
    await logits.to_bytes()
    dt = time.perf_counter() - t0
    logits.release()
    return dt


async def prefill_tokens_per_s(model, T, reps=3, budget_s=0.3):
    """The best of up to `reps` timed prefills of T tokens after one that builds pipelines (no
    more once the timed ones took `budget_s`: on a software adapter that is the first timed
    one, as before): a short prefill on a real GPU varied up to 2x between two runs. The
    warm-up is not counted against the budget: it was, and where it built pipelines (the first
    model of a bench process) only one timed run followed -- the first variant's short prompts
    read up to 2.4x slower than the same graph's in a later variant of the same process (H200,
    64 tokens, 668 against 1,590 tok/s)."""
    reps = max(1, reps)
    ids, state = _prompt_ids(model, T), model.new_state()
    best = None
    spent = 0.0
    for rep in range(reps + 1):   # the first run warms pipelines
        if rep > 1 and spent > budget_s:
            break
        dt = await _prefill_seconds(model, ids, state, recorded=False)
        if rep == 0:
            continue                  # the warm-up: neither timed nor counted
        spent += dt
        best = dt if best is None else min(best, dt)
    ids.release()
    state.release()
    return {"prompt": T, "seconds": best, "tokens_per_s": T / best}


async def prefill_recorded_seconds(model, T, reps=2):
    """The same prefill recorded whole first (untimed), then timed from its submit to its
    logits' arrival: the GPU's time plus one encode + submit and the readback, without the
    host's recording. Against prefill_tokens_per_s's streamed time it says how much of a
    prefill the recording still adds where streaming should hide it (through Dawn under Node
    mamba-1.4b's 1,024 tokens took ~16% longer than natively on the same H200)."""
    ids, state = _prompt_ids(model, T), model.new_state()
    best = min([await _prefill_seconds(model, ids, state, recorded=True)
                for _ in range(max(1, reps))])
    ids.release()
    state.release()
    return {"recorded_seconds": best, "recorded_tokens_per_s": T / best}


# The longest prompt's prefill is also timed recorded-first where it took less than this (a real
# GPU; a software adapter's would only add minutes to CI).
RECORDED_UNDER_S = 0.5

STREAMS = 3    # streamed decode runs per measure; the fastest is reported (all are listed)


GROUP = 16     # the bench's decode group (steps per submit), unless MAMBAWEB_BENCH_GROUP

# The generate page's sampling defaults (web/index.html's inputs; tests/unit/
# test_bench_sampling.py keeps the two equal). The bench decodes greedily unless
# MAMBAWEB_BENCH_SAMPLING=app (a bench variant): then as a user of the page does, with a
# repetition penalty and a draw after top-k and top-p.
APP_SAMPLING = dict(greedy=False, temperature=0.8, top_k=40, top_p=0.95,
                    repetition_penalty=1.1, seed=0)
# MAMBAWEB_BENCH_SAMPLING=topp: the page's settings with top-k off (0), top-p alone
TOPP_SAMPLING = dict(APP_SAMPLING, top_k=0)
# MAMBAWEB_BENCH_SAMPLING=wide: the page's settings with top-k 300, past the candidates' 128
WIDE_SAMPLING = dict(APP_SAMPLING, top_k=300)
# MAMBAWEB_BENCH_SAMPLING=temp: the page's settings with top-k and top-p off (temperature alone)
TEMP_SAMPLING = dict(APP_SAMPLING, top_k=0, top_p=1.0)


def bench_sampling():
    """(name, SamplingConfig) the bench decodes with: MAMBAWEB_BENCH_SAMPLING greedy | app |
    topp | wide | temp."""
    name = os.environ.get("MAMBAWEB_BENCH_SAMPLING", "").strip().lower() or "greedy"
    modes = {"greedy": dict(greedy=True), "app": APP_SAMPLING, "topp": TOPP_SAMPLING,
             "wide": WIDE_SAMPLING, "temp": TEMP_SAMPLING}
    if name not in modes:
        raise ValueError("MAMBAWEB_BENCH_SAMPLING must be 'greedy', 'app', 'topp', 'wide' or "
                         f"'temp', got {name!r}")
    return name, SamplingConfig(**modes[name])


async def decode_tokens_per_s(model, n_tokens, group=None):
    """Decode throughput the way the app decodes (Generator.stream: chained groups of `group`
    steps, one submit each, ids read back while the next group runs; the best of STREAMS runs
    of n_tokens, each listed: one run on a busy host varied +-30%), and token by token
    (decode_one: a host round trip per token) for comparison. group: GROUP, or
    MAMBAWEB_BENCH_GROUP (bench variants; "auto": Generator's time-sized groups, the app's).
    Greedy, or with MAMBAWEB_BENCH_SAMPLING=app the generate page's defaults (APP_SAMPLING),
    =topp those with top-k off (TOPP_SAMPLING), =wide with top-k 300 (WIDE_SAMPLING), =temp
    with top-k and top-p off (TEMP_SAMPLING)."""
    group = group or os.environ.get("MAMBAWEB_BENCH_GROUP", str(GROUP))
    if group != "auto":                    # "auto": sized by time, as the app decodes
        group = int(group)
    sampling_name, sampling_cfg = bench_sampling()
    gen = Generator(model, sampling_cfg, max_tokens=(STREAMS + 2) * n_tokens + 64, group=group)
    async for _ in gen.stream([1, 2, 3, 4], gen.group + 1):     # records the step graph, warms up
        pass
    runs = []                             # (seconds, t0, timeline, host split) per streamed run
    for _ in range(STREAMS):
        t0 = time.perf_counter()
        count = 0
        gen.timeline = timeline = []
        async for _ in gen.stream([5], n_tokens + 1):
            count += 1
            if count == 1:
                t0 = time.perf_counter()      # the prefill's token is not a decoded one
                gen.device.take_submit_times()
        runs.append((time.perf_counter() - t0, t0, timeline, gen.device.take_submit_times()))
    gen.timeline = None
    total, t0, timeline, times = min(runs, key=lambda r: r[0])
    tok = gen.last_token
    t1 = time.perf_counter()
    for _ in range(n_tokens):
        tok = await gen.decode_one(tok)
    one_by_one = time.perf_counter() - t1
    out = {"tokens": n_tokens, "group": group, "sampling": sampling_name,
           "tokens_per_s": n_tokens / total,
           "ms_per_token": 1000 * total / n_tokens,
           "streams_tokens_per_s": [n_tokens / r[0] for r in runs],
           "one_by_one_tokens_per_s": n_tokens / one_by_one,
           "dispatches_per_token": gen.dispatches_per_token}
    out["stream_split"] = stream_split(timeline, t0, total, n_tokens)
    # the stream's launches split as a lone group's (_group_timeline below): a stream's have
    # taken up to 1.5x a lone group's time per token through Dawn
    out["stream_split"]["host"] = host_split(times, out["stream_split"]["launch_ms"], n_tokens)
    out.update(await _group_timeline(gen, GROUP if group == "auto" else group,
                                     1000 * total / n_tokens))
    # what the pipeline allows from those parts, and how far the stream was from it
    out.update(pipeline_report(out, gen.depth, gen.ramp))
    gen.release()
    return out


async def least_gpu_decode(model, n_tokens, reps=2):
    """decode_tokens_per_s run `reps` times, the run with the least GPU time per token kept:
    for comparing kernel variants by the GPU's time (tools/profile_marginal.py,
    tools/ablate_matvec_q4.py), where one run's host noise would hide a 1-2% change."""
    runs = [await decode_tokens_per_s(model, n_tokens) for _ in range(reps)]
    return min(runs, key=lambda d: d["gpu_ms_per_token"])


async def _group_timeline(gen, group, stream_ms):
    """Where a streamed token's time goes: one group of `group` steps launched alone (best of
    3), its host part (encoding and submitting the steps) timed apart from the wait for its ids;
    the wait less an idle readback's latency is the GPU's time. gpu_busy is that GPU time over
    the streamed token's: near 1 the GPU never waits for the host; host_ms_per_token near the
    streamed ms/token means the host is the limit."""
    dev = gen.device
    idle = await readback_latency(dev, gen.token)   # nothing queued: the wait's floor
    host, wait, splits = [], [], []
    tok = gen.last_token
    dev.take_submit_times()
    for _ in range(3):
        t = time.perf_counter()
        g = gen._launch(group, 0, tok)
        t1 = time.perf_counter()
        splits.append(dev.take_submit_times())
        ids = await g.ids
        wait.append(time.perf_counter() - t1)
        host.append(t1 - t)
        gen.last_token = tok = int.from_bytes(ids[-4:], "little")
    best = host.index(min(host))
    host_ms = 1000 * host[best] / group
    gpu_ms = max(0.0, 1000 * (min(wait) - idle) / group)
    return {"host_ms_per_token": host_ms, "host_split": host_split(splits[best], host_ms, group),
            "gpu_ms_per_token": gpu_ms, "readback_ms": 1000 * idle,
            "gpu_busy": min(1.0, gpu_ms / stream_ms)}


def stream_split(timeline, t0, total, n_tokens):
    """Where the streamed decode's time went, per token (Generator.timeline from t0 on):
    queueing groups (launch_ms), waiting for a group's ids (wait_ms; near 0: the host is the
    limit, the GPU always ahead) and the rest (the consumer, Python's loop)."""
    launch = sum(e[2] - max(e[1], t0) for e in timeline if e[0] == "launch" and e[2] > t0)
    wait = sum(e[2] - max(e[1], t0) for e in timeline if e[0] == "wait" and e[2] > t0)
    waits = [1000 * (e[2] - e[1]) for e in timeline if e[0] == "wait" and e[1] >= t0]
    # each launch's time per step it queued, in launch order: a steady host gives one value
    # (after the ramp's small groups), a hiccup (a collector's pause, another process) an outlier
    per_step = [1000 * (e[2] - e[1]) / e[3] for e in timeline if e[0] == "launch" and e[1] >= t0]
    return {"launch_ms": 1000 * launch / n_tokens, "wait_ms": 1000 * wait / n_tokens,
            "other_ms": 1000 * max(0.0, total - launch - wait) / n_tokens,
            "waits": len(waits), "longest_wait_ms": max(waits) if waits else 0.0,
            # each wait in order: the stream's start (a GPU, a host waking from the prefill's
            # wait) against its steady state
            "wait_ms_each": [round(v, 4) for v in waits],
            "launch_ms_per_step": [round(v, 4) for v in per_step]}


def host_split(times, host_ms, group):
    """A launched group's host time per token, by where it went (Device.take_submit_times):
    the WebGPU calls that encode the commands, finish() (validation), submit() (to the driver)
    and the rest (Python: the group's bookkeeping, its writes and the readback's request)."""
    out = {k: times[k] / group for k in ("encode_ms", "finish_ms", "submit_ms")}
    out["other_ms"] = max(0.0, host_ms - sum(out.values()))
    cmds = times["commands"] / group
    out["commands_per_token"] = cmds
    out["encode_us_per_command"] = 1000 * out["encode_ms"] / cmds if cmds else None
    return out


def weight_bytes_per_token(model):
    """Bytes of weights one decode step reads: every tensor, except that an untied embedding
    is only gathered (one row)."""
    total = 0
    for name, t in model.weights.items():
        if name == EMBED and not model.cfg.tie_word_embeddings:
            total += t.nbytes // t.shape[0]
        else:
            total += t.nbytes
    return total


async def run(device, base_url=None, prompts=(64, 256, 1024), decode_tokens=32, max_seconds=60.0,
              folder=None, weights_formats=("f32",), read_gb_per_s=None):
    """Load the model from `base_url` (browser, HTTP) or `folder` (native, local disk), once
    per weight format; the first format's numbers are the top level, all under "formats".
    read_gb_per_s: the device's measured read ceiling (benchmarks/ceilings.py), for the
    decode's fraction of it."""
    out = None
    for fmt in weights_formats:
        r = await run_one(device, base_url, prompts, decode_tokens, max_seconds, folder, fmt,
                          read_gb_per_s)
        if out is None:
            out = dict(r)
            out["formats"] = {}
        out["formats"][fmt] = r
    return out


async def run_one(device, base_url, prompts, decode_tokens, max_seconds, folder, fmt,
                  read_gb_per_s):
    t0 = time.perf_counter()
    model = (await load_model_local(device, folder, weights_format=fmt) if folder is not None
             else await load_model(device, base_url, weights_format=fmt))
    load_s = time.perf_counter() - t0
    cfg = model.cfg
    out = {"d_model": cfg.hidden_size, "layers": cfg.num_hidden_layers, "vocab": cfg.vocab_size,
           "weights": fmt, "weight_bytes_per_token": weight_bytes_per_token(model),
           "load_s": load_s, "prefill": [], "decode": None}
    spent = 0.0
    for T in prompts:
        if spent > max_seconds:
            out["prefill"].append({"prompt": T, "skipped": f"time cap {max_seconds}s reached"})
            continue
        r = await prefill_tokens_per_s(model, T)
        spent += 2 * r["seconds"]
        if T == max(prompts) and r["seconds"] < RECORDED_UNDER_S:   # a real GPU's long prefill
            r.update(await prefill_recorded_seconds(model, T))
        out["prefill"].append(r)
    d = out["decode"] = await decode_tokens_per_s(model, decode_tokens)
    d["weights_gb_per_s"] = out["weight_bytes_per_token"] * d["tokens_per_s"] / 1e9
    if read_gb_per_s:
        d["pct_of_read_ceiling"] = 100.0 * d["weights_gb_per_s"] / read_gb_per_s
    model.release()
    return out
