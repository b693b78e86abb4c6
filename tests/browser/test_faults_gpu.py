"""Out of GPU memory while loading a model (issue 13): the device's allocation hook
(`Device.fail_allocations_over`, a forced allocation failure part-way through the weights)
and a model whose tensor is larger than the adapter's maxBufferSize are both refused with
one plain sentence, and every buffer taken before the failure is given back: live GPU
buffers and bytes return to their values before the attempt."""
import pytest

pytestmark = pytest.mark.browser

LOAD = """
import asyncio
from py_engine.app import generate_session as G

def live():
    s = device.stats()
    return [s['live_buffers'], s['live_bytes'], s['pool']['in_use']]

stable, last = 0, None
while stable < 4:        # the page may still be loading its own model
    now = live()
    stable = stable + 1 if now == last else 0
    last = now
    await asyncio.sleep(0.25)
G.unload()
before = live()
saved = dict(device.limits)
if args['how'] == 'oom':
    device.fail_allocations_over = 20_000          # bytes of new buffers, then "out of memory"
else:
    device.limits['maxBufferSize'] = 8_192         # an adapter smaller than one tensor
# a fresh pool, so every weight needs a new GPU buffer (the shared pool may hold free ones)
with device.private_pool() as pool:
    try:
        await G.load(args['url'])
        error = None
    except Exception as e:
        error = f'{type(e).__name__}: {e}'
    finally:
        device.fail_allocations_over = None
        device.limits.clear(); device.limits.update(saved)
in_use = pool.in_use                 # buffers the failed load still holds: none
device.release_pool(pool)
after_fail = live() + [in_use]
# the same model loads once the memory is there
await G.load(args['url'])
ok = G.current['model'] is not None
G.unload()
result = {'error': error, 'before': before, 'after_fail': after_fail, 'ok': ok}
"""


@pytest.mark.parametrize("how,words", [
    ("oom", ["GPUOutOfMemory", "the GPU ran out of memory allocating", "smaller model"]),
    ("max_buffer", ["DeviceLimitError", "exceeds this GPU's maxBufferSize of 0.0 MiB",
                    "16-bit/int8 weight dtype"]),
])
def test_out_of_memory_on_load_is_plain_and_leaves_nothing(engine, server, how, words):
    # a model whose weights need buffers of several classes, so the failure comes mid-load
    out = engine.run(LOAD, url=f"{server.url}/weights/mamba-d40-tied/", how=how)
    assert out["error"] is not None, out
    for w in words:
        assert w in out["error"], out["error"]
    assert out["after_fail"][3] == 0, "every buffer taken before the failure came back"
    assert out["after_fail"][:3] == out["before"], (out["after_fail"], out["before"])
    assert out["ok"]
