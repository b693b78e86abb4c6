"""The prefill diagnostics of the bench on the native backend (lavapipe here): the GEMM section
(py_engine/benchmarks/prefill_gemm.py) times each product with the 16-byte-staged tile and
without, gets the right sums either way and leaves the device's choice as it found it; the
recorded-first prefill (benchmarks/model.prefill_recorded_seconds) runs a real model's graph
unstreamed. Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
from pathlib import Path

from tests.native_support import engine, native as pytestmark  # noqa: F401

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "models" / "mamba-d24-untied"


def test_the_gemm_section_times_both_tiles_and_restores_the_choice(engine):
    r = engine.run("""
from py_engine.benchmarks import prefill_gemm
import py_engine.ops.linear as L
L.BIG_TILE_MIN_SIDE = 1          # the 128 tiles (the kk kernel's) at these small shapes
device.force_tiled_matmul = True
try:
    rows = await prefill_gemm.run(device, shapes=((130, 48, 129), (8, 32, 160)), min_seconds=0.0)
finally:
    L.BIG_TILE_MIN_SIDE = 65
    device.force_tiled_matmul = None
result = {'rows': rows, 'after': getattr(device, 'tiled_kk', 'unset')}
""")
    rows = r["rows"]
    assert [(x["M"], x["K"], x["N"], x["kk"]) for x in rows] == [
        (130, 48, 129, True), (130, 48, 129, False), (8, 32, 160, True), (8, 32, 160, False)]
    for x in rows:
        assert x["check"] == x["check_expected"] == 0.125 * x["K"]
        assert x["us_per_matmul"] > 0 and x["tflops"] > 0
    assert r["after"] is None


def test_the_recorded_prefill_runs_a_model_unstreamed(engine):
    r = engine.run("""
from py_engine.benchmarks import model as mb
from py_engine.io.hf_loader import load_model_local
from py_engine.autograd.functional import Ctx
model = await load_model_local(device, args['folder'])
submits = []
sub0 = device.submit_commands
device.submit_commands = lambda cmds, dispatches=0, *a, **k: (
    submits.append(dispatches), sub0(cmds, dispatches, *a, **k))[1]
result = await mb.prefill_recorded_seconds(model, 24, reps=2)
device.submit_commands = sub0
result['submits'] = submits
batch = device.batch()               # the same graph's dispatch count, recorded unsubmitted
state = model.new_state()
model.forward(Ctx(batch), model.ids_tensor(list(range(24))), 1, state, last_only=True)
result['graph'] = batch.dispatch_count
batch.discard()
model.release()
""", folder=str(FIXTURE))
    big = [d for d in r["submits"] if d > 4]       # the state's fills aside: the prefills
    assert big == [r["graph"], r["graph"]]         # each timed prefill in one whole submit
    assert r["recorded_seconds"] > 0
    assert abs(r["recorded_tokens_per_s"] - 24 / r["recorded_seconds"]) < 1e-6


def test_the_ops_section_times_the_scan_and_the_conv_and_gets_their_values(engine):
    """prefill_ops at a small shape: both ops timed, and their last outputs what a float64
    recurrence of the section's constant inputs gives (u 0.5, delta -1 + dt_bias 0.1, A -1,
    B 0.25, C 0.5, D 1, z 0.25; conv taps 0.25 over four tokens, silu)."""
    import math
    r = engine.run("""
from py_engine.benchmarks import prefill_ops
result = await prefill_ops.run(device, T=40, I=24, N=16, K=4, min_seconds=0.0)
""")
    ops = [x for x in r if "op" in x]
    assert [x["op"] for x in ops] == ["selective_scan_forward", "conv1d_forward"]
    assert all(x["us"] > 0 and x["reps"] >= 1 for x in ops)
    silu = lambda v: v / (1 + math.exp(-v))
    dt = math.log1p(math.exp(-1.0 + 0.1))
    h = 0.0
    for _ in range(40):
        h = math.exp(-dt) * h + dt * 0.5 * 0.25
    y = (16 * 0.5 * h + 0.5) * silu(0.25)
    scan_last, conv_last = r[-1]["check"]
    assert abs(scan_last - y) <= 1e-5 * abs(y), (scan_last, y)
    assert abs(conv_last - silu(4 * 0.5 * 0.25)) <= 1e-6
