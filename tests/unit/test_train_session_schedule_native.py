"""The train page's session (py_engine/train/session.py) with the architecture chooser's
schedule options, on the native backend (wgpu-py, the tab's WGSL): a virtual-layer model and
bidirectional ones (mean, concat) train 3 steps with finite loss; the virtual one samples
through its logical layers, a bidirectional one skips samples (it cannot generate) without a
warning; a bad virtual schedule at Start is the sentence the form shows."""
import math

import pytest

from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")

RUN = """
from py_engine.train import session as S
from py_engine.train.data import ByteTokenizer
text = open(args['corpus']).read()[:20000]
out = {}
for name, model in args['models'].items():
    train = {'steps': 3, 'batch': 2, 'seq_len': 16, 'lr': 5e-3, 'sample_every': 2,
             'sample_tokens': 8}
    try:
        s = await S.PretrainSession.create(device, [text], ByteTokenizer(),
                                           dict(size='tiny', hidden_size=32, **model), train)
    except ValueError as e:
        out[name] = {'error': str(e)}
        continue
    await s.run()
    out[name] = {'status': s.status, 'loss': [v for _, v in s.history],
                 'samples': len(s.samples), 'warnings': s.warnings,
                 'virtual': s.cfg.virtual_layers, 'bidi': s.cfg.bidirectional,
                 'memory': S.memory_estimate(s.cfg, s.train)}
    s.release()
result = out
"""


@pytest.fixture(scope="module")
def runs():
    from tests.conftest import REPO
    from tools.native_engine import NativeEngine
    eng = NativeEngine()
    try:
        yield eng.run(RUN, corpus=str(REPO / "web" / "samples" / "python-stdlib.txt"), models={
            "plain": {}, "virtual": {"virtual": "6:stretched"},
            "mean": {"bidi": "mean"}, "concat": {"bidi": "concat"},
            "bad": {"virtual": "0,1,5"}})
    finally:
        eng.close()


def test_virtual_layers_train_and_sample(runs):
    r = runs["virtual"]
    assert r["status"] == "done" and r["virtual"] == [0, 0, 0, 1, 1, 1]
    assert len(r["loss"]) == 3 and all(math.isfinite(v) for v in r["loss"])
    assert r["samples"] == 2 and not r["warnings"]            # at step 2 and at the end
    assert r["memory"] > runs["plain"]["memory"]              # 6 layers' activations, not 2


@pytest.mark.parametrize("merge", ["mean", "concat"])
def test_bidirectional_trains_without_samples(runs, merge):
    r = runs[merge]
    assert r["status"] == "done" and r["bidi"]["merge"] == merge
    assert len(r["loss"]) == 3 and all(math.isfinite(v) for v in r["loss"])
    assert r["samples"] == 0 and not r["warnings"]


def test_a_bad_schedule_at_start_is_one_sentence(runs):
    assert runs["bad"] == {"error": "virtual schedule '0,1,5': 5 is not a physical layer; the "
                                    "model has 2 (0..1): use those indices or raise the layer "
                                    "count"}
