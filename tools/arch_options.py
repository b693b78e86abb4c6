"""`--arch` / `--pattern` and the shape options of a fresh random model, shared by `mambaweb run`
and `train-check` (generate-bin and pretrain spell the family `--arch` too, `--family` kept as
an alias).

Without --model, `--arch A [--pattern P]` is a freshly initialised model of that schedule: the
one initialiser of generate-bin (tools/init_weights.py over py_engine/train/init.plan), the same
flags giving the same bytes (fresh_model == generate-bin --format hf --dtype f32). With --model,
--arch / --pattern check the checkpoint's own schedule (py_engine/app/arch.mismatch) and a
mismatch is refused in one sentence naming both.
"""
import json
from pathlib import Path

from py_engine.train.init import FAMILIES, PRESETS

ARCH_HELP = ("mamba1, mamba2 (transformers' Mamba2ForCausalLM), mamba3 (mamba_ssm's Mamba3) or "
             "hybrid (NemotronH: Mamba-2, attention and MLP layers; --pattern says which)")
SHAPE_FLAGS = (("size", "--size"), ("d_model", "--d-model"), ("n_layers", "--n-layers"),
               ("d_state", "--d-state"), ("head_dim", "--head-dim"), ("expand", "--expand"),
               ("vocab_size", "--vocab-size"), ("mimo_rank", "--mimo-rank"))


def add_arch_flag(p, default=None, help_text=ARCH_HELP):
    """--arch (the documented spelling) with --family as its alias; dest `family`."""
    p.add_argument("--arch", "--family", dest="family", default=default, choices=tuple(FAMILIES),
                   metavar="ARCH", help=help_text + " (--family is the same option)")


def add_fresh_model_options(p, what):
    """--arch/--pattern and the shape of a fresh model, for a command whose --model is optional.
    `what`: what the fresh model is for, in the group's title."""
    from tools.cmd_generate_bin import PATTERN_HELP
    g = p.add_argument_group(
        f"--arch / --pattern: without --model, {what} a fresh random model of that schedule "
        "(generate-bin's initialiser); with --model, the checkpoint must be that schedule")
    add_arch_flag(g)
    g.add_argument("--pattern", help=PATTERN_HELP + " (a fresh model from --pattern alone is "
                                                    "a hybrid; with --model it checks the layers)")
    g.add_argument("--size", choices=tuple(PRESETS),
                   help="fresh model: size preset (default nano)")
    g.add_argument("--d-model", type=int, help="fresh model: hidden size")
    g.add_argument("--n-layers", type=int, help="fresh model: layers (a --pattern sets them)")
    g.add_argument("--d-state", type=int, help="fresh model: SSM state size N")
    g.add_argument("--head-dim", type=int, help="fresh model: Mamba-2/3 channels per head")
    g.add_argument("--expand", type=int, help="fresh model: inner size = expand * d_model")
    g.add_argument("--vocab-size", type=int, help="fresh model: vocabulary (>= 256: the prompt "
                                                  "may be text, one token per UTF-8 byte)")
    g.add_argument("--mimo-rank", type=int, help="fresh model, mamba3: MIMO rank")


def wants_fresh(args):
    return args.model is None and (args.family is not None or args.pattern is not None)


def shape_flags_given(args):
    return [flag for dest, flag in SHAPE_FLAGS if getattr(args, dest, None) is not None]


def fresh_config(args):
    """The MambaConfig generate-bin would build from the same flags."""
    from tools.init_weights import make_config
    family = args.family or "hybrid"
    return make_config(args.size or "nano", family=family, pattern=args.pattern,
                       hidden_size=args.d_model, num_hidden_layers=args.n_layers,
                       state_size=args.d_state, head_dim=args.head_dim, expand=args.expand,
                       vocab_size=args.vocab_size, mimo_rank=args.mimo_rank,
                       tie_word_embeddings=True)      # generate-bin's default (no --untied)


def write_fresh(folder, cfg, seed):
    """Write generate-bin's HF folder (f32, one model.safetensors) for cfg and seed."""
    from tools import convert_host
    from tools.init_weights import init_weights
    weights = init_weights(cfg, seed)
    # as generate-bin: out_proj is already scaled; config.json must not ask for it again
    cfg.rescale_prenorm_residual = False
    convert_host.write_hf(str(folder), cfg, weights, convert_host.ST_DTYPE["f32"])
    return folder


def describe_fresh(cfg, args, seed):
    from py_engine.app.model_card import schedule_text
    from tools.init_weights import param_count
    return (f"a fresh random {args.family or 'hybrid'} model ({schedule_text(cfg.layers)}, "
            f"{param_count(cfg):,} parameters, d_model {cfg.hidden_size}, vocab "
            f"{cfg.vocab_size}, seed {seed})")


def check_local_model(folder, args, source):
    """Refuse (ValueError, one sentence) when the HF folder's config.json is not --arch/--pattern."""
    from py_engine.app.arch import mismatch
    from py_engine.models.config import MambaConfig
    if args.family is None and args.pattern is None:
        return
    path = Path(folder) / "config.json"
    cfg = MambaConfig.from_hf_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
    msg = mismatch(cfg, args.family, args.pattern, source)
    if msg:
        raise ValueError(msg)


def add_mbjs_hint_args(p):
    """What an MBJS .bin may need and does not store: --attention-heads, --a-floor."""
    p.add_argument("--attention-heads", type=int, metavar="N",
                   help="an MBJS .bin with attention layers: their head count (MBJS does not "
                        "store it; a config.json beside the file works too)")
    p.add_argument("--a-floor", type=float, metavar="X",
                   help="an MBJS Mamba-3 .bin trained with an A_floor other than 1e-4 (MBJS "
                        "does not store it)")


def mbjs_hints(args):
    """The MBJS hints the command's flags give ({} when none), under their config names."""
    hints = {}
    if getattr(args, "attention_heads", None) is not None:
        hints["attention_heads"] = args.attention_heads
    if getattr(args, "a_floor", None) is not None:
        hints["A_floor"] = args.a_floor
    return hints
