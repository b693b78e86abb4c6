"""`mambaweb eval`: held-out loss, perplexity and bits per byte of a model over a text corpus,
with its weights loaded in any format (f32 / f16 / bf16 / q8 / q4).

The corpus is read as `mambaweb pretrain` reads it and tokenized here, on the host, with the
model's tokenizer (py_engine/train/evaluate.prepare: same code as in the tab); the token ids go
to the engine once and py_engine/train/evaluate.Evaluator scores them there, in headless
Chromium by default or, --native, on wgpu-py. Windows and the byte count follow the rule in
py_engine/train/evaluate.py. Progress goes to stderr; the result to stdout (--json: one object).
"""
import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

from py_engine.ops.weight_format import FORMATS, K_MULTIPLE, format_arg
from tools.arch_options import add_mbjs_hint_args, mbjs_hints

# The config keys that state the context a model was trained at (when it states one).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_seq_len")

START = """
from array import array
from py_engine.io.hf_loader import load_model, load_model_local
from py_engine.train import evaluate as E
if device is None:
    raise ValueError('this browser has no WebGPU device')
if E.current is not None:
    E.current.release()
    E.current = None
if args['folder']:
    model = await load_model_local(device, args['folder'], weights_format=args['weights'])
else:
    model = await load_model(device, args['url'], weights_format=args['weights'])
ids = array('I')
ids.frombytes(args['ids'])
try:
    if args['adapter']:     # a PEFT LoRA folder on top of the base, as `mambaweb run --adapter`
        from py_engine.train.lora import MemorySource, load_adapter
        await load_adapter(model, MemorySource(args['adapter']))
    E.current = E.Evaluator(model, ids, args['seq_len'], args['batch'])
except BaseException:
    model.release()
    raise
from py_engine.io.weight_formats import format_summary
result = dict(E.current.describe(), gpu_weights=format_summary(model.weights))
"""
STEP = """
from py_engine.train import evaluate as E
result = await E.current.advance(args['seconds'])
"""
FINISH = """
from py_engine.train import evaluate as E
result = E.current.result(args['nbytes'])
E.current.release()
E.current = None
"""


def register(sub):
    p = sub.add_parser(
        "eval", help="held-out loss, perplexity and bits per byte of a model over a text corpus",
        description="Score a text corpus with a model (any weight format): mean loss in "
                    "nats/token, perplexity and bits per byte. Windows of --seq-len tokens "
                    "start every seq_len - 1 tokens, so every token but the first is scored "
                    "once; bytes are the UTF-8 bytes those scored tokens stand for.")
    p.add_argument("--model", default="default",
                   help="an HF model folder, an MBJS .bin, or a model name the server lists")
    p.add_argument("--corpus", required=True,
                   help="a UTF-8 text file or a folder (its text files, as pretrain reads them)")
    p.add_argument("--weights", default="f32", type=format_arg, metavar="|".join(FORMATS),
                   help="how the weights are kept on the GPU (default f32; int8 = q8)")
    p.add_argument("--seq-len", type=int,
                   help="window length T (default: the training context the model's config.json "
                        "states, at most 1024; 1024 when it states none)")
    p.add_argument("--max-tokens", type=int, help="score only the first N tokens of the corpus")
    p.add_argument("--batch", type=int,
                   help="windows per batch (default: as many as keep one batch's logits "
                        "<= 256 MiB and its rows <= 4096)")
    p.add_argument("--tokenizer",
                   help="byte, or a tokenizer.json (file or folder) to use instead of the "
                        "model's (default: the model's tokenizer.json; byte-level when it has "
                        "none and its vocabulary holds the 256 bytes)")
    p.add_argument("--adapter", metavar="DIR",
                   help="a LoRA adapter folder as PEFT writes it (adapter_config.json + "
                        "adapter_model.safetensors), applied on top of the model")
    p.add_argument("--native", action="store_true",
                   help="run on the native backend (wgpu-py) instead of headless Chromium")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_mbjs_hint_args(p)
    p.set_defaults(func=run)


def _fail(msg, code=2):
    print(f"mambaweb eval: {msg}", file=sys.stderr)
    return code


def _served_folder(name):
    """The local folder of a model the server lists by `name` (models/ and the HF cache)."""
    from tools.model_source import served_entry
    entry, _ = served_entry(name)
    if entry is None or entry.info.get("format") != "hf":
        raise ValueError(f"--model {name}: not a folder, not an MBJS file, and no served HF "
                         "model has that name; give a model folder, an MBJS .bin, or a name "
                         "from `mambaweb serve`'s list")
    return entry.root


def read_model_config(folder):
    from py_engine.models.config import MambaConfig
    path = Path(folder) / "config.json"
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read it ({e})") from None
    return conf, MambaConfig.from_hf_dict(conf, str(path))


def default_seq_len(conf):
    """The context config.json states (CONTEXT_KEYS), at most 1024; else 1024."""
    from py_engine.train.evaluate import DEFAULT_SEQ_LEN
    for k in CONTEXT_KEYS:
        v = conf.get(k)
        if isinstance(v, int) and v >= 2:
            return min(v, DEFAULT_SEQ_LEN)
    return DEFAULT_SEQ_LEN


def load_tokenizer(choice, folder, vocab_size, label=None):
    """(tokenizer, what it is) for --tokenizer `choice`, or the model's own (generate's rule).
    `label` names the model in messages (default: the folder)."""
    from py_engine.train.data import ByteTokenizer, tokenizer_from_json
    if choice == "byte":
        return ByteTokenizer(), "byte-level"
    path = None
    if choice:
        path = Path(choice)
        path = path / "tokenizer.json" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"--tokenizer {choice}: not 'byte' and no tokenizer.json there")
    elif (Path(folder) / "tokenizer.json").is_file():
        path = Path(folder) / "tokenizer.json"
    if path is None:
        if vocab_size < 256:
            raise ValueError(f"{label or folder} has no tokenizer.json and its vocabulary ({vocab_size} "
                             "ids) cannot hold the 256 byte ids: pass --tokenizer "
                             "tokenizer.json (or --tokenizer byte for text whose bytes are "
                             f"all below {vocab_size})")
        return ByteTokenizer(), "byte-level (the model has no tokenizer.json)"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start}): choose a HuggingFace "
                         "tokenizer.json") from None
    return tokenizer_from_json(text, str(path)), str(path)


def _progress_printer(label):
    last = [0.0]

    def show(done, total, extra="", force=False):
        now = time.perf_counter()
        if force or now - last[0] >= 0.5:
            last[0] = now
            pct = 100.0 * done / total if total else 100.0
            print(f"eval: {label} {done:,}/{total:,} ({pct:.0f}%){extra}", file=sys.stderr,
                  flush=True)
    return show


def prepare_tokens(args, folder):
    """(ids, scored bytes, info) on the host: corpus -> tokens, with the checks users need
    (before any engine starts)."""
    from py_engine.train.data import skipped_summary
    from py_engine.train.evaluate import prepare
    from tools.cmd_pretrain import read_corpus
    conf, cfg = read_model_config(folder)
    seq_len = args.seq_len if args.seq_len is not None else default_seq_len(conf)
    if seq_len < 2:
        raise ValueError(f"--seq-len {seq_len}: a window needs at least 2 tokens")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch {args.batch}: at least 1 window per batch")
    texts, info = read_corpus(args.corpus)
    skipped = skipped_summary(info)
    if skipped:
        print(f"eval: {skipped}", file=sys.stderr)
    for note in info.get("notes", []):
        print(f"eval: {note}", file=sys.stderr)
    tok, tok_what = load_tokenizer(args.tokenizer, folder, cfg.vocab_size, args.model)
    show = _progress_printer("tokenizing, characters")
    ids, nbytes = prepare(texts, tok, args.max_tokens, lambda d, t: show(d, t, force=d == t))
    top = max(ids)
    if top >= cfg.vocab_size:
        raise ValueError(f"tokenizer {tok_what} gives token id {top} on this corpus, but "
                         f"{args.model} has {cfg.vocab_size} ids: use the tokenizer the model "
                         "was trained with (--tokenizer)")
    return ids, nbytes, {"tokenizer": tok_what, "seq_len": seq_len, "files": info["files"]}


def _adapter(args):
    """The --adapter folder's files ({name: bytes}, None without one); ValueError naming a
    missing one."""
    from tools.cmd_run import _adapter_files
    try:
        return _adapter_files(args.adapter, "eval")
    except SystemExit as e:
        raise ValueError(str(e).replace("mambaweb eval: ", "")) from None


def _drive(eng, args, folder, url, ids, nbytes, seq_len):
    """START, STEPs with progress, FINISH on an engine (browser page or NativeEngine)."""
    adapter = _adapter(args)
    plan = eng.run(START, folder=str(folder) if folder else None, url=url, weights=args.weights,
                   ids=ids.tobytes(), seq_len=seq_len, batch=args.batch, adapter=adapter)
    gpu = plan["gpu_weights"]
    kinds = ", ".join(f"{n} {d}" for d, n in sorted(gpu["dtypes"].items()))
    print(f"eval: {plan['total_tokens']:,} tokens in {plan['windows']:,} windows of "
          f"<= {plan['seq_len']} ({plan['batch_size']} per batch); weights on the GPU: {kinds} "
          f"tensors, {gpu['gpu_bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    if args.weights != "f32" and args.weights not in gpu["dtypes"]:
        print(f"eval: warning: no matrix of this model suits {args.weights} (it needs a last "
              f"dimension that is a multiple of {K_MULTIPLE[args.weights]}), so every weight "
              "stayed f32",
              file=sys.stderr)
    show = _progress_printer("tokens")
    while True:
        p = eng.run(STEP, seconds=1.0)
        speed = f", {p['tokens_per_s']:,.0f} tok/s" if p["tokens_per_s"] else ""
        show(p["tokens"], p["total_tokens"], f", loss so far {p['loss']:.4f}{speed}",
             force=p["done"])
        if p["done"]:
            break
    out = eng.run(FINISH, nbytes=nbytes)
    out["gpu_weights"] = gpu
    return out


def run(args):
    from tools.model_source import resolve_model
    try:
        model_dirs, name, cleanup = resolve_model(
            args.model, lambda *a: print("eval:", *a, file=sys.stderr), mbjs_hints(args))
    except SystemExit as e:         # resolve_model's messages are one line already
        return _fail(str(e).replace("mambaweb run: ", ""))
    try:
        folder = model_dirs[0] / name if model_dirs else _served_folder(name)
        _adapter(args)          # a missing adapter file: refused before any engine starts
        ids, nbytes, info = prepare_tokens(args, folder)
        t0 = time.perf_counter()
        if args.native:
            out = _run_native(args, folder, ids, nbytes, info["seq_len"])
        else:
            out = _run_browser(args, model_dirs, name, ids, nbytes, info["seq_len"])
        if isinstance(out, int):
            return out
    except ValueError as e:
        return _fail(e)
    finally:
        cleanup()
    out.update(model=args.model, weights=args.weights, adapter=args.adapter,
               backend="native" if args.native else "browser", tokenizer=info["tokenizer"],
               wall_s=round(time.perf_counter() - t0, 3))
    if args.json:
        print(json.dumps(out))
    else:
        print(f"model {args.model}, weights {args.weights}, {out['backend']} backend, "
              f"tokenizer {info['tokenizer']}")
        print(f"loss {out['loss']:.6f} nats/token   perplexity {out['perplexity']:.4f}   "
              f"bits/byte {out['bits_per_byte']:.6f}")
        print(f"tokens {out['tokens']:,} scored   bytes {out['bytes']:,}   windows "
              f"{out['windows']:,} of <= {out['seq_len']}")
    return 0


def _run_native(args, folder, ids, nbytes, seq_len):
    from tools.native_engine import NativeEngine, wgpu_adapter_problem
    problem = wgpu_adapter_problem()
    if problem:
        return _fail(f"--native: {problem}", 1)
    with NativeEngine() as eng:
        try:
            return _drive(eng, args, folder, None, ids, nbytes, seq_len)
        except ValueError:
            raise
        except Exception as e:   # a GPU/engine failure: say it in one line
            return _fail(f"{type(e).__name__}: {e}", 1)


def _run_browser(args, model_dirs, name, ids, nbytes, seq_len):
    from tools.headless import headless_engine, worker_error_message
    # not the generate page ("/"): it loads its default model on boot, racing ours
    with headless_engine(model_dirs=model_dirs, use_hf_cache=model_dirs is None,
                         path="/pretrain") as eng:
        url = f"{eng.server.url}/weights/{quote(name)}/"
        try:
            return _drive(eng, args, None, url, ids, nbytes, seq_len)
        except ValueError:
            raise
        except Exception as e:   # the engine's message names what went wrong
            return _fail(worker_error_message(e), 1)
