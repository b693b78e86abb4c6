"""PyTorch/transformers reference timings at `mambaweb bench`'s model shapes, for ratios.

    python -m tools.bench_torch_ref [--models mamba130m] [--device cuda] [--json]

Builds MambaForCausalLM from the same MambaConfig the bench writes (tools.init_weights
.make_config; random weights, float32), then measures prefill tok/s (one forward of a
T-token prompt with the cache, best of 3) and greedy decode tok/s (generate with the cache;
the slope between two generation lengths, so prefill cancels). Says which path ran: the fused
mamba_ssm / causal_conv1d CUDA kernels, or transformers' pure-PyTorch slow path.
"""
import argparse
import importlib.util
import json
import platform
import sys
import time


def _path_report():
    import transformers
    out = {"transformers": transformers.__version__,
           "mamba_ssm_installed": importlib.util.find_spec("mamba_ssm") is not None,
           "causal_conv1d_installed": importlib.util.find_spec("causal_conv1d") is not None,
           "kernels_installed": importlib.util.find_spec("kernels") is not None}
    try:
        from transformers.models.mamba import modeling_mamba as mm
        if hasattr(mm, "is_fast_path_available"):
            out["is_fast_path_available"] = bool(mm.is_fast_path_available)
    except Exception as e:  # pragma: no cover
        out["modeling_import_error"] = str(e)
    fast = out.get("is_fast_path_available", out["mamba_ssm_installed"] and out["causal_conv1d_installed"])
    out["path"] = ("fused mamba_ssm/causal_conv1d CUDA kernels" if fast
                   else "slow path (pure PyTorch: F.conv1d + a Python loop over time for the scan)")
    return out


def bench_model(name, device, prompts, decode_tokens):
    import torch
    import transformers

    from tools.cmd_bench import MODEL_CONFIGS
    from tools.init_weights import make_config
    c = MODEL_CONFIGS[name]
    ours = make_config(c.get("size", "nano"), family=c.get("family", "mamba1"),
                       pattern=c.get("pattern"), hidden_size=c["d_model"],
                       num_hidden_layers=c["n_layers"], vocab_size=c["vocab_size"])
    if ours.model_type == "mamba2":
        hf_cls, cfg_cls = transformers.Mamba2ForCausalLM, transformers.Mamba2Config
    elif ours.model_type == "nemotron_h":
        hf_cls, cfg_cls = transformers.NemotronHForCausalLM, transformers.NemotronHConfig
    else:
        hf_cls, cfg_cls = transformers.MambaForCausalLM, transformers.MambaConfig
    hf_cfg = cfg_cls(**{k: v for k, v in ours.to_hf_dict(json_safe=False).items()
                        if k != "architectures"})
    torch.manual_seed(0)
    model = hf_cls(hf_cfg).to(device=device, dtype=torch.float32).eval()

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    out = {"d_model": hf_cfg.hidden_size, "layers": hf_cfg.num_hidden_layers,
           "vocab": hf_cfg.vocab_size, "dtype": "float32", "prefill": [], "decode": None}
    V = hf_cfg.vocab_size
    with torch.inference_mode():
        for T in prompts:
            ids = (torch.arange(T, device=device) * 7919 % V).unsqueeze(0)
            best = None
            for _ in range(4):   # first run warms up
                sync()
                t0 = time.perf_counter()
                model(ids, use_cache=True)
                sync()
                dt = time.perf_counter() - t0
                best = dt if best is None else min(best, dt)
            out["prefill"].append({"prompt": T, "seconds": best, "tokens_per_s": T / best})
        prompt = torch.tensor([[1, 2, 3, 4]], device=device)

        def gen(n):
            sync()
            t0 = time.perf_counter()
            r = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               use_cache=True, pad_token_id=0)
            sync()
            assert r.shape[1] == 4 + n, r.shape
            return time.perf_counter() - t0

        gen(4)   # warm-up
        short, long_ = 4, 4 + decode_tokens
        t_short = min(gen(short) for _ in range(2))
        t_long = min(gen(long_) for _ in range(2))
        per_tok = (t_long - t_short) / (long_ - short)
        out["decode"] = {"tokens": decode_tokens, "tokens_per_s": 1.0 / per_tok,
                         "ms_per_token": 1000 * per_tok,
                         "generate_seconds": {str(short): t_short, str(long_): t_long}}
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="bench_torch_ref", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mamba130m")
    p.add_argument("--device", default="cuda")
    p.add_argument("--prompts", default="64,256,1024")
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch
    report = {"host": {"machine": platform.machine(), "python": sys.version.split()[0]},
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "torch": torch.__version__,
              "device": (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
                         else args.device),
              "reference_path": _path_report(), "model": {}}
    prompts = [int(x) for x in args.prompts.split(",")]
    for name in args.models.split(","):
        report["model"][name] = bench_model(name, args.device, prompts, args.decode)
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
