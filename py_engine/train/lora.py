"""LoRA adapters on a loaded model, in PEFT's format (`adapter_config.json` +
`adapter_model.safetensors`), trained in the tab with the base frozen.

For each targeted linear weight W [out, in] (default DEFAULT_TARGETS: Mamba in_proj, attention
q/k/v/o, MLP up/down, plus what a layer kind's `lora_defaults` adds for its own layers: Mamba-3's
out_proj; other out_proj on request):
    y = x W^T + b + s (x A^T) B^T,   A [r, in], B [out, r],   s = alpha / r  (rsLoRA: alpha/sqrt r)
PEFT's init: A ~ kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(in)), B = 0 (the adapter starts as a
no-op). W may be split into GPU row pieces (a fused in_proj): B is held as the same row pieces,
each registered with its W piece (py_engine/ops/lora.py), A shared. PEFT names:
    base_model.model.<module>.lora_A.weight [r, in],  ...lora_B.weight [out, r]
with <module> the transformers module path (backbone.layers.{i}.mixer.in_proj; NemotronH's
modules are `model.` in memory, which is what PEFT saves) or mamba_ssm's (a hybrid's Block N:
backbone.layers.N.mixer.in_proj, backbone.layers.N.mlp.fc1; py_engine/io/layouts.py).
Targets match as PEFT's target_modules do (a module's name, or a dotted suffix of its path such
as `layers.1.mixer.out_proj`), plus the attention / MLP names of other families (ALIASES): in a
mamba_ssm hybrid q_proj, k_proj, v_proj select attention's fused q|k|v `in_proj` (one module, so
one adapter for all three: PEFT cannot adapt a row block alone), o_proj its `out_proj`;
up_proj / gate_proj a gated MLP's fc1 ([up | gate]), down_proj its fc2. The saved
adapter_config.json lists module names where they select exactly the adapted modules in PEFT,
else their full paths (peft_targets).
Adapters are small (r x (in + out) floats per module), so their bytes pass through Python when
saved and loaded; the base weights never do.
"""
import json
import math
import struct

from py_engine.gpu.tensor import Tensor
from py_engine.io import gpu_layout, hf_names
from py_engine.ops.lora import Adapted

PEFT_PREFIX = "base_model.model."
# Defaults that stock PEFT loads: it refuses `out_proj` (and conv1d) on Mamba-type models
# because its fused CUDA kernels read out_proj.weight directly and would skip the adapter. The
# engine adapts out_proj exactly when asked (targets=(..., "out_proj")); such adapters load in
# PEFT on transformers' torch path once that check is lifted (tests/browser/test_lora.py).
# A layer kind may add its own defaults (`lora_defaults`): Mamba-3 (mamba_ssm's Mamba3, no
# transformers class, so no refusal; its forward calls out_proj as a module) adapts in_proj and
# out_proj (tests/unit/test_mamba3_lora_native.py).
DEFAULT_TARGETS = ("in_proj", "q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj",
                   "fc1", "fc2")
# layer kind -> {module name: the other families' names that select it} (see above)
ALIASES = {"attention": {"in_proj": ("q_proj", "k_proj", "v_proj"), "out_proj": ("o_proj",)},
           "gated_mlp": {"fc1": ("up_proj", "gate_proj"), "fc2": ("down_proj",)}}


def _module_path(cfg, weight_name):
    """Engine weight name -> the module path PEFT saves (without .weight): the checkpoint's
    name (mamba_ssm Blocks), NemotronH's `model.`."""
    from py_engine.io.layouts import external_name
    path = external_name(cfg.model_type, weight_name, cfg)[:-len(".weight")]
    if cfg.model_type == "nemotron_h" and path.startswith("backbone."):
        path = "model." + path[len("backbone."):]
    return path


def linear_weights(cfg):
    """[(engine weight name, PEFT module path, layer kind, (out, in))] of every layer's linear
    weights, in model order."""
    out = []
    for name, shape in hf_names.expected_tensors(cfg).items():
        i, rel = hf_names.split_layer_name(name)
        if rel is None or not rel.endswith(".weight") or len(shape) != 2:
            continue
        out.append((name, _module_path(cfg, name), cfg.layers[i], tuple(shape)))
    return out


def _selected(path, kind, targets):
    """PEFT's rule (the module's path is a target or ends with "." + target), or an alias;
    with the default targets, also the modules the layer kind adapts by default."""
    leaf = path.rsplit(".", 1)[-1]
    aliases = ALIASES.get(kind, {}).get(leaf, ())
    if tuple(targets) == DEFAULT_TARGETS and leaf in _kind_defaults(kind):
        return True
    return any(path == t or path.endswith("." + t) or t in aliases for t in targets)


def _kind_defaults(kind):
    """Module names a layer kind adapts by default beyond DEFAULT_TARGETS (its
    `lora_defaults`, py_engine/nn/registry.py)."""
    from py_engine.nn import registry
    return tuple(getattr(registry.get(kind), "lora_defaults", ()))


def target_modules(cfg, targets=DEFAULT_TARGETS):
    """[(engine weight name, PEFT module path, (out, in))] of the linear layers `targets`
    names; a ValueError naming what the model has when nothing matches."""
    if isinstance(targets, str):
        targets = (targets,)
    every = linear_weights(cfg)
    out = [(name, path, shape) for name, path, kind, shape in every
           if _selected(path, kind, targets)]
    if not out:
        raise ValueError(f"no linear layer matches the LoRA targets {list(targets)}; "
                         "this model has e.g. "
                         + ", ".join(sorted({p.rsplit('.', 1)[-1] for _, p, _, _ in every})[:8]))
    return out


def peft_targets(cfg, paths):
    """adapter_config.json's target_modules for the adapted module `paths`: a module name
    where every module of that name is adapted (PEFT then picks exactly those), else the
    adapted ones' full paths (a mamba_ssm hybrid's attention out_proj without the Mamba
    mixers' out_proj)."""
    adapted = set(paths)
    by_leaf = {}
    for _, path, _, _ in linear_weights(cfg):
        by_leaf.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    out = set()
    for leaf in {p.rsplit(".", 1)[-1] for p in adapted}:
        same = by_leaf[leaf]
        out.update([leaf] if set(same) <= adapted else [p for p in same if p in adapted])
    return sorted(out)


def linear_modules(cfg):
    """[(module name, how many modules have it, whether DEFAULT_TARGETS adapts all of them)]
    of every linear layer LoRA can adapt in `cfg` (the leaf names of linear_weights' PEFT
    paths: Mamba in_proj/x_proj/dt_proj/out_proj, attention q/k/v/o_proj, MLP up/down_proj or
    fc1/fc2), in model order: the train page's target choice."""
    count = {}
    for _, path, _, _ in linear_weights(cfg):
        leaf = path.rsplit(".", 1)[-1]
        count[leaf] = count.get(leaf, 0) + 1
    by_default = {}
    for _, path, _ in target_modules(cfg, DEFAULT_TARGETS):
        leaf = path.rsplit(".", 1)[-1]
        by_default[leaf] = by_default.get(leaf, 0) + 1
    return [(leaf, n, by_default.get(leaf) == n) for leaf, n in count.items()]


def adapter_param_count(cfg, r, targets=DEFAULT_TARGETS):
    """Floats an adapter of rank r holds: r x (in + out) per adapted module (A and B)."""
    return sum(r * (i + o) for _, _, (o, i) in target_modules(cfg, targets))


class LoraAdapter:
    def __init__(self, model, r=8, alpha=16, targets=DEFAULT_TARGETS, rslora=False, seed=0):
        if r < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {r}")
        self.model, self.device, self.cfg = model, model.device, model.cfg
        self.r, self.alpha, self.rslora = int(r), float(alpha), bool(rslora)
        self.scale = self.alpha / (math.sqrt(self.r) if self.rslora else self.r)
        self.targets = tuple(targets)
        self.A, self.B = {}, {}            # module path -> Tensor A / [(piece, r0, r1, Tensor)]
        self.shapes = {}                   # module path -> (out, in)
        for name, path, shape in target_modules(self.cfg, self.targets):
            out_f, in_f = shape
            self.shapes[path] = (out_f, in_f)
            self.A[path] = Tensor(self.device, (self.r, in_f))
            self.B[path] = [(piece, r0, r1, Tensor(self.device, (r1 - r0, self.r)))
                            for piece, r0, r1, _ in gpu_layout.pieces(self.cfg, name, shape)]
        self._init(seed)

    def _init(self, seed):
        from py_engine.ops.elementwise import fill
        from py_engine.train.init import ENTRY, stream_key
        from py_engine.ops._common import fold, params
        batch = self.device.batch()
        for path, A in self.A.items():
            a = 1.0 / math.sqrt(self.shapes[path][1])
            u = self.device.uniform(params(A.numel, 0, stream_key(seed, path + ".lora_A"), 0,
                                           float(a), 0.0, 0.0, 0.0))
            gx, gy = fold(-(-A.numel // 256))
            batch.run("init", ENTRY["uniform"], [u, A.binding], gx, gy)
            for _, _, _, B in self.B[path]:
                fill(batch, B, 0.0)
        batch.submit()

    # -- switching on and off ---------------------------------------------------------------
    def attach(self):
        """Register with the device: every path through the model now adds the branch.
        A model holds one adapter at a time; recorded decode graphs must be re-recorded."""
        table = self.device.__dict__.setdefault("lora", {})
        for path, pieces in self.B.items():
            for piece, _, _, B in pieces:
                table[id(self.model.weights[piece])] = Adapted(self.A[path], B, self.scale)
        self.model.adapter = self
        return self

    def detach(self):
        table = getattr(self.device, "lora", {})
        for pieces in self.B.values():
            for piece, _, _, _ in pieces:
                table.pop(id(self.model.weights[piece]), None)
        if getattr(self.model, "adapter", None) is self:
            self.model.adapter = None

    def merge(self):
        """Fold the adapter into the base weights (W += s B A, on the GPU) and detach it: the
        model then is base + adapter with no branch (for export as a plain checkpoint)."""
        from py_engine.ops.elementwise import scale
        from py_engine.ops.linear import matmul
        batch = self.device.batch()
        for path, pieces in self.B.items():
            A = self.A[path]
            in_f = A.shape[1]
            for piece, r0, r1, B in pieces:
                sB = scale(batch, B, self.scale)                    # [rows, r]
                W = self.model.weights[piece]                       # [rows, in]
                matmul(batch, sB, A, W, r1 - r0, in_f, self.r, (self.r, 1, in_f, 1),
                       accumulate=True)
                sB.release()
        batch.submit()
        self.detach()

    def merged_copies(self):
        """{piece name: a new Tensor W + s B A} for every adapted weight piece, the base left
        as it is: base + adapter exported while the run may still go on (merge() folds in
        place). The same GPU sum as merge(), so the values are merge()'s; the caller releases
        the copies."""
        from py_engine.ops.elementwise import scale
        from py_engine.ops.linear import matmul
        out = {}
        batch = self.device.batch()
        for path, pieces in self.B.items():
            A = self.A[path]
            in_f = A.shape[1]
            for piece, r0, r1, B in pieces:
                W = scale(batch, self.model.weights[piece], 1.0)    # an exact copy [rows, in]
                sB = scale(batch, B, self.scale)
                matmul(batch, sB, A, W, r1 - r0, in_f, self.r, (self.r, 1, in_f, 1),
                       accumulate=True)
                sB.release()
                out[piece] = W
        batch.submit()
        return out

    def params(self):
        """{name: Tensor} of what trains: PEFT's A names and B piece names (`#x` suffixes for
        the row pieces of a fused weight)."""
        out = {}
        for path, A in self.A.items():
            out[f"{PEFT_PREFIX}{path}.lora_A.weight"] = A
            pieces = self.B[path]
            for piece, _, _, B in pieces:
                suffix = piece.split("#", 1)[1] if "#" in piece else None
                key = f"{PEFT_PREFIX}{path}.lora_B.weight" + (f"#{suffix}" if suffix else "")
                out[key] = B
        return out

    def release(self):
        self.detach()
        for path in self.A:
            self.A[path].release()
            for _, _, _, B in self.B[path]:
                B.release()

    # -- PEFT files ---------------------------------------------------------------------------
    def config_json(self, base_model_name_or_path=None):
        # mamba_ssm's MambaLMHeadModel is no transformers model: PEFT's CAUSAL_LM wrapper wants
        # prepare_inputs_for_generation and passes attention_mask= to forward, which it lacks;
        # the plain PeftModel (task_type null) wraps it as it is
        plain = self.cfg.checkpoint_layout == "mamba_ssm" or self.cfg.model_type == "mamba3"
        return {"peft_type": "LORA", "task_type": None if plain else "CAUSAL_LM", "r": self.r,
                "lora_alpha": self.alpha, "use_rslora": self.rslora, "lora_dropout": 0.0,
                "bias": "none", "target_modules": peft_targets(self.cfg, self.A),
                "fan_in_fan_out": False,
                "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
                "init_lora_weights": True, "modules_to_save": None}

    async def to_files(self, base_model_name_or_path=None):
        """{"adapter_config.json": bytes, "adapter_model.safetensors": bytes} as PEFT writes."""
        from py_engine.io.safetensors_format import build_header, safetensors_order
        tensors = {}
        for path, A in self.A.items():
            tensors[f"{PEFT_PREFIX}{path}.lora_A.weight"] = ((self.r, self.shapes[path][1]),
                                                             await A.to_bytes())
            rows = b"".join([await B.to_bytes() for _, _, _, B in self.B[path]])
            tensors[f"{PEFT_PREFIX}{path}.lora_B.weight"] = ((self.shapes[path][0], self.r), rows)
        entries = safetensors_order([(n, "F32", s) for n, (s, _) in tensors.items()])
        head, infos = build_header(entries, {"format": "pt"})
        body = b"".join(tensors[i.name][1] for i in infos)
        cfg = json.dumps(self.config_json(base_model_name_or_path), indent=2, sort_keys=True)
        return {"adapter_config.json": cfg.encode("utf-8"),
                "adapter_model.safetensors": head + body}


async def load_adapter(model, source, attach=True):
    """A LoraAdapter from a PEFT adapter folder read through a byte source (HTTP, local, or
    dropped files): adapter_config.json + adapter_model.safetensors (F32/F16/BF16)."""
    from py_engine.io.safetensors_format import header_length, parse_header
    conf = json.loads((await source.read("adapter_config.json")).decode("utf-8"))
    if conf.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"adapter_config.json: peft_type {conf.get('peft_type')!r} is not "
                         "supported; only LORA adapters load")
    for key in ("use_dora",):
        if conf.get(key):
            raise ValueError(f"adapter_config.json: {key} is not supported")
    r = int(conf["r"])
    alpha = float(conf.get("lora_alpha", r))
    targets = conf.get("target_modules") or DEFAULT_TARGETS
    if isinstance(targets, str):
        raise ValueError("adapter_config.json: a regex target_modules is not supported; "
                         "list the module names")
    ad = LoraAdapter(model, r=r, alpha=alpha, targets=targets,
                     rslora=bool(conf.get("use_rslora", False)))
    fname = "adapter_model.safetensors"
    size = await source.size(fname)
    n = header_length(await source.read(fname, 0, min(size, 8)), size, fname)
    header = parse_header(await source.read(fname, 0, 8 + n), size, fname)
    found = {t.name.replace(".default.", "."): t for t in header.tensors}
    try:
        for path in ad.A:
            for kind in ("lora_A", "lora_B"):
                key = f"{PEFT_PREFIX}{path}.{kind}.weight"
                t = found.pop(key, None)
                if t is None:
                    raise ValueError(f"{fname}: missing {key}")
                want = (r, ad.shapes[path][1]) if kind == "lora_A" else (ad.shapes[path][0], r)
                if tuple(t.shape) != want:
                    raise ValueError(f"{fname}: {key} has shape {list(t.shape)}, expected "
                                     f"{list(want)} (r {r})")
                vals = _as_f32(await source.read(fname, t.start, t.end), t.dtype, key)
                if kind == "lora_A":
                    ad.device.write(ad.A[path].buffer, vals, ad.A[path].offset)
                else:
                    for _, r0, r1, B in ad.B[path]:
                        ad.device.write(B.buffer, vals[r0 * r * 4:r1 * r * 4], B.offset)
        if found:
            raise ValueError(f"{fname}: tensors this model has no place for: "
                             + ", ".join(sorted(found)[:5]))
    except BaseException:
        ad.release()
        raise
    if attach:
        ad.attach()
    return ad


class MemorySource:
    """A byte source over files held in memory ({name: bytes}): an adapter sent by the CLI or
    the page (adapters are small)."""

    def __init__(self, files, where="adapter"):
        self.files, self._where = dict(files), where

    def where(self, name):
        return f"{self._where}/{name}"

    async def exists(self, name):
        return name in self.files

    async def size(self, name):
        return len(self._get(name))

    async def read(self, name, start=None, end=None):
        data = self._get(name)
        return data if start is None else data[start:end]

    def _get(self, name):
        if name not in self.files:
            raise ValueError(f"{self.where(name)}: missing (an adapter folder holds "
                             "adapter_config.json and adapter_model.safetensors)")
        return self.files[name]


def _as_f32(raw, dtype, name):
    if dtype == "F32":
        return bytes(raw)
    if dtype == "F16":
        n = len(raw) // 2
        return struct.pack(f"<{n}f", *struct.unpack(f"<{n}e", raw))
    if dtype == "BF16":
        n = len(raw) // 2
        return struct.pack(f"<{n}I", *((h << 16) for h in struct.unpack(f"<{n}H", raw)))
    raise ValueError(f"{name}: dtype {dtype} is not supported in an adapter (F32, F16, BF16)")
