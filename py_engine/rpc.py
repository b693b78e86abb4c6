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


async def run_snippet(code: str, args_json: str) -> str:
    from pyodide.code import eval_code_async
    ns = {"__name__": "__snippet__", "args": _decode(json.loads(args_json)),
          "device": device, "result": None}
    await eval_code_async(code, globals=ns)
    return json.dumps(_encode(ns.get("result")))
