"""web/js/gpu_bridge.mjs's encodeAndSubmit, under Node with a recording stand-in for GPUDevice:
the calls it makes into WebGPU for a command list -- one compute pass per run of dispatches
(a copy ends it), setPipeline only where the pipeline changes within a pass (and again in a new
pass), setBindGroup and dispatchWorkgroups for every dispatch, one submit -- and a `count`
prefix encoding only the first commands."""
import json
import subprocess

from tests.conftest import REPO
from tools.dawn_engine import find_node

SCRIPT = """
import { pathToFileURL } from "node:url";
const bridge = await import(pathToFileURL(process.argv[2]).href);
const calls = [];
const pass = {
  setPipeline: (p) => calls.push(["setPipeline", p.name]),
  setBindGroup: (i, g) => calls.push(["setBindGroup", g]),
  dispatchWorkgroups: (x, y, z) => calls.push(["dispatch", x, y, z]),
  end: () => calls.push(["end"]),
};
const encoder = {
  beginComputePass: () => { calls.push(["begin"]); return pass; },
  copyBufferToBuffer: (...a) => calls.push(["copy", ...a]),
  finish: () => "cb",
};
const device = {
  createCommandEncoder: () => encoder,
  queue: { submit: (b) => calls.push(["submit", b.length]) },
};
const A = { name: "A" }, B = { name: "B" };
const cmds = [[0, A, 1, 2, 1, 1], [0, A, 2, 3, 1, 1], [1, "s", 0, "d", 0, 16],
              [0, A, 3, 4, 1, 1], [0, B, 4, 5, 1, 1], [0, A, 5, 6, 1, 1]];
bridge.encodeAndSubmit(device, cmds);
const all = calls.splice(0);
bridge.encodeAndSubmit(device, cmds, 2);
console.log(JSON.stringify({ all, prefix: calls, times: JSON.parse(bridge.takeSubmitTimes()) }));
"""


def test_encode_sets_a_pipeline_only_where_it_changes(tmp_path):
    script = tmp_path / "bridge.mjs"
    script.write_text(SCRIPT)
    r = subprocess.run([find_node(), str(script), str(REPO / "web" / "js" / "gpu_bridge.mjs")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["all"] == [
        ["begin"], ["setPipeline", "A"], ["setBindGroup", 1], ["dispatch", 2, 1, 1],
        ["setBindGroup", 2], ["dispatch", 3, 1, 1],               # A again: not set again
        ["end"], ["copy", "s", 0, "d", 0, 16],                    # a copy ends the pass
        ["begin"], ["setPipeline", "A"], ["setBindGroup", 3], ["dispatch", 4, 1, 1],
        ["setPipeline", "B"], ["setBindGroup", 4], ["dispatch", 5, 1, 1],
        ["setPipeline", "A"], ["setBindGroup", 5], ["dispatch", 6, 1, 1],
        ["end"], ["submit", 1]]
    assert out["prefix"] == [
        ["begin"], ["setPipeline", "A"], ["setBindGroup", 1], ["dispatch", 2, 1, 1],
        ["setBindGroup", 2], ["dispatch", 3, 1, 1], ["end"], ["submit", 1]]
    assert out["times"]["batches"] == 2 and out["times"]["commands"] == 8
