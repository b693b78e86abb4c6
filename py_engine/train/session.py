"""A pretraining session: corpus + tokenizer + fresh model + trainer + data order, driven by
the pretrain page (start / pause / resume / stop) or by `mambaweb pretrain` (step by step).

Lives in the Worker's Python. The page talks to it through small snippets (engine.run) that
call the module functions at the bottom (`describe`, `start`, `pause`, ...); the session
posts progress events to the page (js.mwTrain.emit -> {event: "train", json}) and keeps the
last ones for `poll()`. Event types:
  {"type": "prepare", "stage", "done", "total"}     tokenizing / training a tokenizer
  {"type": "ready", ...summary}                      model built, nothing trained yet
  {"type": "step", "step", "steps", "loss", "tokens_per_s", "eta_s", "lr", "grad_norm",
   "tokens", "elapsed_s", "epoch", "skipped"}
  {"type": "sample", "step", "prompt", "text"}       greedy generation every N steps
  {"type": "status", "status", "message"?}          running / paused / stopped / done / error
  {"type": "saved", "step", "where"}                 autosave written (OPFS)
  {"type": "warning", "message"}                     something the person should know
Every error a person can cause is a ValueError with a plain message; a failed action
leaves the session as it was.

Pure stdlib (+ js when in the browser): this module is imported inside Pyodide.
"""
import asyncio
import json
import math
import time
from array import array

from py_engine.train import checkpoint as ckpt
from py_engine.train.adamw import lr_at
from py_engine.train import data as data_mod
from py_engine.train.init import PRESETS, check_fits, init_pieces, param_count, preset_config

OPFS_DIR = "mambaweb-pretrain"
OPFS_STATE = OPFS_DIR + "/state.safetensors"
OPFS_TOKENS = OPFS_DIR + "/tokens.bin"
OPFS_INFO = OPFS_DIR + "/info.json"

TRAIN_DEFAULTS = {
    "lr": 2e-3, "batch": 4, "seq_len": 128, "steps": 1000, "warmup": None,
    "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8, "grad_clip": 1.0, "accum": 1,
    "seed": 0, "init_seed": 0, "sample_every": 100, "sample_tokens": 64, "sample_prompt": None,
    "autosave_every": 50, "autosave_seconds": 30, "wsla": False, "min_lr_ratio": 0.1,
    "schedule_steps": None,     # the cosine's length when more steps were added (more_steps)
}
MODEL_KEYS = ("hidden_size", "num_hidden_layers", "state_size", "expand", "conv_kernel",
              "time_step_rank", "vocab_size", "head_dim", "n_groups",
              "mimo_rank")   # mimo_rank: a Mamba-3 MIMO of that rank (train/init.preset_config)


def _in_browser():
    try:
        import js  # noqa: F401
        return hasattr(js, "mwTrain")
    except ImportError:
        return False


def _round(x, nd=6):
    return x if x != x or x in (float("inf"), float("-inf")) else round(float(x), nd)


# --- configuration --------------------------------------------------------------------------

def train_config(spec):
    t = dict(TRAIN_DEFAULTS)
    for k, v in (spec or {}).items():
        if k in t and v is not None and v != "":
            t[k] = v
    ints = ("batch", "seq_len", "steps", "accum", "seed", "init_seed", "sample_every",
            "sample_tokens", "autosave_every", "autosave_seconds")
    for k in ints:
        try:
            t[k] = int(t[k])
        except (TypeError, ValueError):
            raise ValueError(f"{k.replace('_', ' ')} must be a whole number, got {t[k]!r}") from None
    for k in ("lr", "weight_decay", "eps", "grad_clip", "min_lr_ratio"):
        try:
            t[k] = float(t[k])
        except (TypeError, ValueError):
            raise ValueError(f"{k.replace('_', ' ')} must be a number, got {t[k]!r}") from None
    if isinstance(t["betas"], str):
        t["betas"] = [float(b) for b in t["betas"].split(",")]
    t["betas"] = [float(b) for b in t["betas"]]
    if not (t["lr"] > 0 and t["lr"] < 1):
        raise ValueError(f"learning rate must be between 0 and 1, got {t['lr']}")
    for k, lo in (("batch", 1), ("seq_len", 2), ("steps", 1), ("accum", 1)):
        if t[k] < lo:
            raise ValueError(f"{k.replace('_', ' ')} must be at least {lo}, got {t[k]}")
    if t["warmup"] in (None, ""):
        t["warmup"] = min(100, t["steps"] // 10)
    t["warmup"] = int(t["warmup"])
    t["wsla"] = bool(t["wsla"])
    return t


def model_config(spec, vocab_size):
    """MambaConfig from {"size": preset, overrides...}; the vocabulary is the tokenizer's."""
    spec = dict(spec or {})
    size = spec.pop("size", "nano") or "nano"
    family = spec.pop("family", "mamba1") or "mamba1"
    pattern = (spec.pop("pattern", None) or "").strip() or None
    # schedule options (py_engine/models/schedule.py): virtual layers, bidirectional merge
    virtual = (str(spec.pop("virtual", None) or "")).strip() or None
    bidi = (spec.pop("bidi", None) or "").strip() or None
    over = {}
    for k in MODEL_KEYS:
        v = spec.get(k)
        if v not in (None, ""):
            try:
                over[k] = int(v)
            except (TypeError, ValueError):
                raise ValueError(f"{k} must be a whole number, got {v!r}") from None
    over["vocab_size"] = int(vocab_size)
    for k in ("tie_word_embeddings",):
        if k in spec:
            over[k] = bool(spec[k])
    try:
        if virtual:     # checked against the physical depth first, in the page's words
            plain = preset_config(size, family=family, pattern=pattern, **over)
            virtual = ",".join(map(str, virtual_schedule(virtual, plain.num_hidden_layers)))
        return preset_config(size, family=family, pattern=pattern, virtual=virtual, bidi=bidi,
                             **over)
    except VirtualScheduleError:
        raise
    except (TypeError, ValueError) as e:
        raise ValueError(f"model config: {e}") from None


class VirtualScheduleError(ValueError):
    """The virtual-layers field cannot describe a schedule over this model's layers."""


def virtual_schedule(text, n_physical):
    """The page's virtual-layers field ("L", "L:cyclic", "L:stretched" or "0,1,1,0") ->
    [physical layer index per logical layer] over n_physical layers; one sentence when it
    cannot be one (py_engine/models/schedule.resolve, and the checks config.json gets)."""
    from py_engine.models.schedule import resolve
    try:
        order = resolve(text, n_physical)
    except ValueError as e:
        raise VirtualScheduleError(str(e)) from None
    bad = [p for p in order if not 0 <= p < n_physical]
    if bad:
        raise VirtualScheduleError(
            f"virtual schedule {text!r}: {bad[0]} is not a physical layer; the model has "
            f"{n_physical} (0..{n_physical - 1}): use those indices or raise the layer count")
    unused = sorted(set(range(n_physical)) - set(order))
    if unused:
        raise VirtualScheduleError(
            f"virtual schedule {text!r} never uses physical layer(s) "
            f"{', '.join(map(str, unused))}: use each at least once, or lower the layer count")
    return order


def memory_estimate(cfg, t):
    """Rough GPU bytes: weights + grads + 2 AdamW moments + activations of one micro-batch.
    Weights count once per physical layer; activations once per logical layer (a virtual
    schedule runs a shared layer several times and keeps each run's activations)."""
    from py_engine.models.schedule import logical_kinds
    from py_engine.nn import registry
    P = param_count(cfg)
    rows = t["batch"] * t["seq_len"]
    D, V = cfg.hidden_size, cfg.vocab_size
    act = sum(registry.get(kind).train_floats(cfg, t["batch"], t["seq_len"]) + rows * 3 * D
              for kind in logical_kinds(cfg)) + rows * (2 * V + 4 * D)
    return 4 * (4 * P + act)


def fit_problems(limits, cfg, t):
    """Plain-language problems with running `cfg` at batch x seq on a GPU with `limits`."""
    cap = min(limits.get("maxStorageBufferBindingSize", 1 << 27), limits.get("maxBufferSize", 1 << 28))
    rows = t["batch"] * t["seq_len"]
    out = []
    if cfg.vocab_size * cfg.hidden_size * 4 > cap:
        out.append(f"the embedding ({cfg.vocab_size} x {cfg.hidden_size}) needs "
                   f"{cfg.vocab_size * cfg.hidden_size * 4 / 2**20:.0f} MiB, more than this GPU "
                   f"binds at once ({cap / 2**20:.0f} MiB): choose a smaller vocabulary or d_model")
    if rows * cfg.vocab_size * 4 > cap:
        out.append(f"the logits of one batch (batch {t['batch']} x seq {t['seq_len']} x vocab "
                   f"{cfg.vocab_size}) need {rows * cfg.vocab_size * 4 / 2**20:.0f} MiB, more than "
                   f"this GPU binds at once ({cap / 2**20:.0f} MiB): lower the batch size or "
                   "sequence length (use gradient accumulation for a larger effective batch)")
    return out


def describe(spec, limits=None):
    """What the page shows before Start: parameter count, memory, problems. spec: {"model",
    "train", "vocab_size"}."""
    try:
        t = train_config(spec.get("train"))
        cfg = model_config(spec.get("model"), spec.get("vocab_size") or 256)
    except ValueError as e:
        return {"ok": False, "error": str(e)}
    problems = fit_problems(limits or {}, cfg, t) if limits else []
    # the page's summary reads `shape` (every family's config.json spells sizes differently)
    shape = {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
             "state_size": cfg.state_size, "expand": cfg.expand, "conv_kernel": cfg.conv_kernel,
             "vocab_size": cfg.vocab_size, "model_type": cfg.model_type,
             "num_heads": cfg.num_heads, "head_dim": cfg.head_dim,
             "pattern": "".join({"mamba1": "m", "mamba2": "M", "mamba3": "3", "attention": "*",
                                 "mlp": "-", "gated_mlp": "+"}.get(k.replace("bidi_", ""), "?")
                         for k in cfg.layers),
             # schedule options: logical depth over the physical layers, bidirectional merge
             "logical_layers": len(cfg.virtual_layers) or cfg.num_hidden_layers,
             "virtual_layers": list(cfg.virtual_layers),
             "bidi": (cfg.bidirectional or {}).get("merge")}
    model = spec.get("model") or {}
    return {"ok": not problems, "params": param_count(cfg), "config": cfg.to_hf_dict(),
            "shape": shape,
            "memory_bytes": memory_estimate(cfg, t), "problems": problems,
            "presets": {k: param_count(preset_config(
                k, family=model.get("family") or "mamba1", bidi=model.get("bidi") or None,
                vocab_size=spec.get("vocab_size") or v["vocab_size"])) for k, v in PRESETS.items()}}


# --- the session ----------------------------------------------------------------------------

class PretrainSession:
    def __init__(self, device):
        self.device = device
        self.status = "empty"
        self.model = self.trainer = self.batcher = self.tokenizer = None
        self.cfg = None
        self.train = None
        self.preset = None
        self.history = []          # [[step, loss]]
        self.last = None           # last step record
        self.samples = []          # last few sample events
        self.events = []           # for poll()
        self.digest = None
        self.tokens_seen = 0
        self.elapsed = 0.0
        self.step_ema = None
        self.lock = asyncio.Lock()
        self.task = None
        self.autosave_path = None      # OPFS path when autosave works
        self.save_requested = False    # the page is being hidden or left: save after this step
        self._saved_at = None          # time.monotonic() of the last autosave
        self.warnings = []
        self.corpus_info = {}

    # -- events --------------------------------------------------------------------------
    def emit(self, event):
        if getattr(self.device, "lost", None):
            return      # a session on a lost GPU stops quietly: the page hears "gpu-lost"
        self.events.append(event)
        if len(self.events) > 500:
            del self.events[:250]
        if _in_browser():
            import js
            try:
                js.mwTrain.emit(json.dumps(event, default=str))
            except Exception:   # a closed page must not stop training
                pass

    def warn(self, message):
        self.warnings.append(message)
        self.emit({"type": "warning", "message": message})

    def poll(self, since=0):
        return self.events[since:]

    # -- building ------------------------------------------------------------------------
    @classmethod
    async def create(cls, device, texts, tokenizer, model_spec, train_spec, progress=None,
                     ids=None, corpus_info=None):
        """A ready session over `texts` (or pre-encoded `ids`) with a fresh model."""
        self = cls(device)
        self.train = train_config(train_spec)
        self.tokenizer = tokenizer
        self.preset = (model_spec or {}).get("size", "nano")
        self.cfg = model_config(model_spec, tokenizer.vocab_size)
        problems = fit_problems(device.limits, self.cfg, self.train)
        if problems:
            raise ValueError("this model does not fit this GPU: " + "; ".join(problems))
        check_fits(device, self.cfg)
        if ids is None:
            ids = data_mod.encode_corpus(texts, tokenizer, progress)
        self._set_corpus(ids, corpus_info)
        # the page shows warnings: it says which files were skipped and why
        for line in [data_mod.skipped_summary(corpus_info or {})] + list(
                (corpus_info or {}).get("notes", [])):
            if line:
                self.warn(line)
        weights = init_pieces(device, self.cfg, self.train["init_seed"])
        self._build(weights)
        return self

    def _set_corpus(self, ids, corpus_info=None):
        self.ids = ids
        self.batcher = data_mod.Batcher(ids, self.train["seq_len"], self.train["batch"],
                                        self.train["seed"])
        self.digest = data_mod.ids_digest(ids)
        self.corpus_info = dict(corpus_info or {}, tokens=len(ids), windows=self.batcher.windows)

    def _build(self, weights):
        from py_engine.models.mamba import MambaModel
        from py_engine.train.trainer import Trainer
        t = self.train
        self.model = MambaModel(self.device, self.cfg, weights)
        try:
            self.trainer = Trainer(self.model, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"],
                                   weight_decay=t["weight_decay"], max_grad_norm=t["grad_clip"],
                                   warmup=t["warmup"], total_steps=t["steps"], wsla=t["wsla"])
        except BaseException:
            self.model.release()
            self.model = None
            raise
        self.status = "ready"

    def summary(self):
        cfg = self.cfg
        return {"type": "ready", "status": self.status, "params": param_count(cfg),
                "trained_params": sum(p.numel for p in self.trainer.params.values()),
                "config": cfg.to_hf_dict(), "train": self.train, "preset": self.preset,
                "tokenizer": self.tokenizer.kind, "vocab_size": cfg.vocab_size,
                "corpus": self.corpus_info, "step": self.step, "history": self.history,
                "samples": self.samples[-3:], "last": self.last, "warnings": self.warnings,
                "autosave": self.autosave_path is not None}

    @property
    def step(self):
        return self.trainer.step_count if self.trainer else 0

    # -- training ------------------------------------------------------------------------
    def _next_micro(self):
        """One micro-batch (ids, labels), flat [batch*seq_len]: windows of the token stream
        are their own labels (the trainer shifts them). A fine-tune on records overrides it."""
        ids = self.batcher.next_batch()
        return ids, ids

    @property
    def can_sample(self):
        """A bidirectional model reads the tokens after each position: it cannot generate,
        so its run has no samples (py_engine/nn/bidirectional.py)."""
        from py_engine.nn.bidirectional import is_bidirectional
        return not is_bidirectional(self.cfg)

    async def train_one(self):
        """One optimizer step; returns (and emits) its record."""
        t = self.train
        async with self.lock:
            t0 = time.perf_counter()
            micro = [self._next_micro() for _ in range(t["accum"])]
            lr = _lr_at(self.trainer.step_count, t)
            rec = await self.trainer.train_step(micro, t["batch"], t["seq_len"], lr=lr)
            dt = time.perf_counter() - t0
        self.elapsed += dt
        ntok = t["batch"] * t["seq_len"] * t["accum"]
        self.tokens_seen += ntok
        self.step_ema = dt if self.step_ema is None else 0.8 * self.step_ema + 0.2 * dt
        left = max(0, t["steps"] - rec["step"])
        finite = math.isfinite(rec["loss"])
        # a non-finite loss travels as null (JSON has no NaN; the page would drop the event)
        out = {"type": "step", "step": rec["step"], "steps": t["steps"],
               "loss": _round(rec["loss"]) if finite else None, "lr": _round(lr, 8),
               "grad_norm": _round(rec["grad_norm"]) if math.isfinite(rec["grad_norm"]) else None,
               "tokens_per_s": _round(ntok / max(dt, 1e-9), 1),
               "tokens": self.tokens_seen, "elapsed_s": _round(self.elapsed, 3),
               "eta_s": _round(left * self.step_ema, 1), "epoch": self.batcher.epoch,
               "skipped": rec["skipped_total"]}
        if rec["skipped"]:
            out["skipped_step"] = True
        if finite and not rec["skipped"]:
            self.history.append([rec["step"], out["loss"]])
            self.history = ckpt.thin_history(self.history)
        self.last = out
        self.emit(out)
        return out

    async def run(self):
        """Train until the step budget, a pause or a stop (run as a background task)."""
        t = self.train
        self._set_status("running")
        try:
            while self.status == "running" and self.step < t["steps"]:
                rec = await self.train_one()
                s = rec["step"]
                if t["sample_every"] and s % t["sample_every"] == 0 and self.can_sample:
                    await self.sample()
                if self.autosave_path and self._autosave_due(s):
                    await self.autosave()
                await asyncio.sleep(0)
        except Exception as e:   # report, keep the model: it is still downloadable
            self._set_status("error", f"training stopped: {e}")
            await self._safe_autosave()
            return
        if self.step >= t["steps"]:
            if not (t["sample_every"] and self.step % t["sample_every"] == 0):
                await self._safe_sample()
            await self._safe_autosave()
            self._set_status("done")
        elif self.status == "stopping":
            await self._safe_autosave()
            self._set_status("stopped")
        else:
            await self._safe_autosave()
            self._set_status("paused")

    def _autosave_due(self, step):
        """After the first step (a reload soon after starting keeps the run), every
        autosave_every steps, every autosave_seconds of training, and when the page asks
        (it is being hidden or left: request_save)."""
        t = self.train
        elapsed = time.monotonic() - (self._saved_at or 0.0)
        return (step == 1 or self.save_requested
                or (t["autosave_every"] and step % t["autosave_every"] == 0)
                or (t.get("autosave_seconds") and elapsed >= t["autosave_seconds"]))

    def _set_status(self, status, message=None):
        self.status = status
        ev = {"type": "status", "status": status, "step": self.step}
        if message:
            ev["message"] = message
        self.emit(ev)

    def start_background(self):
        if self.status == "running":
            return
        if self.step >= self.train["steps"]:
            raise ValueError(f"this run has finished its {self.train['steps']} steps: raise "
                             "the step count to continue training")
        self.status = "running"
        self.task = asyncio.ensure_future(self.run())

    def pause(self):
        if self.status == "running":
            self.status = "pausing"

    def stop(self):
        if self.status in ("running", "pausing"):
            self.status = "stopping"
        elif self.status in ("paused", "ready"):
            self._set_status("stopped")

    # -- samples -------------------------------------------------------------------------
    def _prompt_ids(self, prompt=None):
        prompt = prompt if prompt is not None else self.train.get("sample_prompt")
        if prompt:
            ids = list(self.tokenizer.encode(prompt))
        else:
            ids = list(self.ids[:min(8, len(self.ids))])
        return [i for i in ids if 0 <= i < self.cfg.vocab_size] or [0]

    async def sample(self, prompt=None, n=None):
        """Greedy continuation of `prompt` (default: the corpus's first tokens), through the
        one decoding path (py_engine/models/generate.Generator: GPU argmax, recorded step)."""
        from py_engine.models.generate import Generator, SamplingConfig
        n = self.train["sample_tokens"] if n is None else int(n)
        ids = self._prompt_ids(prompt)
        out = []
        async with self.lock:
            gen = Generator(self.model, SamplingConfig(greedy=True),
                            max_tokens=len(ids) + n + 1)
            try:
                async for tok in gen.stream(ids, n):
                    out.append(tok)
            finally:
                gen.release()
        ev = {"type": "sample", "step": self.step, "prompt": self.tokenizer.decode(ids),
              "text": self.tokenizer.decode(out), "ids": out}
        self.samples.append(ev)
        self.samples = self.samples[-10:]
        self.emit(ev)
        return ev

    async def _safe_sample(self):
        if not self.can_sample:
            return
        try:
            await self.sample()
        except Exception as e:
            self.warn(f"sample generation failed: {e}")

    # -- checkpoints ---------------------------------------------------------------------
    def state_meta(self):
        return {"config": self.cfg.to_hf_dict(), "preset": self.preset, "step": self.step,
                "adam_t": self.trainer.opt.t, "skipped": self.trainer.skipped,
                "train": self.train,
                "data": {"position": self.batcher.position, "digest": self.digest,
                         "corpus": self.corpus_info},
                "tokenizer_kind": self.tokenizer.kind, "tokenizer": self.tokenizer.to_json(),
                "history": self.history, "samples": self.samples[-3:],
                "tokens_seen": self.tokens_seen, "elapsed_s": self.elapsed,
                "saved_at": time.time()}

    def state_parts(self):
        return ckpt.state_parts(self.trainer, self.state_meta())

    async def export_bytes(self, which=("hf", "state")):
        """{file name: bytes}: the HF folder files, MBJS and/or the training state."""
        out = {}
        async with self.lock:
            if "hf" in which:
                for name, parts in ckpt.hf_files(self.model, self.tokenizer).items():
                    out[name] = await ckpt.parts_bytes(parts)
            if "mbjs" in which:
                out["model.mbjs.bin"] = await ckpt.parts_bytes(await ckpt.mbjs_parts(self.model),
                                                               crc_trailer=True)
            if "state" in which:
                out["training_state.safetensors"] = await ckpt.parts_bytes(self.state_parts())
        return out

    async def export_blobs(self, which):
        """Browser: assemble the files as Blobs in the Worker and leave them in its store
        for the page to `take`. Returns [{"key", "name", "size"}]."""
        import js
        out = []
        async with self.lock:
            files = {}
            if which == "hf":
                files = ckpt.hf_files(self.model, self.tokenizer)
                # one .zip (the convert page's store-only writer): one download, not three
                return [await zip_download(self.device, files, "mambaweb-model")]
            elif which == "mbjs":
                files = {"model.mbjs.bin": await ckpt.mbjs_parts(self.model)}
            elif which == "state":
                files = {"training_state.safetensors": self.state_parts()}
            else:
                raise ValueError(f"unknown download {which!r}")
            for name, parts in files.items():
                blob = await ckpt.parts_blob(self.device, parts, crc_trailer=name.endswith(".bin"),
                                             mime="application/json" if name.endswith(".json")
                                             else "application/octet-stream")
                key = f"download:{name}"
                js.mwTrain.store.set(key, blob)
                out.append({"key": key, "name": name, "size": int(blob.size)})
        return out

    def more_steps(self, n):
        """Train a finished (or stopped) run `n` more steps: the same model, optimizer moments
        and data order; the step counter and the loss curve go on from where they are."""
        n = int(n)
        if n < 1:
            raise ValueError(f"train more steps: give a whole number of steps of at least 1, got {n}")
        if self.status not in ("done", "stopped", "error"):
            raise ValueError(f"the run is {self.status}: more steps are for a finished run "
                             "(pause and resume a running one)")
        if not self.train.get("schedule_steps"):
            self.train["schedule_steps"] = self.train["steps"]
        self.train["steps"] = self.step + n
        self.start_background()

    # -- autosave (OPFS) -------------------------------------------------------------------
    async def enable_autosave(self):
        """Write the corpus ids once; later saves write the state. False (with a warning)
        when OPFS is unavailable: training goes on, downloads still work."""
        import zlib
        try:
            ids = self.ids.tobytes()
            await _autosave_store(self.device).begin(ids, zlib.crc32(ids))
            self.autosave_path = OPFS_STATE
            return True
        except Exception as e:
            self.autosave_path = None
            self.warn("autosave is off: this browser's storage (OPFS) is unavailable "
                      f"({_js_message(e)}). Training continues; download the training state "
                      "to keep your progress.")
            return False

    async def autosave(self):
        if not self.autosave_path:
            return
        if getattr(self.device, "lost", None):
            return          # nothing on a lost GPU can be read: the last autosave stands
        self.save_requested = False
        self._saved_at = time.monotonic()
        async with self.lock:
            info = {"step": self.step, "steps": self.train["steps"], "preset": self.preset,
                    "params": param_count(self.cfg), "loss": self.last["loss"] if self.last else None,
                    "saved_at": time.time(), "tokenizer": self.tokenizer.kind,
                    "corpus": self.corpus_info, **self.saved_info_extra()}
            # a new generation, verified (CRC-32) before the manifest names it
            manifest = await _autosave_store(self.device).save(self.state_parts(), info, self.step)
            size = manifest["state"]["bytes"]
        self.emit({"type": "saved", "step": self.step, "where": "browser storage (OPFS)",
                   "bytes": size})

    def saved_info_extra(self):
        """More fields for the autosave's info.json (a fine-tune names its kind and base)."""
        return {"kind": "pretrain", "train": self.train}

    async def _safe_autosave(self):
        try:
            await self.autosave()
        except Exception as e:
            self.autosave_path = None
            self.warn(f"autosave failed ({_js_message(e)}); autosave is now off. Download the "
                      "training state to keep your progress.")

    # -- restore ---------------------------------------------------------------------------
    @classmethod
    def restore_kwargs(cls, args):
        """More keyword arguments for restore() from the page's resume arguments (a
        fine-tune's: the base folder opened again)."""
        return {}

    @classmethod
    async def restore(cls, device, state, texts=None, ids=None, train_overrides=None,
                      progress=None):
        """A session continuing from `state` (a checkpoint.StateFile). The corpus comes as
        `ids` (autosave) or `texts` (re-encoded with the saved tokenizer); a different corpus
        is allowed but starts its data order from the beginning (with a warning)."""
        from py_engine.models.config import MambaConfig
        meta = state.meta
        self = cls(device)
        self.cfg = MambaConfig.from_hf_dict(meta["config"], "training state config")
        self.train = train_config(dict(meta["train"], **(train_overrides or {})))
        saved = meta["train"]
        for k in ("batch", "seq_len", "seed", "accum", "wsla"):
            if self.train[k] != saved.get(k):
                raise ValueError(f"{k.replace('_', ' ')} cannot change when resuming (saved "
                                 f"{saved.get(k)!r}); start a new run to change it")
        self.preset = meta.get("preset")
        self.tokenizer = data_mod.tokenizer_from_json(meta["tokenizer"], "saved tokenizer")
        if ids is None:
            if not texts:
                raise ValueError("resuming needs the corpus this state was trained on: drop the "
                                 "same files (or pick the sample corpus) and resume again")
            ids = data_mod.encode_corpus(texts, self.tokenizer, progress)
        self._set_corpus(ids, meta.get("data", {}).get("corpus"))
        same = self.digest == meta["data"]["digest"]
        if same:
            self.batcher.restore(meta["data"]["position"])
        else:
            self.warn(f"this corpus differs from the one the state was trained on "
                      f"({self.digest[0]} tokens now, {meta['data']['digest'][0]} then): "
                      "training continues on it from its beginning")
        return await self._restore_run(state, await state.load_weights(device, self.cfg))

    async def _restore_run(self, state, weights, load_more=None):
        """The rest of a restore once the corpus is set: build the model on `weights` (they are
        released if that fails), load what the state holds on top (`load_more()`: a fine-tune's
        adapter) and the optimizer moments (the whole session is released if that fails), then
        the step counters; returns the session."""
        try:
            self._build(weights)
        except BaseException:
            for w in weights.values():
                w.release()
            raise
        try:
            if load_more is not None:
                await load_more()
            await state.load_moments(self.device, self.trainer.opt)
        except BaseException:
            self.release()
            raise
        self._restore_progress(state.meta)
        return self

    def _restore_progress(self, meta):
        """Step counters, curve, samples and timing from a state's metadata (the model and
        the optimizer moments are already loaded); paused, or done when no step is left."""
        self.trainer.step_count = int(meta["step"])
        self.trainer.opt.t = int(meta["adam_t"])
        self.trainer.skipped = int(meta.get("skipped", 0))
        self.history = [list(p) for p in meta.get("history", [])]
        self.samples = list(meta.get("samples", []))
        self.tokens_seen = int(meta.get("tokens_seen", 0))
        self.elapsed = float(meta.get("elapsed_s", 0.0))
        if self.history:
            self.last = {"type": "step", "step": self.history[-1][0], "loss": self.history[-1][1],
                         "steps": self.train["steps"]}
        self.status = "paused" if self.step < self.train["steps"] else "done"

    def release(self):
        if self.trainer:
            self.trainer.release()
        if self.model:
            self.model.release()
        self.trainer = self.model = None
        self.status = "empty"


def _autosave_store(device):
    """The checksummed OPFS autosave (py_engine/train/autosave.py) under OPFS_DIR."""
    from py_engine.train.autosave import AutosaveStore, BrowserBackend
    return AutosaveStore(BrowserBackend(device), OPFS_DIR)


def _lr_at(step, t):
    """The one schedule (py_engine/train/adamw.lr_at) with this session's settings. Steps added
    to a finished run (more_steps) train at the schedule's final rate: the cosine keeps the
    length it was started with (schedule_steps), so the rate never jumps back up."""
    total = t.get("schedule_steps") or t["steps"]
    return lr_at(step, t["lr"], t["warmup"], total, t["min_lr_ratio"])


def _nullish(x):
    if x is None:
        return True
    import js
    try:
        from pyodide.ffi import jsnull
        if x is jsnull:
            return True
    except ImportError:
        pass
    return x == js.undefined


def _js_message(e):
    msg = str(e)
    return msg.split("Error: ")[-1] if "Error: " in msg else msg


# --- the page's entry points ----------------------------------------------------------------
current = None


def _need():
    if current is None or current.model is None:
        raise ValueError("no training run yet: choose a corpus and press Start")
    return current


async def read_corpus(key="corpus"):
    """Texts of the Blobs/Files the page put under `key` (binary files are skipped)."""
    import js
    files = js.mwTrain.store.get(key)
    if _nullish(files):
        raise ValueError("no corpus: drop text files or a folder, or pick the sample corpus")
    named = []
    for f in files:
        name = str(getattr(f, "webkitRelativePath", "") or getattr(f, "name", "") or "text")
        named.append((name, (await f.arrayBuffer()).to_bytes()))
    # one policy for the page and the CLI: data.corpus_from_files says what it skipped, why
    return data_mod.corpus_from_files(named)


async def make_tokenizer(spec, texts, emit=None):
    kind = (spec or {}).get("kind", "byte")
    if kind == "byte":
        return data_mod.ByteTokenizer()
    if kind == "json":
        text = spec.get("text")
        if text is None:
            import js
            blob = js.mwTrain.store.get(spec.get("key", "tokenizer"))
            if _nullish(blob):
                raise ValueError("no tokenizer.json chosen: pick one, or use the byte-level "
                                 "tokenizer")
            text = await blob.text()
        return data_mod.tokenizer_from_json(text, spec.get("name", "tokenizer.json"))
    if kind == "bpe":
        vocab = int(spec.get("vocab_size") or 4096)
        if vocab < 257:
            raise ValueError("a BPE vocabulary needs more than 256 tokens (the bytes); choose "
                             "byte-level for 256")
        if emit:
            emit({"type": "prepare", "stage": f"training a {vocab}-token BPE tokenizer",
                  "done": 0, "total": 1})
        return data_mod.train_bpe(texts, vocab)
    raise ValueError(f"unknown tokenizer choice {kind!r}: byte, bpe or json")


async def start(device, args):
    """Page: build a new session from the stored corpus and start training in the
    background. A failure leaves any previous session untouched."""
    global current
    if device is None:
        raise ValueError("no WebGPU device: training needs WebGPU (see the engine status line)")
    await clear_for_a_new_run(current)

    def emit(ev):
        if _in_browser():
            import js
            js.mwTrain.emit(json.dumps(ev))

    texts, info = await read_corpus(args.get("corpus_key", "corpus"))
    if args.get("corpus_label"):
        info["label"] = str(args["corpus_label"])
    tokenizer = await make_tokenizer(args.get("tokenizer"), texts, emit)
    total = sum(len(t) for t in texts)
    last = [0.0]

    def progress(done, total_chars):
        now = time.perf_counter()
        if now - last[0] > 0.25 or done == total_chars:
            last[0] = now
            emit({"type": "prepare", "stage": "tokenizing", "done": done, "total": total_chars})

    emit({"type": "prepare", "stage": "tokenizing", "done": 0, "total": total})
    sess = await PretrainSession.create(device, texts, tokenizer, args.get("model"),
                                        args.get("train"), progress, corpus_info=info)
    if current is not None:
        current.release()
    current = sess
    if args.get("autosave", True) and _in_browser():
        await sess.enable_autosave()
    sess.emit(sess.summary())
    sess.start_background()
    return sess.summary()


def request_save():
    """The page is being hidden or closed: autosave after the step now running."""
    if current is not None and current.status == "running":
        current.save_requested = True
    return {"status": current.status if current is not None else None}


def pause():
    _need().pause()
    return {"status": current.status}


def resume():
    s = _need()
    if s.status in ("pausing",):
        s.status = "running"
        return {"status": s.status}
    s.start_background()
    return {"status": s.status}


def stop():
    _need().stop()
    return {"status": current.status}


def more_steps(n):
    _need().more_steps(n)
    return {"status": current.status, "steps": current.train["steps"]}


async def sniff_corpus(key="corpus"):
    """Page, the moment files are chosen: the corpus policy of Start (data.corpus_from_files)
    applied now, so a binary or non-UTF-8 choice is refused (ValueError) or its bad files
    named, before any training. Returns {files, chars, skipped, skipped_count, notes, names,
    summary} (summary: the one line saying what was skipped, or "")."""
    _, info = await read_corpus(key)
    return dict(info, summary=data_mod.skipped_summary(info))


async def zip_download(device, files, folder):
    """{name: parts} -> {"key", "name", "size"} of one store-only .zip left in the Worker's
    store (the convert page's zip writer, web/js/worker.mjs cvZip): one download, not one per
    file (Chrome asks before a page starts several)."""
    import js
    from pyodide.ffi import to_js
    entries = []
    for name, parts in files.items():
        blob = await ckpt.parts_blob(device, parts, mime="application/json"
                                     if name.endswith(".json") else "application/octet-stream")
        entries.append(to_js([name, blob]))
    blob = await js.mwTrain.zip(to_js(entries), folder)
    key = f"download:{folder}.zip"
    js.mwTrain.store.set(key, blob)
    return {"key": key, "name": f"{folder}.zip", "size": int(blob.size)}


def snapshot():
    if current is None or current.model is None:
        return None
    return current.summary()


async def export(which):
    return await _need().export_blobs(which)


async def sample(prompt=None, n=None):
    return await _need().sample(prompt, n)


async def saved_info():
    """The autosaved run in OPFS ({step, steps, preset, ...}) or None; {"error"} when OPFS is
    unavailable."""
    import js
    try:
        f = await js.mwTrain.opfsFile(OPFS_INFO)
        if _nullish(f):
            return None
        return json.loads(await f.text())
    except Exception as e:
        return {"error": "browser storage (OPFS) is unavailable: " + _js_message(e)}


# How long a resume waits for the previous run's last steps (its final autosave) to end.
SETTLE_SECONDS = 30.0
# How often a resume reads the autosave again when a file changed under it.
UNREADABLE_RETRIES = 3


async def settle_previous(sess, timeout=SETTLE_SECONDS):
    """Wait until `sess`'s background run has ended (at most `timeout` seconds): a run that
    failed -- on a lost GPU device -- still writes its final autosave after it reports the
    error, and a resume reading the autosave meanwhile read files that changed under it
    (Chromium: "NotReadableError: the requested file could not be read"). True when it ended."""
    task = getattr(sess, "task", None) if sess is not None else None
    if task is None or task.done():
        return True
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout)
        return True
    except asyncio.TimeoutError:
        return False
    except Exception:                    # the run's own failure was reported by the run
        return True


async def clear_for_a_new_run(sess):
    """Before a run starts or is resumed in place of `sess` (the current one): refused while
    `sess` is training; else its background run is let finish (settle_previous), so its
    final autosave lands before the new run reads or replaces the autosave."""
    if sess is not None and sess.status in ("running", "pausing", "stopping"):
        raise ValueError("a run is in progress: pause or stop it first")
    await settle_previous(sess)


def _unreadable(e):
    """A browser file read failed because the file changed after it was opened (a write
    swapped it): reading it afresh gets the new bytes."""
    return "NotReadableError" in f"{type(e).__name__} {getattr(e, 'name', '')} {e}"


async def retry_unreadable(read, retries=UNREADABLE_RETRIES, pause=0.5):
    """await read() again (after `pause` seconds) while it fails with a file changed under it,
    at most `retries` more times; any other error, or the last one, is raised."""
    for attempt in range(retries + 1):
        try:
            return await read()
        except Exception as e:
            if attempt == retries or not _unreadable(e):
                raise
            await asyncio.sleep(pause)


async def resume_saved(device, args=None, session_cls=PretrainSession):
    """Rebuild the autosaved run from OPFS (state + corpus ids) and keep training.
    session_cls: the class whose `restore` rebuilds it (a fine-tune's, py_engine/app).
    The previous run's final autosave is waited for first, and a file found changed while it
    is read is read again (retry_unreadable): the manifest names what verifies, so a read
    afresh takes the newest whole generation."""
    global current
    await clear_for_a_new_run(current)
    args = args or {}
    sess, warnings = await retry_unreadable(lambda: _restore_saved(device, args, session_cls))
    if current is not None:
        current.release()
    current = sess
    sess.autosave_path = OPFS_STATE
    for w in warnings:
        sess.warn(w)
    sess.emit(sess.summary())
    if args.get("start", True) and sess.status == "paused":
        sess.start_background()
    return sess.summary()


async def _restore_saved(device, args, session_cls):
    """(session, warnings) rebuilt from the autosave as it is stored now."""
    import js
    found = await _autosave_store(device).load()    # verified; a damaged one is named
    state_path, entry, tokens_path, warnings = found or (OPFS_STATE, None, OPFS_TOKENS, [])
    sf = await js.mwTrain.opfsFile(state_path)
    tf = await js.mwTrain.opfsFile(tokens_path)
    if _nullish(sf) or _nullish(tf):
        raise ValueError("no saved run in this browser's storage: start a new one")
    state = await ckpt.StateFile.from_blob(sf, f"the autosaved training state ({state_path})")
    ids = array("I")
    ids.frombytes((await tf.arrayBuffer()).to_bytes())
    sess = await session_cls.restore(device, state, ids=ids,
                                     train_overrides=args.get("train_overrides"),
                                     **session_cls.restore_kwargs(args))
    return sess, warnings


async def load_state(device, args, session_cls=PretrainSession):
    """Resume from a downloaded training state the page put under "state", with the corpus
    under "corpus"."""
    global current
    import js
    await clear_for_a_new_run(current)
    blob = js.mwTrain.store.get(args.get("state_key", "state"))
    if _nullish(blob):
        raise ValueError("no training-state file chosen")
    state = await ckpt.StateFile.from_blob(blob, str(getattr(blob, "name", "training state")))
    texts, _ = await read_corpus(args.get("corpus_key", "corpus"))
    sess = await session_cls.restore(device, state, texts=texts,
                                     train_overrides=args.get("train_overrides"),
                                     **session_cls.restore_kwargs(args))
    if current is not None:
        current.release()
    current = sess
    if args.get("autosave", True):
        await sess.enable_autosave()
    sess.emit(sess.summary())
    if args.get("start", True) and sess.status == "paused":
        sess.start_background()
    return sess.summary()


async def discard_saved():
    import js
    await js.mwTrain.opfsRemove(OPFS_DIR)
    return True
