"""`mambaweb generate-bin`: write a randomly initialised model of any family (HF folder, or an
MBJS file for Mamba-1)."""
import sys

from py_engine.train.init import PRESETS
from tools.arch_options import add_arch_flag

SCHEDULE_HELP = {
    "virtual": "virtual layers over the --n-layers physical ones: L (or L:cyclic) cycles them, "
               "L:stretched uses each for a run, or a comma list of physical indices "
               "(0,1,1,0); each logical layer keeps its own state, shared weights are stored "
               "once (config.json mambaweb_virtual_layers)",
    "bidi": "bidirectional layers (mamba1/2/3): a forward and a time-reversed pass merged by "
            "mean or concat (+ a linear projection); forward only, trained on masked tokens",
}


PATTERN_HELP = ("hybrid: one letter per layer, M Mamba-2, * attention, - relu^2 MLP (NemotronH), "
                "+ gated SwiGLU MLP; without + it is a NemotronH, with a + after every M/* a "
                "mamba_ssm MambaLMHeadModel, any other + pattern keeps our HF-style names")


def layout_sentence(cfg):
    """One sentence saying which checkpoint layout a hybrid is written in (None otherwise)."""
    if len(set(cfg.layers)) == 1:
        return None
    from py_engine.app.model_card import LETTERS
    pattern = "".join(LETTERS.get(k, "?") for k in cfg.layers)
    if cfg.model_type == "nemotron_h":
        return f"layers {pattern} saved as NemotronHForCausalLM (transformers)"
    if cfg.checkpoint_layout == "mamba_ssm":
        return (f"layers {pattern} saved as a mamba_ssm MambaLMHeadModel (a gated MLP after every "
                "mixer: d_intermediate, attn_layer_idx)")
    return (f"layers {pattern} saved with our HF-style names (config.json `layers`; no "
            "transformers or mamba_ssm class has this schedule, mambaweb loads it)")


def default_family(args):
    """--arch as given; else hybrid when a --pattern is given, else mamba1."""
    return args.family or ("hybrid" if args.pattern else "mamba1")


def add_schedule_options(p):
    """--virtual-layers and --bidi (generate-bin and pretrain share them)."""
    p.add_argument("--virtual-layers", metavar="SCHEDULE", help=SCHEDULE_HELP["virtual"])
    p.add_argument("--bidi", choices=("mean", "concat"), help=SCHEDULE_HELP["bidi"])


def register(subparsers):
    p = subparsers.add_parser(
        "generate-bin", help="write a randomly initialised Mamba model",
        description="Random weights with state-spaces/mamba's initialisation. Presets: "
                    "nano ~1M, micro ~5M, small ~20M, base = mamba-130m's shape.")
    add_arch_flag(p, help_text="mamba1 (the default), mamba2 (transformers' "
                               "Mamba2ForCausalLM), mamba3 (mamba_ssm's Mamba3 layout; SISO, or "
                               "MIMO with --mimo-rank) or hybrid (NemotronHForCausalLM: Mamba-2, "
                               "attention and MLP layers)")
    p.add_argument("--pattern", help=PATTERN_HELP + " (default MM*M repeated to --n-layers; a "
                                                    "--pattern alone means --arch hybrid)")
    p.add_argument("--size", default="nano", choices=tuple(PRESETS))
    add_schedule_options(p)
    p.add_argument("--d-model", type=int, help="hidden size D (overrides the preset)")
    p.add_argument("--n-layers", type=int, help="number of Mamba-1 layers")
    p.add_argument("--d-state", type=int, help="SSM state size N (default 16; mamba2 128)")
    p.add_argument("--head-dim", type=int, help="mamba2: channels per head P (default 64)")
    p.add_argument("--n-groups", type=int, help="mamba2: B/C groups G (default 1)")
    p.add_argument("--d-conv", type=int, help="conv kernel K (default 4)")
    p.add_argument("--mimo-rank", type=int,
                   help="mamba3: a MIMO model of this rank R (1..8; default SISO)")
    p.add_argument("--expand", type=int, help="inner size I = expand * D (default 2)")
    p.add_argument("--dt-rank", type=int, help="dt rank R (default ceil(D/16))")
    p.add_argument("--vocab-size", type=int, help="vocabulary (padded up to a multiple of 8)")
    p.add_argument("--untied", action="store_true", help="separate lm_head.weight (HF only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("hf", "mbjs"),
                   help="output format (default: mbjs when --out ends in .bin, else hf)")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32")
    p.add_argument("--out", required=True, help="HF folder or .bin file")
    p.set_defaults(func=run)


def run(args):
    from tools import convert_host
    from tools.init_weights import init_weights, make_config, param_count

    fmt = args.format or ("mbjs" if args.out.endswith(".bin") else "hf")
    args.family = default_family(args)
    try:
        cfg = make_config(args.size, family=args.family, pattern=args.pattern,
                          virtual=args.virtual_layers, bidi=args.bidi,
                          hidden_size=args.d_model,
                          head_dim=args.head_dim, n_groups=args.n_groups,
                          num_hidden_layers=args.n_layers, state_size=args.d_state,
                          conv_kernel=args.d_conv, expand=args.expand,
                          time_step_rank=args.dt_rank, vocab_size=args.vocab_size,
                          tie_word_embeddings=not args.untied, mimo_rank=args.mimo_rank)
        weights = init_weights(cfg, args.seed)
        # out_proj is already scaled by 1/sqrt(n_layer); saying rescale_prenorm_residual in
        # config.json would make transformers (5.x) scale it a second time on from_pretrained.
        cfg.rescale_prenorm_residual = False
        if fmt == "mbjs":
            if args.untied:
                raise ValueError("MBJS always ties the head to the embedding; drop --untied")
            if args.dtype == "bf16":
                raise ValueError("MBJS stores f32 or f16, not bf16")
            size = convert_host.write_mbjs(args.out, cfg, weights.__getitem__, args.dtype)
            what = f"MBJS {args.dtype} file {args.out} ({size} bytes)"
        else:
            files = convert_host.write_hf(args.out, cfg, weights,
                                          convert_host.ST_DTYPE[args.dtype])
            what = f"HF folder {args.out} ({', '.join(files)})"
    except ValueError as e:
        print(f"mambaweb generate-bin: {e}", file=sys.stderr)
        return 2
    shape = (f"heads {cfg.num_heads} x {cfg.head_dim}, groups {cfg.n_groups}"
             if cfg.model_type in ("mamba2", "nemotron_h", "mamba3")
             else f"conv {cfg.conv_kernel}, dt_rank {cfg.time_step_rank}")
    if cfg.model_type == "mamba3" and cfg.is_mimo:
        shape += f", MIMO rank {cfg.mimo_rank}"
    layout = layout_sentence(cfg)
    if layout:
        shape += ", " + layout
    if cfg.virtual_layers:
        shape += (f", {len(cfg.virtual_layers)} logical layers over the physical ones: "
                  + ",".join(map(str, cfg.virtual_layers)))
    if cfg.bidirectional:
        shape += (f", bidirectional ({cfg.bidirectional['merge']} merge, mask token "
                  f"{cfg.bidirectional['mask_token_id']})")
    print(f"wrote {what}: {args.family}, {param_count(cfg):,} parameters, vocab "
          f"{cfg.vocab_size}, d_model {cfg.hidden_size}, {cfg.num_hidden_layers} layers, state "
          f"{cfg.state_size}, inner {cfg.intermediate_size}, {shape}, "
          f"seed {args.seed}")
    return 0
