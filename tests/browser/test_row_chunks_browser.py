"""In the tab (Pyodide + the browser's WebGPU, SwiftShader here): a model whose embedding and LM
head are held as row blocks (py_engine/gpu/row_chunks.py; a 64 KiB binding cap splits this
tiny model's 2400 x 32 table into 5 blocks, as a 128 MiB-binding GPU splits mamba-130m's) loads
over HTTP and computes exactly what the whole model computes: prompt logits, step logits (plain
kernels and the fused mat-vec), greedy tokens through the recorded decode graph, for f32 and a
4-bit table; and its training gradients equal the whole model's up to float32 rounding."""
import numpy as np
import pytest

pytestmark = pytest.mark.browser
CAP = 64 * 1024
IDS = [5, 900, 2399, 64, 63, 1700]

RUN = """
from py_engine.io.hf_loader import load_model
from py_engine.models.generate import Generator, SamplingConfig
from py_engine.train.trainer import Trainer
out = {}
for fmt, cap in args['runs']:
    device.binding_cap = cap
    try:
        m = await load_model(device, args['url'], weights_format=fmt)
        r = {'blocks': len(m.lm_head.parts) if hasattr(m.lm_head, 'parts') else 1,
             'full': await m.logits(args['ids'])}
        device.force_matvec = True
        try:
            st = m.new_state()
            r['matvec'] = await m.step_logits(args['ids'], st)
            st.release()
        finally:
            device.force_matvec = False
        st = m.new_state()
        r['steps'] = await m.step_logits(args['ids'], st)
        st.release()
        gen = Generator(m, SamplingConfig(greedy=True), max_tokens=32)
        r['tokens'] = [t async for t in gen.stream(args['ids'], 9)]
        gen.release()
        if fmt == 'f32':
            tr = Trainer(m)
            r['grads'], r['loss'] = await tr.gradients(args['ids'], args['ids'], 1, len(args['ids']))
            tr.release()
        m.release()
    finally:
        device.binding_cap = None
    out[f'{fmt}/{cap}'] = r
result = out
"""


def test_split_tables_equal_the_whole_ones_in_the_tab(engine, server, scratch_models):
    from tools import convert_host
    from tools.init_weights import init_weights, make_config
    cfg = make_config("nano", family="mamba1", hidden_size=32, num_hidden_layers=2,
                      vocab_size=2400, tie_word_embeddings=False)
    convert_host.write_hf(scratch_models / "wide-vocab-untied", cfg, init_weights(cfg, 0), "F32")
    runs = [("f32", None), ("f32", CAP), ("q4", None), ("q4", CAP)]
    out = engine.run(RUN, url=f"{server.url}/weights/wide-vocab-untied/", ids=IDS, runs=runs)
    for fmt in ("f32", "q4"):
        whole, split = out[f"{fmt}/None"], out[f"{fmt}/{CAP}"]
        assert whole["blocks"] == 1 and split["blocks"] == 5
        for path in ("full", "steps", "matvec"):
            a, b = (np.frombuffer(r[path], np.float32) for r in (whole, split))
            assert a.size == len(IDS) * 2400 and np.abs(a).max() > 0.05
            assert np.array_equal(a, b), (fmt, path, np.abs(a - b).max())
        assert split["tokens"] == whole["tokens"] and len(set(whole["tokens"])) > 3
    whole, split = out["f32/None"], out[f"f32/{CAP}"]
    assert split["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert set(split["grads"]) == set(whole["grads"]) and "lm_head.weight" in whole["grads"]
    for name, g in whole["grads"].items():
        a, b = np.frombuffer(g, np.float32), np.frombuffer(split["grads"][name], np.float32)
        assert np.abs(a - b).max() <= 2e-5 * np.abs(a).max(), name
