"""Out of GPU memory part-way through loading a model on the native backend (lavapipe here,
`Device.fail_allocations_over` forcing the failure): the loader's one sentence, and every
pooled buffer the load took given back -- failing at a Mamba-3 layer's in_proj pack
(py_engine/ops/weight_pack.py, the first layer packed already) and anywhere in a q4 load
(narrowing included). tests/browser/test_faults_gpu.py has the browser's forms."""
from tests.native_support import engine, mamba3_d64, native as pytestmark  # noqa: F401


OOM_AT_PACK = """
import py_engine.models.packing as PK
from py_engine.io.hf_loader import load_model_local
sizes, calls = [], []
make, pack = device.buffer, PK.pack_rows
def logged(nbytes, *a, **k):
    sizes.append(nbytes)
    return make(nbytes, *a, **k)
def spied(dev, ts):
    calls.append(len(sizes))                   # buffers made before this pack
    try:
        return pack(dev, ts)
    except Exception:
        calls.append('raised')
        raise
device.buffer, PK.pack_rows = logged, spied
try:
    for _ in range(2):           # the second load's buffers are the next one's (uniforms cached)
        sizes.clear()
        calls.clear()
        with device.private_pool() as pool:    # every pooled buffer new
            m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
            m.release()
        device.release_pool(pool)
    full, at = list(sizes), list(calls)
    calls.clear()
    with device.private_pool() as pool:
        # room for every buffer made before the second layer's pack: its one fails
        device.fail_allocations_over = sum(full[:at[1]]) + 3
        try:
            await load_model_local(device, args['folder'], weights_format=args['fmt'])
            error = None
        except Exception as e:
            error = f'{type(e).__name__}: {e}'
        finally:
            device.fail_allocations_over = None
    result = {'error': error, 'in_use': pool.in_use, 'calls': [c if c == 'raised' else 'pack'
                                                               for c in calls]}
    device.release_pool(pool)
finally:
    device.buffer, PK.pack_rows = make, pack
"""



def test_out_of_memory_while_packing_is_plain_and_leaves_nothing(engine, mamba3_d64):
    """The second layer's pack cannot allocate (the first layer packed already): the loader's
    one sentence, and every buffer the load took given back, the packed first layer's through
    its first block. (f32: a narrow load's packs reuse the f32 buffers narrowing gave back.)"""
    r = engine.run(OOM_AT_PACK, folder=str(mamba3_d64), fmt="f32")
    assert r["calls"] == ["pack", "pack", "raised"], r
    assert r["error"] is not None and r["error"].startswith("GPUOutOfMemory"), r
    assert "the GPU ran out of memory loading the weights of" in r["error"], r
    assert r["in_use"] == 0, r


OOM_ANYWHERE = """
from py_engine.io.hf_loader import load_model_local
sizes = []
make = device.buffer
def logged(nbytes, *a, **k):
    sizes.append(nbytes)
    return make(nbytes, *a, **k)
device.buffer = logged
try:
    for _ in range(2):           # the second load's buffers are the next ones' (uniforms cached)
        sizes.clear()
        with device.private_pool() as pool:
            m = await load_model_local(device, args['folder'], weights_format='q4')
            m.release()
        device.release_pool(pool)
finally:
    device.buffer = make
full = list(sizes)
result = []
for cut in range(1, len(full), max(1, len(full) // 12)):
    with device.private_pool() as pool:
        device.fail_allocations_over = sum(full[:cut]) + 3
        try:
            await load_model_local(device, args['folder'], weights_format='q4')
            error = None
        except Exception as e:
            error = type(e).__name__
        finally:
            device.fail_allocations_over = None
    result.append([cut, error, pool.in_use])
    device.release_pool(pool)
"""


def test_out_of_memory_anywhere_in_a_q4_load_leaves_nothing(engine, mamba3_d64):
    """A q4 load failing at a dozen points: each time the one error and no buffer held after.
    (Failing while narrowing a chunk, a load held the f32 tensors narrow_weights had already
    replaced -- 10-18 buffers of a two-layer model -- until this test.)"""
    r = engine.run(OOM_ANYWHERE, folder=str(mamba3_d64))
    assert len(r) >= 10, r
    assert all(err == "GPUOutOfMemory" and in_use == 0 for _, err, in_use in r), r
