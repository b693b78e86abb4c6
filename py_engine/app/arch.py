"""`--arch` / `--pattern` against a checkpoint: is this model the family and layer schedule the
command line names? (`mambaweb run / train-check / convert --model M --arch A --pattern P`.)

  --arch mamba1 | mamba2 | mamba3   every layer is that kind (its bidirectional form counts)
  --arch hybrid                     a NemotronH checkpoint, or any schedule that mixes kinds or
                                    has attention / MLP layers
  --pattern P                       one letter per (physical) layer, py_engine/train/init.py's
                                    PATTERN_LETTERS: M Mamba-2, * attention, - relu^2 MLP,
                                    + gated SwiGLU MLP (checked alone: a Mamba-2 model is MM..M;
                                    for a fresh model a --pattern alone means --arch hybrid)

Pure stdlib: this module is imported inside Pyodide (the `run` snippet checks a Hub model there).
"""
ARCHES = ("mamba1", "mamba2", "mamba3", "hybrid")
_SSM = ("mamba1", "mamba2", "mamba3")


def pattern_kinds(pattern):
    """'MM*M-' -> ['mamba2', 'mamba2', 'attention', 'mamba2', 'mlp']; unknown letters refused."""
    from py_engine.train.init import PATTERN_LETTERS
    bad = sorted(set(pattern) - set(PATTERN_LETTERS))
    if bad or not pattern:
        raise ValueError(f"--pattern {pattern!r}: " + (f"unknown layer letters {bad}; " if bad
                                                       else "it is empty; ")
                         + "use M (Mamba-2), * (attention), - (relu^2 MLP), + (gated SwiGLU MLP)")
    return [PATTERN_LETTERS[c] for c in pattern]


def _kinds(cfg):
    return [k[len("bidi_"):] if k.startswith("bidi_") else k for k in cfg.layers]


def arch_of(cfg):
    """The --arch a checkpoint answers to: its one SSM family, else hybrid."""
    kinds = set(_kinds(cfg))
    if len(kinds) == 1 and next(iter(kinds)) in _SSM and cfg.model_type != "nemotron_h":
        return next(iter(kinds))
    return "hybrid"


def own_pattern(cfg):
    """cfg's layers as a --pattern string, or None when a layer has no letter (Mamba-1/-3)."""
    from py_engine.train.init import PATTERN_LETTERS
    letter = {kind: c for c, kind in PATTERN_LETTERS.items()}
    kinds = _kinds(cfg)
    return "".join(letter[k] for k in kinds) if all(k in letter for k in kinds) else None


def mismatch(cfg, arch=None, pattern=None, source="the checkpoint"):
    """None when cfg is what `arch` / `pattern` say; else one sentence naming both."""
    from py_engine.app.model_card import schedule_text
    have = schedule_text(cfg.layers)
    kinds = _kinds(cfg)
    if arch:
        if arch not in ARCHES:
            return f"--arch {arch!r} is not one of {', '.join(ARCHES)}"
        ok = (set(kinds) == {arch} if arch in _SSM
              else cfg.model_type == "nemotron_h" or len(set(kinds)) > 1
              or not set(kinds) <= set(_SSM))
        if not ok:
            return (f"{source} is a {arch_of(cfg)} model ({have}), not --arch {arch}: drop --arch "
                    f"or give --arch {arch_of(cfg)}")
    if pattern:
        want = pattern_kinds(pattern)
        if want != kinds:
            own = own_pattern(cfg)
            fix = f"--pattern {own}" if own else "no --pattern (its layers have no pattern letter)"
            return (f"{source} has layers {have}, not the {schedule_text(want)} of --pattern "
                    f"{pattern}: drop --pattern or give {fix}")
    return None
