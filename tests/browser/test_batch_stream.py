"""A streamed prefill in the tab (py_engine/gpu/batch.py's chunks through the worker's JS bridge
and Chromium's WebGPU): forced on here, since SwiftShader, a software adapter, does not stream by
itself; the hybrid fixture's logits and first token equal the unstreamed ones bit for bit, in
several submits instead of one."""
import pytest

pytestmark = pytest.mark.browser

RUN = """
import py_engine.gpu.batch as B
from py_engine.io.hf_loader import load_model
from py_engine.models.generate import Generator, SamplingConfig
model = await load_model(device, args['url'])
ids = [(i * 37) % model.cfg.vocab_size for i in range(12)]
out = {}
try:
    B.FIRST_CHUNK, B.MAX_CHUNK = 4, 8
    for stream in (False, True):
        device.stream_batches = stream
        s0 = device.stats()['submits']
        logits = await model.logits(ids)
        gen = Generator(model, SamplingConfig(greedy=True), max_tokens=32)
        tok = await gen.prefill(ids)
        gen.release()
        out[str(stream)] = {'logits': logits.hex(), 'token': tok,
                            'submits': device.stats()['submits'] - s0}
finally:
    B.FIRST_CHUNK, B.MAX_CHUNK = 32, 256
    device.stream_batches = None
model.release()
result = out
"""


def test_streamed_prefill_in_the_tab(engine, server):
    r = engine.run(RUN, url=f"{server.url}/weights/nemotronh-mamf-untied/")
    whole, streamed = r["False"], r["True"]
    assert streamed["submits"] > whole["submits"] + 4
    assert streamed["logits"] == whole["logits"] and streamed["token"] == whole["token"]
