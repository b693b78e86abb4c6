"""Kernel correctness on a real GPU: the checks that CI runs on software adapters, run on the GPU
that picks the real-GPU kernels by itself (the tiled GEMM with split-K, the lanes scan, the conv
step folded into Mamba-1/2's decode in_proj, Mamba-1's x_proj into it, Mamba-2's gated norm into
out_proj, NemotronH's MLP activation into down_proj, Mamba-2's and Mamba-3's lanes decode
steps, the decode's counters in the sampler, the sampler's kept lists and spread top-k), and
the decode mat-vec with x staged in workgroup memory.

  python -m tools.device_checks --engine native      # wgpu-py (Vulkan/Metal/D3D12)
  python -m tools.device_checks --engine dawn        # Chrome's Dawn under Node (tools/dawn_engine.py)
  python -m tools.device_checks --only "x_proj"      # the cases whose name holds the text

Runs the shared check functions of the kernel tests (tests/browser/*_cases.py) at shapes larger
than CI's, against float64 numpy; prints one JSON line per case ({"case", "ok", "error"?}) and
exits 1 if any failed.
"""
import argparse
import json
import sys
import traceback


def gemm_cases():
    from tests.browser.tiled_matmul_cases import check_products
    shapes = [(1, 5, 3), (70, 133, 150), (256, 2048, 512), (1024, 4096, 160), (300, 128, 4096),
              (129, 1030, 20)]
    for M, K, N in shapes:
        for big in (False, True):
            yield f"gemm M{M} K{K} N{N} {'128' if big else '64'}", \
                (lambda e, M=M, K=K, N=N, big=big: check_products(e, M, K, N, big))


def scan_cases():
    from tests.browser.scan_lanes_cases import check_lanes
    # (nb, T, I, N, chunk, eps, backward): one chunk and several, Falcon's B/C norms, N < 16
    for nb, T, I, N, chunk, eps, bw in [(1, 1024, 520, 16, None, None, False),
                                        (2, 300, 96, 16, 64, 1e-6, True),
                                        (2, 77, 40, 4, 16, None, True)]:
        yield f"scan nb{nb} T{T} I{I} N{N} chunk{chunk} eps{eps} bw{bw}", \
            (lambda e, a=(nb, T, I, N, chunk), eps=eps, bw=bw:
             check_lanes(e, *a, eps=eps, backward=bw, seed=7))


def decode_cases():
    from pathlib import Path
    from tests.browser.conv_fused_cases import check_fused
    fix = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models"
    for name in ("mamba-d40-tied", "falcon-d40-untied", "mamba2-g2-untied"):
        for fmt in ("f32", "q4"):
            yield f"decode conv fused {name} {fmt}", \
                (lambda e, name=name, fmt=fmt: check_fused(e, fix / name, fmt, [1, 5, 9, 2, 7, 3]))


def fold_cases():
    from pathlib import Path
    from tests.browser.decode_fold_cases import (check_fold, check_gated, check_mamba3_lanes,
                                                 check_relu2, check_xproj)
    from tests.browser.xproj_gather_cases import check_early_same_bits, check_gather
    repo = Path(__file__).resolve().parents[1]
    for folder, fmt in ((repo / "tests" / "fixtures" / "models" / "mamba2-g1-tied", "f32"),
                        (repo / "models" / "default", "f32"), (repo / "models" / "default", "q4")):
        yield f"decode gated norm folded {folder.name} {fmt}", \
            (lambda e, folder=folder, fmt=fmt: check_gated(e, folder, fmt))
    # several norm groups (Mamba-2's n_groups) and Mamba-3's head-wise norm before its gate,
    # each group's 1/rms applied while out_proj stages its input
    for family, over in (("mamba2", {"n_groups": 4}), ("mamba3", {"is_outproj_norm": True})):
        for fmt in ("f32", "q4"):
            yield f"decode gated norm grouped {family} {fmt}", \
                (lambda e, family=family, over=over, fmt=fmt:
                 check_gated(e, _random_model(64, family, **over), fmt))
    for name in ("mamba-d40-tied", "falcon-d40-untied"):
        for fmt in ("f32", "f16"):
            folder = repo / "tests" / "fixtures" / "models" / name
            yield f"decode x_proj folded {name} {fmt}", \
                (lambda e, folder=folder, fmt=fmt: check_xproj(e, folder, fmt))
            # the shares gathered inside the dispatch (lib/matvec_xproj_gather.wgsl): one group
            # of five, and groups of two
            for gather in (1, 2):
                yield f"decode x_proj gathered {gather} {name} {fmt}", \
                    (lambda e, folder=folder, fmt=fmt, gather=gather:
                     check_xproj(e, folder, fmt, gather=gather))
    # the gathered dispatch alone against the plain one (tests/browser/xproj_gather_cases.py):
    # each group's total its shares added in order, the words left zeroed
    for fmt, F in (("f32", 2), ("f16", 3), ("bf16", 8), ("q8", 3), ("q4", 2)):
        yield f"decode x_proj gathered kernel {fmt} groups of {F}", \
            (lambda e, fmt=fmt, F=F: check_gather(e, fmt, F))
    # and at a width with many groups: d 512 (1,024 channels, 64 shares of 64 outputs), the
    # groups of 16 the rule takes and groups of 4
    for gather in (1, 4):
        yield f"decode x_proj gathered {gather} mamba1 d512 f16", \
            (lambda e, gather=gather: check_xproj(e, _random_model(512), "f16", gather=gather))
    # x_proj's chunks loaded at the kernel's start (weight_format.xproj_early): the same bits
    for fmt, F in (("f32", 2), ("f16", 3), ("q4", 2)):
        yield f"decode x_proj gathered early kernel {fmt} groups of {F}", \
            (lambda e, fmt=fmt, F=F: check_early_same_bits(e, fmt, F))
    yield "decode x_proj gathered early 1 mamba1 d512 f16", \
        (lambda e: check_xproj(e, _random_model(512), "f16", gather=1, pin={"xproj_early": True}))
    # q8 (each share times its x_proj row's scale) and q4 (each chunk's terms times its
    # group's scale, two rows a thread): forced plain, and gathered, at d 512; and at
    # mamba-1.4b's width (d 2,048: 4,096 channels, 160 x_proj outputs), where the rule gathers
    # every format since the thirty-eighth session, the fold the bench times there in f16 too
    for d, fmts, gathers in ((512, ("q8", "q4"), (0, 1)), (2048, ("f16", "q8", "q4"), (1,))):
        for fmt in fmts:
            pin = {"matvec_rpt": 2} if fmt == "q4" else None
            for gather in gathers:
                yield f"decode x_proj {'gathered' if gather else 'folded'} {fmt} mamba1 d{d}", \
                    (lambda e, d=d, gather=gather, fmt=fmt, pin=pin:
                     check_xproj(e, _random_model(d), fmt, gather=gather, pin=pin))
    hybrid = repo / "tests" / "fixtures" / "models" / "nemotronh-mamf-untied"
    yield "decode MLP relu2 folded nemotronh-mamf-untied f32", \
        (lambda e: check_relu2(e, hybrid, "f32"))
    for folder in (repo / "tests" / "fixtures" / "models" / "mamba2-g2-untied", hybrid,
                   repo / "models" / "default"):
        yield f"decode ssd step lanes {folder.name} f32", \
            (lambda e, folder=folder: check_fold(e, folder, "f32", "ssd_step_lanes", 0, reset=None))
    for name in ("mamba3-g1-r05-tied", "mamba3-g2-r10-untied-onorm"):
        folder = repo / "tests" / "fixtures" / "models" / name
        yield f"decode mamba3 step lanes {name} f32", \
            (lambda e, folder=folder: check_mamba3_lanes(e, folder))
    from tests.browser.control_fold_cases import MODES, check_rows, check_streams
    for name in ("mamba-d40-tied", "mamba2-g2-untied"):
        for mode in MODES:
            folder = repo / "tests" / "fixtures" / "models" / name
            yield f"decode counters in the sampler {name} {mode}", \
                (lambda e, folder=folder, mode=mode: check_streams(e, folder, mode))
    for mode in ("greedy", "draw", "passes", "passes_temp"):
        yield f"decode counters in the sampler two rows {mode}", \
            (lambda e, mode=mode: check_rows(e, mode))
    from tests.browser.sampling_passes_cases import (SETTINGS, SPREAD_SETTINGS, TOPP_SETTINGS,
                                                     check_kept_lists, check_penalty,
                                                     check_spread, check_topp_alone,
                                                     check_passes, check_passes_edges,
                                                     PASSES_SETTINGS, setting_name)
    for kw in SETTINGS:
        for V, rows in ((5000, 2), (50280, 1), (152064, 1)):
            yield f"sampling kept lists k{kw['top_k']} V{V} rows{rows}", \
                (lambda e, kw=kw, V=V, rows=rows: check_kept_lists(e, kw, V, rows))
    for kw in SPREAD_SETTINGS:
        for V, rows in ((5000, 2), (50280, 1), (152064, 1)):
            yield f"sampling spread {setting_name(kw)} V{V} rows{rows}", \
                (lambda e, kw=kw, V=V, rows=rows: check_spread(e, kw, V, rows))
    for V, rows in ((5000, 2), (50280, 1), (152064, 1), (300_000, 1)):
        yield f"sampling penalty where read V{V} rows{rows}", \
            (lambda e, V=V, rows=rows: check_penalty(e, V, rows))
    for kw in TOPP_SETTINGS:
        for V, rows in ((5000, 5), (50280, 3), (152064, 3)):
            yield f"sampling top-p alone p{kw['top_p']} V{V} rows{rows}", \
                (lambda e, kw=kw, V=V, rows=rows: check_topp_alone(e, kw, V, rows))
    for kw in PASSES_SETTINGS:
        for V, rows in ((5000, 5), (50280, 3), (152064, 3)):
            yield (f"sampling passes k{kw['top_k']} p{kw['top_p']} t{kw['temperature']} V{V} "
                   f"rows{rows}"), \
                (lambda e, kw=kw, V=V, rows=rows: check_passes(e, kw, V, rows))
    for V in (5000, 50280, 152064):
        yield f"sampling passes edges V{V}", (lambda e, V=V: check_passes_edges(e, V))


def _random_model(d, family="mamba1", **overrides):
    """A random d_model-d model of two layers (Mamba-1, or `family`, with config overrides),
    written inside the checkout (git-ignored .bench/): the Dawn engine's Pyodide sees the
    checkout's files, not /tmp's."""
    from pathlib import Path
    key = (d, family) + tuple(sorted(overrides.items()))
    if key not in _RANDOM:
        from tools.cmd_bench import _write_random_model
        name = f"{family}_d{d}"
        name += "".join(f"_{k}{v}" for k, v in sorted(overrides.items()))
        folder = Path(__file__).resolve().parents[1] / ".bench" / name
        folder.mkdir(parents=True, exist_ok=True)
        _write_random_model(str(folder), dict(d_model=d, n_layers=2, vocab_size=128,
                                              family=family, overrides=overrides))
        _RANDOM[key] = folder
    return _RANDOM[key]


_RANDOM = {}


def pieces_cases():
    from pathlib import Path
    from tests.browser.decode_fold_cases import check_fold
    from tests.browser.matvec_pieces_cases import check_pieces
    # mamba3-187m's in_proj blocks (d 768: z, x 1,536; B, C 128; dd_dt, dd_A, trap 24; 32
    # angle pairs) in one dispatch: pinned choices (the same bits as three to a dispatch) and
    # the rule's
    rows = (1536, 1536, 128, 128, 24, 24, 24, 32)
    for fmt in ("f32", "f16", "bf16", "q8", "q4"):
        yield f"matvec pieces 187m-shaped {fmt} pinned", \
            (lambda e, fmt=fmt: check_pieces(e, fmt, K=768, rows=rows, tpr=32, rpt=1,
                                             stage=True))
        yield f"matvec pieces 187m-shaped {fmt} rule", \
            (lambda e, fmt=fmt: check_pieces(e, fmt, K=768, rows=rows, same_bits=False))
    fix = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models"
    # (two dispatches fewer a layer; below 11 bindings -- a Mac's 10 -- the packed in_proj also
    # lets the SISO step take its one-dispatch form, so there only logits and tokens compare)
    for name, fmt in (("mamba3-g1-r05-tied", "f32"), ("mamba3-mimo-r2-g1-r05-tied", "f16")):
        yield f"decode mamba3 in_proj packed {name} {fmt}", \
            (lambda e, name=name, fmt=fmt: check_fold(e, fix / name, fmt, "matvec_pieces",
                                                      _fewer_at_16(e, 4), reset=None,
                                                      pin={"mamba3_mimo_fused": False}))
    for fmt in ("q8", "q4"):
        yield f"decode mamba3 in_proj packed d64 {fmt}", \
            (lambda e, fmt=fmt: check_fold(e, _random_model(64, "mamba3"), fmt, "matvec_pieces",
                                           _fewer_at_16(e, 4), reset=None))


def mimo_step_cases():
    """Mamba-3 MIMO's decode step in one dispatch (ops/mamba3_mimo_step.py), a head a workgroup
    and 8 rows a workgroup (the head form where the out-projection norm is), against the
    separate kernels: the two MIMO fixtures, mamba3-187m MIMO's heads (d_state 128, head_dim
    64, rank 4) in f16 and q4 with the out-projection norm, and without it in f16."""
    from pathlib import Path
    from tests.browser.decode_fold_cases import MIMO_FORMS as FORMS, check_fold, mimo_layers
    fix = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models"
    heads = dict(is_mimo=True, mimo_rank=4, state_size=128, head_dim=64, n_groups=2)
    cases = [(f"{name} {fmt}", (lambda name=name: fix / name), fmt)
             for name, fmt in (("mamba3-mimo-r2-g1-r05-tied", "f32"),
                               ("mamba3-mimo-r4-g2-r10-onorm-softplus", "f16"))]
    cases += [(f"heads onorm {fmt}",
               (lambda: _random_model(64, "mamba3", is_outproj_norm=True, **heads)), fmt)
              for fmt in ("f16", "q4")]
    cases += [("heads f16", (lambda: _random_model(64, "mamba3", **heads)), "f16")]
    for form in sorted(FORMS):
        for label, folder, fmt in cases:
            yield f"decode mamba3 mimo step {form} {label}", \
                (lambda e, folder=folder, fmt=fmt, form=form: check_fold(
                    e, folder(), fmt, "mamba3_mimo_fused", 4 * mimo_layers(folder())[0],
                    reset=None, pin=FORMS[form]))


ONE_HEAD = {"mamba3_step_split": False}                               # a workgroup a head
SPLIT_TWO = {"mamba3_step_split": True, "mamba3_step_last": False}   # head, then rows
SPLIT_ONE = {"mamba3_step_split": True, "mamba3_step_last": True}    # rows alone


def mamba3_step_cases():
    from tests.browser import test_kernels_mamba3 as KM3
    # the Mamba-3 kernel suite's steps through the lanes step (a real GPU's default): a
    # 187m-class head (P 64, N 128: one round of rows and states held in registers), then more
    # rows and states than a round holds (the cases tests/unit/test_mamba3_step_lanes_native.py
    # forces the lanes step on)
    cases = [c for c in KM3.CASES if c.id == "real-head-N128-P64"] + KM3.LANES_ROUNDS_CASES
    # (pinned to one workgroup a head: the rule on a real GPU is now the split below, and the
    # one-workgroup form still runs where the grid or the bindings do not allow the split)
    for c in cases:
        yield f"mamba3 lanes step kernel {c.id}", \
            (lambda e, a=c.values: _with(e, ONE_HEAD, KM3.check_forward_step, *a))
    # the folded step as two dispatches (ops/mamba3.step_splits: the head's prologue, then 8
    # rows a workgroup) on the same cases, and two models decoding with it against one dispatch
    for c in cases:
        yield f"mamba3 split step kernel {c.id}", \
            (lambda e, a=c.values: _with(e, SPLIT_TWO, KM3.check_forward_step, *a))
        # in one dispatch: the head's last workgroup writes its k and angle states
        yield f"mamba3 split step last kernel {c.id}", \
            (lambda e, a=c.values: _with(e, SPLIT_ONE, KM3.check_forward_step, *a))
    from pathlib import Path
    from tests.browser.decode_fold_cases import check_fold
    for name, layers in (("mamba3-g1-r05-tied", 2), ("mamba3-g2-r10-untied-onorm", 2)):
        folder = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models" / name
        yield f"decode mamba3 step split {name} f32", \
            (lambda e, folder=folder, layers=layers: _with(
                e, SPLIT_TWO, check_fold, folder, "f32", "mamba3_step_split", -layers,
                reset=None))
        # and in one dispatch: a dispatch fewer a layer where its own form binds (11); below
        # that (a Mac's 10: MAMBAWEB_STORAGE_BINDINGS=10) only where x, B and C lie beside the
        # raw scalars (mamba3_step_folded_one.wgsl: the packed in_proj's outputs, which depend
        # on the format and shape), so there only the logits and tokens are compared
        yield f"decode mamba3 step split last {name} f32", \
            (lambda e, folder=folder, layers=layers: _with(
                e, SPLIT_TWO, check_fold, folder, "f32", "mamba3_step_last",
                layers if _binds(e, "py_engine.ops.mamba3", "LAST_STORAGE") else None,
                reset=None))
    # the chunked forward (ops/mamba3.forward_chunk_len; MAMBAWEB_MAMBA3_CHUNK=32 in the
    # environment of --engine native runs the H200's longest chunk) == serial == float64, a
    # short last chunk
    yield "mamba3 chunked forward real-head T70", \
        (lambda e: KM3.check_chunked(e, 1, 70, 2, 64, 1, 128, 0.5, True))
    yield "mamba3 chunked forward T37-G2", \
        (lambda e: KM3.check_chunked(e, 2, 37, 2, 5, 2, 12, 1.0, True))
    # the angles walked in 32 segments side by side (ops/mamba3.phi_segments)
    yield "mamba3 chunked forward phi segments real-head T300", \
        (lambda e: _with(e, {"mamba3_phi_segments": True}, KM3.check_chunked,
                          1, 300, 2, 64, 1, 128, 0.5, True))
    # the register-tiled delta and out kernels (ops/mamba3_tiles) at the real head: 32-token
    # chunks (an H200's 48 KiB), 16 (WebGPU's default 16 KiB), 8 in blocks of one dim; MIMO
    for L, block in ((32, None), (16, None), (8, 1)):
        yield f"mamba3 tiled forward real-head L{L}", \
            (lambda e, L=L, block=block: _tiled(e, L, block, KM3.check_chunked,
                                               1, 3 * L + 5, 2, 64, 1, 128, 0.5, True))
    yield "mamba3 tiled forward MIMO R4 real-head L8", \
        (lambda e: _tiled(e, 8, None, KM3.test_mamba3_mimo_chunked_equals_serial,
                          1, 37, 2, 64, 1, 128, 4, 0.5, True))


def _fewer_at_16(e, fewer):
    """`fewer` where the device binds mamba3_step_rows_last's own 11 storage buffers, else None
    (not counted): below that whether the step takes one dispatch or two depends on where
    in_proj wrote x, B and C."""
    return fewer if _binds(e, "py_engine.ops.mamba3", "LAST_STORAGE") else None


def _binds(e, module, name):
    """Whether the engine's device binds `module.name` storage buffers a shader stage (as lowered
    by MAMBAWEB_STORAGE_BINDINGS: gpu/settings.storage_bindings)."""
    return e.run(f"import {module} as m\nfrom py_engine.gpu.settings import storage_bindings\n"
                 f"result = storage_bindings(device) >= m.{name}")


def _with(e, attrs, check, *args, **kw):
    """check(e, *args, **kw) with the device attributes `attrs` set (the engine's choices read
    them before the environment and the rule), each back to unset after."""
    e.run("".join(f"device.{k} = {v!r}\n" for k, v in attrs.items()))
    try:
        return check(e, *args, **kw)
    finally:
        e.run("".join(f"device.{k} = None\n" for k in attrs))


def _tiled(e, L, block, check, *args):
    from tests.browser import test_kernels_mamba3 as KM3
    with KM3.tiled(e, L, block):
        check(e, *args)


def ssd_cases():
    from tests.browser import test_kernels_ssd as KS
    # Mamba-2's chunked forward on both chunk paths (ssd_chunked.wgsl is a real GPU's default)
    # == the float64 recurrence, then the real head at the models' 32-token chunks over 100
    # tokens (spread where the device's workgroup memory holds ~45 KiB, as an H200's 48)
    for c in KS.RUNS:
        yield f"ssd forward {c.id}", (lambda e, a=c.values: KS.test_ssd_forward_step_reference(e, *a))
    yield "ssd forward real-head T100 L32-spread", \
        (lambda e: KS.test_ssd_forward_step_reference(e, 1, 100, 2, 64, 1, 128, 32, True, False,
                                                      True, (0.0, None), True))


def staged_matvec_cases():
    from tests.browser.matvec_cases import check_staged
    # the 1.4b shapes' K (in_proj, LM head: one tile; out_proj, x_proj: two); 1 and 4 rows a thread
    for fmt in ("f32", "f16", "q8", "q4"):
        for K in (2048, 4096):
            for rpt in (1, 4):
                yield f"matvec staged {fmt} K{K} rpt{rpt}", \
                    (lambda e, fmt=fmt, K=K, rpt=rpt:
                     check_staged(e, fmt, rpt, K, 7, rows=(1024, 160, 50)))


def scale_word_cases():
    from tests.browser.matvec_cases import check_same_bits
    # q4's scales loaded as words (SCALE_WORD) == as the vec4 holding them, bit for bit
    for rpt, tpr, stage, K in ((1, 16, True, 2048), (2, 16, True, 2048), (1, 128, False, 4096)):
        yield f"matvec q4 scale words rpt{rpt} tpr{tpr} K{K}", \
            (lambda e, a=(rpt, tpr, stage, K):
             check_same_bits(e, "q4", *a, "scale_word", False, True))


def subgroup_tree_cases():
    from tests.browser.matvec_cases import check_subgroup_tree
    # threads per row below, at and above the GPU's subgroup size; the 1.4b shapes' K
    for fmt in ("f32", "f16", "q4"):
        for tpr in (16, 32, 64, 256):
            yield f"matvec subgroup tree {fmt} tpr{tpr}", \
                (lambda e, fmt=fmt, tpr=tpr: check_subgroup_tree(e, fmt, tpr, K=4096,
                                                                 rows=(2048, 160)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=("native", "dawn"), default="native")
    ap.add_argument("--only", default="", help="run the cases whose name contains this text")
    args = ap.parse_args(argv)
    from tools.engines import engine_class
    failed = 0
    with engine_class(args.engine == "dawn")() as eng:
        print(json.dumps({"engine": args.engine, "adapter": eng.info.get("adapter")}), flush=True)
        groups = (gemm_cases, scan_cases, decode_cases, fold_cases, pieces_cases,
                  mimo_step_cases, mamba3_step_cases, ssd_cases, scale_word_cases,
                  staged_matvec_cases, subgroup_tree_cases)
        for name, fn in (case for group in groups for case in group()):
            if args.only not in name:
                continue
            try:
                fn(eng)
                print(json.dumps({"case": name, "ok": True}), flush=True)
            except Exception as e:  # noqa: BLE001 -- report every case, then fail
                failed += 1
                print(json.dumps({"case": name, "ok": False, "error": f"{type(e).__name__}: {e}",
                                  "trace": traceback.format_exc()[-800:]}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
