"""A LoRA fine-tune of a folder from this computer resumes from its saved state once the same
folder is opened again (py_engine/app/finetune_session.py restore(base=...)), on the native
backend (wgpu-py, the tab's WGSL): interrupted after 3 of 6 steps and resumed, it ends with the
same adapter weights, AdamW moments and count, step, data position, loss curve and held-out
losses as the run that was never interrupted (bit for bit: the same kernels on the same
device). Before that, without a folder, with a folder whose config differs and with one whose
weights differ, the resume is refused in one sentence naming what differs, and the saved
state still resumes afterwards."""
import json
import shutil
import struct

import numpy as np
import pytest

from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

TINY = REPO / "tests" / "fixtures" / "models" / "bytes-tiny-stdlib"
TEXT = (REPO / "web" / "samples" / "python-stdlib.txt").read_text()[:6000]

RUN = """
from array import array
from py_engine.app import finetune_session as F
from py_engine.train import checkpoint as ckpt
SPEC = {'mode': 'lora', 'lora': {'r': 4, 'alpha': 8},
        'train': {'steps': 6, 'batch': 2, 'seq_len': 32, 'lr': 2e-2, 'sample_every': 0,
                  'seed': 3}}

async def fresh():
    s = await F.FinetuneSession.create(device, {'path': args['base'], 'name': 'my-base'},
                                       [args['text']], {'names': ['t.txt']}, SPEC)
    await s.evaluate_heldout()            # the loss before any step, as the page's Start does
    return s

async def snapshot(s):
    opt = s.trainer.opt
    return {'adapter': {n: await t.to_bytes() for n, t in s.adapter.params().items()},
            'm': {n: await t.to_bytes() for n, t in opt.m.items()},
            'v': {n: await t.to_bytes() for n, t in opt.v.items()},
            'adam_t': opt.t, 'step': s.step, 'position': s.batcher.position,
            'history': s.history, 'evals': s.evals}

ref = await fresh()
for _ in range(6):
    await ref.train_one()
await ref.evaluate_heldout()
want = await snapshot(ref)
ref.release()

first = await fresh()
for _ in range(3):
    await first.train_one()
saved = await ckpt.parts_bytes(first.state_parts())    # what an autosave writes
ids = array('I', first.ids)                             # and its corpus ids (tokens.bin)
base_meta = first.base
first.release()

refused = {}
for key, base in (('none', None), ('config', {'path': args['other_config'], 'name': 'cfg'}),
                  ('weights', {'path': args['other_weights'], 'name': 'wts'})):
    state = await ckpt.StateFile.from_bytes(saved)
    try:
        await F.FinetuneSession.restore(device, state, ids=ids, base=base)
        refused[key] = None
    except ValueError as e:
        refused[key] = str(e)

state = await ckpt.StateFile.from_bytes(saved)
again = await F.FinetuneSession.restore(device, state, ids=ids,
                                        base={'path': args['same'], 'name': 'copy'})
resumed_at = again.step
for _ in range(3):
    await again.train_one()
await again.evaluate_heldout()
got = await snapshot(again)
base_after = again.base
again.release()
result = {'want': want, 'got': got, 'refused': refused, 'resumed_at': resumed_at,
          'base_meta': base_meta, 'base_after': base_after}
"""


@pytest.fixture(scope="module")
def runs(engine, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("local-base")
    same = root / "same"
    shutil.copytree(TINY, same)
    other_config = root / "other-config"
    shutil.copytree(TINY, other_config)
    cfg = json.loads((other_config / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 1e-6
    (other_config / "config.json").write_text(json.dumps(cfg))
    other_weights = root / "other-weights"        # the same layout, other values
    shutil.copytree(TINY, other_weights)
    path = other_weights / "model.safetensors"
    raw = bytearray(path.read_bytes())
    start = 8 + struct.unpack("<Q", raw[:8])[0]
    raw[start:] = (np.frombuffer(bytes(raw[start:]), np.float32) * np.float32(0.99)).tobytes()
    path.write_bytes(bytes(raw))
    return engine.run(RUN, base=str(TINY), same=str(same), other_config=str(other_config),
                      other_weights=str(other_weights), text=TEXT)


def test_a_resumed_local_lora_run_equals_the_uninterrupted_one(runs):
    want, got = runs["want"], runs["got"]
    assert runs["resumed_at"] == 3
    assert got["step"] == want["step"] == 6 and got["adam_t"] == want["adam_t"] == 6
    assert got["position"] == want["position"]
    assert [s for s, _ in got["history"]] == list(range(1, 7))
    assert got["history"] == want["history"]
    assert got["evals"] == want["evals"] and [s for s, _ in got["evals"]] == [0, 6]
    for part in ("adapter", "m", "v"):
        assert sorted(got[part]) == sorted(want[part]) and got[part], part
        for name in want[part]:
            assert got[part][name] == want[part][name], (part, name)
    # the adapter trained (it is not still B = 0)
    b = [np.frombuffer(v, np.float32) for n, v in got["adapter"].items() if "lora_B" in n]
    assert b and all(np.abs(x).max() > 0 for x in b)


def test_the_run_keeps_its_base_fingerprint(runs):
    meta = runs["base_meta"]
    assert meta["name"] == "my-base" and meta["url"] is None
    assert meta["fingerprint"]["config"] == json.loads((TINY / "config.json").read_text())
    assert runs["base_after"] == meta            # a resumed run saves the same base again


def test_a_different_or_missing_folder_is_refused_in_one_sentence(runs):
    r = runs["refused"]
    assert r["none"] == ("this LoRA run's base is the folder my-base from this computer: open "
                         "that folder again to resume it; the saved run is kept")
    assert r["config"] == (
        "the folder cfg is not the base this run was trained on (my-base): its config.json "
        "differs (layer_norm_epsilon 1e-06 here, 1e-05 in the run's base); open that folder "
        "again, or discard the saved run, which is kept until then")
    assert r["weights"] == (
        "the folder wts is not the base this run was trained on (my-base): its "
        "model.safetensors has the same tensors with other values (the weights differ from "
        "the run's base: another checkpoint of the same model?); open that folder again, or "
        "discard the saved run, which is kept until then")
