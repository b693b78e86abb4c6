"""`mambaweb convert SRC DST`: HF (or mamba_ssm) folder <-> MBJS file, HF -> HF with a new dtype or
sharding: convert_plan plans, tools/convert_host.py executes."""
import json
import sys
from pathlib import Path

from tools.arch_options import add_arch_flag

HELP = """SRC is an HF model folder (config.json + model.safetensors or a sharded index; a
mamba_ssm folder with pytorch_model.bin works too, read without torch) or an MBJS .bin file.
DST ending in .bin is written as MBJS (Mamba-1, attention as the npm engine's layer type 3 in
its AttentionBlock's parameter order, and Mamba-3 under mambaweb's own layer type 16/17 that
the npm engine cannot read); anything else as an HF folder.
MBJS stores no config: MBJS -> HF infers every dimension from the file; --config supplies
what it cannot know (layer_norm_epsilon, token ids, use_bias, attention heads). The plan is the convert page's
(py_engine/io/convert_plan.py): both write the same bytes."""


def register(subparsers):
    p = subparsers.add_parser("convert", help="convert checkpoints (HF <-> MBJS, dtype, shards)",
                              description=HELP)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"),
                   help="output dtype (default: keep the source's; MBJS: f32 -> v2, f16 -> v3)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shards", type=int, help="HF output split into exactly N files")
    g.add_argument("--max-shard-size", help="HF output split into files of at most this size "
                                            "(e.g. 2GB, 500MB)")
    p.add_argument("--drop-untied-head", action="store_true",
                   help="HF -> MBJS: allow dropping an untied lm_head.weight (MBJS always ties)")
    p.add_argument("--mbjs-version", type=int, choices=(1, 2, 3),
                   help="MBJS version to write (default 2 for f32, 3 for f16)")
    p.add_argument("--config", help="MBJS -> HF: a config.json whose settings to keep "
                                    "(dimensions are still checked against the file)")
    p.add_argument("--layer-norm-epsilon", type=float,
                   help="MBJS -> HF: RMSNorm epsilon (MBJS does not store it; default 1e-5)")
    p.add_argument("--a-floor", type=float,
                   help="MBJS -> HF, Mamba-3: A_floor (MBJS does not store it; default 1e-4)")
    p.add_argument("--attention-heads", type=int,
                   help="MBJS -> HF, attention layers (type 3): their head count (MBJS does not "
                        "store it)")
    add_arch_flag(p, help_text="refuse SRC unless it is this family: mamba1, mamba2, mamba3 or "
                               "hybrid (attention / MLP layers or mixed kinds)")
    p.add_argument("--pattern", help="refuse SRC unless its layers are this pattern, one letter "
                                     "per layer (M Mamba-2, * attention, - MLP, + gated MLP)")
    p.set_defaults(func=run)


def run(args):
    from tools.convert_host import convert, parse_size
    from py_engine.models.config import MambaConfig

    hints = {}
    try:
        if args.config:
            cfg = MambaConfig.from_hf_dict(_read_json(args.config), args.config)
            hints = {k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k != "layers"}
        if args.layer_norm_epsilon is not None:
            hints["layer_norm_epsilon"] = args.layer_norm_epsilon
        if args.a_floor is not None:
            hints["A_floor"] = args.a_floor
        if args.attention_heads is not None:
            hints["attention_heads"] = args.attention_heads
        convert(args.src, args.dst, dtype=args.dtype, shards=args.shards,
                max_shard_bytes=parse_size(args.max_shard_size) if args.max_shard_size else None,
                drop_untied_head=args.drop_untied_head, mbjs_version=args.mbjs_version,
                hints=hints, expect=(args.family, args.pattern))
    except (ValueError, OSError) as e:      # OSError: unreadable source, full disk, ...
        print(f"mambaweb convert: {e}", file=sys.stderr)
        return 2
    return 0


def _read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
