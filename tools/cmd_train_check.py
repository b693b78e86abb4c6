"""`mambaweb train-check`: check the in-browser trainer against PyTorch on your own model.

For a batch of token ids [B, T] (int64 .npy) it computes, in headless Chromium, the mean
next-token cross-entropy (position t predicts t+1; the last position has no target) and writes
  OUT/grads.safetensors    the gradient of that loss at the starting weights, by HF tensor
                           name (split GPU pieces rejoined; a tied embedding holds both its
                           embedding and LM-head contributions)
then runs N AdamW steps on the same batch (constant lr, no clipping, weight decay on 2-D weight
matrices only) and writes
  OUT/params.safetensors   the weights after those steps, by HF tensor name
printing one JSON line per step ({"step", "loss", "grad_norm"}: the loss each step's update
starts from, so step 1's is the loss the gradients belong to).
Compare with torch: loss.backward() / torch.optim.AdamW(lr, betas, eps, weight_decay) with
the same decay groups.
Without --model, --arch/--pattern (and the shape flags, --seed) make a fresh random model as
generate-bin does, written to OUT/start first: the weights those gradients belong to.
"""
import json
import sys
from pathlib import Path

from tools.arch_options import (add_fresh_model_options, check_local_model, describe_fresh,
                                fresh_config, shape_flags_given, wants_fresh, write_fresh)

START = "start"      # OUT/start: a fresh --arch/--pattern model's starting weights

LOAD = """
from py_engine.models.mamba import MambaModel
from py_engine.io.hf_loader import load_model, load_model_local
from py_engine.train.trainer import Trainer
from py_engine.train import session as S
if device is None:
    raise ValueError('this browser has no WebGPU device')
model = await load_model(device, args['url'])
tr = Trainer(model, lr=args['lr'], betas=tuple(args['betas']), eps=args['eps'],
             weight_decay=args['wd'], max_grad_norm=0.0)
S.check = (model, tr)
grads, loss = await tr.gradients(args['ids'], args['labels'], args['B'], args['T'])
result = {'grads': grads, 'loss': loss}
"""
STEP = """
from py_engine.train import session as S
model, tr = S.check
r = await tr.train_step([(args['ids'], args['labels'])], args['B'], args['T'], lr=args['lr'])
result = {'step': r['step'], 'loss': r['loss'], 'grad_norm': r['grad_norm'], 'skipped': r['skipped']}
"""
FINISH = """
from py_engine.train import session as S
model, tr = S.check
result = {n: await t.to_bytes() for n, t in model.weights.items()}
tr.release()
model.release()
S.check = None
"""


def register(subparsers):
    p = subparsers.add_parser(
        "train-check", help="gradients and AdamW steps of the browser trainer, for comparison "
                            "with PyTorch",
        description=__doc__.split("\n\n")[1] if "\n\n" in __doc__ else None,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--model", help="HF model folder (config.json + safetensors); or leave it "
                                   "out and give --arch/--pattern for a fresh random model")
    p.add_argument("--ids", required=True, help="token ids [B, T], an int64 .npy file")
    p.add_argument("--out", required=True, help="folder for grads.safetensors, params.safetensors")
    p.add_argument("--labels", help="optional labels [B, T] (.npy, -100 = no target); default: "
                                    "the ids themselves, as transformers' labels=input_ids")
    p.add_argument("--steps", type=int, default=5, help="AdamW steps (default 5)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--betas", default="0.9,0.95")
    p.add_argument("--eps", type=float, default=1e-8)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0,
                   help="weights' seed of a fresh --arch/--pattern model (as generate-bin's)")
    add_fresh_model_options(p, "check")
    p.set_defaults(func=run)


def rejoin(cfg, pieces):
    """{piece name: f32 bytes} -> {HF name: float32 array in the HF shape}."""
    import numpy as np

    from py_engine.io import gpu_layout, hf_names
    out = {}
    for name, shape in hf_names.expected_tensors(cfg).items():
        parts = [pieces[p] for p, _, _, _ in gpu_layout.pieces(cfg, name, shape)]
        if any(p is None for p in parts):
            continue
        out[name] = np.frombuffer(b"".join(parts), np.float32).reshape(shape).copy()
    return out


def _load_ids(path, flag="--ids"):
    import numpy as np
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"{flag} {path}: cannot read it as a .npy file ({e})") from None
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{flag} {path}: expected integer token ids of shape [B, T], got "
                         f"{ids.dtype} {list(ids.shape)}")
    if ids.shape[1] < 2:
        raise ValueError(f"{flag} {path}: T = {ids.shape[1]}; need at least 2 tokens per row "
                         "(position t predicts t+1)")
    return ids


def run(args):
    from py_engine.models.config import MambaConfig
    from tools.cmd_pretrain import _message
    from tools.convert_host import write_safetensors
    from tools.headless import headless_engine

    out = Path(args.out)
    try:
        if wants_fresh(args):
            # kept in OUT/start: the weights the gradients belong to, for the torch side
            fresh = fresh_config(args)
            model_dir = write_fresh(out / START, fresh, args.seed).resolve()
            print(f"wrote {describe_fresh(fresh, args, args.seed)} to {out / START}",
                  file=sys.stderr)
        elif args.model is None:
            raise ValueError("give --model (an HF model folder) or --arch/--pattern (a fresh "
                             "random model)")
        else:
            extra = shape_flags_given(args)
            if extra:
                raise ValueError(f"{', '.join(extra)} shape a fresh --arch/--pattern model, not "
                                 f"--model {args.model}: drop them, or drop --model")
            model_dir = Path(args.model).resolve()
        cfg_path = model_dir / "config.json"
        if not cfg_path.is_file():
            raise ValueError(f"--model {args.model}: no config.json (not an HF model folder)")
        cfg = MambaConfig.from_hf_dict(json.loads(cfg_path.read_text()), str(cfg_path))
        if args.model is not None:
            check_local_model(model_dir, args, f"--model {args.model}")
        ids = _load_ids(args.ids)
        if ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise ValueError(f"--ids: token ids must lie in [0, {cfg.vocab_size}) for this "
                             f"model; found {int(ids.min())}..{int(ids.max())}")
        labels = ids
        if args.labels:
            labels = _load_ids(args.labels, "--labels")
            if labels.shape != ids.shape:
                raise ValueError(f"--labels has shape {list(labels.shape)}, --ids "
                                 f"{list(ids.shape)}: they must match")
            bad = (labels != -100) & ((labels < 0) | (labels >= cfg.vocab_size))
            if bad.any():
                raise ValueError(f"--labels: values must be -100 or in [0, {cfg.vocab_size})")
        try:
            betas = [float(b) for b in args.betas.split(",")]
        except ValueError:
            raise ValueError(f"--betas {args.betas}: give two numbers, e.g. 0.9,0.95") from None
        if len(betas) != 2:
            raise ValueError(f"--betas {args.betas}: give two numbers, e.g. 0.9,0.95")
        if args.steps < 0:
            raise ValueError("--steps must be 0 or more")
    except ValueError as e:
        print(f"mambaweb train-check: {e}", file=sys.stderr)
        return 2
    B, T = (int(s) for s in ids.shape)
    flat = [int(i) for i in ids.ravel()]
    common = dict(ids=flat, labels=[int(i) for i in labels.ravel()], B=B, T=T, lr=args.lr)
    try:
        with headless_engine([model_dir], use_hf_cache=False, path="/pretrain") as eng:
            url = f"{eng.server.url}/weights/{model_dir.name}/"
            try:
                res = eng.run(LOAD, url=url, betas=betas, eps=args.eps, wd=args.weight_decay,
                              **common)
            except Exception as e:
                print(f"mambaweb train-check: {_message(e)}", file=sys.stderr)
                return 2
            out.mkdir(parents=True, exist_ok=True)
            grads = rejoin(cfg, res["grads"])
            _write(out / "grads.safetensors", grads, write_safetensors)
            for _ in range(args.steps):
                r = eng.run(STEP, **common)
                print(json.dumps(r), flush=True)
            params = rejoin(cfg, eng.run(FINISH))
            _write(out / "params.safetensors", params, write_safetensors)
    except Exception as e:
        print(f"mambaweb train-check: {_message(e)}", file=sys.stderr)
        return 1
    print(f"wrote {out / 'grads.safetensors'} ({len(grads)} tensors) and "
          f"{out / 'params.safetensors'} after {args.steps} AdamW steps", file=sys.stderr)
    return 0


def _write(path, tensors, write_safetensors):
    items = [(n, "F32", a.shape, (lambda a=a: a.astype("<f4").tobytes())) for n, a in tensors.items()]
    write_safetensors(path, items)
