"""`mambaweb finetune`: fine-tune a model on your text with the in-browser engine, headless.

LoRA by default (the base frozen; writes a PEFT adapter: adapter_config.json +
adapter_model.safetensors, which `peft.PeftModel.from_pretrained` loads), or `--full`. Data is a
text file (next-token loss) or JSONL with {"prompt", "completion"} per line (loss on the
completion only). The held-out split is scored before and after. One JSON line per step on
stdout; the summary and the eval losses go to stderr.
"""
import json
import sys
from pathlib import Path
from urllib.parse import quote

LOAD = """
from py_engine.app import generate_session as G
from py_engine.app import finetune as FT
info = await G.load(args['url'], args['name'], weights_format=args.get('weights') or 'f32')
summary = FT.prepare(args['text'], **args['opts'])
summary['model'] = info
summary['before'] = await FT.evaluate()
result = summary
"""
STEP = "from py_engine.app import finetune as FT\nresult = await FT.step()"
FINISH = """
from py_engine.app import finetune as FT
out = {'after': await FT.evaluate()}
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
    p.add_argument("--data", required=True, help="a text file, or JSONL prompt/completion records")
    p.add_argument("--out", required=True, help="output folder (the PEFT adapter)")
    p.add_argument("--full", action="store_true", help="train every weight, not a LoRA adapter")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-targets", help="comma-separated module names (default: in_proj and "
                                          "the attention/MLP projections; out_proj on request)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, help="default 1e-3 for LoRA, 1e-4 for --full")
    p.add_argument("--eval-frac", type=float, default=0.1, help="held-out share of the data")
    p.add_argument("--merge", action="store_true",
                   help="also write OUT/merged: the base with the adapter folded in (an HF "
                        "folder transformers loads; with --full: the trained model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default="f32", choices=("f32", "f16", "bf16", "q8", "q4"),
                   help="keep the frozen base narrow on the GPU (LoRA on a q4/q8 base: QLoRA)")
    p.set_defaults(func=run)


def run(args):
    from tools.headless import headless_engine
    from tools.model_source import resolve_model
    try:
        text = Path(args.data).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        print(f"mambaweb finetune: cannot read --data {args.data}: {e}", file=sys.stderr)
        return 2
    if args.weights != "f32" and (args.full or args.merge):
        print(f"mambaweb finetune: --weights {args.weights} keeps the base frozen and narrow: "
              f"{'--full trains every weight' if args.full else '--merge needs an f32 base'}; "
              "drop --weights (or that flag)", file=sys.stderr)
        return 2
    opts = {"lora": not args.full, "r": args.lora_r, "alpha": args.lora_alpha,
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
                    print(json.dumps(eng.run(STEP)), flush=True)
                fin = eng.run(FINISH, lora=not args.full, name=name,
                              merge=args.merge or args.full)
            except Exception as e:  # the engine's message names what went wrong
                print(f"mambaweb finetune: {str(e).split('Error: ', 1)[-1].strip()}",
                      file=sys.stderr)
                return 2
    finally:
        cleanup()
    log(json.dumps({"eval_loss_before": summary["before"]["eval_loss"],
                    "eval_loss_after": fin["after"]["eval_loss"]}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.full:
        for fname, data in fin["files"].items():
            (out / fname).write_bytes(data)
        log(f"wrote the adapter to {out}")
    if "merged" in fin:
        folder = out / "merged" if not args.full else out
        folder.mkdir(parents=True, exist_ok=True)
        for fname, data in fin["merged"].items():
            (folder / fname).write_bytes(data)
        tok = Path(args.model) / "tokenizer.json"
        if tok.is_file():
            (folder / "tokenizer.json").write_bytes(tok.read_bytes())
        log(f"wrote the {'trained' if args.full else 'merged'} model to {folder}")
    return 0
