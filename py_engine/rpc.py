"""The Worker's entry points: boot the engine, and run a Python snippet sent by the page.

A snippet runs with top-level await in a fresh namespace holding `args` and `engine`
(this module's state); it sets `result`. bytes in args/result travel as {"__bytes__": base64}.
"""
import base64
import json
import sys

device = None          # the engine's GPU device once booted (None when WebGPU is missing)
gpu_error = None


def _encode(obj):
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return {"__bytes__": base64.b64encode(bytes(obj)).decode("ascii")}
    if isinstance(obj, float) and obj != obj or obj in (float("inf"), float("-inf")):
        return {"__float__": repr(obj)}   # JSON has no NaN/Infinity
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    return obj


def _decode(obj):
    if isinstance(obj, dict):
        if set(obj) == {"__bytes__"}:
            return base64.b64decode(obj["__bytes__"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


async def boot() -> str:
    global device, gpu_error
    from py_engine.gpu.browser import create_device
    from py_engine.gpu.errors import GPUUnavailable
    info = {"python": sys.version.split()[0]}
    try:
        device = await create_device()
        from py_engine.app import runtime
        runtime.device = device
        info["adapter"] = device.info
    except GPUUnavailable as e:
        gpu_error = str(e)
        info["gpu_error"] = gpu_error
    return json.dumps(info)


async def reinit(info_json="{}") -> str:
    """The GPU device was lost: mark it so (its sessions stop quietly: nothing on it can be
    read or saved any more), drop what lived on it, and boot a new adapter + device. The page
    then reloads its model / resumes its run from the autosave. Returns boot()'s JSON."""
    global device, gpu_error
    info = json.loads(info_json or "{}")
    old = device
    if old is not None:
        old.lost = {"reason": info.get("reason", "unknown"), "message": info.get("message", "")}
    try:
        from py_engine.app import generate_session
        generate_session.current.update(model=None, tokenizer=None, gen=None, pending=None)
    except ImportError:   # pragma: no cover
        pass
    from py_engine.train import session
    if session.current is not None and session.current.device is old:
        session.current.status = "error"
        session.current = None
    device = None
    out = json.loads(await boot())
    out["lost"] = info
    return json.dumps(out)


def empty_pool() -> str:
    """Debug op (the Worker's `debugEmptyPool`): destroy the free buffers of the device's
    pool. Freed buffers are kept for reuse, so a test that counts live GPU buffers across a
    load starts from an empty pool. Returns {"emptied": {buffers, bytes}, "stats"} as JSON."""
    if device is None:
        return json.dumps(None)
    emptied = device.empty_pool()
    return json.dumps({"emptied": emptied, "stats": device.stats()})


async def run_snippet(code: str, args_json: str) -> str:
    from pyodide.code import eval_code_async
    ns = {"__name__": "__snippet__", "args": _decode(json.loads(args_json)),
          "device": device, "result": None}
    await eval_code_async(code, globals=ns)
    return json.dumps(_encode(ns.get("result")))
