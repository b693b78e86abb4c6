"""LoRA on a mamba_ssm hybrid (Mamba-2 + attention blocks, a gated SwiGLU MLP after every mixer)
against torch + PEFT, on the native backend (wgpu-py, the same WGSL as the tab).

The torch model is tools/make_mamba_ssm_hybrid_fixtures.py's float64 re-implementation of
state-spaces' MambaLMHeadModel as a module tree with mamba_ssm's module names (`torch_model`),
so stock PEFT adapts its nn.Linear modules by those names. The engine's default targets on this
model are Mamba in_proj, attention's fused q|k|v in_proj (q_proj/k_proj/v_proj name it),
attention's out_proj (o_proj names it; the Mamba mixers' out_proj stays frozen) and the gated
MLPs' fc1/fc2. Checked:
  * the target selection and the adapter_config.json target_modules that reproduce it in PEFT;
  * a PEFT-made adapter loads in the engine and gives PEFT's logits (<= 1e-4);
  * loss, every adapter gradient (B's row pieces of the fused in_proj re-joined), and 5 AdamW
    steps over the adapters alone equal torch's;
  * the adapter the engine saves loads in PEFT with the engine's logits (<= 1e-4).
Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import json

import numpy as np
import pytest

from tests.conftest import REPO
from tools.native_engine import wgpu_adapter_problem
from tests.unit.peft_reference import adamw_reference, adapter_files, peft_with_drawn_b, \
    trainer_loss

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")
FIX = REPO / "tests" / "fixtures" / "mamba_ssm" / "m2-attn-mlp-tied"
R, ALPHA = 4, 8
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
# blocks [Mamba2, MHA, Mamba2], a GatedMLP in each: what the engine's defaults adapt, as PEFT
# must be told (out_proj by path: only the attention block's)
PEFT_TARGETS = ["backbone.layers.1.mixer.out_proj", "fc1", "fc2", "in_proj"]

RUN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.train.lora import MemorySource, load_adapter
from py_engine.train.trainer import Trainer
model = await load_model_local(device, args['src'])
prompt = args['prompt']
ad = await load_adapter(model, MemorySource(args['adapter']))
with_adapter = await model.logits(prompt)
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
tr.release()
ad.release()
result = {'with': with_adapter, 'grads': grads, 'loss': loss, 'losses': losses,
          'params': params, 'trained': trained, 'files': files, 'V': model.cfg.vocab_size}
model.release()
"""


def _base():
    from safetensors.torch import load_file
    c = json.loads((FIX / "config.json").read_text())
    W = {k: v.double() for k, v in load_file(FIX / "model.safetensors").items()}
    return c, W


def _peft_model(targets, seed=5):
    """PEFT on the torch model; B drawn non-zero (PEFT starts it at 0, which would leave A
    without gradient) and every adapter value rounded to f32 (what the file carries)."""
    from peft import LoraConfig
    from tools.make_mamba_ssm_hybrid_fixtures import torch_model
    c, W = _base()
    return peft_with_drawn_b(lambda: torch_model(c, W),
                             LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0,
                                        target_modules=targets), seed, 0.2)


def _engine_tensors(out, r):
    """{PEFT name: array} of the engine's {name[#piece]: bytes}, B's row pieces in row order."""
    order = {"": 0, "z": 0, "xBC": 1, "dt": 2, "q": 0, "k": 1, "v": 2}
    groups = {}
    for k, v in out.items():
        base, _, piece = k.partition("#")
        groups.setdefault(base, []).append((order[piece], np.frombuffer(v, np.float32)))
    return {k: np.concatenate([a for _, a in sorted(parts, key=lambda p: p[0])])
            for k, parts in groups.items()}


def test_targets_on_a_mamba_ssm_hybrid():
    from py_engine.models.config import MambaConfig
    from py_engine.train.lora import DEFAULT_TARGETS, peft_targets, target_modules
    cfg = MambaConfig.from_hf_dict(json.loads((FIX / "config.json").read_text()))
    paths = [p for _, p, _ in target_modules(cfg, DEFAULT_TARGETS)]
    assert paths == [f"backbone.layers.{n}.{m}" for n, mods in
                     ((0, ("mixer.in_proj", "mlp.fc1", "mlp.fc2")),
                      (1, ("mixer.in_proj", "mixer.out_proj", "mlp.fc1", "mlp.fc2")),
                      (2, ("mixer.in_proj", "mlp.fc1", "mlp.fc2"))) for m in mods]
    assert peft_targets(cfg, paths) == PEFT_TARGETS
    # the other families' names pick the attention / MLP modules of this layout
    att = [p for _, p, _ in target_modules(cfg, ["q_proj"])]
    assert att == ["backbone.layers.1.mixer.in_proj"]
    assert [p for _, p, _ in target_modules(cfg, ["o_proj", "down_proj"])] == [
        "backbone.layers.0.mlp.fc2", "backbone.layers.1.mixer.out_proj",
        "backbone.layers.1.mlp.fc2", "backbone.layers.2.mlp.fc2"]
    # PEFT's path-suffix targets, and every out_proj when named so
    assert [p for _, p, _ in target_modules(cfg, ["layers.2.mlp.fc1"])] == [
        "backbone.layers.2.mlp.fc1"]
    everything = [p for _, p, _ in target_modules(cfg, ["out_proj"])]
    assert len(everything) == 3 and peft_targets(cfg, everything) == ["out_proj"]
    with pytest.raises(ValueError, match="no linear layer matches the LoRA targets"):
        target_modules(cfg, ["gate_up"])


def test_lora_matches_peft_on_a_mamba_ssm_hybrid(tmp_path):
    import torch
    from peft import PeftModel
    from tools.make_mamba_ssm_hybrid_fixtures import torch_model
    from tools.native_engine import NativeEngine
    c, W = _base()
    exp = np.load(FIX / "expected.npz")
    prompt = exp["prompt_ids"][:24].tolist()
    rng = np.random.RandomState(7)
    Bsz, T = 2, 11
    ids = rng.randint(0, c["vocab_size"], size=(Bsz, T))
    labels = ids.copy()
    labels[1, 5] = -100
    pm = _peft_model(PEFT_TARGETS)
    files = adapter_files(pm, tmp_path / "made")
    params = {k.replace(".default", ""): p for k, p in pm.named_parameters() if "lora_" in k}
    assert len(params) == 2 * 10
    # torch: logits with the adapter, loss and gradients, 5 AdamW steps over the adapters alone
    with torch.no_grad():
        ref_with = pm(torch.tensor(prompt)).numpy()
    ref_loss, ref_grads, ref_losses, ref_after = adamw_reference(
        params, lambda: trainer_loss(pm, ids.tolist(), labels.tolist()), ADAMW)

    with NativeEngine() as eng:
        out = eng.run(RUN, src=str(FIX), prompt=prompt, adapter=files, adamw=ADAMW,
                      ids=ids.ravel().tolist(), labels=labels.ravel().tolist(), Bsz=Bsz, T=T)
    V, P = out["V"], len(prompt)
    got_with = np.frombuffer(out["with"], np.float32).reshape(P, V)
    assert np.abs(got_with - ref_with).max() <= 1e-4
    assert abs(out["loss"] - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))
    grads = _engine_tensors(out["grads"], R)
    assert set(grads) == set(ref_grads)
    for k, g in ref_grads.items():
        assert np.abs(g).max() > 0, k
        err = np.abs(grads[k].reshape(g.shape) - g).max()
        assert err <= 1e-4 * max(1.0, np.abs(g).max()), (k, err)
    np.testing.assert_allclose(out["losses"], ref_losses, rtol=1e-4)
    after = _engine_tensors(out["params"], R)
    for k, r in ref_after.items():
        assert np.abs(after[k].reshape(r.shape) - r).max() <= 1e-4, k
    assert out["losses"][-1] < out["losses"][0]

    # the engine's adapter is a PEFT adapter for this model: same target_modules, same logits
    saved = tmp_path / "saved"
    saved.mkdir()
    for name, data in out["files"].items():
        (saved / name).write_bytes(data)
    conf = json.loads((saved / "adapter_config.json").read_text())
    assert conf["target_modules"] == PEFT_TARGETS and conf["r"] == R
    assert conf["task_type"] is None     # PEFT's plain wrapper: mamba_ssm's model is no HF model
    loaded = PeftModel.from_pretrained(torch_model(c, W), saved).eval()
    n_lora = sum(1 for k, _ in loaded.named_parameters() if "lora_" in k)
    assert n_lora == 2 * 10            # PEFT adapted exactly the engine's modules
    with torch.no_grad():
        ref_trained = loaded(torch.tensor(prompt)).numpy()
    got_trained = np.frombuffer(out["trained"], np.float32).reshape(P, V)
    assert np.abs(ref_trained - got_trained).max() <= 1e-4
    assert np.abs(ref_trained - ref_with).max() > 1e-3      # training moved the logits
