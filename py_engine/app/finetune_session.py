"""Fine-tuning on the train page: a PretrainSession (py_engine/train/session.py) whose model
is a pretrained checkpoint — a served model (/weights/<name>/) or a folder from this computer —
instead of a fresh one. Everything else is the session's: start / pause / resume / stop / more
steps, the live loss curve, samples, autosave to OPFS and resume after a reload.

Modes: "lora" (default: a PEFT-format adapter trains, the base is frozen; py_engine/train/
lora.py), "full" (every weight), "wsla" (the selective B/C rows only).
The base's weight format ("weights": f32 default, f16 / bf16 / q8 / q4) is how it sits on the
GPU: a LoRA run keeps a narrow base frozen as it is (q4: QLoRA), as `mambaweb finetune
--weights` does; full and WSLA train base weights, so they need f32 and refuse the rest.
LoRA's targets are the model's linear layers by name (lora_settings; linear_modules lists them).
What it adds to the session:
  - held-out loss: the last `eval_frac` of the corpus tokens (split as py_engine/app/finetune
    splits them; at most EVAL_ROWS windows, spread over the tail, so a software GPU keeps up),
    scored before step 1, with every sample and at the end: {"type": "eval", "step",
    "eval_loss", "eval_tokens"}; summary()["evals"] holds [[step, loss]].
  - downloads (export_blobs): "adapter" (adapter_config.json + adapter_model.safetensors, one
    .zip that peft.PeftModel.from_pretrained loads once unzipped), "merged" (base + adapter as
    an HF folder .zip; the base is not changed), "hf" (full / WSLA: the trained model .zip),
    "state" (resume later).
  - the training state holds what trains: the adapter's A/B (PEFT names, B's GPU row pieces as
    `#piece`) or every weight, their AdamW moments, and meta["finetune"] (mode, LoRA settings,
    base {name, url}, the held-out cut). A LoRA run's base is reloaded from its URL on resume;
    a folder from this computer comes back from the person (the page reads its stored
    directory handle again, or asks for the folder: restore(base=...)) and must be the same
    base: base["fingerprint"] (py_engine/app/base_fingerprint.py: config.json, each weight
    file's size, header and sampled bytes) is taken at Start and checked on resume; another
    folder is refused in one sentence naming what differs, and the autosave stays.

Pure stdlib (+ js in the browser): imported inside Pyodide.
"""
import json

from py_engine.app import base_fingerprint as BF
from py_engine.app import finetune as FT
from py_engine.app import finetune_data as FD
from py_engine.train import checkpoint as ckpt
from py_engine.train import data as data_mod
from py_engine.train import session as S
from py_engine.train.lora import (DEFAULT_TARGETS, LoraAdapter, adapter_param_count,
                                   linear_modules)
from py_engine.train.session import PretrainSession, memory_estimate, train_config

MODES = ("lora", "full", "wsla")
DEFAULT_LR = {"lora": 1e-3, "full": 1e-4, "wsla": 1e-3}
EVAL_ROWS = 8           # held-out windows scored each time (spread over the held-out tail)
DEFAULT_LORA = {"r": 8, "alpha": 16.0, "rslora": False, "targets": list(DEFAULT_TARGETS)}


def lora_settings(spec):
    """{"r", "alpha", "rslora", "targets"} from the page's fields, checked."""
    out = dict(DEFAULT_LORA)
    for k, v in (spec or {}).items():
        if k in out and v not in (None, ""):
            out[k] = v
    try:
        out["r"], out["alpha"] = int(out["r"]), float(out["alpha"])
    except (TypeError, ValueError):
        raise ValueError(f"LoRA rank r must be a whole number and alpha a number, got r "
                         f"{out['r']!r}, alpha {out['alpha']!r}") from None
    if out["r"] < 1 or out["alpha"] <= 0:
        raise ValueError(f"LoRA rank r must be at least 1 and alpha above 0, got r {out['r']}, "
                         f"alpha {out['alpha']}")
    out["rslora"] = bool(out["rslora"])
    if isinstance(out["targets"], str) or not out["targets"]:
        raise ValueError("LoRA needs at least one target module: tick one of the model's "
                         "linear layers (in_proj, for example)")
    out["targets"] = [str(t) for t in out["targets"]]
    return out


def check_weights(mode, weights):
    """The base's weight format for `mode`: any of the formats for LoRA, f32 for the modes
    that train base weights (the sentence `mambaweb finetune --weights` gives)."""
    from py_engine.ops.weight_format import check_format
    check_format(weights)
    if weights != "f32" and mode != "lora":
        what = "a full fine-tune trains every weight" if mode == "full" else \
            "WSLA trains the base's B/C rows"
        raise ValueError(f"a {weights} base stays frozen and narrow, and {what}: choose LoRA "
                         f"(QLoRA on {weights}) or f32 weights")
    return weights


def _check_mode(mode):
    if mode not in MODES:
        raise ValueError(f"fine-tune mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def _source(base):
    """A byte source for base {"url"} (served) or {"files": {path: registry id}} (a folder
    the person chose; web/js/worker.mjs convertPutFiles) or {"path"} (a folder on this
    machine: the native backend)."""
    from py_engine.io.byte_sources import DroppedFileSource, HttpSource, LocalSource
    if base.get("files"):
        return DroppedFileSource(base["files"], base.get("name") or "local model")
    if base.get("path"):
        return LocalSource(base["path"])
    if base.get("url"):
        return HttpSource(base["url"], base.get("file_list") or None)
    raise ValueError("no model to fine-tune: choose a served model or open a model folder")


async def _base_config(source):
    from py_engine.models.config import MambaConfig
    raw = await source.read("config.json")
    try:
        return MambaConfig.from_hf_dict(json.loads(raw.decode("utf-8")), source.where("config.json"))
    except ValueError as e:
        raise ValueError(f"{source.where('config.json')}: {e}") from None


async def _base_tokenizer(source, vocab_size):
    """The model's tokenizer.json, or one id per UTF-8 byte for a 256-id vocabulary."""
    if await source.exists("tokenizer.json"):
        text = (await source.read("tokenizer.json")).decode("utf-8")
        return data_mod.tokenizer_from_json(text, source.where("tokenizer.json"))
    if vocab_size >= 256:
        return data_mod.ByteTokenizer()
    raise ValueError(f"{source.where('tokenizer.json')}: missing, and the vocabulary has "
                     f"{vocab_size} ids: fine-tuning on text needs the model's tokenizer.json")


def _spread(rows, n):
    """At most n of `rows`, evenly spaced (the whole held-out tail is represented)."""
    if len(rows) <= n:
        return list(rows)
    return [rows[(i * len(rows)) // n] for i in range(n)]


def base_bytes(cfg, weights="f32"):
    """(GPU bytes of the frozen base held as `weights`, bytes of the largest f32 copy a
    training GEMM dequantizes at a time: 0 for f32) — the loader's narrowing rule
    (py_engine/io/weight_formats.narrowable) applied to every GPU piece."""
    from py_engine.gpu.tensor import storage_bytes
    from py_engine.io import hf_names
    from py_engine.io.gpu_layout import pieces
    from py_engine.io.weight_formats import narrowable
    total, temp = 0, 0
    for n, s in hf_names.expected_tensors(cfg).items():
        for piece, _, _, shape in pieces(cfg, n, s):
            if narrowable(cfg, piece, shape, weights):
                total += storage_bytes(shape, weights)
                temp = max(temp, 4 * _numel(shape))
            else:
                total += 4 * _numel(shape)
    return total, temp


def estimate(cfg, t, lora, weights="f32"):
    """GPU bytes to train `cfg` each way (what the page shows: LoRA's saving). LoRA keeps the
    base as `weights` (full and WSLA need f32); "base_bytes" is what the LoRA base holds."""
    from py_engine.io import hf_names
    from py_engine.io.gpu_layout import pieces
    from py_engine.train.init import param_count
    from py_engine.train.trainer import _wsla_filter
    P = param_count(cfg)
    act = memory_estimate(cfg, t) // 4 - 4 * P          # activations, floats
    keep = _wsla_filter(cfg)
    wsla = 0     # WSLA names GPU pieces (and rows of them), not HF tensors: count those
    for n, s in hf_names.expected_tensors(cfg).items():
        for piece, _, _, shape in pieces(cfg, n, s):
            if keep(piece):
                rows = keep.rows(piece)
                wsla += _numel(shape) if rows is None else (rows[1] - rows[0]) * _numel(shape[1:])
    ad = adapter_param_count(cfg, lora["r"], lora["targets"])
    base, temp = base_bytes(cfg, weights)
    # weights + (gradients + 2 AdamW moments) of what trains + activations, 4 bytes each; a
    # narrow LoRA base: its own bytes + one dequantized f32 weight at a time
    return {"params": P, "trained": {"full": P, "wsla": wsla, "lora": ad},
            "weights": weights, "base_bytes": base,
            "memory_bytes": {"full": 4 * (4 * P + act), "wsla": 4 * (P + 3 * wsla + act),
                             "lora": base + temp + 4 * (4 * ad + act)}}


def _numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


async def describe(base, spec):
    """Before Start: the base model's size, its linear layers (LoRA's possible targets, with
    the defaults marked) and what each mode needs with the base held as spec["weights"].
    spec: {"train", "lora", "weights", "mode"}; a mode that cannot take that format is refused
    in one sentence, as "problem" (check_weights; None when it can)."""
    from py_engine.ops.weight_format import check_format
    source = _source(base)
    cfg = await _base_config(source)
    t = train_config(spec.get("train"))
    weights = check_format(spec.get("weights") or "f32")
    modules = [{"name": n, "layers": k, "default": d} for n, k, d in linear_modules(cfg)]
    lora = dict(spec.get("lora") or {})
    if lora.get("targets") is None:    # boxes untouched: the defaults, as a Start would use
        lora.pop("targets", None)
    problem = None
    try:
        check_weights(spec.get("mode") or "lora", weights)
        settings = lora_settings(lora)
    except ValueError as e:          # said on the page; the estimate then uses the defaults
        problem = str(e)
        settings = lora_settings(None)
    return dict(estimate(cfg, t, settings, weights), model_type=cfg.model_type,
                layers=cfg.num_hidden_layers, d_model=cfg.hidden_size,
                vocab_size=cfg.vocab_size, linear_modules=modules, problem=problem)


class FinetuneSession(PretrainSession):
    def __init__(self, device):
        super().__init__(device)
        self.mode = "lora"
        self.lora = dict(DEFAULT_LORA)
        self.base = {}            # {"name", "url"} (url None for a folder from this computer)
        self.adapter = None
        self.weights = "f32"      # how the base sits on the GPU (narrow: LoRA only)
        self.eval_rows = []
        self.evals = []           # [[step, held-out loss]]
        self.cut = 0              # tokens (records: rows) before the held-out tail
        self.eval_frac = 0.1
        # the data (py_engine/app/finetune_data.py): {"kind": "text"} or the records' kind,
        # counts and, for chat records, "chat_config" (the template and special tokens used)
        self.data = {"kind": "text"}

    def _configure(self, spec):
        self.mode = _check_mode(spec.get("mode") or "lora")
        self.lora = lora_settings(spec.get("lora"))
        self.weights = check_weights(self.mode, spec.get("weights") or "f32")
        t = dict(spec.get("train") or {})
        if t.get("lr") in (None, ""):
            t["lr"] = DEFAULT_LR[self.mode]
        if self.mode == "lora" and t.get("weight_decay") in (None, ""):
            t["weight_decay"] = 0.0          # as PEFT recipes (and `mambaweb finetune`) do
        t["wsla"] = self.mode == "wsla"
        self.train = train_config(t)
        self.eval_frac = float(spec.get("eval_frac") or 0.1)
        if not 0 < self.eval_frac < 0.9:
            raise ValueError(f"held-out share must be between 0 and 0.9, got {self.eval_frac}")

    def _split(self, ids):
        """Train on the head, hold out the tail (py_engine/app/finetune.split_heldout)."""
        if max(ids, default=0) >= self.cfg.vocab_size:
            raise ValueError(f"the tokenizer gives ids up to {max(ids)}, the model's vocabulary "
                             f"has {self.cfg.vocab_size}: use the model's own tokenizer.json")
        train_ids, rows = FT.split_heldout(ids, self.train["seq_len"], self.eval_frac)
        self.cut = len(train_ids)
        self.eval_rows = _spread(rows, EVAL_ROWS)
        return train_ids

    def _set_split_corpus(self, ids, corpus_info):
        if self.data["kind"] != "text":
            return self._set_split_rows(ids, corpus_info)
        self._set_corpus(self._split(ids), corpus_info)
        # autosave writes self.ids: every token, the held-out tail after `cut`
        self.ids = ids

    def _set_split_rows(self, packed, corpus_info):
        """Records: train on the first rows, hold out the last eval_frac of them (at least
        one). `packed`: finetune_data.pack's stream, which the autosave keeps as is."""
        all_rows = FD.unpack(packed, self.train["seq_len"])
        top = max((max(r[0]) for r in all_rows), default=0)
        if top >= self.cfg.vocab_size:
            raise ValueError(f"the tokenizer gives ids up to {top}, the model's vocabulary "
                             f"has {self.cfg.vocab_size}: use the model's own tokenizer.json")
        n_eval = min(len(all_rows) - 1, max(1, int(len(all_rows) * self.eval_frac)))
        train_rows = all_rows[:len(all_rows) - n_eval]
        self.cut = len(train_rows)
        self.eval_rows = _spread(all_rows[self.cut:], EVAL_ROWS)
        self.ids = packed
        self.batcher = FD.RowBatcher(train_rows, self.train["batch"], self.train["seed"])
        self.digest = data_mod.ids_digest(packed)
        self.data = dict(self.data, train_records=len(train_rows), heldout_records=n_eval)
        self.corpus_info = dict(corpus_info or {}, windows=len(train_rows),
                                tokens=sum(len(r[0]) for r in all_rows),
                                data={k: v for k, v in self.data.items() if k != "chat_config"})

    def _encode(self, texts, names=(), progress=None, chat=None, parsed=None):
        """The corpus as the run keeps it: a token stream (plain text) or packed rows
        (records); sets self.data. chat: the chat settings chat records need."""
        kind, records = parsed or FD.parse(texts, names)
        if kind == "text":
            self.data = {"kind": "text", **FD.describe("text")}
            return data_mod.encode_corpus(texts, self.tokenizer, progress)
        if FD.needs_template(kind) and chat is None:
            chat = FD.chat_config(None, self.base.get("name") or "this model")
        row_list = FD.rows(kind, records, self.tokenizer, self.train["seq_len"], chat)
        self.data = dict(FD.describe(kind, records, row_list), chat_config=chat)
        return FD.pack(row_list)

    def _next_micro(self):
        if self.data["kind"] == "text":
            return super()._next_micro()
        return self.batcher.next_pair()

    def _prompt_ids(self, prompt=None):
        """Records: a sample continues the first held-out record's prompt (what the
        fine-tune should answer), unless the person gave a sample prompt."""
        if self.data["kind"] == "text" or prompt or self.train.get("sample_prompt"):
            return super()._prompt_ids(prompt)
        return FD.prompt_of(self.eval_rows[0])

    @classmethod
    async def create(cls, device, base, texts, corpus_info, spec, progress=None):
        from py_engine.io.hf_loader import load_from_source
        self = cls(device)
        self._configure(spec)
        source = _source(base)
        self.base = {"name": base.get("name") or "model", "url": base.get("url")}
        self.cfg = await _base_config(source)
        if not self.base["url"]:        # a folder from this computer: what a resume checks
            self.base["fingerprint"] = await BF.fingerprint(source)
        self.tokenizer = await _base_tokenizer(source, self.cfg.vocab_size)
        problems = S.fit_problems(device.limits, self.cfg, self.train)
        if problems:
            raise ValueError("this model does not fit this GPU: " + "; ".join(problems))
        parsed = FD.parse(texts, (corpus_info or {}).get("names") or ())
        chat = None
        if FD.needs_template(parsed[0]):     # chat records: the base's template renders them
            chat = FD.chat_config(await FT.read_tokenizer_config(source), self.base["name"])
        ids = self._encode(texts, progress=progress, chat=chat, parsed=parsed)
        self._set_split_corpus(ids, corpus_info)
        for line in [data_mod.skipped_summary(corpus_info or {})] + list(
                (corpus_info or {}).get("notes", [])):
            if line:
                self.warn(line)
        cfg, weights = await load_from_source(device, source, None, self.weights)
        self.cfg = cfg
        self._build(weights)
        return self

    def _build(self, weights):
        from py_engine.models.mamba import MambaModel
        from py_engine.train.trainer import Trainer
        t = self.train
        self.model = MambaModel(self.device, self.cfg, weights)
        try:
            if self.mode == "lora":
                self.adapter = LoraAdapter(self.model, r=self.lora["r"], alpha=self.lora["alpha"],
                                           targets=self.lora["targets"], rslora=self.lora["rslora"],
                                           seed=t["seed"]).attach()
            self.trainer = Trainer(self.model, lr=t["lr"], betas=tuple(t["betas"]), eps=t["eps"],
                                   weight_decay=t["weight_decay"], max_grad_norm=t["grad_clip"],
                                   warmup=t["warmup"], total_steps=t["steps"], wsla=t["wsla"],
                                   adapter=self.adapter)
        except BaseException:
            self.release()
            raise
        self.status = "ready"

    def summary(self):
        out = super().summary()
        out.update(kind="finetune", mode=self.mode, lora=self.lora, base=self.base,
                   weights=self.weights, evals=self.evals, eval_frac=self.eval_frac,
                   data={k: v for k, v in self.data.items() if k != "chat_config"},
                   estimate=estimate(self.cfg, self.train, self.lora, self.weights))
        return out

    def saved_info_extra(self):
        return {"kind": "finetune", "train": self.train, "mode": self.mode, "base": self.base,
                "lora": self.lora, "weights": self.weights}

    # -- held-out loss ---------------------------------------------------------------------
    async def evaluate_heldout(self):
        async with self.lock:
            r = await FT.heldout_loss(self.model, self.eval_rows)
        loss = r["eval_loss"]
        if self.evals and self.evals[-1][0] == self.step:
            self.evals.pop()
        self.evals.append([self.step, loss])
        ev = {"type": "eval", "step": self.step, "eval_loss": loss,
              "eval_tokens": r["eval_tokens"]}
        self.emit(ev)
        return ev

    async def sample(self, prompt=None, n=None):
        """The held-out loss travels with every sample (every sample_every steps and at the
        end of the run)."""
        await self.evaluate_heldout()
        return await super().sample(prompt, n)

    # -- checkpoints -----------------------------------------------------------------------
    def state_meta(self):
        meta = super().state_meta()
        meta["finetune"] = {"mode": self.mode, "lora": self.lora, "base": self.base,
                            "weights": self.weights, "cut": self.cut, "eval_frac": self.eval_frac, "evals": self.evals,
                            "data": self.data}
        return meta

    def state_parts(self):
        if self.adapter is None:
            return ckpt.state_parts(self.trainer, self.state_meta())
        tensors = {n: (t.shape, [("gpu", t)]) for n, t in self.adapter.params().items()}
        opt = self.trainer.opt
        for piece, m in opt.m.items():
            tensors[ckpt.M_PREFIX + piece] = (m.shape, [("gpu", m)])
            tensors[ckpt.V_PREFIX + piece] = (m.shape, [("gpu", opt.v[piece])])
        meta = dict(self.state_meta(), version=ckpt.STATE_VERSION)
        return ckpt.safetensors_parts(tensors, {"format": "pt", ckpt.STATE_KEY: json.dumps(meta)})

    async def export_blobs(self, which):
        """"adapter" / "merged" / "hf" as one .zip each; "state" as the session saves it."""
        if which == "state":
            return await super().export_blobs(which)
        async with self.lock:
            if which == "adapter":
                if self.adapter is None:
                    raise ValueError(f"this run trains {'every weight' if self.mode == 'full' else 'the B/C rows'}, "
                                     "not an adapter: download the model instead")
                files = {n: [("bytes", b)] for n, b in
                         (await self.adapter.to_files(self.base.get("name"))).items()}
                return [await S.zip_download(self.device, files, "lora-adapter")]
            if which not in ("merged", "hf"):
                raise ValueError(f"unknown download {which!r}")
            if self.weights != "f32":
                raise ValueError(f"merging needs the f32 base, and this run holds it as "
                                 f"{self.weights}: download the adapter and merge it onto the "
                                 "f32 model with PEFT (merge_and_unload)")
            model, copies = self.model, {}
            if self.adapter is not None:
                copies = self.adapter.merged_copies()
                model = _WeightsView(self.model, copies)
            try:
                files = ckpt.hf_files(model, self.tokenizer)
                return [await S.zip_download(self.device, files,
                                             "merged-model" if copies else "mambaweb-model")]
            finally:
                for t in copies.values():
                    t.release()

    # -- restore ---------------------------------------------------------------------------
    @classmethod
    def restore_kwargs(cls, args):
        """The page's resume arguments restore() takes: the base folder it opened again."""
        return {"base": args.get("base") or None}

    @classmethod
    async def restore(cls, device, state, texts=None, ids=None, train_overrides=None,
                      progress=None, base=None):
        """A fine-tune continuing from `state` (checkpoint.StateFile with meta["finetune"]).
        base: {"files", "name"} of a folder from this computer, opened again, for a LoRA run
        whose base was such a folder (checked to be the same base before anything loads)."""
        from py_engine.io.hf_loader import load_from_source
        from py_engine.models.config import MambaConfig
        meta = state.meta
        ft = meta.get("finetune")
        if not ft:
            raise ValueError("this training state is a run from scratch, not a fine-tune: "
                             "choose “From scratch” to resume it")
        self = cls(device)
        self.mode, self.lora, self.base = ft["mode"], ft["lora"], ft["base"]
        self.weights = check_weights(self.mode, ft.get("weights") or "f32")
        self.eval_frac = float(ft.get("eval_frac", 0.1))
        self.evals = [list(p) for p in ft.get("evals", [])]
        self.data = ft.get("data") or {"kind": "text"}
        self.train = train_config(dict(meta["train"], **(train_overrides or {})))
        self.cfg = MambaConfig.from_hf_dict(meta["config"], "training state config")
        self.preset = meta.get("preset")
        self.tokenizer = data_mod.tokenizer_from_json(meta["tokenizer"], "saved tokenizer")
        if ids is None:
            if not texts:
                raise ValueError("resuming needs the corpus this state was trained on: drop the "
                                 "same files and resume again")
            ids = self._encode(texts, progress=progress, chat=self.data.get("chat_config"))
        self._set_split_corpus(ids, meta.get("data", {}).get("corpus"))
        if self.digest == meta["data"]["digest"]:
            self.batcher.restore(meta["data"]["position"])
        else:
            self.warn("this corpus differs from the one the run was trained on: training "
                      "continues on it from its beginning")
        if self.mode == "lora":
            if self.base.get("url"):
                source = _source(self.base)
            else:
                source = await _same_base(self.base, base, meta["config"])
            _, weights = await load_from_source(device, source, None, self.weights)
        else:
            weights = await state.load_weights(device, self.cfg)

        async def load_adapter():
            if self.adapter is not None:
                for name, t in self.adapter.params().items():
                    await state.write_tensor(device, name, (0, t.shape[0]), t)
        return await self._restore_run(state, weights, load_adapter)

    def release(self):
        if self.trainer:
            self.trainer.release()
        if self.adapter is not None:
            self.adapter.release()
        if self.model:
            self.model.release()
        self.trainer = self.model = self.adapter = None
        self.status = "empty"


async def _same_base(saved, base, saved_config):
    """The byte source of `base` (the folder opened again) once it is known to be the saved
    run's base `saved`; ValueError in one sentence otherwise (nothing is loaded, nothing
    saved is touched)."""
    from py_engine.models.config import MambaConfig
    if not base or not (base.get("files") or base.get("path")):
        raise ValueError(f"this LoRA run's base is the folder {saved.get('name')} from this "
                         "computer: open that folder again to resume it; the saved run is "
                         "kept")
    source = _source(base)
    name = base.get("name") or "chosen"
    found = await BF.fingerprint(source)
    if saved.get("fingerprint"):
        why = BF.difference(saved["fingerprint"], found)
    else:       # a state saved before fingerprints: its config is what can be compared
        try:
            cfg = MambaConfig.from_hf_dict(found["config"], source.where("config.json"))
        except ValueError as e:
            raise ValueError(f"{source.where('config.json')}: {e}") from None
        why = BF.config_difference(saved_config, cfg.to_hf_dict())
    if why:
        raise ValueError(BF.refusal(saved, name, why))
    return source


class _WeightsView:
    """A model's config with some weight pieces replaced (merged copies) for export."""

    def __init__(self, model, replaced):
        self.cfg = model.cfg
        self.weights = dict(model.weights, **replaced)


# --- the page's entry points (pause / resume / stop / more steps: py_engine.train.session) --

async def start(device, args):
    """Page: fine-tune args["base"] on the stored corpus; args: {"base", "mode", "lora",
    "train", "eval_frac", "corpus_label"}. A failure leaves any previous run untouched."""
    import time
    if device is None:
        raise ValueError("no WebGPU device: training needs WebGPU (see the engine status line)")
    cur = S.current
    await S.clear_for_a_new_run(cur)
    texts, info = await S.read_corpus(args.get("corpus_key", "corpus"))
    if args.get("corpus_label"):
        info["label"] = str(args["corpus_label"])
    last = [0.0]

    def progress(done, total):
        now = time.perf_counter()
        if S._in_browser() and (now - last[0] > 0.25 or done == total):
            import js
            last[0] = now
            js.mwTrain.emit(json.dumps({"type": "prepare", "stage": "tokenizing", "done": done,
                                        "total": total}))

    sess = await FinetuneSession.create(device, args.get("base") or {}, texts, info, args,
                                        progress)
    try:
        await sess.evaluate_heldout()           # the loss before any step: did it help?
    except BaseException:
        sess.release()
        raise
    if cur is not None:
        cur.release()
    S.current = sess
    if args.get("autosave", True) and S._in_browser():
        await sess.enable_autosave()    # a folder's run resumes once the folder is back
    sess.emit(sess.summary())
    sess.start_background()
    return sess.summary()


async def resume_saved(device, args=None):
    return await S.resume_saved(device, args, session_cls=FinetuneSession)


async def load_state(device, args):
    return await S.load_state(device, args, session_cls=FinetuneSession)


async def sniff_data(args):
    """Page, when data is chosen for a fine-tune (or the base changes): which kind it is and
    how many records (finetune_data.describe), before any training; chat records for a base
    without a chat template are refused in one sentence. args: {"base"?, "corpus_key"?}."""
    texts, info = await S.read_corpus(args.get("corpus_key", "corpus"))
    kind, records = FD.parse(texts, info.get("names") or ())
    base = args.get("base")
    if FD.needs_template(kind) and base:
        FD.chat_config(await FT.read_tokenizer_config(_source(base)),
                       base.get("name") or "this model")
    return FD.describe(kind, records)
