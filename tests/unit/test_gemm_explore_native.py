"""tools/gemm_explore.py (candidate forms of the prefill GEMM's tile, timed beside the engine's
own) stays runnable: every variant, the engine's kernel included, computes x @ W^T against
float64 at whole-tile shapes on the native backend (lavapipe here), and a shape that is not
whole tiles is refused by name. Skips, saying why, only without any Vulkan/Metal/D3D12 adapter."""
import pytest

from tests.native_support import native as pytestmark  # noqa: F401
from tests.async_run import run
from tools import gemm_explore


def test_every_variant_computes_the_product():
    names = list(gemm_explore.ENGINE) + list(gemm_explore.VARIANTS)
    rows = gemm_explore.run(names, [(128, 256, 48), (256, 128, 16)], reps=1)
    assert [r["variant"] for r in rows] == names * 2
    for r in rows:
        assert r["rel_err"] is not None and r["rel_err"] <= 1e-5, r
        assert r["us"] > 0, r


def test_a_shape_off_the_tiles_is_refused():
    with pytest.raises(ValueError, match="multiples of 128"):
        gemm_explore.run(["v16"], [(100, 128, 16)], reps=1)


def test_a_form_that_writes_little_fails_its_check(monkeypatch):
    """C is cleared before each variant's passes: a form that stores only C[0, 0] is not judged
    on the output a correct form left before it."""
    real = gemm_explore.gen
    lazy = "if (i == 0u && j == 0u) { c[0] = v.x; }"
    monkeypatch.setattr(gemm_explore, "gen", lambda **kw: real(**kw) if kw["load"] != "vec4"
                        else real(**kw).replace("c[o] = v.x; c[o + 1u] = v.y; c[o + 2u] = v.z; "
                                                "c[o + 3u] = v.w;", lazy))
    rows = gemm_explore.run(["b8", "v16"], [(128, 128, 16)], reps=1)
    assert rows[0]["rel_err"] <= 1e-5 and rows[1]["rel_err"] > 0.5, rows


def test_runs_where_the_thread_already_runs_an_event_loop():
    """As in the suite, where Playwright's sync API keeps a loop running in the main thread:
    the device comes up on the engine's own loop thread (tools.native_engine). The loop runs
    in a thread of its own (tests.async_run), so the case holds alone and inside the suite."""
    async def inside():
        return gemm_explore.run(["v16"], [(128, 128, 16)], reps=1)

    rows = run(inside())
    assert rows[0]["rel_err"] <= 1e-5, rows
