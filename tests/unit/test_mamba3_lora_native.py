"""LoRA and WSLA on Mamba-3 (mamba_ssm's Mamba3 layout, SISO and MIMO) against torch + PEFT, on
the native backend (wgpu-py, the same WGSL as the tab).

Mamba-3 has no transformers class, so the torch model is built here: `torch_lm` is an nn.Module
LM with the checkpoint's module names (backbone.embedding, backbone.layers.{i}.norm,
backbone.layers.{i}.mixer.in_proj / out_proj as real nn.Linear modules, backbone.norm_f,
lm_head) whose mixers run tests/unit/test_mamba3_reference.py's float64 torch mixer
(`torch_mixer_from_zero`, itself checked against the float64 reference) with in_proj and
out_proj called as modules, so stock `peft.get_peft_model` / `PeftModel.from_pretrained` wrap
them as they wrap mamba_ssm's own Mamba3 (whose forward calls both as modules). Checked:
  * the engine's default targets on Mamba-3 are in_proj and out_proj (the kind's lora_defaults),
    saved as target_modules ["in_proj", "out_proj"], task_type null;
  * a PEFT-made adapter loads in the engine: parallel and step-path logits <= 1e-4 of PEFT's;
  * loss, every adapter gradient (B's eight in_proj row pieces re-joined) and 5 AdamW steps over
    the adapters alone equal torch's (<= 1e-4);
  * the adapter the engine saves loads in PEFT with the engine's logits (<= 1e-4);
  * the merged export (mamba_ssm safetensors) is base + (alpha/r) B A of the engine's trained
    adapter, every other tensor bit-identical, and the merged model's torch logits equal PEFT's;
    merging the saved adapter in place (`finetune --merge`) writes the same bytes;
  * WSLA: only in_proj's B and C row blocks train (MIMO: R*G*N rows each); their gradients equal
    torch's gradient of the whole in_proj on those rows, 5 AdamW steps equal torch AdamW over
    parameters that are those rows alone, every other number stays bit-identical.
Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import json

import numpy as np
import pytest

from tests.conftest import REPO
from tests.unit.peft_reference import adamw_reference, adapter_files, peft_with_drawn_b, \
    trainer_loss
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"
R, ALPHA = 4, 8
# lr: the engine's default for LoRA and WSLA (py_engine/app/finetune_session.py DEFAULT_LR)
ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
# The drawn adapter (seeded): lora_B ~ N(0, SCALE_B^2) moves the logits by 2-7. Precision note,
# measured on lavapipe: the SISO is_outproj_norm fixture is the least well conditioned (its
# per-head RMSNorm of y can see a mean square near 2e-4 under an adapter, which magnifies f32
# rounding; torch float32 itself is 5e-5 off float64 there, the engine 3.5e-5 on the bare
# base). With this draw its worst logit error is 7.4e-5 (the other fixtures <= 5e-5); other
# draws reach 1.3e-4 on that one fixture. At lr 1e-2 Adam carries such rounding into up to
# 2e-4 on a few of ~2,400 adapter numbers after 5 steps; at 1e-3 they stay below 1e-6.
SCALE_B = 0.05
SEED = 5
SISO = ["mamba3-g1-r05-tied", "mamba3-g2-r10-untied-onorm", "mamba3-g2-r05-tied-softplus"]
MIMO = ["mamba3-mimo-r2-g1-r05-tied", "mamba3-mimo-r4-g2-r10-onorm-softplus"]
PIECES = ("z", "x", "B", "C", "dd_dt", "dd_A", "trap", "angles")     # in_proj's row blocks


# -- the torch model -----------------------------------------------------------------------

def torch_lm(folder):
    """The fixture as a float64 torch module tree with the checkpoint's names (every tensor
    loaded strictly): forward(ids [T]) -> logits [T, V]."""
    import torch
    from safetensors.torch import load_file
    from torch import nn
    from tests.unit.test_mamba3_reference import torch_mixer_from_zero
    conf = json.loads((folder / "config.json").read_text())
    W = {k: v.double() for k, v in load_file(folder / "model.safetensors").items()}
    cfg = dict(conf["ssm_cfg"], d_model=conf["d_model"])
    D, V, L = conf["d_model"], conf["vocab_size"], conf["n_layer"]
    f64 = dict(dtype=torch.float64)

    class Norm(nn.Module):                  # RMSNorm weight holder (mamba_ssm's names)
        def __init__(self, n):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(n, **f64))

    class Mixer(nn.Module):
        def __init__(self, i):
            super().__init__()
            pre = f"backbone.layers.{i}.mixer."
            for rel in sorted(k[len(pre):] for k in W if k.startswith(pre)):
                shape = W[pre + rel].shape
                if rel in ("in_proj.weight", "out_proj.weight"):
                    setattr(self, rel[:-7], nn.Linear(shape[1], shape[0], bias=False, **f64))
                elif rel.endswith("norm.weight"):
                    setattr(self, rel[:-7], Norm(shape[0]))
                else:
                    setattr(self, rel, nn.Parameter(torch.zeros(shape, **f64)))

        def forward(self, u):
            p = {n: t for n, t in self.named_parameters()
                 if not n.startswith(("in_proj.", "out_proj."))}
            p.update(in_proj=self.in_proj, out_proj=self.out_proj)   # called as modules
            return torch_mixer_from_zero(p, cfg, u)

    class Block(nn.Module):
        def __init__(self, i):
            super().__init__()
            self.norm, self.mixer = Norm(D), Mixer(i)

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, D, **f64)
            self.layers = nn.ModuleList(Block(i) for i in range(L))
            self.norm_f = Norm(D)

    def rms(v, w):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = Backbone()
            self.lm_head = nn.Linear(D, V, bias=False, **f64)
            if conf.get("tie_embeddings", True):
                self.lm_head.weight = self.backbone.embedding.weight

        def forward(self, ids):
            r = self.backbone.embedding(ids)
            for layer in self.backbone.layers:
                r = r + layer.mixer(rms(r, layer.norm.weight))
            return self.lm_head(rms(r, self.backbone.norm_f.weight))

    model = LM()
    model.load_state_dict(W, strict=True)
    return model


def _batch(name):
    exp = np.load(FIX / name / "expected.npz")
    V = json.loads((FIX / name / "config.json").read_text())["vocab_size"]
    Bsz, T = 2, 11
    ids = np.random.RandomState(7).randint(0, V, size=(Bsz, T))
    labels = ids.copy()
    labels[1, 5] = -100
    return exp["prompt_ids"].tolist(), ids, labels


def _peft_model(folder, seed=None):
    """PEFT (stock) on the torch model, in_proj + out_proj, B drawn non-zero (PEFT starts it
    at 0, which would leave A without gradient), every adapter value rounded to f32."""
    from peft import LoraConfig
    seed = SEED if seed is None else seed
    config = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0,
                        target_modules=["in_proj", "out_proj"])
    return peft_with_drawn_b(lambda: torch_lm(folder), config, seed, SCALE_B)


def _joined(out):
    """{PEFT name: flat array} of the engine's {name[#piece]: bytes}: B's in_proj row pieces
    re-joined in row order."""
    groups = {}
    for k, v in out.items():
        base, _, piece = k.partition("#")
        order = PIECES.index(piece) if piece else 0
        groups.setdefault(base, []).append((order, np.frombuffer(v, np.float32)))
    return {k: np.concatenate([a for _, a in sorted(parts, key=lambda p: p[0])])
            for k, parts in groups.items()}


# -- LoRA ----------------------------------------------------------------------------------

def test_default_targets_on_mamba3():
    """in_proj and out_proj of every layer by default (Mamba-3's lora_defaults), what PEFT is
    told by their names; other families keep out_proj off by default."""
    from safetensors.numpy import load_file
    from py_engine.app.finetune_session import DEFAULT_LORA
    from py_engine.models.config import MambaConfig
    from py_engine.train.lora import (DEFAULT_TARGETS, adapter_param_count, linear_modules,
                                      peft_targets, target_modules)
    for name in ("mamba3-g1-r05-tied", "mamba3-mimo-r4-g2-r10-onorm-softplus"):
        conf = json.loads((FIX / name / "config.json").read_text())
        cfg = MambaConfig.from_hf_dict(conf)
        paths = [p for _, p, _ in target_modules(cfg, DEFAULT_TARGETS)]
        assert paths == [f"backbone.layers.{i}.mixer.{m}" for i in range(conf["n_layer"])
                         for m in ("in_proj", "out_proj")]
        # the page's defaults (a list) are the same defaults
        assert [p for _, p, _ in target_modules(cfg, DEFAULT_LORA["targets"])] == paths
        assert peft_targets(cfg, paths) == ["in_proj", "out_proj"]
        assert linear_modules(cfg) == [("in_proj", conf["n_layer"], True),
                                       ("out_proj", conf["n_layer"], True)]
        # named explicitly: exactly what is named
        assert [p for _, p, _ in target_modules(cfg, ["in_proj"])] == paths[::2]
        assert [p for _, p, _ in target_modules(cfg, ["layers.1.mixer.out_proj"])] == [paths[3]]
        W = load_file(str(FIX / name / "model.safetensors"))
        want = sum(R * sum(W[p + ".weight"].shape) for p in paths)
        assert adapter_param_count(cfg, R) == want
    # Mamba-2 (transformers, where stock PEFT refuses out_proj): out_proj stays off
    cfg2 = MambaConfig.from_hf_dict(json.loads((FIX / "mamba2-g2-untied" / "config.json")
                                               .read_text()))
    assert {p.rsplit(".", 1)[-1] for _, p, _ in target_modules(cfg2, DEFAULT_TARGETS)} == {
        "in_proj"}


LORA_RUN = """
from py_engine.app.finetune_session import _WeightsView
from py_engine.io.hf_loader import load_model_local
from py_engine.train import checkpoint as ckpt
from py_engine.train.lora import LoraAdapter, MemorySource, load_adapter
from py_engine.train.trainer import Trainer
model = await load_model_local(device, args['src'])
prompt = args['prompt']
base = await model.logits(prompt)
fresh = LoraAdapter(model, r=4, alpha=8).attach()      # the defaults, PEFT's init: B = 0
fresh_paths = sorted(fresh.A)
no_op = await model.logits(prompt)
fresh.release()
ad = await load_adapter(model, MemorySource(args['adapter']))
with_adapter = await model.logits(prompt)
state = model.new_state()
with_step = await model.step_logits(prompt, state)
state.release()
a = args['adamw']
tr = Trainer(model, lr=a['lr'], betas=tuple(a['betas']), eps=a['eps'],
             weight_decay=a['weight_decay'], max_grad_norm=0.0, adapter=ad)
grads, loss = await tr.gradients(args['ids'], args['labels'], args['Bsz'], args['T'])
losses = []
for _ in range(5):
    r = await tr.train_step([(args['ids'], args['labels'])], args['Bsz'], args['T'], lr=a['lr'])
    losses.append(r['loss'])
params = {n: await t.to_bytes() for n, t in tr.params.items()}
trained = await model.logits(prompt)
files = await ad.to_files('base')
copies = ad.merged_copies()
merged = await ckpt.parts_bytes(ckpt.model_safetensors_parts(_WeightsView(model, copies)))
for t in copies.values():
    t.release()
merged_config = ckpt.config_json(model.cfg)
tr.release()
ad.release()
after_release = await model.logits(prompt)
# the in-place merge `mambaweb finetune --merge` runs, from the saved adapter
again = await load_adapter(model, MemorySource(files))
again.merge()
merged_in_place = await ckpt.parts_bytes(ckpt.model_safetensors_parts(model))
merged_logits = await model.logits(prompt)
again.release()
result = {'base': base, 'no_op': no_op, 'fresh_paths': fresh_paths, 'with': with_adapter,
          'with_step': with_step, 'grads': grads, 'loss': loss, 'losses': losses,
          'params': params, 'trained': trained, 'files': files, 'merged': merged,
          'merged_config': merged_config, 'after_release': after_release,
          'merged_in_place': merged_in_place, 'merged_logits': merged_logits,
          'V': model.cfg.vocab_size}
model.release()
"""


@pytest.mark.parametrize("name", SISO + MIMO)
def test_lora_matches_peft_on_mamba3(engine, tmp_path, name):
    import torch
    from peft import PeftModel
    from safetensors.numpy import load as load_st
    from safetensors.numpy import load_file
    folder = FIX / name
    prompt, ids, labels = _batch(name)
    Bsz, T = ids.shape
    L = json.loads((folder / "config.json").read_text())["n_layer"]
    pm = _peft_model(folder)
    files = adapter_files(pm, tmp_path / "made")
    made_conf = json.loads(files["adapter_config.json"])
    assert sorted(made_conf["target_modules"]) == ["in_proj", "out_proj"]
    params = {k.replace(".default", ""): p for k, p in pm.named_parameters() if "lora_" in k}
    assert len(params) == 2 * 2 * L
    # torch: logits with the adapter, loss and gradients, 5 AdamW steps over the adapters alone
    with torch.no_grad():
        ref_base = torch_lm(folder)(torch.tensor(prompt)).numpy()
        ref_with = pm(torch.tensor(prompt)).numpy()
    ref_loss, ref_grads, ref_losses, ref_after = adamw_reference(
        params, lambda: trainer_loss(pm, ids.tolist(), labels.tolist()), ADAMW)

    out = engine.run(LORA_RUN, src=str(folder), prompt=prompt, adapter=files, adamw=ADAMW,
                     ids=ids.ravel().tolist(), labels=labels.ravel().tolist(), Bsz=int(Bsz),
                     T=int(T))
    V, P = out["V"], len(prompt)
    lg = lambda k: np.frombuffer(out[k], np.float32).reshape(P, V)  # noqa: E731
    # the engine's defaults adapt in_proj and out_proj; PEFT's init (B = 0) changes nothing
    assert out["fresh_paths"] == sorted(f"backbone.layers.{i}.mixer.{m}" for i in range(L)
                                        for m in ("in_proj", "out_proj"))
    assert out["no_op"] == out["base"]
    # the PEFT-made adapter: PEFT's logits on the parallel and the step (decode) path
    assert np.abs(lg("base") - ref_base).max() <= 1e-4
    assert np.abs(ref_with - ref_base).max() > 1e-2                   # the adapter matters
    assert np.abs(lg("with") - ref_with).max() <= 1e-4
    assert np.abs(lg("with_step") - ref_with).max() <= 1e-4
    # loss, every adapter gradient, 5 AdamW steps
    assert abs(out["loss"] - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))
    grads = _joined(out["grads"])
    assert set(grads) == set(ref_grads)
    for k, g in ref_grads.items():
        assert np.abs(g).max() > 0, k
        err = np.abs(grads[k].reshape(g.shape) - g).max()
        assert err <= 1e-4 * max(1.0, np.abs(g).max()), (k, err)
    np.testing.assert_allclose(out["losses"], ref_losses, rtol=1e-4)
    after = _joined(out["params"])
    for k, r in ref_after.items():
        assert np.abs(after[k].reshape(r.shape) - r).max() <= 1e-4, k
    assert out["losses"][-1] < out["losses"][0]
    assert np.abs(lg("after_release") - lg("base")).max() == 0        # detached cleanly

    # the engine's adapter is a PEFT adapter for this model: same modules, same logits
    saved = tmp_path / "saved"
    saved.mkdir()
    for fname, data in out["files"].items():
        (saved / fname).write_bytes(data)
    conf = json.loads((saved / "adapter_config.json").read_text())
    assert conf["target_modules"] == ["in_proj", "out_proj"] and conf["r"] == R
    assert conf["task_type"] is None     # PEFT's plain wrapper: no transformers model
    loaded = PeftModel.from_pretrained(torch_lm(folder), saved).eval()
    assert sum(1 for k, _ in loaded.named_parameters() if "lora_" in k) == 2 * 2 * L
    with torch.no_grad():
        ref_trained = loaded(torch.tensor(prompt)).numpy()
    assert np.abs(ref_trained - lg("trained")).max() <= 1e-4
    assert np.abs(ref_trained - ref_with).max() > 1e-3                 # training moved them

    # merged export: base + (alpha/r) B A of the trained adapter, nothing else changed
    base_w = load_file(str(folder / "model.safetensors"))
    merged = load_st(out["merged"])
    assert set(merged) == set(base_w)
    for k, w in base_w.items():
        path = k[:-len(".weight")]
        key = f"base_model.model.{path}.lora_A.weight"
        if key not in after:
            assert np.array_equal(merged[k], w), k
            continue
        A = after[key].reshape(R, w.shape[1]).astype(np.float64)
        B = after[f"base_model.model.{path}.lora_B.weight"].reshape(w.shape[0], R)
        want = w + (ALPHA / R) * (B.astype(np.float64) @ A)
        assert np.abs(merged[k] - want).max() <= 1e-6 * max(1.0, np.abs(want).max()), k
        assert np.abs(merged[k] - w).max() > 1e-4, k
    mfold = tmp_path / "merged"
    mfold.mkdir()
    (mfold / "config.json").write_bytes(out["merged_config"])
    (mfold / "model.safetensors").write_bytes(out["merged"])
    with torch.no_grad():
        ref_merged = torch_lm(mfold)(torch.tensor(prompt)).numpy()     # no PEFT: plain weights
    assert np.abs(ref_merged - ref_trained).max() <= 1e-4
    # merging in place (the saved adapter onto the base) writes the same bytes, and the merged
    # model's own logits are the adapter's
    assert out["merged_in_place"] == out["merged"]
    assert np.abs(lg("merged_logits") - ref_merged).max() <= 1e-4


# -- WSLA ----------------------------------------------------------------------------------

WSLA_RUN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.train.trainer import Trainer
model = await load_model_local(device, args['src'])
before = {n: await t.to_bytes() for n, t in model.weights.items()}
a = args['adamw']
tr = Trainer(model, lr=a['lr'], betas=tuple(a['betas']), eps=a['eps'],
             weight_decay=a['weight_decay'], max_grad_norm=0.0, wsla=True)
grads, loss = await tr.gradients(args['ids'], args['labels'], args['Bsz'], args['T'])
losses = []
for _ in range(5):
    r = await tr.train_step([(args['ids'], args['labels'])], args['Bsz'], args['T'], lr=a['lr'])
    losses.append(r['loss'])
after = {n: await t.to_bytes() for n, t in model.weights.items()}
result = {'before': before, 'after': after, 'grads': grads, 'loss': loss, 'losses': losses,
          'trained': tr.trained_numel(), 'params': sorted(tr.params)}
tr.release()
model.release()
"""


def _torch_wsla(folder, ids, labels, rows, steps=5):
    """Reference: torch AdamW over parameters that are the B and C row blocks of each in_proj
    alone (spliced into the frozen weight for every forward); also the gradient of the whole
    in_proj (restricted to those rows: the masked gradient)."""
    import torch
    from torch.func import functional_call
    model = torch_lm(folder)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = [n for n in frozen if n.endswith("mixer.in_proj.weight")]
    lo, hi = rows
    full = {n: frozen[n].clone().requires_grad_(True) for n in names}
    w = dict(frozen, **full)
    loss = trainer_loss(lambda x: functional_call(model, w, (x,)), ids, labels)
    loss.backward()
    whole = {n: full[n].grad.numpy().copy() for n in names}
    bc = {n: frozen[n][lo:hi].clone().requires_grad_(True) for n in names}

    def loss_fn():
        w = dict(frozen)
        for n in names:
            w[n] = torch.cat([frozen[n][:lo], bc[n], frozen[n][hi:]])
        return trainer_loss(lambda x: functional_call(model, w, (x,)), ids, labels)

    first, grads, losses, after = adamw_reference(bc, loss_fn, ADAMW, steps)
    return first, whole, grads, losses, after


@pytest.mark.parametrize("name", ["mamba3-g2-r10-untied-onorm",
                                  "mamba3-mimo-r4-g2-r10-onorm-softplus"])
def test_wsla_on_mamba3_trains_the_bc_rows_only(engine, name):
    from py_engine.models.config import MambaConfig
    from py_engine.nn.mamba3 import spec
    folder = FIX / name
    conf = json.loads((folder / "config.json").read_text())
    cfg = MambaConfig.from_hf_dict(conf)
    s = spec(cfg)
    D, L, GN = s.D, conf["n_layer"], s.R * s.G * s.N
    lo, hi = 2 * s.I, 2 * s.I + 2 * GN             # in_proj rows: z | x | B | C | ...
    _, ids, labels = _batch(name)
    Bsz, T = ids.shape
    out = engine.run(WSLA_RUN, src=str(folder), ids=ids.ravel().tolist(),
                     labels=labels.ravel().tolist(), Bsz=int(Bsz), T=int(T), adamw=ADAMW)
    first, whole, grads, losses, rows = _torch_wsla(folder, ids.tolist(), labels.tolist(),
                                                    (lo, hi))
    piece = lambda i, b: f"backbone.layers.{i}.mixer.in_proj.weight#{b}"  # noqa: E731
    assert out["params"] == sorted(piece(i, b) for i in range(L) for b in "BC")
    assert out["trained"] == L * 2 * GN * D
    assert abs(out["loss"] - first) <= 1e-5 * max(1.0, abs(first))
    for i in range(L):
        n = f"backbone.layers.{i}.mixer.in_proj.weight"
        g = np.concatenate([np.frombuffer(out["grads"][piece(i, b)], np.float32).reshape(GN, D)
                            for b in "BC"])
        ref = grads[n]
        assert np.abs(ref).max() > 1e-6
        assert np.array_equal(ref, whole[n][lo:hi]) or \
            np.abs(ref - whole[n][lo:hi]).max() <= 1e-12 * np.abs(ref).max()
        assert np.abs(whole[n][:lo]).max() > 1e-6        # the other rows do have a gradient
        assert np.abs(g - ref).max() <= 1e-4 * np.abs(ref).max(), (n, np.abs(g - ref).max())
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-4)
    assert out["losses"][-1] < out["losses"][0]
    for n, before in out["before"].items():
        after = out["after"][n]
        if n not in out["params"]:
            assert after == before, n                                  # bit-identical
            continue
        i, b = int(n.split(".")[2]), n[-1]
        a = np.frombuffer(after, np.float32).reshape(GN, D)
        ref = rows[f"backbone.layers.{i}.mixer.in_proj.weight"]
        ref = ref[:GN] if b == "B" else ref[GN:]
        err = np.abs(a - ref)
        assert err.max() <= 1e-4, (n, err.max())
        assert np.abs(a - np.frombuffer(before, np.float32).reshape(GN, D)).max() > 1e-3, n


def test_wsla_estimate_counts_mamba3_bc_rows():
    """The train page's WSLA count on a Mamba-3 (SISO and MIMO): the B and C blocks of every
    in_proj, 2 R G N D per layer; a bidirectional Mamba-3 is still refused by name."""
    from py_engine.app import finetune_session as FS
    from py_engine.models.config import MambaConfig
    from py_engine.nn.mamba3 import spec
    from py_engine.train import session as S
    for name in ("mamba3-g1-r05-tied", "mamba3-mimo-r4-g2-r10-onorm-softplus"):
        conf = json.loads((FIX / name / "config.json").read_text())
        cfg = MambaConfig.from_hf_dict(conf)
        s = spec(cfg)
        e = FS.estimate(cfg, S.train_config({}), FS.lora_settings(None))
        assert e["trained"]["wsla"] == conf["n_layer"] * 2 * s.R * s.G * s.N * s.D > 0
        assert e["memory_bytes"]["wsla"] < e["memory_bytes"]["full"]
    from py_engine.nn import registry
    with pytest.raises(ValueError, match="WSLA is not defined for bidirectional layers"):
        registry.get("bidi_mamba3").wsla_pieces(cfg)
