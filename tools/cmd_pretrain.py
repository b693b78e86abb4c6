"""`mambaweb pretrain`: train a fresh Mamba model on a corpus with the in-browser engine,
headless (our server + Chromium + the engine in Pyodide, exactly the pretrain page's path).

Prints one JSON line per step ({"step", "loss", "tokens_per_s", "lr", "grad_norm", ...}) on
stdout; sample generations and messages go to stderr. OUT ends up holding an HF model folder
(config.json, model.safetensors, tokenizer.json) that `mambaweb run --model OUT` and
transformers load as it is, plus training_state.safetensors to continue with --resume.
"""
import json
import sys
import time
from pathlib import Path

from py_engine.train.init import PRESETS
from tools.arch_options import add_arch_flag
from tools.cmd_generate_bin import PATTERN_HELP, add_schedule_options, default_family

STATE_FILE = "training_state.safetensors"
TEXT_SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv"}

PREPARE = """
from py_engine.train import session as S
from py_engine.train import checkpoint as C
if device is None:
    raise ValueError('this browser has no WebGPU device')
if args.get('state') is not None:
    st = await C.StateFile.from_bytes(args['state'], args['state_name'])
    sess = await S.PretrainSession.restore(device, st, texts=args['texts'],
                                           train_overrides=args['overrides'])
else:
    tok = await S.make_tokenizer(args['tokenizer'], args['texts'])
    sess = await S.PretrainSession.create(device, args['texts'], tok, args['model'],
                                          args['train'], corpus_info=args['info'])
if S.current is not None:
    S.current.release()
S.current = sess
result = sess.summary()
"""
STEP = """
from py_engine.train import session as S
sess = S.current
rec = await sess.train_one()
out = {'step': rec}
every = sess.train['sample_every']
if every and (rec['step'] % every == 0 or rec['step'] == sess.train['steps']):
    out['sample'] = await sess.sample()
result = out
"""
SAVE = """
from py_engine.train import session as S
result = await S.current.export_bytes(tuple(args['which']))
"""


def register(subparsers):
    p = subparsers.add_parser(
        "pretrain", help="train a fresh Mamba model on a corpus (headless browser engine)",
        description="Train a fresh Mamba-1 model on a text corpus with the same engine the "
                    "pretrain page runs, in headless Chromium. One JSON line per step.")
    p.add_argument("--corpus", required=True,
                   help="a text file or a folder (its text files, recursively)")
    p.add_argument("--out", required=True, help="output folder (HF model + training state)")
    p.add_argument("--resume", help="folder (or training_state.safetensors) to continue from")
    add_arch_flag(p, help_text="architecture: mamba1 (the default), mamba2 (transformers' "
                               "Mamba2ForCausalLM), mamba3 (mamba_ssm's Mamba3; --mimo-rank for "
                               "MIMO) or hybrid (NemotronH: Mamba-2 + attention + MLP layers)")
    p.add_argument("--pattern", help=PATTERN_HELP + " (e.g. MM*M, M+*+; a --pattern alone "
                                                    "means --arch hybrid)")
    p.add_argument("--size", default="nano", choices=tuple(PRESETS))
    add_schedule_options(p)
    p.add_argument("--d-model", type=int, help="hidden size (overrides the preset)")
    p.add_argument("--n-layers", type=int, help="number of layers (overrides the preset)")
    p.add_argument("--d-state", type=int, help="SSM state size N")
    p.add_argument("--expand", type=int, help="inner size = expand * d_model")
    p.add_argument("--mimo-rank", type=int,
                   help="mamba3: train a MIMO model of this rank R (1..8; default SISO)")
    p.add_argument("--tokenizer", default="byte",
                   help="byte (UTF-8 bytes, vocab 256), bpe (train one on the corpus), or a "
                        "tokenizer.json path / folder holding one")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary size (default: the preset's)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, help="warmup steps (default: min(100, steps/10))")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--seed", type=int, default=0, help="data order seed")
    p.add_argument("--init-seed", type=int, default=0, help="weight initialisation seed")
    p.add_argument("--wsla", action="store_true", help="train only the B/C projections (Mamba-1/2/3)")
    p.add_argument("--sample-every", type=int, default=0,
                   help="print a greedy sample to stderr every N steps (0: only at the end)")
    p.add_argument("--save-every", type=int, default=0,
                   help="also write OUT every N steps (0: only at the end)")
    p.set_defaults(func=run)


def read_corpus(path):
    """(texts, info) of a file or a folder's text files (sorted; binary and non-UTF-8 files
    skipped, py_engine/train/data.corpus_from_files says why)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"corpus {path} does not exist")
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*")
        if p.is_file() and not any(part in TEXT_SKIP_DIRS or part.startswith(".")
                                   for part in p.relative_to(path).parts))
    from py_engine.train.data import corpus_from_files
    return corpus_from_files((str(f), f.read_bytes()) for f in files)


def tokenizer_spec(args):
    t = args.tokenizer
    if t == "byte":
        return {"kind": "byte"}
    if t == "bpe":
        return {"kind": "bpe", "vocab_size": args.vocab_size or PRESETS[args.size]["vocab_size"]}
    p = Path(t)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise ValueError(f"--tokenizer {t}: not 'byte', 'bpe', or a tokenizer.json file / folder")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p} is not UTF-8 text (byte {e.start}): choose a HuggingFace "
                         "tokenizer.json") from None
    from py_engine.train.data import tokenizer_from_json
    tokenizer_from_json(text, str(p))     # refuse a bad file here, before the browser starts
    return {"kind": "json", "text": text, "name": str(p)}


def write_files(out, files):
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = out / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out / name)


def run(args):
    from tools.headless import headless_engine
    out = Path(args.out)
    try:
        texts, info = read_corpus(args.corpus)    # what it skipped comes back as warnings
        state = state_name = None
        if args.resume:
            rp = Path(args.resume)
            rp = rp / STATE_FILE if rp.is_dir() else rp
            if not rp.is_file():
                raise ValueError(f"--resume {args.resume}: no {STATE_FILE} there")
            state, state_name = rp.read_bytes(), str(rp)
        model = {"size": args.size, "family": default_family(args), "pattern": args.pattern,
                 "virtual": args.virtual_layers, "bidi": args.bidi,
                 "hidden_size": args.d_model,
                 "num_hidden_layers": args.n_layers, "state_size": args.d_state,
                 "expand": args.expand, "mimo_rank": args.mimo_rank}
        train = {"lr": args.lr, "batch": args.batch, "seq_len": args.seq_len,
                 "steps": args.steps, "warmup": args.warmup, "weight_decay": args.weight_decay,
                 "grad_clip": args.grad_clip, "accum": args.accum, "seed": args.seed,
                 "init_seed": args.init_seed, "wsla": args.wsla,
                 "sample_every": args.sample_every, "autosave_every": 0}
        overrides = {"steps": args.steps, "sample_every": args.sample_every}
        tok = tokenizer_spec(args) if state is None else None
    except ValueError as e:
        print(f"mambaweb pretrain: {e}", file=sys.stderr)
        return 2
    try:
        with headless_engine(use_hf_cache=False, path="/pretrain") as eng:
            try:
                summary = eng.run(PREPARE, texts=texts, info=info, tokenizer=tok, model=model,
                                  train=train, state=state, state_name=state_name,
                                  overrides=overrides)
            except Exception as e:
                print(f"mambaweb pretrain: {_message(e)}", file=sys.stderr)
                return 2
            print(f"model: {summary['params']:,} parameters ({summary['preset']}, vocab "
                  f"{summary['vocab_size']}, {summary['tokenizer']} tokenizer); corpus "
                  f"{summary['corpus']['tokens']:,} tokens in {summary['corpus']['windows']:,} "
                  f"windows; starting at step {summary['step']} of {summary['train']['steps']}",
                  file=sys.stderr)
            for w in summary.get("warnings", []):
                print(f"warning: {w}", file=sys.stderr)
            step = summary["step"]
            steps = summary["train"]["steps"]
            try:
                while step < steps:
                    res = eng.run(STEP)
                    rec = {k: v for k, v in res["step"].items() if k != "type"}
                    step = rec["step"]
                    print(json.dumps(rec), flush=True)
                    if "sample" in res:
                        print(f"[step {step}] {res['sample']['prompt']!r} -> "
                              f"{res['sample']['text']!r}", file=sys.stderr, flush=True)
                    if args.save_every and step % args.save_every == 0 and step < steps:
                        write_files(out, eng.run(SAVE, which=["hf", "state"]))
            except KeyboardInterrupt:
                print(f"interrupted at step {step}: saving to {out}", file=sys.stderr)
            t0 = time.time()
            files = eng.run(SAVE, which=["hf", "state"])
            write_files(out, files)
            print(f"wrote {out}: " + ", ".join(f"{k} ({len(v):,} bytes)" for k, v in sorted(files.items()))
                  + f" in {time.time() - t0:.1f} s", file=sys.stderr)
    except Exception as e:
        print(f"mambaweb pretrain: {_message(e)}", file=sys.stderr)
        return 1
    return 0


def _message(e):
    """The plain-words message of a Python error raised in the Worker (not its traceback)."""
    import re
    text = str(e)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        m = re.match(r"^(?:[\w.]+(?:Error|Exception|Unavailable)): (.*)$", line)
        if m:
            return m.group(1)
    return lines[-1] if lines else text
