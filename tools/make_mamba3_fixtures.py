"""Mamba-3 (SISO and MIMO) parity fixtures: tests/fixtures/models/mamba3-*/ in mamba_ssm's MambaLMHeadModel layout.

mamba_ssm's Mamba3 needs CUDA (Triton / CuteDSL kernels), so the expected values come from the float64
reference tests/reference/mamba3_numpy.py evaluated on the f32-rounded weights (cross-checked by
tests/unit/test_mamba3_reference.py). Seeded numpy random weights, every parameter perturbed away from its
init value (B_bias/C_bias/norm weights from 1, D from 1, dt_bias random) so each one matters.

Each folder: config.json (MambaConfig: d_model, n_layer, vocab_size, ssm_cfg {"layer": "Mamba3", <Mamba3
__init__ argument names>}, rms_norm, residual_in_fp32, fused_add_norm, pad_vocab_size_multiple, tie_embeddings),
model.safetensors (f32, mamba_ssm names; lm_head.weight saved even when tied), expected.npz (prompt_ids [21],
logits [21, V], greedy_ids [16], greedy_logits [16, V] - row 0 = logits[-1], later rows from the step path -,
angle_state [L, H, S], ssm_state [L, H, P, N], k_state [L, H, N] (MIMO: [L, R, H, N]), v_state [L, H, P]: states
after the prompt), fixture.json (layouts). The MIMO reference was checked once against state-spaces'
mamba3_MIMO_chunk_ref / mamba3_MIMO_step_ref (float64 torch on CPU, 1e-13; see tests/reference/mamba3_numpy.py).

    python -m tools.make_mamba3_fixtures [--out tests/fixtures]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.reference import mamba3_numpy as m3  # noqa: E402
from tools.fixture_common import N_NEW, find_prompt, fresh_dir, save_npz, write_json  # noqa: E402

PROMPT_LEN = 21
PAD_VOCAB_MULTIPLE = 16

# name -> (MambaConfig top level, ssm_cfg extras, seed)
FIXTURES = {
    # G=1, rope 0.5 (S=4 of N=16), headdim 12, tied, plain silu(z) gate
    "mamba3-g1-r05-tied": (dict(d_model=24, n_layer=2, vocab_size=96, tie_embeddings=True),
                           dict(d_state=16, expand=2, headdim=12, ngroups=1, rope_fraction=0.5, A_floor=1e-4), 31),
    # G=2, rope 1.0 (S=4 of N=8), headdim 10, untied, gated per-head RMSNorm before out_proj, big A_floor
    "mamba3-g2-r10-untied-onorm": (dict(d_model=30, n_layer=2, vocab_size=80, tie_embeddings=False),
                                   dict(d_state=8, expand=2, headdim=10, ngroups=2, rope_fraction=1.0,
                                        A_floor=0.3, is_outproj_norm=True), 32),
    # legacy (pre mamba PR #962) A = -softplus(dd_A): "A_activation" is NOT a Mamba3 argument (Mamba3 swallows it
    # in **kwargs and would use heavy_tail); mambaweb reads it. G=2, rope 0.5 (S=2 of N=8), headdim 12.
    "mamba3-g2-r05-tied-softplus": (dict(d_model=24, n_layer=2, vocab_size=64, tie_embeddings=True),
                                    dict(d_state=8, expand=2, headdim=12, ngroups=2, rope_fraction=0.5,
                                         A_floor=0.3, A_activation="softplus"), 33),
    # MIMO rank 2, G=1, rope 0.5 (S=4 of N=16: pairs (i, i+8), i<4), heavy tail, tied, plain gates
    "mamba3-mimo-r2-g1-r05-tied": (dict(d_model=24, n_layer=2, vocab_size=96, tie_embeddings=True),
                                   dict(d_state=16, expand=2, headdim=12, ngroups=1, rope_fraction=0.5,
                                        A_floor=1e-4, is_mimo=True, mimo_rank=2), 34),
    # MIMO rank 4, G=2, rope 1.0 (S=4 of N=8), softplus A, untied, fused head-wise norm before the gates
    "mamba3-mimo-r4-g2-r10-onorm-softplus": (dict(d_model=24, n_layer=2, vocab_size=80, tie_embeddings=False),
                                             dict(d_state=8, expand=2, headdim=12, ngroups=2, rope_fraction=1.0,
                                                  A_floor=0.3, is_outproj_norm=True, is_mimo=True, mimo_rank=4,
                                                  A_activation="softplus"), 35),
}


def ssm_config(top, ssm):
    assert top["vocab_size"] % PAD_VOCAB_MULTIPLE == 0, "mamba_ssm would pad the vocab"
    return {"d_model": top["d_model"], "d_intermediate": 0, "n_layer": top["n_layer"], "vocab_size": top["vocab_size"],
            "ssm_cfg": dict({"layer": "Mamba3"}, **ssm, chunk_size=8), "attn_layer_idx": [], "attn_cfg": {},
            "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
            "pad_vocab_size_multiple": PAD_VOCAB_MULTIPLE, "tie_embeddings": top["tie_embeddings"]}


def mixer_cfg(conf):
    c = dict(conf["ssm_cfg"], d_model=conf["d_model"])
    c.pop("layer")
    return c


def random_weights(conf, seed):
    """f32 weights in mamba_ssm state_dict order."""
    rng = np.random.RandomState(seed)
    D = m3.dims(mixer_cfg(conf))
    d, I, H, P, N, G, S, R = (D[k] for k in "d I H P N G S R".split())
    V = conf["vocab_size"]
    rows = 2 * I + 2 * R * G * N + 3 * H + S

    def rn(*shape, s=1.0):
        return rng.randn(*shape) * s

    W = {"backbone.embedding.weight": rn(V, d, s=1.0)}
    for i in range(conf["n_layer"]):
        p = f"backbone.layers.{i}.mixer."
        inp = rn(rows, d, s=1.0 / np.sqrt(d))
        o = 2 * I + 2 * R * G * N
        inp[o:o + H] *= 1.5                 # dd_dt: DT spread over ~[0.05, 3]
        inp[o + H:o + 2 * H] *= 3.0         # dd_A: reach the A_floor clamp and both heavy-tail branches
        inp[o + 2 * H:o + 3 * H] *= 3.0     # trap: lambda over (0, 1)
        inp[o + 3 * H:] *= 2.0              # angles: tanh not saturated everywhere
        W[p + "dt_bias"] = rn(H, s=0.7) - 0.5
        W[p + "B_bias"] = 1.0 + rn(H, R, N, s=0.5)
        W[p + "C_bias"] = 1.0 + rn(H, R, N, s=0.5)
        W[p + "D"] = 1.0 + rn(H, s=0.5)
        if D["mimo"]:       # away from mamba_ssm's init (ones, ones / R) so every entry matters
            W[p + "mimo_x"] = (1.0 + rn(H, R, P, s=0.5)) / R
            W[p + "mimo_z"] = 1.0 + rn(H, R, P, s=0.5)
            W[p + "mimo_o"] = (1.0 + rn(H, R, P, s=0.5)) / R
        W[p + "in_proj.weight"] = inp
        W[p + "B_norm.weight"] = 1.0 + rn(N, s=0.3)
        W[p + "C_norm.weight"] = 1.0 + rn(N, s=0.3)
        if conf["ssm_cfg"].get("is_outproj_norm"):
            W[p + "norm.weight"] = 1.0 + rn(I, s=0.3)
        W[p + "out_proj.weight"] = rn(d, I, s=2.0 / np.sqrt(I))
        W[f"backbone.layers.{i}.norm.weight"] = 1.0 + rn(d, s=0.3)
    W["backbone.norm_f.weight"] = 1.0 + rn(d, s=0.3)
    W["lm_head.weight"] = W["backbone.embedding.weight"] if conf["tie_embeddings"] else rn(V, d, s=1.0)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in W.items()}


def fixture_json(name, conf, gap, attempt):
    D = m3.dims(mixer_cfg(conf))
    L = conf["n_layer"]
    return {
        "name": name,
        "source": ("float64 tests/reference/mamba3_numpy.py on the f32 weights of model.safetensors (mamba_ssm "
                   "Mamba3 SISO semantics read at state-spaces/mamba e9594ce; mamba_ssm itself needs CUDA)"),
        "prompt_len": PROMPT_LEN, "n_new": N_NEW, "min_greedy_gap": gap, "prompt_attempt": attempt,
        "dims": D,
        "A_activation": conf["ssm_cfg"].get("A_activation", "heavy_tail"),
        "state_shapes": {"angle_state": [L, D["H"], D["S"]], "ssm_state": [L, D["H"], D["P"], D["N"]],
                         "k_state": [L, D["R"], D["H"], D["N"]] if D["mimo"] else [L, D["H"], D["N"]],
                         "v_state": [L, D["H"], D["P"]]},
        "layout": {
            "in_proj_rows": "[z (I) | x (I) | B (G*N) | C (G*N) | dd_dt (H) | dd_A (H) | trap (H) | angles (S)]",
            "num_rope_angles": "S = (floor(N*rope_fraction) rounded down to even) / 2; angles shared by all heads",
            "B_bias/C_bias": "[H, 1, N] (mimo_rank axis 1), added after the RMSNorm, before the rotation",
            "head_to_group": "group = head // (H / G)",
            "A": "min(-f(dd_A), -A_floor); f = heavy_tail (1+x | 1/(1-x)) or softplus (A_activation)",
            "rotation": ("phi += tanh(angles)*pi*DT (mod 2pi); SISO pairs (2i, 2i+1), i < S; MIMO pairs (i, i + N/2), "
                         "i < S; other dims unrotated"),
            "mimo": ("rank R: B/C rows (r g n); B_bias/C_bias [H, R, N]; v_r = x*mimo_x[:, r]; y_r = S q_r + D v_r; "
                     "gate_r = y_r*silu(z*mimo_z[:, r]) (is_outproj_norm: RMSNorm_P(y_r)*norm.weight[h]*silu(..)); "
                     "out = sum_r gate_r*mimo_o[:, r]; k_state [L, R, H, N]") if D["mimo"] else "SISO",
            "angle_state": "[L, H, S] accumulated phi, wrapped to [0, 2pi)",
            "ssm_state": "[L, H, P, N]",
            "k_state": "[L, H, N] last ROTATED, biased B (mamba_ssm keeps [batch, 1, H, N])",
            "v_state": "[L, H, P] last x",
            "gate": "is_outproj_norm: RMSNorm per head (group P, eps 1e-5) * norm.weight * silu(z); else y*silu(z)",
            "greedy_logits": "row 0 = logits[-1] (prefill), rows 1.. from the 1-token step path",
        },
    }


def write_all(out: Path):
    from safetensors.numpy import save_file
    written = []
    for name, (top, ssm, seed) in FIXTURES.items():
        folder = out / "models" / name
        conf = ssm_config(top, ssm)
        W = random_weights(conf, seed)
        model = dict(config=conf, n_layer=conf["n_layer"], mixer_cfg=mixer_cfg(conf),
                     weights={k: v.astype(np.float64) for k, v in W.items()})

        def run(prompt):
            logits, ids, glog, _ = m3.greedy(model, prompt, N_NEW)
            _, states = m3.lm_forward(model, prompt)      # the states after the prompt
            return (dict(prompt_ids=prompt, logits=logits.astype(np.float32), greedy_ids=ids,
                         greedy_logits=glog.astype(np.float32),
                         **{k: v.astype(np.float32) for k, v in m3.stack_states(states).items()}),)

        (exp,), gap, attempt = find_prompt(folder, seed, conf["vocab_size"], PROMPT_LEN, run)
        fresh_dir(folder)
        folder.mkdir(parents=True)
        write_json(folder / "config.json", conf)
        save_file(W, str(folder / "model.safetensors"), metadata={"format": "pt"})
        save_npz(folder / "expected.npz", exp)
        write_json(folder / "fixture.json", fixture_json(name, conf, gap, attempt))
        written.append(folder)
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures")
    args = ap.parse_args(argv)
    for f in write_all(args.out):
        print(f, sum(p.stat().st_size for p in f.iterdir()), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
