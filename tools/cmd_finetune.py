"""`mambaweb finetune`: fine-tune a model on your text with the in-browser engine, headless.

LoRA by default (the base frozen; writes a PEFT adapter: adapter_config.json +
adapter_model.safetensors, which `peft.PeftModel.from_pretrained` loads; `--rslora` scales by
alpha/sqrt(r) as PEFT's use_rslora), `--wsla` (only the B/C projection rows train) or `--full`
(both write the whole model to OUT as an HF folder). Data is a text file (next-token loss),
JSONL with {"prompt", "completion"} per line (loss on the completion only), or JSONL with
{"messages": [{"role", "content"}, ...]} rendered with the model's chat template
(tokenizer_config.json) and the loss on the assistant's tokens only. The held-out split is scored before and after. One JSON line per step on
stdout; the summary and the eval losses go to stderr.
"""
import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

from py_engine.ops.weight_format import FORMATS, format_arg

LOAD = """
from py_engine.app import generate_session as G
from py_engine.app import finetune as FT
from py_engine.io.byte_sources import HttpSource
info = await G.load(args['url'], args['name'], weights_format=args.get('weights') or 'f32')
tc = await FT.read_tokenizer_config(HttpSource(args['url']))
summary = FT.prepare(args['text'], tokenizer_config=tc, **args['opts'])
summary['model'] = info
summary['before'] = await FT.evaluate()
result = summary
"""
STEP = "from py_engine.app import finetune as FT\nresult = await FT.step()"
FINISH = """
from py_engine.app import finetune as FT
out = {'after': await FT.evaluate(),
       'gpu_bytes': getattr(FT.state['model'].device, 'live_bytes', None)}
if args['lora']:
    out['files'] = await FT.adapter_files(args['name'])
if args['merge']:
    out['merged'] = await FT.merged_files()
FT.release()
result = out
"""


def register(subparsers):
    p = subparsers.add_parser(
        "finetune", help="fine-tune a model on your data (LoRA by default; headless engine)",
        description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="an HF model folder or a served model name")
    p.add_argument("--data", required=True, help="a text file, or JSONL prompt/completion or chat "
                                          "(messages) records")
    p.add_argument("--out", required=True, help="output folder (the PEFT adapter; with --full/--wsla "
                                         "the trained model)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="train every weight, not a LoRA adapter")
    mode.add_argument("--wsla", action="store_true",
                      help="train only the B/C projection rows (Mamba-1 x_proj, Mamba-2/3 in_proj); "
                           "writes the whole model")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--rslora", action="store_true",
                   help="rank-stabilised LoRA: scale alpha/sqrt(r) instead of alpha/r "
                        "(PEFT's use_rslora)")
    p.add_argument("--lora-targets", help="comma-separated module names (default: in_proj and "
                                          "the attention/MLP projections, Mamba-3's out_proj "
                                          "too; other out_proj on request)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, help="default 1e-3 for LoRA, 1e-4 for --full/--wsla")
    p.add_argument("--eval-frac", type=float, default=0.1, help="held-out share of the data")
    p.add_argument("--merge", action="store_true",
                   help="also write OUT/merged: the base with the adapter folded in (an HF "
                        "folder transformers loads; with --full: the trained model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default="f32", type=format_arg, metavar="|".join(FORMATS),
                   help="keep the frozen base narrow on the GPU (LoRA on a q4/q8 base: QLoRA; "
                        "int8 = q8)")
    p.set_defaults(func=run)


def run(args):
    from tools.headless import headless_engine
    from tools.model_source import resolve_model
    try:
        text = Path(args.data).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print(f"mambaweb finetune: cannot read --data {args.data}: {e}", file=sys.stderr)
        return 2
    whole = args.full or args.wsla            # modes that write the whole model
    if args.weights != "f32" and (whole or args.merge):
        flag = ("--full trains every weight" if args.full else
                "--wsla trains base weights" if args.wsla else "--merge needs an f32 base")
        print(f"mambaweb finetune: --weights {args.weights} keeps the base frozen and narrow: "
              f"{flag}; drop --weights (or that flag)", file=sys.stderr)
        return 2
    if whole and args.rslora:
        print(f"mambaweb finetune: --rslora scales a LoRA adapter; "
              f"{'--full' if args.full else '--wsla'} trains no adapter: drop one of them",
              file=sys.stderr)
        return 2
    opts = {"lora": not whole, "wsla": args.wsla, "rslora": args.rslora,
            "r": args.lora_r, "alpha": args.lora_alpha,
            "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len, "lr": args.lr,
            "eval_frac": args.eval_frac, "seed": args.seed}
    if args.lora_targets:
        opts["targets"] = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
    log = lambda *a: print(*a, file=sys.stderr)  # noqa: E731
    model_dirs, name, cleanup = resolve_model(args.model, log)
    try:
        # the pretrain page: the generate page would load its default model on boot
        with headless_engine(model_dirs=model_dirs, use_hf_cache=model_dirs is None,
                             path="/pretrain") as eng:
            url = f"{eng.server.url}/weights/{quote(name)}/"
            try:
                summary = eng.run(LOAD, url=url, name=name, text=text, opts=opts,
                                  weights=args.weights)
                log(json.dumps({k: v for k, v in summary.items() if k != "model"}))
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    rec = eng.run(STEP)
                    # tokens/s as this command sees it (the tab's step + the bridge round trip)
                    rec["tokens_per_s"] = args.batch * args.seq_len / (time.perf_counter() - t0)
                    print(json.dumps(rec), flush=True)
                fin = eng.run(FINISH, lora=not whole, name=name, merge=args.merge or whole)
            except Exception as e:  # the engine's message names what went wrong
                print(f"mambaweb finetune: {str(e).split('Error: ', 1)[-1].strip()}",
                      file=sys.stderr)
                return 2
    finally:
        cleanup()
    log(json.dumps({"eval_loss_before": summary["before"]["eval_loss"],
                    "eval_loss_after": fin["after"]["eval_loss"],
                    "gpu_bytes_after_training": fin.get("gpu_bytes")}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not whole:
        for fname, data in fin["files"].items():
            (out / fname).write_bytes(data)
        log(f"wrote the adapter to {out}")
    if "merged" in fin:
        folder = out / "merged" if not whole else out
        folder.mkdir(parents=True, exist_ok=True)
        for fname, data in fin["merged"].items():
            (folder / fname).write_bytes(data)
        for fname in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            src = Path(args.model) / fname
            if src.is_file():
                (folder / fname).write_bytes(src.read_bytes())
        log(f"wrote the {'trained' if whole else 'merged'} model to {folder}")
    return 0
