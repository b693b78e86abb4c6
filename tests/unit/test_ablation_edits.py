"""The ablation tools' source edits (tools/ablate_ssd.py, tools/ablate_mamba3.py; applied by
tools/ablation.py) still name text
that is in the kernels, once each, and the entry points they skip exist: an edit whose text a
kernel change moved would stop the tool mid-run on a lent GPU (this session's first edit of
chunk_scalars did), or -- where a tool tolerated a miss -- time the unedited kernel."""
import pytest

from py_engine.gpu.shaders import shader_source
from tools import ablate_mamba3, ablate_ssd

CASES = [(shader, old if old is not None else f"fn {entry}(")     # (shader, None, entry): a skip
         for shader, old, entry in list(ablate_ssd.EDITS.values())
         + list(ablate_mamba3.EDITS.values()) + list(ablate_mamba3.TILE_EDITS.values())]


@pytest.mark.parametrize("shader,text", CASES, ids=[t[:40] for _, t in CASES])
def test_each_edit_names_text_found_once(shader, text):
    assert shader_source(shader).count(text) == 1, (shader, text)
