"""Make models/default: the recipe of the embedded default model, one step per sub-command.

  python -m tools.make_default_model corpus --out DIR            (here: fixes the data)
  python -m tools.make_default_model tokenizer --corpus DIR/train.txt --heldout DIR/heldout.txt
                                               --vocab-size 4096 --out FILE
  python -m tools.make_default_model init --tokenizer FILE --out INIT   [--d-model ...]
  python -m tools.make_default_model train --tokenizer FILE --data DIR/train.txt --work W
                                           --out TRAINED      (the GPU machine, one command:
                                           init, a speed probe, train-torch sized to a time
                                           budget, collect)
  (or by hand: mambaweb train-torch --model INIT ... --out OUT; ... collect --trained OUT
   --out TRAINED)
  python -m tools.make_default_model finish --trained TRAINED --corpus DIR --out models/default-new

Each step prints one JSON object of what it wrote on stdout. tools/default_model/ holds the
steps; the README it writes says how the model was made.
"""
import argparse
import json
import sys


def _corpus(a):
    from tools.default_model import corpus
    m = corpus.build(a.out, a.stdlib)
    return {k: m[k] for k in ("python", "files_kept", "skipped", "duplicates_removed",
                              "duplicates", "train.txt", "heldout.txt", "heldout_files")}


def _tokenizer(a):
    from tools.default_model import tokenizer
    return dict(tokenizer.build(a.corpus, a.vocab_size, a.out, a.heldout), out=a.out)


def _init(a):
    import hashlib
    from pathlib import Path
    from tools.default_model import init
    shape = {"family": a.family, "d_model": a.d_model, "n_layers": a.n_layers,
             "d_state": a.d_state, "head_dim": a.head_dim, "n_groups": a.n_groups,
             "expand": a.expand, "d_conv": a.d_conv}
    r = init.make(a.out, a.tokenizer, shape, a.seed)
    w = Path(a.out) / "model.safetensors"
    return {"out": a.out, "params": r["params"], "vocab_size": r["vocab_size"],
            "weight_bytes": w.stat().st_size,
            "sha256": hashlib.sha256(w.read_bytes()).hexdigest(), "config": r["config"]}


def _collect(a):
    from tools.default_model.collect import collect
    m = collect(a.trained, a.out)
    return {"out": a.out, "from": m["source"], "step": m["step"], "finished": m["finished"],
            "tokens": m.get("tokens"), "elapsed_s": m.get("elapsed_s"),
            "last_loss": (m.get("history") or [[None, None]])[-1][1]}


def _train(a):
    from tools.default_model.device_train import run
    return run(a)


def _finish(a):
    from tools.default_model.finish import finish
    f = finish(a.trained, a.out, a.corpus, old_model=a.old, old_eval=a.old_eval,
               hardware=a.hardware, skip_eval=a.skip_eval)
    return {"out": a.out, "dtype": f["dtype"], "params": f["params"],
            "weight_bytes": f["weight_bytes"], "new_eval": f.get("new_eval"),
            "old_eval": f.get("old_eval"), "sample": f["sample"]}


def parser():
    from tools.default_model.init import DEFAULT_SHAPE
    p = argparse.ArgumentParser(prog="python -m tools.make_default_model",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("corpus", help="this machine's stdlib -> train.txt, heldout.txt, "
                                      "manifest.json")
    s.add_argument("--out", required=True)
    s.add_argument("--stdlib", help="the standard library folder (default: this Python's, "
                                    "sysconfig.get_paths()['stdlib'])")
    s.set_defaults(func=_corpus)
    s = sub.add_parser("tokenizer", help="our BPE on train.txt -> tokenizer.json (checked "
                                         "against `tokenizers`)")
    s.add_argument("--corpus", required=True, help="train.txt from the corpus step")
    s.add_argument("--heldout", help="heldout.txt: also checked id-for-id (recommended)")
    s.add_argument("--vocab-size", type=int, default=4096)
    s.add_argument("--out", required=True, help="tokenizer.json to write")
    s.set_defaults(func=_tokenizer)
    s = sub.add_parser("init", help="a fresh HF checkpoint (our initialiser) + tokenizer.json")
    s.add_argument("--tokenizer", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--family", default=DEFAULT_SHAPE["family"], choices=("mamba1", "mamba2"))
    for name in ("d_model", "n_layers", "d_state", "head_dim", "n_groups", "expand", "d_conv"):
        s.add_argument("--" + name.replace("_", "-"), type=int,
                       help=f"default {DEFAULT_SHAPE[name]}")
    s.add_argument("--seed", type=int, default=0, help="initialisation seed")
    s.set_defaults(func=_init)
    s = sub.add_parser("train", help="(GPU machine) init + speed probe + train-torch sized to "
                                     "--budget-s + collect, in one command")
    s.add_argument("--tokenizer", required=True, help="the tokenizer step's tokenizer.json")
    s.add_argument("--data", required=True, help="the corpus step's train.txt")
    s.add_argument("--work", required=True, help="scratch folder (init, probe, the run's "
                                                 "checkpoints with optimizer state)")
    s.add_argument("--out", required=True, help="what to carry back: the model, "
                                                "train_state.json, logs")
    s.add_argument("--batch", type=int, default=64, help="global sequences per step")
    s.add_argument("--seq-len", type=int, default=512)
    s.add_argument("--lr", type=float, default=3e-3)
    s.add_argument("--warmup", type=int, default=100)
    s.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    s.add_argument("--budget-s", type=float, default=330.0,
                   help="seconds of training steps to size the run to (default 330)")
    s.add_argument("--max-epochs", type=float, default=20.0,
                   help="at most this many passes over train.txt (default 20: the corpus is "
                        "~2.4M tokens, and a 4.8M-parameter model overfits past that)")
    s.add_argument("--steps", type=int, help="fixed step count (skips the probe)")
    s.add_argument("--deadline-s", type=float, default=540.0,
                   help="stop training this many seconds after the command started and keep "
                        "the newest checkpoint (default 540)")
    s.set_defaults(func=_train)
    s = sub.add_parser("collect", help="(GPU machine) train-torch's OUT -> the model + "
                                       "train_state.json, small enough to carry back")
    s.add_argument("--trained", required=True, help="train-torch's --out folder")
    s.add_argument("--out", required=True)
    s.set_defaults(func=_collect)
    s = sub.add_parser("finish", help="the collected model -> models/default-new with README")
    s.add_argument("--trained", required=True, help="the folder `collect` wrote")
    s.add_argument("--corpus", required=True, help="the corpus step's folder (manifest.json, "
                                                   "heldout.txt)")
    s.add_argument("--out", default="models/default-new")
    s.add_argument("--old", default="models/default",
                   help="the previous default, scored on the same held-out split")
    s.add_argument("--old-eval", help="a `mambaweb eval --json` result of the previous "
                                      "default on heldout.txt (instead of scoring it again)")
    s.add_argument("--hardware", help="what trained it (default: device_summary.json's, "
                                      "which the train step writes)")
    s.add_argument("--skip-eval", action="store_true", help="write the README without "
                                                            "scoring (no browser)")
    s.set_defaults(func=_finish)
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        out = args.func(args)
    except ValueError as e:
        print(f"make_default_model {args.step}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
