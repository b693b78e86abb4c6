"""models/default-new/README.md from the facts `finish` gathered (pure text formatting)."""
from tools.default_model.finish import PROMPT, train_command


def _eval_row(name, ev):
    if not ev:
        return f"| {name} | not measured | | | |"
    return (f"| {name} | {ev['loss']:.4f} | {ev['bits_per_byte']:.4f} | {ev['tokens']:,} | "
            f"{ev['bytes']:,} |")


def _losses(meta):
    hist = meta.get("history") or []
    if not hist:
        return "no loss history recorded"
    first, last = hist[0], hist[-1]
    return (f"training loss {first[1]:.3f} (step {first[0]}) -> {last[1]:.3f} (step {last[0]}) "
            "nats/token")


def render(f):
    c, m, man, t = f["conf"], f["meta"], f["manifest"], f["meta"]["train"]
    d = f.get("device") or {}
    tokens = int(m.get("tokens", 0))
    corpus_tokens = (m.get("data") or {}).get("digest", [0])[0]
    epochs = f"{tokens / corpus_tokens:.1f}" if corpus_tokens else "?"
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(man["skipped"].items()))
    new, old = f.get("new_eval"), f.get("old_eval")
    cmd_new = new["command"] if new else "mambaweb eval --model models/default --corpus heldout.txt --json"
    lines = [
        "# models/default — the embedded default model",
        "",
        "A small Mamba-2 model (transformers' `Mamba2ForCausalLM`) that writes Python, trained "
        "with this project's own pipeline: our corpus builder, our BPE trainer, our initialiser, "
        "then `mambaweb train-torch` (transformers' model class on PyTorch, the tab's data order, "
        "AdamW and schedule) on a GPU. The tab and `mambaweb run` load it as it is.",
        "",
        "## Data",
        f"- The Python {man['python']} standard library sources (`*.py`) of the build machine "
        f"({man['licence']}).",
        f"- Left out: {skipped}; exact duplicates by SHA-256: {man['duplicates_removed']} "
        f"removed. Kept {man['files_kept']} files.",
        f"- Split by file, stable under added/removed files: {man['split']}. Training: "
        f"{man['train.txt']['files']} files, {man['train.txt']['bytes']:,} bytes; held out: "
        f"{man['heldout.txt']['files']} files, {man['heldout.txt']['bytes']:,} bytes "
        f"({', '.join(man['heldout_files'])}). Training never saw the held-out files.",
        f"- Files are joined with `{man['separator']}` (the tokenizer's end-of-text token, the "
        "tab's document separator), in path order.",
        "",
        "## Tokenizer",
        f"- Byte-level BPE, {c['vocab_size']} ids (`<|endoftext|>` = 0, the 256 bytes, then "
        "merges), GPT-2 split pattern, trained by `py_engine/tokenizer/train.py` on the training "
        "split (the trainer `mambaweb pretrain --tokenizer bpe` uses). HF `tokenizers` gives "
        "exactly our ids on the whole held-out and training text (checked when it was made).",
        "",
        "## Shape",
        f"- `config.json`: Mamba-2, d_model {c['hidden_size']}, {c['num_hidden_layers']} layers, "
        f"{c['num_heads']} heads x head_dim {c['head_dim']} (inner {c['num_heads'] * c['head_dim']}), "
        f"{c['n_groups']} group, d_state {c['state_size']}, conv {c['conv_kernel']}, chunk "
        f"{c.get('chunk_size')}, tied head, vocab {c['vocab_size']}.",
        f"- `model.safetensors`: {f['params']:,} parameters, {f['dtype']}, "
        f"{f['weight_bytes']:,} bytes.",
        "",
        "## Training",
        f"- {m['step']} steps of {t['batch']} sequences x {t['seq_len']} tokens (x accum "
        f"{t['accum']}) = {tokens:,} tokens, {epochs} epochs of the {corpus_tokens:,}-token "
        f"training split; AdamW lr {t['lr']:g} (warmup {t['warmup']}, cosine to "
        f"{t['min_lr_ratio']:g}x), weight decay {t['weight_decay']:g}, clip {t['grad_clip']:g}, "
        f"seed {t['seed']}; {_losses(m)}.",
        f"- Hardware: {f.get('hardware') or 'not stated'}; {m.get('world', 1)} process{'es' if m.get('world', 1) > 1 else ''}, "
        f"{m.get('dtype', 'f32')}{', FSDP' if m.get('fsdp') else ', DDP' if m.get('world', 1) > 1 else ''}; "
        f"{m.get('elapsed_s', 0):.0f} s of training steps"
        f"{'' if m.get('finished', True) else ' (the run stopped early: this is its last checkpoint)'}"
        + (f"; the step count came from a {d['probe_tokens_per_s']:,.0f} tokens/s speed probe "
           "and the time / epoch budget of the `train` step" if d.get("probe_tokens_per_s")
           else "") + ".",
        "",
        "Made with (the corpus and tokenizer on the build machine, carried to the GPU machine; "
        "init, training and collect there; `finish` back here):",
        "",
        "```",
        "python -m tools.make_default_model corpus --out build/default-model/corpus",
        "python -m tools.make_default_model tokenizer --corpus build/default-model/corpus/train.txt "
        "--heldout build/default-model/corpus/heldout.txt --vocab-size 4096 "
        "--out build/default-model/tokenizer.json",
        "# on the GPU machine, one command: init (-> INIT), a speed probe, train-torch, collect",
        "python -m tools.make_default_model train --tokenizer build/default-model/tokenizer.json "
        "--data build/default-model/corpus/train.txt --work WORK --out TRAINED",
        "#   which ran (INIT = WORK/init, OUT = WORK/run):",
        "#   " + train_command(m),
        "python -m tools.make_default_model finish --trained TRAINED --corpus "
        "build/default-model/corpus --out models/default-new",
        "```",
        "",
        "## Held-out quality",
        f"On the held-out split ({man['heldout.txt']['bytes']:,} bytes), scored by "
        "`mambaweb eval` (headless Chromium, the tab's engine): windows of "
        f"{(new or {}).get('seq_len', '?')} tokens, loss per token, bits per UTF-8 byte.",
        "",
        "| model | loss (nats/token) | bits per byte | tokens scored | bytes |",
        "|---|---|---|---|---|",
        _eval_row("this model", new),
        _eval_row("the previous default (Mamba-1, 0.08M, byte-level)", old),
        "",
        f"`{cmd_new}`; the previous default: `{(old or {}).get('command', 'mambaweb eval --model models/default --corpus build/default-model/corpus/heldout.txt --json')}`.",
        "Bits per byte compare across tokenizers; nats/token do not (a byte-level token is "
        f"one byte). The {man['heldout.txt']['files'] - 1} `<|endoftext|>` separators count "
        "as 0 bytes for this model and as their 13 bytes for the byte-level one (<1% of the "
        "bytes).",
        "",
        "## What it writes",
        f"Greedy continuation of `{PROMPT}` (transformers, 48 new tokens):",
        "",
        "```python",
        f.get("sample", ""),
        "```",
        "",
    ]
    return "\n".join(lines)
