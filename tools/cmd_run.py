"""`mambaweb run`: generate with the real engine in headless Chromium and print the result.

Same code path as the generate page (py_engine/app/generate_session.py), driven by
Playwright; prints the continuation, or one JSON object with --json.
"""
import json
import os
import sys
from urllib.parse import quote

from tools.arch_options import (add_fresh_model_options, add_mbjs_hint_args, check_local_model,
                                describe_fresh, fresh_config, mbjs_hints, shape_flags_given,
                                wants_fresh, write_fresh)

SNIPPET = """
from py_engine.app import generate_session as s
if args['hub']:
    info = await s.load_hub(args['hub'], args['endpoint'])
else:
    info = await s.load(args['url'], args['name'])
if args['expect']:      # --arch / --pattern against a model the host could not read first
    from py_engine.app.arch import mismatch
    problem = mismatch(s.current['model'].cfg, *args['expect'], source=args['hub'] or args['name'])
    if problem:
        s.unload()
        raise ValueError(problem)
if args['adapter']:
    info.update(await s.load_adapter(files=args['adapter']))
out = {'model': info}
if args['logits_out']:
    out['logits'] = await s.prompt_logits(prompt=args['prompt'], ids=args['ids'],
                                          stepwise=args['stepwise'])
    out['prompt_len'] = len(s.encode(args['prompt'], args['ids']))
if args['max_new'] > 0:
    out['gen'] = await s.generate(prompt=args['prompt'], ids=args['ids'],
                                  max_new_tokens=args['max_new'], sampling=args['sampling'])
s.unload()
result = out
"""


def register(sub):
    p = sub.add_parser("run", help="generate text with the engine in headless Chromium")
    p.add_argument("--model",
                   help="an HF model folder, an MBJS .bin, a model name the server lists, or "
                        "a Hub repo org/name[@revision] read by the tab from --hub-endpoint "
                        "(default: the embedded default model, or with --arch/--pattern a fresh "
                        "random model)")
    p.add_argument("--hub-endpoint", metavar="URL",
                   help="where org/name models come from, in the Hub's URL layout (default: "
                        "$HF_ENDPOINT, else https://huggingface.co)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text (needs the model's tokenizer.json, or a "
                                      "byte-level model)")
    src.add_argument("--ids", help="prompt token ids, comma-separated: 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (the default when no "
                                                          "sampling option is given)")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0,
                   help="sampling seed; also the weights' seed of a fresh --arch/--pattern model")
    p.add_argument("--logits-out", metavar="FILE.npy",
                   help="write the prompt's logits, float32 [len, vocab]")
    p.add_argument("--adapter", metavar="DIR",
                   help="a LoRA adapter folder as PEFT writes it (adapter_config.json + "
                        "adapter_model.safetensors), applied on top of the model")
    p.add_argument("--stepwise", action="store_true",
                   help="feed the prompt through the recurrent step path one token at a time, "
                        "so --logits-out holds the step path's logits (any layer kind)")
    p.add_argument("--json", action="store_true", help="print one JSON object {ids, text, ...}")
    add_mbjs_hint_args(p)
    add_fresh_model_options(p, "generate with")
    p.set_defaults(func=run)


def _adapter_files(folder, command="run"):
    """{file name: bytes} of a PEFT adapter folder for the engine's `load_adapter`."""
    if not folder:
        return None
    from pathlib import Path
    out = {}
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        p = Path(folder) / name
        if not p.is_file():
            raise SystemExit(f"mambaweb {command}: {p} is missing; --adapter takes a PEFT "
                             "adapter folder (adapter_config.json + adapter_model.safetensors)")
        out[name] = p.read_bytes()
    return out


def _fresh_model(args, log):
    """(model_dirs, name, cleanup) of generate-bin's model for --arch/--pattern/--seed and the
    shape flags, written to a temporary folder."""
    import tempfile
    from pathlib import Path
    cfg = fresh_config(args)
    tmp = tempfile.TemporaryDirectory(prefix="mambaweb-fresh-")
    name = f"random-{args.family or 'hybrid'}"
    try:
        write_fresh(Path(tmp.name) / name, cfg, args.seed)
    except BaseException:
        tmp.cleanup()
        raise
    log(f"initialised {describe_fresh(cfg, args, args.seed)}")
    return [Path(tmp.name)], name, tmp.cleanup


def run(args):
    import numpy as np
    from tools.headless import headless_engine, worker_error_message
    from tools.model_source import hub_spec, resolve_model, served_entry

    ids = [int(x) for x in args.ids.split(",") if x.strip()] if args.ids else None
    greedy = args.greedy or args.temperature is None
    sampling = {"greedy": greedy, "temperature": args.temperature or 1.0, "top_k": args.top_k,
                "top_p": args.top_p, "repetition_penalty": args.repetition_penalty,
                "seed": args.seed}
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    fresh = wants_fresh(args)
    if not fresh:
        args.model = args.model or "default"
        extra = shape_flags_given(args)
        if extra:
            print(f"mambaweb run: {', '.join(extra)} shape a fresh --arch/--pattern model, not "
                  f"--model {args.model}: drop them, or drop --model", file=sys.stderr)
            return 2
    try:        # a missing adapter file is refused before the browser starts, not after its boot
        adapter = _adapter_files(args.adapter)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    hub = None if fresh else hub_spec(args.model)
    endpoint = (args.hub_endpoint or os.environ.get("HF_ENDPOINT") or "").strip() or None
    expect = None
    if fresh:
        try:
            model_dirs, name, cleanup = _fresh_model(args, log)
        except ValueError as e:
            print(f"mambaweb run: {e}", file=sys.stderr)
            return 2
    elif hub:
        log(f"opening {hub} from {endpoint or 'https://huggingface.co'} in the tab")
        model_dirs, name, cleanup = None, hub, lambda: None
    else:
        model_dirs, name, cleanup = resolve_model(args.model, log, mbjs_hints(args))
        if model_dirs is None:
            entry, served = served_entry(name)
            if entry is None:               # refused now, not after the browser's boot
                print(f"mambaweb run: no model named {name!r}: give an HF model folder, an MBJS "
                      f".bin file, a Hub repo (org/name), or one of the served models: "
                      f"{', '.join(served) or '(none)'}", file=sys.stderr)
                return 2
    if not fresh and (args.family or args.pattern):
        if model_dirs:      # a local folder or MBJS file: checked before the browser starts
            try:
                check_local_model(model_dirs[0] / name, args, args.model)
            except ValueError as e:
                cleanup()
                print(f"mambaweb run: {e}", file=sys.stderr)
                return 2
        else:               # a served name or a Hub repo: the tab checks what it loaded
            expect = [args.family, args.pattern]
    try:
        # not the generate page ("/"): it loads its default model on boot, racing ours
        with headless_engine(model_dirs=model_dirs, use_hf_cache=model_dirs is None,
                             path="/pretrain") as eng:
            url = f"{eng.server.url}/weights/{quote(name)}/"
            try:
                out = eng.run(SNIPPET, url=url, name=name, hub=hub, endpoint=endpoint,
                              prompt=args.prompt, ids=ids,
                              max_new=args.max_new_tokens, sampling=sampling,
                              logits_out=bool(args.logits_out), stepwise=args.stepwise,
                              adapter=adapter, expect=expect)
            except Exception as e:  # the engine's message names what went wrong
                print(f"mambaweb run: {worker_error_message(e)}", file=sys.stderr)
                return 1
    finally:
        cleanup()
    if args.logits_out:
        V = out["model"]["vocab_size"]
        arr = np.frombuffer(out["logits"], np.float32).reshape(out["prompt_len"], V)
        np.save(args.logits_out, arr)
        log(f"wrote logits {list(arr.shape)} to {args.logits_out}")
    gen = out.get("gen") or {"ids": [], "text": ""}
    if args.json:
        report = {"ids": gen["ids"], "text": gen.get("text"), "model": out["model"],
                  **{k: gen[k] for k in ("tokens_per_s", "time_to_first_token_s",
                                         "dispatches_per_token", "prompt_tokens") if k in gen}}
        print(json.dumps(report))
    else:
        print(gen.get("text") if gen.get("text") is not None else ",".join(map(str, gen["ids"])))
    return 0
