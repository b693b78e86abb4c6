"""The harness the kernel tests share: run a Python snippet on GPU tensors built from numpy arrays
inside the page's Pyodide (or tools.native_engine.NativeEngine on the host) and read its outputs back.

    gpu = runner("import py_engine.ops.ssd as ssd")     # once per test module: that module's imports
    outs, info = gpu(engine, code, x=x, ids=ids)       # per call

Inside `code` (after the prelude): `dev` (the device), `T[name]` (a Tensor per keyword array, same shape;
f32 / i32 / u32 kept, other floats -- float64 references -- rounded to f32), `b` (one batch), `Tensor`,
`Cols`, and the runner's `setup` lines. The snippet fills `outs` {name: Tensor or None} and `info`
{name: JSON-able}; the epilogue submits the batch, reads every non-None output back and releases T.
Returns ({name: float64 array, flat} -- or the raw bytes with decode=False -- , info).
"""
import numpy as np

PRELUDE = """
from py_engine.gpu.tensor import Tensor
from py_engine.ops.conv1d import Cols
dev = device
T = {k: Tensor.from_bytes(dev, shp, args['data'][k], dt) for k, (shp, dt) in args['spec'].items()}
b = dev.batch()
outs = {}
info = {}
"""
EPILOGUE = """
b.submit()
result = {'outs': {k: await o.to_bytes() for k, o in outs.items() if o is not None},
          'info': info}
for t in T.values():
    t.release()
"""

DT = {np.float32: "f32", np.int32: "i32", np.uint32: "u32"}


def tensor_args(arrays):
    """{name: array} -> (spec {name: (shape, dtype name)}, data {name: bytes}) for the prelude's T."""
    spec, data = {}, {}
    for k, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.type not in DT and np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float32)
        a = np.ascontiguousarray(a)
        spec[k] = (list(a.shape), DT[a.dtype.type])
        data[k] = a.tobytes()
    return spec, data


def runner(setup="", decode=True):
    """gpu(engine, code, **arrays) running PRELUDE + setup + code + EPILOGUE. decode: outputs as f32
    read into float64 arrays (else the raw bytes, e.g. u32 ids)."""
    head = PRELUDE + setup.strip("\n") + "\n"

    def gpu(engine, code, **arrays):
        """Run `code` (which fills `outs` with tensors, `info` with anything) on tensors T[name]."""
        spec, data = tensor_args(arrays)
        res = engine.run(head + code + EPILOGUE, spec=spec, data=data)
        if not decode:
            return res["outs"], res["info"]
        outs = {k: np.frombuffer(v, dtype=np.float32).astype(np.float64) for k, v in res["outs"].items()}
        return outs, res["info"]

    return gpu


def rel_err(got, ref, scale=None):
    """max |got - ref| over the scale: max |ref| unless given."""
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(np.abs(ref).max() if scale is None else scale, 1e-30)
    return np.abs(np.asarray(got).reshape(ref.shape) - ref).max() / scale


def d64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)
