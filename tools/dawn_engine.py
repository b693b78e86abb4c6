"""Run the tab's engine under Node.js on Chrome's WebGPU (Dawn), no browser.

tools/dawn/engine_host.mjs loads Pyodide and py_engine exactly as the tab's Worker does
(web/js/gpu_bridge.mjs), with npm `webgpu`'s dawn.node as navigator.gpu; weights and the
packed engine come from our own server on localhost. `DawnEngine.run(code, **args)` runs a
snippet like tools/headless.py's and tools/native_engine.py's engines (top-level await,
`device` and `args` in scope, the snippet sets `result`), so the CLI and tests send the same
snippets to every backend.

Where things are found (the repo's own locations first, then the device bundle that
tools/dawn/unpack.sh lays out under .dawn/unpacked/):
  node      $MAMBAWEB_NODE, .dawn/unpacked/bin/node, `node` on PATH
  webgpu    tools/dawn/node_modules/webgpu (`make dawn`, or installed here with npm when missing)
  pyodide   node_modules/pyodide (what the server serves too)
  fallback  Chromium's SwiftShader Vulkan ICD, used only when the system's Vulkan drivers give
            Dawn no adapter and VK_DRIVER_FILES is unset (Mesa 22's lavapipe lacks features
            Dawn requires)
"""
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from tools.headless import decode, encode

REPO = Path(__file__).resolve().parent.parent
DAWN_DIR = REPO / "tools" / "dawn"
HOST_SCRIPT = DAWN_DIR / "engine_host.mjs"
WEBGPU_DIR = DAWN_DIR / "node_modules" / "webgpu"
PYODIDE_DIR = REPO / "node_modules" / "pyodide"
BUNDLE_NODE = REPO / ".dawn" / "unpacked" / "bin" / "node"
REPLY_PREFIX = "@@mw "
BOOT_TIMEOUT_S = 180


class DawnUnavailable(RuntimeError):
    """Node, the `webgpu` package, Pyodide or a Dawn adapter is missing (the message says which)."""


def find_node() -> str:
    env = os.environ.get("MAMBAWEB_NODE")
    if env:
        if not (Path(env).is_file() and os.access(env, os.X_OK)):
            raise DawnUnavailable(f"MAMBAWEB_NODE={env} is not an executable file: point it at a "
                                  "Node.js 20+ binary")
        return env
    if BUNDLE_NODE.is_file():
        return str(BUNDLE_NODE)
    found = shutil.which("node")
    if found is None:
        raise DawnUnavailable("Node.js is not installed: install Node 20+ (`apt-get install nodejs`), "
                              "set MAMBAWEB_NODE to a node binary, or unpack the device bundle with "
                              "`bash tools/dawn/unpack.sh`")
    return found


def find_webgpu(install=True) -> Path:
    """The npm `webgpu` package folder; runs `npm ci` in tools/dawn when it is missing."""
    if (WEBGPU_DIR / "index.js").is_file():
        return WEBGPU_DIR
    npm = shutil.which("npm")
    if not install or npm is None:
        raise DawnUnavailable(f"the npm package `webgpu` (Dawn) is not in {WEBGPU_DIR.parent}: run "
                              "`make dawn` (needs npm), or unpack the device bundle with "
                              "`bash tools/dawn/unpack.sh`")
    print("installing npm `webgpu` (Chrome's Dawn for Node, a ~51 MB download) into "
          f"{WEBGPU_DIR.parent}", file=sys.stderr, flush=True)
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=DAWN_DIR,
                       capture_output=True, text=True)
    if r.returncode != 0 or not (WEBGPU_DIR / "index.js").is_file():
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise DawnUnavailable("`npm ci` in tools/dawn could not install `webgpu`: " + " | ".join(tail))
    return WEBGPU_DIR


def find_pyodide() -> Path:
    if not (PYODIDE_DIR / "pyodide.mjs").is_file():
        raise DawnUnavailable(f"Pyodide is not installed at {PYODIDE_DIR}: run `npm ci` in the repo "
                              "root (or `make deps`), or unpack the device bundle with "
                              "`bash tools/dawn/unpack.sh`")
    return PYODIDE_DIR


def swiftshader_icd():
    """Chromium's SwiftShader Vulkan ICD (the CPU adapter CI's headless Chromium uses), if any."""
    from tools.headless import CHROMIUM
    for folder in (Path(CHROMIUM).resolve().parent, Path("/usr/lib/chromium")):
        icd = folder / "vk_swiftshader_icd.json"
        if icd.is_file():
            return icd
    return None


def dawn_problem(install=True):
    """None when Node, `webgpu` and Pyodide are all there; otherwise why not (for skips)."""
    try:
        find_node()
        find_webgpu(install=install)
        find_pyodide()
    except DawnUnavailable as e:
        return str(e)
    return None


class DawnEngine:
    """Our server on a free port + Node running tools/dawn/engine_host.mjs, booted.

    `info` is the engine's boot info: `adapter` (vendor, architecture, limits, features),
    `vulkan_icd`, `node`, `boot_ms`. `toggles`: Dawn instance toggles ("name=value") passed to
    `create()`, e.g. "backend=vulkan"."""

    def __init__(self, model_dirs=None, toggles=(), boot_timeout_s=BOOT_TIMEOUT_S):
        from server.app import create_app
        from tools.headless import LiveServer
        node, webgpu, pyodide = find_node(), find_webgpu(), find_pyodide()
        self._live = LiveServer(create_app(model_dirs or [], use_hf_cache=False))
        self._live.__enter__()
        self.server = self._live
        cmd = [node, str(HOST_SCRIPT), "--origin", self._live.url, "--pyodide", str(pyodide),
               "--webgpu", str(webgpu)]
        for t in toggles:
            cmd += ["--dawn-toggle", t]
        icd = swiftshader_icd()
        if icd is not None:
            cmd += ["--fallback-icd", str(icd)]
        env = dict(os.environ)
        env.setdefault("XDG_RUNTIME_DIR", "/tmp")   # silences the Vulkan loader's complaint
        self.stderr_lines = []                       # Dawn's warnings, Pyodide's prints
        self._replies = queue.Queue()
        self._next_id = 1
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, bufsize=1, env=env,
                                      cwd=REPO)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            self.info = self._wait_reply(0, boot_timeout_s, what="boot")
        except Exception:
            self.close()
            raise

    # -- the pipes -------------------------------------------------------------------------
    def _read_stdout(self):
        for line in self._proc.stdout:
            if line.startswith(REPLY_PREFIX):
                self._replies.put(json.loads(line[len(REPLY_PREFIX):]))
            else:                                  # native code printing to stdout
                self.stderr_lines.append(line.rstrip("\n"))
        self._replies.put(None)                    # the process ended

    def _read_stderr(self):
        for line in self._proc.stderr:
            self.stderr_lines.append(line.rstrip("\n"))

    def _log_tail(self, n=8):
        lines = [ln for ln in self.stderr_lines if ln.strip() and not ln.lstrip().startswith("at ")]
        return "\n".join(lines[-n:])

    def _wait_reply(self, rid, timeout_s, what):
        try:
            msg = self._replies.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"the Dawn engine gave no answer to {what} within {timeout_s} s; "
                               f"its log ends:\n{self._log_tail()}") from None
        if msg is None:
            raise DawnUnavailable(f"the Dawn engine (node) exited during {what} with code "
                                  f"{self._proc.wait()}; its log ends:\n{self._log_tail()}")
        if msg.get("id") != rid:
            raise RuntimeError(f"the Dawn engine answered request {msg.get('id')} while {rid} was due")
        if not msg["ok"]:
            err = msg["error"]
            if rid == 0:
                raise DawnUnavailable(f"the Dawn engine did not start: {err}\nits log ends:\n"
                                      f"{self._log_tail()}")
            raise RuntimeError(err)
        return msg["result"]

    # -- the engine ------------------------------------------------------------------------
    def run(self, code, timeout=600, **args):
        rid, self._next_id = self._next_id, self._next_id + 1
        self._proc.stdin.write(json.dumps({"id": rid, "code": code, "args": encode(args)}) + "\n")
        self._proc.stdin.flush()
        return decode(self._wait_reply(rid, timeout, what="a snippet"))

    def close(self):
        if self._proc.poll() is None:
            try:
                self._proc.stdin.close()           # the host exits when its stdin ends
                self._proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._live.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
