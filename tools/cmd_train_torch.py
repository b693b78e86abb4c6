"""`mambaweb train-torch`: continue a tab-trained checkpoint on PyTorch (one process, DDP under
torchrun, or FSDP) with the tab's tokenizer, data order, AdamW and schedule; writes HF folders
the tab loads back.

  python -m tools.cli train-torch --model DIR --data CORPUS --out DIR2 [...]
  torchrun --nproc_per_node K -m tools.cli train-torch --model DIR --data CORPUS --out DIR2 [...]

--batch is the GLOBAL batch (sequences per micro-batch, the tab's `batch`): K processes each
take batch/K of its rows, so K processes give the update one process gives on the same batch.
"""
import os
import sys

from tools.train_torch.families import CLASSES


def register(subparsers):
    p = subparsers.add_parser(
        "train-torch", help="continue a checkpoint on PyTorch (DDP / FSDP via torchrun)",
        description=__doc__.split("\n\n")[0] + " Families: "
        + ", ".join(f"{k} ({v})" for k, v in CLASSES.items())
        + "; Mamba-3 has no transformers class and stays in the tab. One JSON line per step.")
    p.add_argument("--model", required=True,
                   help="HF folder: config.json + model.safetensors + tokenizer.json")
    p.add_argument("--data", required=True,
                   help="a text file or a folder (its text files, recursively, sorted: the "
                        "same reader as `mambaweb pretrain`)")
    p.add_argument("--out", required=True,
                   help="output folder: the final HF folder + torch_train_state.safetensors; "
                        "checkpoint-<step>/ subfolders with --save-every")
    p.add_argument("--steps", type=int, help="optimizer steps in all (default 1000; on resume, "
                                             "the saved run's)")
    p.add_argument("--batch", type=int,
                   help="GLOBAL sequences per micro-batch, split evenly over the processes "
                        "(default 4, the tab's)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default 128)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 2e-3)")
    p.add_argument("--warmup", type=int, help="warmup steps (default min(100, steps/10))")
    p.add_argument("--weight-decay", type=float, help="AdamW decoupled decay (default 0.1)")
    p.add_argument("--grad-clip", type=float, help="global gradient-norm clip, 0 = off "
                                                   "(default 1.0)")
    p.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--seed", type=int, help="data order seed (default 0)")
    p.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                   help="compute dtype: bf16 runs autocast over f32 master weights; "
                        "checkpoints are always f32")
    p.add_argument("--fsdp", action="store_true",
                   help="shard parameters, gradients and AdamW state over the processes "
                        "(FSDP2 fully_shard per layer) instead of DDP")
    p.add_argument("--save-every", type=int, default=0,
                   help="write OUT/checkpoint-<step>/ every N steps (0: only OUT at the end)")
    p.add_argument("--keep", type=int, default=2,
                   help="keep the newest N checkpoint-<step> folders (0: all)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                   help="continue from the newest state in OUT (or from DIR, a folder "
                        "train-torch wrote); settings default to the saved run's")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: one CUDA GPU per process when there are GPUs, else CPU (gloo)")
    p.set_defaults(func=run)


def run(args):
    from tools.train_torch import loop
    try:
        for name in ("steps", "batch", "seq_len", "grad_accum", "save_every"):
            v = getattr(args, name)
            if v is not None and v < (0 if name == "save_every" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be at least "
                                 f"{0 if name == 'save_every' else 1}, got {v}")
        rc = loop.run(args)
    except ValueError as e:
        if os.environ.get("RANK", "0") == "0":      # every rank hits it; one says it
            print(f"mambaweb train-torch: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun worker whose run finished (saved, met the others at the teardown barrier,
        # left the process group): end it here. At interpreter shutdown gloo's threads can
        # still call std::terminate -- seen once in CI as rank 1 exiting -6 ("terminate called
        # without an active exception") after a complete FSDP run, which torchrun reports as
        # a failed run. Nothing is left to do or flush but stdio.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc
