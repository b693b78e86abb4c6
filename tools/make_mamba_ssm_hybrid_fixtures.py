"""Build tiny mamba_ssm (state-spaces/mamba `MambaLMHeadModel`) hybrid checkpoints and their
reference outputs, with a pure-PyTorch float64 re-implementation of mamba_ssm's modules
(mamba_ssm itself needs CUDA + Triton and is not installed here).

    .venv/bin/python tools/make_mamba_ssm_hybrid_fixtures.py [--out tests/fixtures/mamba_ssm]

Re-implemented from state-spaces/mamba (main, e9594ce), read line by line:
  models/mixer_seq_simple.py  create_block / MixerModel / MambaLMHeadModel: block i's mixer is
                              MHA(**attn_cfg) for i in attn_layer_idx, else ssm_cfg["layer"]; a
                              GatedMLP after every mixer when d_intermediate > 0; RMSNorm eps 1e-5;
                              vocab padded up to pad_vocab_size_multiple; lm_head tied or not
  modules/block.py            residual = x + residual; x = mixer(norm(residual));
                              residual = x + residual; x = mlp(norm2(residual))  (fused_add_norm
                              and residual_in_fp32 compute the same in float32/64)
  modules/mha.py              in_proj rows [q (H*Dh) | k (KVH*Dh) | v (KVH*Dh)] (+ bias,
                              qkv_proj_bias default True), rotary on the first rotary_emb_dim
                              channels (flash_attn RotaryEmbedding, interleaved=False: rotate_half,
                              inv_freq = 1/base^(2i/rotary_emb_dim), positions from 0), k/v heads
                              repeat_interleave'd (query head h reads kv head h // (H/KVH)),
                              softmax scale 1/sqrt(Dh), causal, out_proj (+ bias)
  modules/mlp.py              GatedMLP: F = ceil(d_intermediate / 128) * 128, fc1 [2F, D] ->
                              y, gate = chunk(2) (FIRST half y, SECOND half gate), fc2(y * silu(gate))
  modules/mamba2.py           Mamba2: in_proj rows [z | x | B | C | dt], causal depthwise conv over
                              x|B|C + silu, dt = softplus(dt + dt_bias), A = -exp(A_log), head h reads
                              group h // (H/G), y = C.h + D x, RMSNormGated(y * silu(z)) per group of
                              I/G channels (norm_before_gate=False), out_proj
  modules/mamba_simple.py     Mamba (1): in_proj rows [x | z], conv + silu, x_proj -> [dt (R) | B | C],
                              dt = softplus(dt_proj(dt)), h = exp(dt A) h + dt B x, y = C.h + D x,
                              y * silu(z), out_proj
The SSMs run as plain recurrences (every token, float64): the exact math the chunked kernels
compute, not their numerics. `torch_model(c, W)` is the same computation as a torch module tree
with mamba_ssm's module names (what PEFT adapts: tests/unit/test_mamba_ssm_lora_native.py).

Written (tests/fixtures/mamba_ssm/<name>/: config.json (mamba_ssm MambaConfig fields),
model.safetensors (mamba_ssm tensor names, f32, lm_head.weight saved for tied models too: a tied
mamba_ssm state_dict lists it), expected.npz):
  m2-attn-mlp-tied   3 blocks [Mamba2, MHA, Mamba2] + GatedMLP after each (d_intermediate 40 ->
                     F 128), d_model 16, Mamba-2 expand 2 / headdim 8 (H 4) / ngroups 2 /
                     d_state 8 / chunk 16; MHA 4 heads / 2 KV / head_dim 6, rotary_emb_dim 4,
                     q/k/v and out biases; vocab 64, tied
  m1-attn-untied     3 blocks [MHA, Mamba1, Mamba1], no MLP, d_model 16, Mamba-1 expand 2 /
                     d_state 4 / dt_rank 2; MHA 2 heads / 1 KV (MQA) / head_dim 8, no rotary, no
                     biases; vocab_size 45 padded to 48, untied
expected.npz (float64 reference, stored f32):
  prompt_ids   int64 [P]           P = 40 (> one 32-wide attention tile)
  logits       f32   [P, V]        forward(prompt_ids)
  conv_state   f32   [Lm, C, K]    SSM blocks in order: the last K pre-conv inputs, newest last
                                   (Mamba-2: C = x|B|C channels; Mamba-1: C = I)
  ssm_state    f32   [Lm, H, P, N] Mamba-2 / [Lm, I, N] Mamba-1: the state after the prompt
  key_cache    f32   [La, KVH, P, Dh]  attention blocks: the rotated keys of every position
  value_cache  f32   [La, KVH, P, Dh]
  greedy_ids   int64 [16]          argmax continuation (full recompute per token)
  greedy_logits f32  [16, V]       the logits each new id is the argmax of (top-1/top-2 gap >= 1e-3)
Deterministic (fixed seeds, npz without timestamps).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.fixture_common import MIN_GAP, N_NEW, fresh_dir, save_npz, write_json  # noqa: E402

PROMPT_LEN = 40
EPS = 1e-5

FIXTURES = {
    "m2-attn-mlp-tied": dict(
        d_model=16, n_layer=3, d_intermediate=40, vocab_size=64,
        ssm_cfg={"layer": "Mamba2", "d_state": 8, "d_conv": 4, "expand": 2, "headdim": 8,
                 "ngroups": 2, "chunk_size": 16},
        attn_layer_idx=[1],
        attn_cfg={"num_heads": 4, "num_heads_kv": 2, "head_dim": 6, "rotary_emb_dim": 4,
                  "causal": True},
        rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8,
        tie_embeddings=True),
    "m1-attn-untied": dict(
        d_model=16, n_layer=3, d_intermediate=0, vocab_size=45,
        ssm_cfg={"layer": "Mamba1", "d_state": 4, "d_conv": 4, "expand": 2, "dt_rank": 2},
        attn_layer_idx=[0],
        attn_cfg={"num_heads": 2, "num_heads_kv": 1, "head_dim": 8, "qkv_proj_bias": False,
                  "out_proj_bias": False, "causal": True},
        rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=8,
        tie_embeddings=False),
}


# --- sizes ----------------------------------------------------------------------------------

def padded_vocab(c):
    v, m = c["vocab_size"], c.get("pad_vocab_size_multiple", 8)
    return v + (-v) % m


def mlp_hidden(c):
    d = c.get("d_intermediate", 0)
    return (d + 127) // 128 * 128


def attn_sizes(c):
    a = c["attn_cfg"]
    H = a["num_heads"]
    return H, a.get("num_heads_kv") or H, a.get("head_dim") or c["d_model"] // H


def mamba2_sizes(c):
    s = c["ssm_cfg"]
    I = s.get("expand", 2) * c["d_model"]
    P = s.get("headdim", 64)
    return dict(I=I, H=I // P, P=P, G=s.get("ngroups", 1), N=s.get("d_state", 128),
                K=s.get("d_conv", 4))


def mamba1_sizes(c):
    s = c["ssm_cfg"]
    D = c["d_model"]
    R = s.get("dt_rank", "auto")
    return dict(I=s.get("expand", 2) * D, N=s.get("d_state", 16), K=s.get("d_conv", 4),
                R=math.ceil(D / 16) if R == "auto" else R)


# --- weights (mamba_ssm names, state_dict order) --------------------------------------------

def make_weights(c, seed):
    """{mamba_ssm tensor name: float64 torch tensor}: random, moderate scales so every path
    (gate, rotary, GQA, the SSM decay) moves the logits."""
    import torch
    g = torch.Generator().manual_seed(seed)

    def rn(*shape, s=1.0):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * s

    def ru(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)

    D, V = c["d_model"], padded_vocab(c)
    W = {"backbone.embedding.weight": rn(V, D)}
    layer = c["ssm_cfg"].get("layer", "Mamba1")
    for i in range(c["n_layer"]):
        p = f"backbone.layers.{i}."
        W[p + "norm.weight"] = 1 + rn(D, s=0.2)
        if i in c["attn_layer_idx"]:
            H, KVH, Dh = attn_sizes(c)
            a = c["attn_cfg"]
            qkv = (H + 2 * KVH) * Dh
            W[p + "mixer.in_proj.weight"] = rn(qkv, D, s=D ** -0.5)
            if a.get("qkv_proj_bias", True):
                W[p + "mixer.in_proj.bias"] = rn(qkv, s=0.3)
            W[p + "mixer.out_proj.weight"] = rn(D, H * Dh, s=(H * Dh) ** -0.5)
            if a.get("out_proj_bias", True):
                W[p + "mixer.out_proj.bias"] = rn(D, s=0.3)
        elif layer == "Mamba2":
            m = mamba2_sizes(c)
            I, H, G, N, K = m["I"], m["H"], m["G"], m["N"], m["K"]
            CD = I + 2 * G * N
            W[p + "mixer.dt_bias"] = torch.log(torch.expm1(ru(0.01, 0.5, H)))
            W[p + "mixer.A_log"] = torch.log(ru(1.0, 8.0, H))
            W[p + "mixer.D"] = 1 + rn(H, s=0.3)
            W[p + "mixer.in_proj.weight"] = rn(2 * I + 2 * G * N + H, D, s=D ** -0.5)
            W[p + "mixer.conv1d.weight"] = rn(CD, 1, K, s=0.5)
            W[p + "mixer.conv1d.bias"] = rn(CD, s=0.2)
            W[p + "mixer.norm.weight"] = 1 + rn(I, s=0.2)
            W[p + "mixer.out_proj.weight"] = rn(D, I, s=I ** -0.5)
        else:
            m = mamba1_sizes(c)
            I, N, K, R = m["I"], m["N"], m["K"], m["R"]
            W[p + "mixer.A_log"] = torch.log(torch.arange(1, N + 1, dtype=torch.float64)
                                             ).repeat(I, 1) + rn(I, N, s=0.1)
            W[p + "mixer.D"] = 1 + rn(I, s=0.3)
            W[p + "mixer.in_proj.weight"] = rn(2 * I, D, s=D ** -0.5)
            W[p + "mixer.conv1d.weight"] = rn(I, 1, K, s=0.5)
            W[p + "mixer.conv1d.bias"] = rn(I, s=0.2)
            W[p + "mixer.x_proj.weight"] = rn(R + 2 * N, I, s=I ** -0.5)
            W[p + "mixer.dt_proj.weight"] = rn(I, R, s=R ** -0.5)
            W[p + "mixer.dt_proj.bias"] = torch.log(torch.expm1(ru(0.01, 0.3, I)))
            W[p + "mixer.out_proj.weight"] = rn(D, I, s=I ** -0.5)
        if c.get("d_intermediate", 0):
            F = mlp_hidden(c)
            W[p + "norm2.weight"] = 1 + rn(D, s=0.2)
            W[p + "mlp.fc1.weight"] = rn(2 * F, D, s=D ** -0.5)
            W[p + "mlp.fc2.weight"] = rn(D, F, s=F ** -0.5)
    W["backbone.norm_f.weight"] = 1 + rn(D, s=0.2)
    W["lm_head.weight"] = W["backbone.embedding.weight"] if c["tie_embeddings"] else rn(V, D)
    return W


# --- the reference (torch, any float dtype; autograd works through it) ------------------------

def linear(W, path, x):
    """x @ W[path.weight]^T (+ W[path.bias]); W a ModuleWeights: the module at `path` runs
    (so PEFT's LoRA layers, put in place of mamba_ssm's nn.Linear modules, act)."""
    if isinstance(W, ModuleWeights):
        return W.module(path)(x)
    y = x @ W[path + ".weight"].T
    if path + ".bias" in W:
        y = y + W[path + ".bias"]
    return y


def rmsnorm(x, w):
    import torch
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + EPS) * w


def silu(x):
    import torch
    return x * torch.sigmoid(x)


def causal_conv(xc, w, b):
    """xc [T, C], w [C, 1, K] (PyTorch conv1d, tap j multiplies x[t-(K-1)+j]) -> [T, C]."""
    import torch
    K = w.shape[-1]
    xp = torch.cat([xc.new_zeros(K - 1, xc.shape[1]), xc], 0)
    return sum(xp[j:j + xc.shape[0]] * w[:, 0, j] for j in range(K)) + b


def conv_state(xc, K):
    """The last K pre-conv inputs [C, K], newest last (zeros before the first token)."""
    import torch
    xp = torch.cat([xc.new_zeros(K, xc.shape[1]), xc], 0)
    return xp[-K:].T


def mha(c, W, p, h):
    """h [T, D] -> (out [T, D], k [KVH, T, Dh] rotated, v [KVH, T, Dh])."""
    import torch
    H, KVH, Dh = attn_sizes(c)
    a = c["attn_cfg"]
    T = h.shape[0]
    qkv = linear(W, p + "in_proj", h)
    q = qkv[:, :H * Dh].reshape(T, H, Dh)
    k = qkv[:, H * Dh:(H + KVH) * Dh].reshape(T, KVH, Dh)
    v = qkv[:, (H + KVH) * Dh:].reshape(T, KVH, Dh)
    r = a.get("rotary_emb_dim", 0)
    if r:
        base = float(a.get("rotary_emb_base", 10000.0))
        inv = 1.0 / base ** (torch.arange(0, r, 2, dtype=h.dtype) / r)
        fr = torch.arange(T, dtype=h.dtype)[:, None] * inv[None]          # [T, r/2]
        cos, sin = torch.cos(fr)[:, None], torch.sin(fr)[:, None]

        def rot(x):
            x1, x2 = x[..., :r // 2], x[..., r // 2:r]
            return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, x[..., r:]], -1)
        q, k = rot(q), rot(k)
    rep = H // KVH
    kk = k.repeat_interleave(rep, dim=1)                                  # [T, H, Dh]
    vv = v.repeat_interleave(rep, dim=1)
    s = torch.einsum("thd,shd->hts", q, kk) * Dh ** -0.5
    s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    o = torch.einsum("hts,shd->thd", torch.softmax(s, -1), vv).reshape(T, H * Dh)
    out = linear(W, p + "out_proj", o)
    return out, k.transpose(0, 1), v.transpose(0, 1)


def mamba2(c, W, p, h):
    """h [T, D] -> (out [T, D], conv_state [CD, K], ssm_state [H, P, N])."""
    import torch
    m = mamba2_sizes(c)
    I, H, P, G, N, K = m["I"], m["H"], m["P"], m["G"], m["N"], m["K"]
    T = h.shape[0]
    zxbcdt = linear(W, p + "in_proj", h)
    z, xbc, dt = zxbcdt[:, :I], zxbcdt[:, I:2 * I + 2 * G * N], zxbcdt[:, 2 * I + 2 * G * N:]
    cs = conv_state(xbc, K)
    xbc = silu(causal_conv(xbc, W[p + "conv1d.weight"], W[p + "conv1d.bias"]))
    x = xbc[:, :I].reshape(T, H, P)
    B = xbc[:, I:I + G * N].reshape(T, G, N)
    C = xbc[:, I + G * N:].reshape(T, G, N)
    dt = torch.nn.functional.softplus(dt + W[p + "dt_bias"])              # [T, H]
    A = -torch.exp(W[p + "A_log"])
    grp = torch.arange(H) // (H // G)
    state = h.new_zeros(H, P, N)
    ys = []
    for t in range(T):
        state = (state * torch.exp(dt[t] * A)[:, None, None]
                 + (dt[t][:, None] * x[t])[:, :, None] * B[t, grp][:, None, :])
        ys.append(torch.einsum("hpn,hn->hp", state, C[t, grp]) + W[p + "D"][:, None] * x[t])
    y = torch.stack(ys).reshape(T, I) * silu(z)
    yg = y.reshape(T, G, I // G)
    y = (yg * torch.rsqrt((yg * yg).mean(-1, keepdim=True) + EPS)).reshape(T, I)
    return linear(W, p + "out_proj", y * W[p + "norm.weight"]), cs, state


def mamba1(c, W, p, h):
    """h [T, D] -> (out [T, D], conv_state [I, K], ssm_state [I, N])."""
    import torch
    m = mamba1_sizes(c)
    I, N, K, R = m["I"], m["N"], m["K"], m["R"]
    T = h.shape[0]
    xz = linear(W, p + "in_proj", h)
    x, z = xz[:, :I], xz[:, I:]
    cs = conv_state(x, K)
    x = silu(causal_conv(x, W[p + "conv1d.weight"], W[p + "conv1d.bias"]))
    dbc = linear(W, p + "x_proj", x)
    dt = torch.nn.functional.softplus(linear(W, p + "dt_proj", dbc[:, :R]))   # [T, I]
    B, C = dbc[:, R:R + N], dbc[:, R + N:]
    A = -torch.exp(W[p + "A_log"])                                      # [I, N]
    state = h.new_zeros(I, N)
    ys = []
    for t in range(T):
        state = state * torch.exp(dt[t][:, None] * A) + (dt[t] * x[t])[:, None] * B[t][None]
        ys.append(state @ C[t] + W[p + "D"] * x[t])
    y = torch.stack(ys) * silu(z)
    return linear(W, p + "out_proj", y), cs, state


def gated_mlp(c, W, p, h):
    F = mlp_hidden(c)
    u = linear(W, p + "fc1", h)
    return linear(W, p + "fc2", u[:, :F] * silu(u[:, F:]))


def forward(c, W, ids):
    """ids [T] -> (logits [T, V], {conv_state, ssm_state, key_cache, value_cache} lists)."""
    layer = c["ssm_cfg"].get("layer", "Mamba1")
    residual = W["backbone.embedding.weight"][ids]
    st = {"conv_state": [], "ssm_state": [], "key_cache": [], "value_cache": []}
    for i in range(c["n_layer"]):
        p = f"backbone.layers.{i}."
        h = rmsnorm(residual, W[p + "norm.weight"])
        if i in c["attn_layer_idx"]:
            out, k, v = mha(c, W, p + "mixer.", h)
            st["key_cache"].append(k)
            st["value_cache"].append(v)
        else:
            out, cs, ss = (mamba2 if layer == "Mamba2" else mamba1)(c, W, p + "mixer.", h)
            st["conv_state"].append(cs)
            st["ssm_state"].append(ss)
        residual = residual + out
        if c.get("d_intermediate", 0):
            residual = residual + gated_mlp(c, W, p + "mlp.", rmsnorm(residual,
                                                                     W[p + "norm2.weight"]))
    logits = rmsnorm(residual, W["backbone.norm_f.weight"]) @ W["lm_head.weight"].T
    return logits, st


# --- the same model as a torch module tree with mamba_ssm's module names (for PEFT) ------------

LINEAR_MODULES = ("in_proj", "out_proj", "x_proj", "dt_proj", "fc1", "fc2")   # nn.Linear in mamba_ssm


class ModuleWeights:
    """A torch module tree's weights as `forward` reads them: W[name] a parameter (a tied
    lm_head is the embedding), linear(W, path, x) the module at `path`."""

    def __init__(self, model, tied):
        self.model, self.tied = model, tied

    def __getitem__(self, name):
        if name == "lm_head.weight" and self.tied:
            name = "backbone.embedding.weight"
        return self.model.get_parameter(name)

    def __contains__(self, name):
        try:
            self[name]
        except AttributeError:
            return False
        return True

    def module(self, path):
        return self.model.get_submodule(path)


def torch_model(c, W):
    """mamba_ssm's MambaLMHeadModel for config `c` holding weights W ({mamba_ssm name: tensor},
    copied): module paths as state-spaces names them (backbone.layers.N.mixer.in_proj,
    .mlp.fc1, ...; nn.Linear where mamba_ssm has one, so PEFT finds and adapts them), and
    model(ids [T]) -> logits [T, V] computed by `forward` through those modules."""
    import torch

    class MambaLMHeadModel(torch.nn.Module):
        def forward(self, input_ids):
            return forward(c, ModuleWeights(self, c["tie_embeddings"]), input_ids)[0]

    model = MambaLMHeadModel()

    def node(path):
        mod = model
        for part in path.split(".") if path else ():
            if part not in mod._modules:
                mod.add_module(part, torch.nn.Module())
            mod = mod._modules[part]
        return mod

    for name, t in W.items():
        if name == "lm_head.weight" and c["tie_embeddings"]:
            continue
        path, leaf = name.rsplit(".", 1)
        parent, _, mod_name = path.rpartition(".")
        if mod_name in LINEAR_MODULES:
            owner = node(parent)
            if mod_name not in owner._modules:
                w = W[path + ".weight"]
                owner.add_module(mod_name, torch.nn.Linear(w.shape[1], w.shape[0],
                                                           bias=path + ".bias" in W, dtype=w.dtype))
            with torch.no_grad():
                getattr(owner._modules[mod_name], leaf).copy_(t)
        else:
            node(path).register_parameter(leaf, torch.nn.Parameter(t.detach().clone()))
    return model


def greedy(c, W, prompt, n_new=N_NEW):
    import torch
    ids, rows = list(prompt), []
    for _ in range(n_new):
        logits, _ = forward(c, W, torch.tensor(ids))
        rows.append(logits[-1])
        ids.append(int(torch.argmax(logits[-1])))
    return np.array(ids[len(prompt):], np.int64), torch.stack(rows).numpy().astype(np.float32)


# --- writing -------------------------------------------------------------------------------

def write_fixture(out: Path, name: str, c: dict, seed: int):
    import torch
    from safetensors.torch import save_file
    folder = out / name
    fresh_dir(folder)
    folder.mkdir(parents=True)
    W = make_weights(c, seed)
    # the checkpoint holds f32; the reference runs on exactly those values, widened
    W32 = {k: v.to(torch.float32).contiguous() for k, v in W.items()}
    W = {k: v.to(torch.float64) for k, v in W32.items()}
    if c["tie_embeddings"]:
        W["lm_head.weight"] = W["backbone.embedding.weight"]
    save_file({k: v.clone() for k, v in W32.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "model.safetensors").chmod(0o644)       # safetensors writes 0600
    write_json(folder / "config.json", c)
    V = padded_vocab(c)
    with torch.no_grad():
        for attempt in range(50):
            rng = np.random.RandomState(seed * 1000 + attempt)
            prompt = rng.randint(0, c["vocab_size"], size=PROMPT_LEN).astype(np.int64)
            new, glog = greedy(c, W, prompt)
            top2 = np.sort(glog, -1)[:, -2:]
            if float((top2[:, 1] - top2[:, 0]).min()) >= MIN_GAP:
                break
        else:
            raise RuntimeError(f"{name}: no prompt with greedy gap >= {MIN_GAP}")
        logits, st = forward(c, W, torch.tensor(prompt))
    assert logits.shape == (PROMPT_LEN, V)
    arrays = {"prompt_ids": prompt, "logits": logits.numpy().astype(np.float32),
              "greedy_ids": new, "greedy_logits": glog}
    for key, vals in st.items():
        if vals:
            arrays[key] = torch.stack(vals).numpy().astype(np.float32)
    save_npz(folder / "expected.npz", arrays)
    return folder


def main(argv=None):
    import argparse
    import torch
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "tests" /
                                          "fixtures" / "mamba_ssm"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    for seed, (name, c) in enumerate(FIXTURES.items(), start=11):
        folder = write_fixture(out, name, c, seed)
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"{folder}: {size} bytes")


if __name__ == "__main__":
    main()
