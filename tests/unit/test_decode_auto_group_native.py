"""Generator(group="auto") (the app's decode): after the ramp's first groups, each group is
sized to take about `group_ms` by the time the steps took so far, up to 32 steps; whatever the
sizes, the ids equal a fixed-group decode's (the states after a stop: tests/browser/
test_decode_pipeline.py). Native backend (lavapipe)."""
from tests.conftest import REPO
from tests.native_support import engine, native as pytestmark  # noqa: F401

FIXTURES = REPO / "tests" / "fixtures" / "models"

RUN = """
from py_engine.io.hf_loader import load_model_local
from py_engine.models.generate import Generator, SamplingConfig
model = await load_model_local(device, args['folder'])
out = {}
for name, group, group_ms in (('fixed', 8, None), ('tiny', 'auto', 1e-9), ('long', 'auto', 1e9)):
    gen = Generator(model, SamplingConfig(greedy=True), max_tokens=64, group=group)
    if group_ms is not None:
        gen.group_ms = group_ms
    sizes = []
    launch = gen._launch
    def spy(k, slot, first_input, launch=launch, sizes=sizes):
        sizes.append(k)
        return launch(k, slot, first_input)
    gen._launch = spy
    out[name] = {'ids': [t async for t in gen.stream([1, 2, 3], 21)], 'sizes': sizes,
                 'group': gen.group}
    gen.release()
model.release()
result = out
"""


def test_auto_groups_follow_the_measured_step_time(engine):
    out = engine.run(RUN, folder=str(FIXTURES / "mamba-d24-untied"))
    assert out["tiny"]["ids"] == out["long"]["ids"] == out["fixed"]["ids"]
    assert out["fixed"]["sizes"] == [1, 2, 3, 4, 6, 4]          # the ramp of groups of 8
    assert out["tiny"]["group"] == out["long"]["group"] == 32
    # a budget no step fits: one step per group once two groups' ids have come back (the
    # first three launched before any id arrived, the fourth after the first one's)
    assert out["tiny"]["sizes"] == [1, 2, 3, 4] + [1] * 10
    # a budget every group fits: the ramp up to 32 (20 steps: 1, 2, 3, 4, 6, then the rest)
    assert out["long"]["sizes"] == [1, 2, 3, 4, 6, 4]
