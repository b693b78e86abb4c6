"""The Dawn path (`mambaweb bench --dawn`): the tab's engine under Node.js on Chrome's WebGPU.

tools/dawn_engine.py starts Node with tools/dawn/engine_host.mjs, which runs Pyodide,
py_engine/gpu/browser.py and web/js/gpu_bridge.mjs unchanged with npm `webgpu`'s dawn.node as
navigator.gpu. Here it must compute what the native backend (wgpu-py) and transformers compute:
the same greedy tokens on fixture models of three families, and the bench must print its JSON.

Without a GPU, Dawn runs on Chromium's SwiftShader Vulkan driver (what CI's headless Chromium
uses). The module skips only when the npm package `webgpu` cannot be installed (no npm or no
registry); Node missing or Dawn finding no adapter are failures.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO
from tools.dawn_engine import DawnUnavailable, dawn_problem, find_node, find_webgpu

FIXTURES = REPO / "tests" / "fixtures" / "models"
MODELS = ["mamba-d24-untied-bf16", "mamba2-g2-untied", "nemotronh-mamf-untied"]

try:
    find_webgpu(install=True)
    _no_webgpu = None
except DawnUnavailable as e:
    _no_webgpu = str(e)
needs_webgpu = pytest.mark.skipif(_no_webgpu is not None,
                                  reason=f"npm `webgpu` could not be installed: {_no_webgpu}")
# the Makefile goes on without npm `webgpu` (a ~51 MB download): a strict run lets this skip
pytestmark = pytest.mark.may_skip

GREEDY_URL = """
from py_engine.io.hf_loader import load_model
from py_engine.models.generate import generate, SamplingConfig
model = await load_model(device, args['url'])
result = await generate(model, [int(i) for i in args['ids']], 16, SamplingConfig(greedy=True))
model.release()
"""
GREEDY_LOCAL = GREEDY_URL.replace("load_model", "load_model_local").replace("args['url']",
                                                                           "args['folder']")


@pytest.fixture(scope="module")
def dawn():
    from tools.dawn_engine import DawnEngine
    with DawnEngine(model_dirs=[FIXTURES]) as eng:
        yield eng


@needs_webgpu
def test_dawn_engine_boots_the_tab_engine_on_dawn(dawn):
    info = dawn.info
    assert info["adapter"]["vendor"], info           # Dawn's adapter info, as a tab reports it
    assert info["adapter"]["limits"]["maxStorageBuffersPerShaderStage"] >= 8
    assert info["python"].startswith("3.")           # Pyodide's Python, not the host's
    out = dawn.run("import sys\nresult = [sys.platform, type(device).__name__]")
    assert out == ["emscripten", "BrowserDevice"]    # py_engine/gpu/browser.py drives it


@needs_webgpu
@pytest.mark.parametrize("name", MODELS)
def test_dawn_greedy_tokens_equal_native_and_transformers(dawn, name):
    from tools.native_engine import NativeEngine, wgpu_adapter_problem
    problem = wgpu_adapter_problem()
    if problem is not None:
        pytest.skip(f"no native adapter to compare with: {problem}")
    exp = np.load(FIXTURES / name / "expected.npz")
    ids = exp["prompt_ids"].tolist()
    got = dawn.run(GREEDY_URL, url=f"{dawn.server.url}/weights/{name}/", ids=ids)
    with NativeEngine() as native:
        ref = native.run(GREEDY_LOCAL, folder=str(FIXTURES / name), ids=ids)
    assert got == ref
    assert got == exp["greedy_ids"].tolist()


@needs_webgpu
def test_snippet_errors_come_back_as_exceptions(dawn):
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        dawn.run("result = 1 / 0")
    assert dawn.run("result = args['x'] + 1", x=41) == 42   # the engine survives


@needs_webgpu
def test_variant_environment_is_the_engines_own(dawn):
    """`bench --dawn --variant`: the variables are set in the engine's Pyodide, where the
    kernel rules read them, and put back as they were after the variant's run."""
    from tools.bench_dawn import ENV_SNIPPET
    read = "import os\nresult = os.environ.get('MW_T_VARIANT')"
    saved = dawn.run(ENV_SNIPPET, env={"MW_T_VARIANT": "older"})
    assert saved == {"MW_T_VARIANT": None}
    assert dawn.run(read) == "older"
    dawn.run(ENV_SNIPPET, env=saved)
    assert dawn.run(read) is None


@needs_webgpu
def test_bench_dawn_prints_the_model_section_json():
    r = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "--dawn", "--json",
                        "--only", "model", "--models", "d256x4", "--decode-tokens", "4",
                        "--max-seconds", "0"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout)
    assert report["backend"] == "dawn" and report["adapter"]["vendor"]
    read = report["ceilings"]["read"]
    assert read["gb_per_s"] > 0                # measured on this device, before and after
    assert len(read["runs_gb_per_s"]) >= 2 and read["gb_per_s"] == max(read["runs_gb_per_s"])
    assert read["gb_per_s_first"] <= read["gb_per_s"]
    assert report["ceilings"]["dispatch_floor"]["gpu_us_per_dispatch"] >= 0
    split = report["engine_boot_split_ms"]          # where the engine's boot went
    assert set(split) == {"pyodide", "engine_zip", "imports", "gpu"} and split["pyodide"] > 0
    assert sum(split.values()) <= report["engine_boot_ms"] + 1
    m = report["model"]["d256x4"]
    assert (m["d_model"], m["layers"], m["vocab"]) == (256, 4, 6144)
    assert m["prefill"][0]["tokens_per_s"] > 0                      # 64 tokens ran
    assert all("skipped" in p for p in m["prefill"][1:])            # then the time cap
    assert m["decode"]["tokens"] == 4 and m["decode"]["tokens_per_s"] > 0
    assert max(m["decode"]["streams_tokens_per_s"]) == m["decode"]["tokens_per_s"]
    assert m["decode"]["dispatches_per_token"] > 0
    d = m["decode"]                      # where a token's time goes: host, GPU, readback
    assert d["host_ms_per_token"] > 0 and d["readback_ms"] > 0 and d["gpu_ms_per_token"] >= 0
    assert 0 <= d["gpu_busy"] <= 1
    # what the pipeline allows from those parts (pipeline_model): at least the GPU's time a
    # token, and the stream's ms over it
    assert d["pipeline_ms_per_token"] >= d["gpu_ms_per_token"] and 0 <= d["pipeline_gpu_busy"] <= 1
    assert d["stream_over_pipeline"] == d["ms_per_token"] / d["pipeline_ms_per_token"]
    assert d["floor_gpu_ms_per_token"] > 0 and d["gpu_over_floor"] >= 0     # annotate_floor
    # the host part split by the bridge's own clock: its parts add up to no more than it, and
    # a group of `group` steps encodes at least the step's dispatches per token
    split = d["host_split"]
    parts = split["encode_ms"] + split["finish_ms"] + split["submit_ms"] + split["other_ms"]
    assert split["encode_ms"] > 0
    assert d["host_ms_per_token"] - 1e-9 <= parts <= 1.05 * d["host_ms_per_token"] + 0.01
    assert split["commands_per_token"] >= d["dispatches_per_token"]
    assert split["encode_us_per_command"] > 0
    # the streamed run's time: queueing groups, waiting for ids, the rest, per token
    st = d["stream_split"]
    assert st["launch_ms"] > 0 and st["wait_ms"] >= 0 and st["waits"] >= 1
    assert len(st["wait_ms_each"]) == st["waits"]
    assert max(st["wait_ms_each"]) == pytest.approx(st["longest_wait_ms"], abs=1e-4)
    assert len(st["launch_ms_per_step"]) >= 1 and min(st["launch_ms_per_step"]) > 0
    host = st["host"]              # the stream's launches split as the lone group's
    assert host["encode_ms"] > 0 and host["commands_per_token"] >= d["dispatches_per_token"]
    assert host["encode_ms"] + host["finish_ms"] + host["submit_ms"] <= st["launch_ms"] * 1.05 + 0.01
    total = st["launch_ms"] + st["wait_ms"] + st["other_ms"]
    assert abs(total - d["ms_per_token"]) <= 0.01 * d["ms_per_token"] + 1e-6
    # each part on stderr as it ends (a run stopped by a timeout keeps what it measured): the
    # ceilings, then every format of every model, the same numbers as the report's
    from tools.bench_summary import parts_of_stderr
    said = parts_of_stderr(r.stderr)
    assert list(said) == ["ceilings"] + [f"model d256x4 {f}" for f in m["formats"]]
    floor = report["ceilings"]["dispatch_floor"]["gpu_us_per_dispatch"]
    assert said["ceilings"]["dispatch_floor"]["gpu_us_per_dispatch"] == floor
    for f, one in m["formats"].items():
        part = said[f"model d256x4 {f}"]
        assert part["prefill"] == one["prefill"] and part["weights"] == f
        assert part["decode"]["tokens_per_s"] == one["decode"]["tokens_per_s"]
    assert m["model_load_and_first_token_s"] > 0


def test_missing_node_is_named(monkeypatch):
    monkeypatch.setenv("MAMBAWEB_NODE", "/nonexistent/node")
    with pytest.raises(DawnUnavailable, match="MAMBAWEB_NODE=/nonexistent/node is not an executable"):
        find_node()
    assert "MAMBAWEB_NODE" in dawn_problem(install=False)


def test_bench_rejects_native_and_dawn_together():
    r = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "--dawn", "--native"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "one of --native and --dawn" in r.stderr
