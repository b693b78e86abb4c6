"""Decode on a device of 10 storage bindings a shader stage -- what Chrome gives every Mac (Dawn
rounds an adapter's limit down to a tier of 8, 10 or 16, and Metal sits in the 10 tier) and
SwiftShader. The native device here is *requested* at that limit (MAMBAWEB_STORAGE_BINDINGS=10,
py_engine/gpu/native.py), so wgpu itself refuses any pipeline that binds more: every family's
decode with the real-GPU kernels forced must run through it, and the kernels fitted to the tier
must run there. Measured on an H100 through Dawn (tools/device/gpu_session.sh --tiers) before
this work: at 10 bindings mamba3_mimo_187m took 4.400 ms of GPU a token against 0.676 at 16.
Layer's parameters packed at load (ops/weight_pack.pack_params) are checked here too."""
import os

import numpy as np
import pytest

from tests.browser.conv_fused_cases import PROBES
from tests.browser.decode_fold_cases import MIMO_FORMS, check_fold, mimo_layers
from tests.conftest import REPO
from tests.native_support import entries_run, random_model, spread_parameters
from tests.native_support import native as pytestmark  # noqa: F401

FIX = REPO / "tests" / "fixtures" / "models"


@pytest.fixture(scope="module")
def engine10():
    """A native engine whose device was requested with 10 storage bindings a stage."""
    from tools.native_engine import NativeEngine
    old = os.environ.get("MAMBAWEB_STORAGE_BINDINGS")
    os.environ["MAMBAWEB_STORAGE_BINDINGS"] = "10"
    try:
        eng = NativeEngine()
    finally:
        if old is None:
            os.environ.pop("MAMBAWEB_STORAGE_BINDINGS", None)
        else:
            os.environ["MAMBAWEB_STORAGE_BINDINGS"] = old
    yield eng
    eng.close()


def test_the_device_is_requested_at_the_tier(engine10):
    assert engine10.device.limits["maxStorageBuffersPerShaderStage"] == 10


GREEDY = PROBES + """
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
try:
    result = await greedy(m, [1, 5, 9, 2])
finally:
    device.force_matvec = False
    m.release()
"""


@pytest.mark.parametrize("family,overrides,per_layer", [
    # in_proj with the conv step and x_proj's shares, the scan step with dt_proj, out_proj (6
    # before the conv's parameters were packed after the norm weight, the scan step's together
    # and x_proj's three row blocks side by side)
    ("mamba1", {}, 3),
    ("mamba2", {}, 3),      # in_proj with the conv step, SSD step, out_proj with the gated norm
    # in_proj, the folded step (a workgroup a head here; a real GPU splits it in two at this
    # tier, its one-dispatch rows form binding 11), out_proj: 6 before the parameters packed
    ("mamba3", {}, 3),
    ("mamba3", {"is_mimo": True, "mimo_rank": 4}, 3),   # the one-dispatch step: 8 bindings
])
def test_every_family_decodes_within_the_tier(engine10, tmp_path_factory, family, overrides,
                                              per_layer):
    """No kernel chosen at 10 bindings binds more (wgpu refuses it at pipeline creation), and
    each layer decodes in the dispatches it takes at that tier (and the token's own 4 besides:
    the embedding, the head's and sampling's)."""
    folder = random_model(tmp_path_factory, f"tier_{family}", family, **overrides)
    tokens, dpt = engine10.run(GREEDY, folder=str(folder), fmt="f16")
    assert len(tokens) == 12 and all(0 <= t < 128 for t in tokens)
    assert dpt == 4 + 2 * per_layer, dpt


@pytest.mark.parametrize("form", sorted(MIMO_FORMS))
@pytest.mark.parametrize("name", ["mamba3-mimo-r2-g1-r05-tied",
                                  "mamba3-mimo-r4-g2-r10-onorm-softplus"])
def test_mimo_takes_its_one_dispatch_step_at_the_tier(engine10, name, form):
    """The MIMO step reads the layer's parameters through one binding: on the 10 tier it runs
    (four dispatches a layer fewer than the separate kernels, the same logits and tokens), as
    its entry point shows."""
    folder = FIX / name
    layers, onorm = mimo_layers(folder)
    with entries_run(engine10) as seen:
        check_fold(engine10, folder, "f32", "mamba3_mimo_fused", 4 * layers, reset=None,
                   pin=MIMO_FORMS[form])
    ran = "mamba3_step_mimo" if onorm or form == "head" else "mamba3_step_mimo_rows"
    assert ran in seen, sorted(seen)


PACK = """
from py_engine.io.hf_loader import load_model_local
from py_engine.ops.mamba3_mimo_step import packed_params
m = await load_model_local(device, args['folder'], weights_format='q4')
mixer = m.mixers[0]
w = mixer.mimo_kw['weights']
one = packed_params(w)
names = [k for k in ('mimo_z', 'mimo_o', 'dt_bias', 'B_bias', 'C_bias', 'D', 'mimo_x', 'B_norm',
                     'C_norm', 'norm_w') if w.get(k) is not None]
bufs = {id(w[k].buffer) for k in names}
vals = {k: bytes(await w[k].to_bytes()) for k in names}
m.release()
result = dict(offsets=None if one is None else one[1], buffers=len(bufs), names=names, vals=vals,
              align=device.align)
"""


def test_a_mimo_layers_parameters_load_into_one_buffer(engine10, tmp_path_factory):
    """Every parameter the step reads lies in one buffer at its own aligned offset, holding the
    checkpoint's values (q4 weights: the parameters stay f32)."""
    folder = spread_parameters(random_model(tmp_path_factory, "tier_pack", "mamba3",
                                            is_mimo=True, mimo_rank=2, is_outproj_norm=True))
    r = engine10.run(PACK, folder=str(folder))
    assert r["buffers"] == 1 and len(r["names"]) == 10
    assert r["offsets"] is not None and len(set(r["offsets"])) == 10
    assert all(o * 4 % r["align"] == 0 for o in r["offsets"])
    from safetensors.torch import load_file as load_torch    # bf16 on disk
    disk = load_torch(str(folder / "model.safetensors"))
    hf = {"mimo_z": "mimo_z", "mimo_o": "mimo_o", "dt_bias": "dt_bias", "B_bias": "B_bias",
          "C_bias": "C_bias", "D": "D", "mimo_x": "mimo_x", "B_norm": "B_norm.weight",
          "C_norm": "C_norm.weight", "norm_w": "norm.weight"}
    for k in r["names"]:
        want = disk[f"backbone.layers.0.mixer.{hf[k]}"].float().numpy().ravel()
        got = np.frombuffer(r["vals"][k], np.float32)
        np.testing.assert_array_equal(got, want, err_msg=k)


def test_a_device_below_ten_bindings_is_refused_up_front():
    """Dawn's lowest tier, 8: the scan and mat-vec kernels bind 9-10, so such a device would
    fail at its first pipeline with a validation error; it is refused at creation instead,
    with the numbers and what to do."""
    from py_engine.gpu.errors import GPUUnavailable
    from tools.native_engine import NativeEngine
    old = os.environ.get("MAMBAWEB_STORAGE_BINDINGS")
    os.environ["MAMBAWEB_STORAGE_BINDINGS"] = "8"
    try:
        with pytest.raises(GPUUnavailable, match=r"binds 8 storage buffers .* need 10 .* another GPU"):
            NativeEngine()
    finally:
        if old is None:
            os.environ.pop("MAMBAWEB_STORAGE_BINDINGS", None)
        else:
            os.environ["MAMBAWEB_STORAGE_BINDINGS"] = old


@pytest.mark.parametrize("fmt", ["f16", "q4"])
def test_mamba3_takes_its_one_dispatch_rows_step_at_the_tier(engine10, tmp_path_factory, fmt):
    """Mamba-3 SISO's rows form in one dispatch (mamba3_step_rows_last) binds 11 with x, B and
    C apart; where the packed in_proj wrote them beside the raw scalars it reads them through
    that binding (mamba3_step_folded_one.wgsl: 8), so on the 10 tier it runs -- a dispatch a
    layer fewer than the head-and-rows split, the same logits and tokens."""
    folder = spread_parameters(random_model(tmp_path_factory, f"tier_m3_{fmt}", "mamba3"))
    with entries_run(engine10) as seen:
        check_fold(engine10, folder, fmt, "mamba3_step_last", 2, reset=None,
                   pin={"mamba3_step_split": True})
    assert "mamba3_step_rows_last" in seen and "mamba3_step_rows" in seen, sorted(seen)
