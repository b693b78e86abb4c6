"""Decode with an op folded into the next mat-vec's input (shaders/lib/matvec_rows.wgsl) against
the separate dispatches: Mamba-2's gated RMSNorm and Mamba-3's gate into out_proj (GATED,
device.fuse_gated_norm) and NemotronH's MLP relu^2 into down_proj (RELU2, device.fuse_mlp_act), and Mamba-1's x_proj into in_proj + conv step's store (lib/matvec_xproj.wgsl,
device.fuse_xproj). Shared by
tests/unit/test_gated_norm_fold_native.py (lavapipe, the real-GPU kernels forced) and
tools/device_checks.py (a real GPU)."""
import numpy as np

from tests.browser.conv_fused_cases import PROBES

IDS = [1, 5, 9, 2, 7, 3, 11, 4]

RUN = PROBES + """
m = await load_model_local(device, args['folder'], weights_format=args['fmt'])
device.force_matvec = True
device.matvec_stage = args['stage']
for k, v in args.get('pin', {}).items():
    setattr(device, k, v)
out = {}
try:
    for fold in (False, True):
        setattr(device, args['flag'], fold)
        key = 'fold' if fold else 'plain'
        st = m.new_state()
        out[key] = await m.step_logits(args['ids'], st)
        st.release()
        out[key + '_b2'], st = await two_sequences(m, args['ids'])
        st.release()
        out[key + '_tokens'], out[key + '_dpt'] = await greedy(m, args['ids'])
finally:
    device.force_matvec = False
    device.matvec_stage = None
    for k in args.get('pin', {}):
        setattr(device, k, None)
    setattr(device, args['flag'], args.get('reset', True))
m.release()
result = out
"""


def check_fold(engine, folder, fmt, flag, fewer, stage=None, ids=IDS, tol=1e-5, reset=True,
               pin=None):
    """Logits (one sequence and two) within tol (relative to their largest) and greedy tokens
    equal with and without the fold named by `flag` (a device attribute, `reset` afterwards),
    `fewer` dispatches fewer per token with it (None: not counted). `pin`: other device
    attributes held for both runs (cleared afterwards), so that a fold that enables another
    counts only its own dispatches. Returns the run."""
    r = engine.run(RUN, folder=str(folder), fmt=fmt, ids=ids, stage=stage, flag=flag,
                   reset=reset, pin=pin or {})
    for key in ("", "_b2"):
        a = np.frombuffer(r["plain" + key], np.float32)
        b = np.frombuffer(r["fold" + key], np.float32)
        assert np.abs(a).max() > 0.05
        assert np.abs(a - b).max() <= tol * max(1.0, np.abs(a).max()), (key, np.abs(a - b).max())
    assert r["fold_tokens"] == r["plain_tokens"]
    if fewer is not None:                 # None: the count depends on the device's tier
        assert r["fold_dpt"] == r["plain_dpt"] - fewer, (r["plain_dpt"], r["fold_dpt"])
    return r


# Mamba-3 MIMO's one-dispatch step (ops/mamba3_mimo_step.py) in each form, as device attributes
MIMO_FORMS = {"head": {"mamba3_mimo_rows": False}, "rows": {"mamba3_mimo_rows": True}}


def mimo_layers(folder):
    """(layers, is_outproj_norm) of a MIMO model folder: its step saves 4 dispatches a layer
    against the separate kernels' 7, and with the norm runs a head a workgroup in either form."""
    import json
    from pathlib import Path
    from py_engine.models.config import MambaConfig
    cfg = MambaConfig.from_hf_dict(json.loads((Path(folder) / "config.json").read_text()))
    return cfg.num_hidden_layers, bool(cfg.is_outproj_norm)


def check_gated(engine, folder, fmt, stage=None, ids=IDS):
    """Mamba-2's gated norm: one dispatch fewer per layer where out_proj has no bias and the
    norm's groups split its input into whole vec4s (several groups: their 1/rms applied while
    x is staged); Mamba-3's gate (SISO without the out-projection norm): two fewer; with the
    norm (a group a head, the gate after it) one fewer where a head's dims are whole vec4s;
    MIMO none."""
    import json
    from pathlib import Path
    cfg = json.loads((Path(folder) / "config.json").read_text())
    ssm = cfg.get("ssm_cfg") or {}
    if ssm.get("layer") == "Mamba3":
        n = cfg["n_layer"]
        if ssm.get("is_mimo"):
            fewer = 0
        elif ssm.get("is_outproj_norm"):
            fewer = n if ssm["headdim"] % 4 == 0 else 0
        else:
            fewer = 2 * n
    else:
        D = cfg.get("hidden_size") or cfg["d_model"]
        heads, hd = cfg.get("mamba_num_heads"), cfg.get("mamba_head_dim")
        inner = heads * hd if heads and hd else int(cfg.get("expand", 2) * D)
        groups = cfg.get("n_groups", 1)
        from py_engine.models.config import MambaConfig
        mamba = MambaConfig.from_hf_dict(cfg).layers.count("mamba2")
        foldable = not cfg.get("use_bias", False) and inner % (4 * groups) == 0
        fewer = mamba if foldable else 0
    return check_fold(engine, folder, fmt, "fuse_gated_norm", fewer, stage, ids)


def check_relu2(engine, folder, fmt, stage=None, ids=IDS):
    """NemotronH's MLP layers: one dispatch fewer each (the same two operations, so within 1e-6)."""
    import json
    from pathlib import Path
    cfg = json.loads((Path(folder) / "config.json").read_text())
    kinds = cfg.get("layers_block_type") or []
    pattern = cfg.get("hybrid_override_pattern") or ""
    fewer = kinds.count("mlp") if kinds else pattern.count("-")
    return check_fold(engine, folder, fmt, "fuse_mlp_act", fewer, stage, ids, tol=1e-6)


def check_xproj(engine, folder, fmt, stage=None, ids=IDS, gather=0, pin=None):
    """Mamba-1's x_proj as the in_proj + conv dispatch's shares, summed by the scan step (taken
    wherever it fits: device.fuse_xproj = True): one dispatch fewer per layer where in_proj has
    no bias (x_proj's sums meet in another order: 1e-5 of the largest logit). gather
    (device.xproj_gather: 1 the largest group, or a group size): the shares gathered in groups
    inside the in_proj dispatch (lib/matvec_xproj_gather.wgsl), the scan summing the groups'
    totals -- and then no share word was ever given up on, and the words are left zeroed
    except the totals and that count. pin: other device attributes held for both runs (q4's
    fold needs two rows a thread: matvec_rpt 2)."""
    import json
    from pathlib import Path
    cfg = json.loads((Path(folder) / "config.json").read_text())
    fewer = 0 if cfg.get("use_bias", False) else cfg["num_hidden_layers"]
    r = check_fold(engine, folder, fmt, "fuse_xproj", fewer, stage, ids, reset=None,
                   pin={"xproj_gather": gather, **(pin or {})})
    if gather:
        words = engine.run(
            "out = []\n"
            "for n, t in sorted(getattr(device, '_xproj_words', {}).items()):\n"
            "    out.append((n, await t.to_bytes()))\n"
            "result = out")
        assert words, "the gathered fold never ran"
        for n, data in words:
            w = np.frombuffer(data, np.uint32)
            assert w[-1] == 0, f"{w[-1]} share words given up on"
            assert w.any(), "no totals were written"
    return r


def check_mamba3_lanes(engine, folder, ids=(1, 5, 9, 2, 7, 3)):
    """Mamba-3's lanes step (device.mamba3_step_lanes) against the thread-per-row step: SISO
    folds B's and C's norms into it, two dispatches fewer per layer, and mamba3_prep where the
    device binds its 10 storage buffers (ops/mamba3.step_folds_prep), one more; MIMO keeps its
    kernel."""
    import json
    from pathlib import Path
    cfg = json.loads((Path(folder) / "config.json").read_text())
    folds_prep, two, counted = engine.run(
        "import py_engine.ops.mamba3 as m3\n"
        "from py_engine.gpu.settings import storage_bindings\n"
        "saved = getattr(device, 'mamba3_step_lanes', None)\n"
        "device.mamba3_step_lanes = True\n"
        "result = (m3.step_folds_prep(device, False),\n"
        "          m3.step_splits(device) and not m3.step_last(device),\n"
        "          storage_bindings(device) >= m3.LAST_STORAGE)\n"
        "device.mamba3_step_lanes = saved")
    # below mamba3_step_rows_last's own 11 storage bindings (a Mac's 10) the folded step takes
    # one dispatch or two as in_proj laid out x, B and C (mamba3_step_folded_one.wgsl): not
    # counted there
    per_layer = 2 + bool(folds_prep) - bool(folds_prep and two)
    fewer = 0 if (cfg.get("ssm_cfg") or {}).get("is_mimo") else per_layer * cfg["n_layer"]
    if not counted and folds_prep and fewer:
        fewer = None
    return check_fold(engine, folder, "f32", "mamba3_step_lanes", fewer, ids=list(ids),
                      reset=None)
