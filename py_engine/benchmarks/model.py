"""Model benchmarks inside the engine: prefill and decode throughput, dispatches per token."""
import time

from py_engine.models.generate import Generator, SamplingConfig
from py_engine.models.mamba import MambaModel
from py_engine.io.hf_loader import load_model, load_model_local
from py_engine.autograd.functional import Ctx


async def prefill_tokens_per_s(model, T, reps=1):
    ids = model.ids_tensor([(i * 7919) % model.cfg.vocab_size for i in range(T)])
    state = model.new_state()
    best = None
    for _ in range(reps + 1):   # first run warms pipelines
        state.reset()
        t0 = time.perf_counter()
        batch = model.device.batch()
        logits = model.forward(Ctx(batch), ids, 1, state, last_only=True)
        batch.submit()
        await logits.to_bytes()
        dt = time.perf_counter() - t0
        logits.release()
        best = dt if best is None else min(best, dt)
    ids.release()
    state.release()
    return {"prompt": T, "seconds": best, "tokens_per_s": T / best}


async def decode_tokens_per_s(model, n_tokens):
    gen = Generator(model, SamplingConfig(greedy=True), max_tokens=n_tokens + 16)
    tok = await gen.prefill([1, 2, 3, 4])
    tok = await gen.decode_one(tok)          # records the step graph
    t0 = time.perf_counter()
    times = []
    for _ in range(n_tokens):
        t1 = time.perf_counter()
        tok = await gen.decode_one(tok)
        times.append(time.perf_counter() - t1)
    total = time.perf_counter() - t0
    out = {"tokens": n_tokens, "tokens_per_s": n_tokens / total,
           "ms_per_token_first_half": 1000 * sum(times[: n_tokens // 2]) / max(1, n_tokens // 2),
           "ms_per_token_second_half": 1000 * sum(times[n_tokens // 2:]) / max(1, n_tokens - n_tokens // 2),
           "dispatches_per_token": gen.dispatches_per_token}
    gen.release()
    return out


async def run(device, base_url=None, prompts=(64, 256, 1024), decode_tokens=32, max_seconds=60.0,
              folder=None):
    """Load the model from `base_url` (browser, HTTP) or `folder` (native, local disk)."""
    t0 = time.perf_counter()
    model = (await load_model_local(device, folder) if folder is not None
             else await load_model(device, base_url))
    load_s = time.perf_counter() - t0
    cfg = model.cfg
    out = {"d_model": cfg.hidden_size, "layers": cfg.num_hidden_layers, "vocab": cfg.vocab_size,
           "load_s": load_s, "prefill": [], "decode": None}
    spent = 0.0
    for T in prompts:
        if spent > max_seconds:
            out["prefill"].append({"prompt": T, "skipped": f"time cap {max_seconds}s reached"})
            continue
        r = await prefill_tokens_per_s(model, T)
        spent += 2 * r["seconds"]
        out["prefill"].append(r)
    out["decode"] = await decode_tokens_per_s(model, decode_tokens)
    model.release()
    return out
