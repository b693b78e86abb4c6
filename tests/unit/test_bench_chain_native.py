"""tools/bench_chain.py (a decode-shaped chain of dependent f16 mat-vecs, one dispatch a stage
against one dispatch of resident workgroups that wait for their inputs inside the kernel) on the
native backend -- lavapipe here, whose times are a CPU's; what is checked is the arithmetic and
the waits: the one-dispatch-a-stage form equals a float64 chain of the same f16 weights; the
persistent form equals it bit for bit whenever no spin gave up, at one workgroup always and at
two where lavapipe runs two at once; a grid too large to be resident at once gives up its
spins, counts them, and ends (no hang)."""
import json

import numpy as np

from tests.native_support import native as pytestmark  # noqa: F401


def _chain_ref(dump):
    W = [np.array(w, dtype=np.uint32).view(np.float16).astype(np.float64) for w in dump["w"]]
    x = np.array(dump["x0"], dtype=np.float64)
    for n, k, kind, w_off, _in, _out in dump["stages"]:
        x = W[kind][8 * w_off:8 * w_off + n * k].reshape(n, k) @ x[:k]
    return x


def test_bench_chain_forms_agree_with_float64_and_give_up_when_not_resident(capsys):
    from tools.bench_chain import main
    # 2 layers of d 64 (in_proj 256 x 64, x_proj 16 x 128, dt 128 x 8, out_proj 64 x 128);
    # 2 weight sets; TPR 16 (a pass of 16 rows, the tree's steps through shuffles and
    # workgroup memory) and 64; 64 workgroups: more than lavapipe runs at once. Spins of at
    # most 4,000 loads: thread 0's waits, 8 stages of them, stay under lavapipe's 65,535 loop
    # passes an invocation (shaders/LOOP_BUDGET.md), past which its loops would stop silently
    main(["--d", "64", "--R", "8", "--N", "4", "--layers", "2", "--grids", "1,2,64",
          "--tpr", "16,64", "--tokens", "2", "--reps", "1", "--spin", "4000", "--no-ceilings",
          "--dump"])
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[1:]]
    dump, runs = rows[-1], rows[:-1]
    assert dump["sets"] == 2 and len(dump["stages"]) == 8
    ref = _chain_ref(dump)
    assert np.abs(ref).max() > 0.1                      # the chain keeps its scale
    by = {(r["form"], r["G"], r["tpr"]): r for r in runs}
    assert len(by) == 20                # stage, then persistent, words and layer at G 1, 2, 64
    for tpr in (16, 64):
        stage = by[("stage", None, tpr)]
        np.testing.assert_allclose(stage["y"], ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
        assert stage["fails"] == 0 and stage["same_as_stage_form"]
        for form in ("persistent", "words", "layer"):
            one = by[(form, 1, tpr)]
            assert one["fails"] == 0 and one["same_as_stage_form"]
            big = by[(form, 64, tpr)]
            assert big["fails"] > 0                 # gave up, counted, and the dispatch ended
    for r in runs:                  # right wherever no spin gave up (G 2: lavapipe's two threads)
        assert r["same_as_stage_form"] or r["fails"] > 0, r
        assert r["gpu_ms_per_token"] > 0
