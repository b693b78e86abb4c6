"""A model loaded with narrow weights (`weights_format` f16 / bf16 / q8 / q4) computes exactly the
model whose narrowable matrices were rounded to that format in numpy and loaded as f32
(tests/reference/weight_format_numpy.py), on the parallel path and on the decode path through
the narrow mat-vec kernels; every other tensor stays f32."""
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from py_engine.io import gpu_layout
from py_engine.io.layouts import internal_name
from py_engine.io.weight_formats import narrowable
from py_engine.models.config import MambaConfig
from tests.conftest import REPO
from tests.reference import weight_format_numpy as ref

pytestmark = pytest.mark.browser
FIXTURES = REPO / "tests" / "fixtures" / "models"
IDS = [1, 5, 9, 2, 7, 3]

RUN = """
from py_engine.io.hf_loader import load_model
m = await load_model(device, args['url'], weights_format=args['fmt'])
dtypes = {k: t.dtype for k, t in m.weights.items()}
packed = {k: await t.to_bytes() for k, t in m.weights.items() if t.dtype != 'f32'}
full = await m.logits(args['ids'])
device.force_matvec = True          # the decode kernels a real GPU runs (norm folded in)
try:
    st = m.new_state()
    steps = await m.step_logits(args['ids'], st)
    st.release()
finally:
    device.force_matvec = False
st = m.new_state()
plain = await m.step_logits(args['ids'], st)   # the separate-kernel path of this device
st.release()
m.release()
result = {'dtypes': dtypes, 'packed': packed, 'full': full, 'steps': steps, 'plain': plain}
"""


def rounded_copy(name, fmt, dest, packed):
    """The fixture with every tensor the engine stored narrow replaced by the f32 values of
    those packed bytes (its row-block pieces stacked back), checking they are the reference's
    rounding of the original (up to rounding ties)."""
    src = FIXTURES / name
    cfg = MambaConfig.from_hf_dict(json.loads((src / "config.json").read_text()))
    tensors = load_file(str(src / "model.safetensors"))
    narrowed = 0
    for hf_name, arr in tensors.items():
        pieces = gpu_layout.pieces(cfg, internal_name(hf_name), arr.shape)   # mamba_ssm names
        if hf_name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue                             # the engine reads the embedding instead
        if not any(narrowable(cfg, p, shape, fmt) for p, _, _, shape in pieces):
            assert not any(p in packed for p, _, _, _ in pieces)
            continue
        blocks = [ref.unpack(packed[p], shape, fmt) for p, _, _, shape in pieces]
        values = np.concatenate(blocks, axis=0)
        f32 = arr.astype(np.float32).reshape(arr.shape[0], -1)
        tie = ref.near_tie(f32, fmt)
        assert np.array_equal(values[~tie], ref.roundtrip(f32, fmt)[~tie]), hf_name
        tensors[hf_name] = values.astype(np.float32).reshape(arr.shape)
        narrowed += 1
    dest.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v.astype(np.float32)) for k, v in tensors.items()},
              str(dest / "model.safetensors"))
    shutil.copy(src / "config.json", dest / "config.json")
    return narrowed


@pytest.mark.parametrize("name,fmt", [("nemotronh-mamf-tied", "q4"), ("nemotronh-mamf-tied", "q8"),
                                      ("nemotronh-mamf-tied", "bf16"), ("mamba-d40-tied", "f16"),
                                      ("mamba3-g1-r05-tied", "f16"), ("falcon-d40-untied", "bf16")])
def test_narrow_model_equals_rounded_f32_model(engine, server, scratch_models, name, fmt):
    folder = f"rounded-{name}-{fmt}"
    got = engine.run(RUN, url=f"{server.url}/weights/{name}/", fmt=fmt, ids=IDS)
    narrowed = rounded_copy(name, fmt, scratch_models / folder, got["packed"])
    assert narrowed >= 3                     # embedding and layer matrices, not a vacuous check
    want = engine.run(RUN, url=f"{server.url}/weights/{folder}/", fmt="f32", ids=IDS)
    kinds = set(got["dtypes"].values())
    assert kinds == {"f32", fmt}
    assert got["dtypes"]["backbone.embeddings.weight"] == fmt
    assert all(v == "f32" for k, v in got["dtypes"].items() if "norm" in k or k.endswith("bias"))
    full, steps = (np.frombuffer(got[k], np.float32) for k in ("full", "steps"))
    # (NemotronH's step path differs from its prefill by design, as in transformers: compare
    # each path with the same path of the rounded model)
    ref_full, ref_steps = (np.frombuffer(want[k], np.float32) for k in ("full", "steps"))
    assert np.abs(full - ref_full).max() <= 1e-4
    assert np.abs(steps - ref_steps).max() <= 1e-4
    # the fused decode kernels (pre-norm folded into the projections) == separate kernels
    for run in (got, want):
        fused, plain = (np.frombuffer(run[k], np.float32) for k in ("steps", "plain"))
        assert np.abs(fused - plain).max() <= 1e-4


def test_unknown_format_is_refused(engine, server):
    out = engine.run("from py_engine.io.hf_loader import load_model\ntry:\n"
                     "    await load_model(device, args['url'], weights_format='int3')\n"
                     "    result = None\nexcept ValueError as e:\n    result = str(e)",
                     url=f"{server.url}/weights/mamba-d40-tied/")
    assert "unknown weight format 'int3'" in out and "q4" in out
