"""Training benchmark inside the engine: tokens/s and ms per optimizer step at a fixed shape
(batch 4 x seq 128, d_model 256 x 4 layers by default, any family), from the reference initialisation,
on a deterministic pseudo-text batch stream; also the loss after the measured tokens."""
import time

from py_engine.train.init import init_model, preset_config
from py_engine.train.trainer import Trainer


def _batch(step, Bsz, T, vocab):
    # A fixed, learnable stream: repeating ramps with a per-sequence offset.
    ids = [((step * 31 + b * 7 + t) % 97) % vocab for b in range(Bsz) for t in range(T)]
    return ids, ids


async def run(device, d_model=256, n_layers=4, vocab_size=256, Bsz=4, T=128, steps=8,
              lr=1e-3, family="mamba1"):
    cfg = preset_config("tiny", family=family, hidden_size=d_model, num_hidden_layers=n_layers,
                        vocab_size=vocab_size)
    model = init_model(device, cfg, seed=0)
    tr = Trainer(model, lr=lr, betas=(0.9, 0.95), weight_decay=0.1, max_grad_norm=1.0)
    first = await tr.train_step([_batch(0, Bsz, T, vocab_size)], Bsz, T)   # warm-up: pipelines
    t0 = time.perf_counter()
    losses = []
    for s in range(1, steps + 1):
        r = await tr.train_step([_batch(s, Bsz, T, vocab_size)], Bsz, T)
        losses.append(r["loss"])
    dt = time.perf_counter() - t0
    tr.release()
    model.release()
    return {"family": family, "d_model": d_model, "layers": n_layers, "vocab": vocab_size, "batch": Bsz, "seq": T,
            "steps": steps, "ms_per_step": 1000 * dt / steps,
            "tokens_per_s": steps * Bsz * T / dt, "loss_first": first["loss"],
            "loss_last": losses[-1], "tokens_seen": (steps + 1) * Bsz * T}
