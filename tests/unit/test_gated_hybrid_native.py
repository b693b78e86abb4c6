"""Gated-MLP hybrids from `generate-bin --pattern` in the engine (native backend: wgpu-py, the
same WGSL as the tab), in both layouts such a pattern is saved in:
  * M+*+M+ (mamba_ssm MambaLMHeadModel): the engine's logits equal the float64 re-implementation
    of state-spaces' modules (tools/make_mamba_ssm_hybrid_fixtures.py) run on the same files;
  * MM*+- (our HF-style names): no outside reference exists, so exactness is the round trip;
and for both: a few training steps lower the loss, the trained model's export (the pretrain
session's ckpt.hf_files) loads back with bit-identical tensors and the same logits, and the
untrained export is byte-identical to what generate-bin wrote.
Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import json

import numpy as np
import pytest

from tools.cli import main as cli
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")

EXPORT = """
from py_engine.io.hf_loader import load_model_local
from py_engine.train import checkpoint as ckpt
model = await load_model_local(device, args['src'])
files = {n: await ckpt.parts_bytes(p) for n, p in ckpt.hf_files(model).items()}
result = {'files': files, 'logits': await model.logits(args['prompt']),
          'layers': model.cfg.layers, 'V': model.cfg.vocab_size}
model.release()
"""
TRAIN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.train import checkpoint as ckpt
from py_engine.train.trainer import Trainer
model = await load_model_local(device, args['src'])
tr = Trainer(model, lr=1e-2, weight_decay=0.0, max_grad_norm=1.0)
losses = []
for _ in range(6):
    r = await tr.train_step([(args['ids'], args['ids'])], args['Bsz'], args['T'])
    losses.append(r['loss'])
files = {n: await ckpt.parts_bytes(p) for n, p in ckpt.hf_files(model).items()}
result = {'losses': losses, 'files': files, 'logits': await model.logits(args['prompt'])}
tr.release()
model.release()
"""
PROMPT = [3, 17, 9, 40, 22, 5, 61, 8, 8, 30, 11]


@pytest.fixture(scope="module")
def engine():
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    yield eng
    eng.close()


def _generate(tmp_path, pattern, capsys):
    out = tmp_path / "gen"
    assert cli(["generate-bin", "--family", "hybrid", "--pattern", pattern, "--size", "tiny",
                "--d-model", "32", "--vocab-size", "64", "--seed", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def _write(folder, files):
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def _logits(out, key="logits"):
    return np.frombuffer(out[key], np.float32).reshape(len(PROMPT), -1)


@pytest.mark.parametrize("pattern, kinds", [
    ("M+*+M+", ["mamba2", "gated_mlp", "attention", "gated_mlp", "mamba2", "gated_mlp"]),
    ("MM*+-", ["mamba2", "mamba2", "attention", "gated_mlp", "mlp"]),
])
def test_gated_hybrid_loads_trains_and_round_trips(engine, tmp_path, capsys, pattern, kinds):
    gen = _generate(tmp_path, pattern, capsys)
    first = engine.run(EXPORT, src=str(gen), prompt=PROMPT)
    assert first["layers"] == kinds
    # the untrained model comes back out as exactly the files generate-bin wrote
    assert first["files"]["model.safetensors"] == (gen / "model.safetensors").read_bytes()
    assert (json.loads(first["files"]["config.json"])
            == json.loads((gen / "config.json").read_text()))
    if pattern == "M+*+M+":      # state-spaces' math on the same files
        import torch
        from safetensors.torch import load_file
        from tools.make_mamba_ssm_hybrid_fixtures import forward
        conf = json.loads((gen / "config.json").read_text())
        W = {k: v.double() for k, v in load_file(gen / "model.safetensors").items()}
        ref, _ = forward(conf, W, torch.tensor(PROMPT))
        assert np.abs(_logits(first) - ref.numpy()).max() <= 1e-4
    rng = np.random.RandomState(0)
    Bsz, T = 2, 16
    ids = np.tile(rng.randint(0, 64, size=(1, 4)), (Bsz, T // 4)).ravel().tolist()
    trained = engine.run(TRAIN, src=str(gen), ids=ids, Bsz=Bsz, T=T, prompt=PROMPT)
    losses = trained["losses"]
    assert losses[-1] < 0.8 * losses[0], losses
    back = engine.run(EXPORT, src=str(_write(tmp_path / "trained", trained["files"])),
                      prompt=PROMPT)
    assert back["files"]["model.safetensors"] == trained["files"]["model.safetensors"]
    assert np.abs(_logits(back) - _logits(trained)).max() <= 1e-6
    assert np.abs(_logits(back) - _logits(first)).max() > 1e-3     # the training is in there
