#!/usr/bin/env bash
# One call on a lent GPU machine (no network): correctness first, then the decode benches with
# the kernel choices side by side, native (wgpu-py) and, with --dawn, Chrome's WebGPU (Dawn).
# Carried from this machine (git-ignored; bash tools/device/carry.sh makes all of it): .gl/*.deb (libvulkan1, libglvnd0, libegl1, libgl1,
# libglx0, libopengl0, libgles2 from Debian), .whl/*.whl (wgpu-py and the server's wheels), and
# for --dawn .whl_dawn/*.whl (the server's wheels) and .dawn/bundle.tar.xz (tools/dawn/bundle.sh).
# A Dawn call's working tree plus carry must stay under 64 MiB: leave models/default's weights
# out of it (three device checks then fail for want of them). Results go to $OUT/results.tgz (a
# call brings back at most 8 files: the --folds call of the thirty-first session lost two of its
# eleven), written on exit.
#
#   bash tools/device/gpu_session.sh            # ~9 min: checks + native bench
#   bash tools/device/gpu_session.sh --dawn     # ~9 min: Dawn checks + Dawn bench instead
#   bash tools/device/gpu_session.sh --prefill  # ~9 min: the prefill's GEMMs, scan and conv
#     alone through each backend (bench sections prefill_gemm, prefill_ops), then the 1.4b f32
#     prefill through Dawn (with the old conv and scan chunks, and kk forced on, as variants)
#     and natively (without kk), streamed and recorded first, then where its GPU time goes
#     natively (tools/profile_kernels) (carry as for --dawn)
#   bash tools/device/gpu_session.sh --ssd      # ~4 min: Mamba-2's chunked SSD forward: its
#     kernel checks natively and through Dawn, one forward timed alone in each form, block size
#     and chunk length (tools/ablate_ssd), and the mamba2-130m and hybrid-130m prefills through
#     Dawn with the 64-thread kernels as a variant (carry as for --dawn)
#   bash tools/device/gpu_session.sh --mamba3   # ~8 min: Mamba-3's kernel checks (the
#     register-tiled kernels and MIMO's one-dispatch step too) natively and through Dawn; a MIMO
#     (rank 4) mamba3 of mamba3-187m's size beside SISO through Dawn, its step in one dispatch
#     and as the separate kernels; the mamba3-187m prefill through Dawn (the rule: the tiled
#     kernels) with the untiled kernels and the angles walked in segments
#     (ops/mamba3.phi_segments) as variants; one forward timed alone in each form, with parts
#     ablated (tools/ablate_mamba3); its native profile (carry as for --dawn)
#   bash tools/device/gpu_session.sh --split    # ~5 min: Mamba-3's folded decode step as two
#     dispatches (ops/mamba3.step_splits: the head's prologue, then 8 rows a workgroup) and as
#     one over the rows' grid (step_last: the head's last workgroup writes its k and angles)
#     checked natively and through Dawn, timed against one workgroup a head (tools/ab_decode:
#     mamba3_187m f16/q4), and mamba3-187m's decode profiled with it (carry as for --dawn)
#   bash tools/device/gpu_session.sh --folds    # ~7 min: the thirtieth session's decode folds
#     (Mamba-3's in_proj packed in one dispatch, grouped norms into out_proj): their checks
#     natively and through Dawn, each timed against the form before on one loaded model
#     (tools/ab_decode: mamba3_187m f16/q4, hybrid_130m_g8 f16), and mamba3-187m's decode
#     profiled kernel by kernel natively (where its step kernel stands) (carry as for --dawn)
#   bash tools/device/gpu_session.sh --mimo     # ~5 min: Mamba-3 MIMO's one-dispatch decode
#     step checked natively and through Dawn in both forms, timed against the separate kernels
#     (tools/ab_decode: mamba3_mimo_187m f16/q4) and profiled natively (carry as for --dawn)
#   bash tools/device/gpu_session.sh --mamba1 [FMTS [BENCH_ARGS...]]  # ~6 min: the table's
#     mamba-1.4b rows alone, f32/f16/q8/q4 (or the formats FMTS, e.g. f16) through Dawn, the
#     bench given BENCH_ARGS too (e.g. `f16 --variant nogather:MAMBAWEB_XPROJ_GATHER=0`: the
#     gathered x_proj fold against it off) (carry as for --dawn)
#   bash tools/device/gpu_session.sh --tiers    # ~5 min: Mamba-1's x_proj fold checked natively,
#     through Dawn and natively on a device requested at 10 storage bindings; then every
#     family's 130m-class decode through Dawn at 16 and at 10 bindings a shader stage
#     (MAMBAWEB_STORAGE_BINDINGS: a Mac's Chrome gives 10), side by side on one loaded model
#     (tools/ab_decode) (carry as for --dawn; Mamba-3's checks: --mamba3, --mimo)
#   bash tools/device/gpu_session.sh --tiers-mamba3  # ~5 min: Mamba-3's kernel checks natively,
#     through Dawn and natively at 10 bindings, then mamba3-187m f16/q4 decode through Dawn at 16
#     and 10 bindings (carry as for --dawn)
#   bash tools/device/gpu_session.sh --tiers-conv  # ~8 min: Mamba-1's and Mamba-2's conv fold,
#     Mamba-1's x_proj fold and the scan's kernels checked natively and through Dawn, the conv
#     fold and the scan natively at 10 bindings, then mamba-130m, mamba2-130m and mamba-1.4b f16
#     decode through Dawn at 16 and 10 bindings (carry as for --dawn)
#   bash tools/device/gpu_session.sh --gather   # ~9 min: Mamba-1's x_proj shares gathered in the
#     in_proj dispatch, checked natively and through Dawn, timed at 1.4b (f16, q4) and 130m
#     against the folds before (tools/ab_decode) (carry as for --dawn)
#   bash tools/device/gpu_session.sh --curve    # ~8 min: a dependent read of 1-134 MB as one
#     dispatch (tools/read_curve), the f16 mat-vecs of mamba-1.4b beside it, its f16 token
#     kernel by kernel through Dawn, and its x_proj shares gathered in groups of 8 (the rule), 4 and not at all (carry as for --dawn)
#   bash tools/device/gpu_session.sh --tune16   # ~6 min: x_proj's early loads checked through
#     Dawn, mamba-1.4b f16 through Dawn (the table's row), then its mat-vec plans
#     side by side on one loaded model (tools/ab_decode: out_proj, in_proj and the LM head at
#     other rows/threads a row/staging, the weights loaded trip by trip, x_proj gathered in
#     groups of 4, its chunks loaded early), then, if time is left, a
#     dependent read of 1-134 MB as one dispatch (tools/read_curve) (carry as for --dawn)
#   bash tools/device/gpu_session.sh --confirm  # ~4 min: mamba-1.4b f16 through Dawn
#     under the rules (x_proj's chunks loaded early, f16's out_proj at two rows a thread), then
#     f16 side by side on one loaded model: the rules, the rules before them, and the weights'
#     addends loaded as summed (PREFETCH 0) (carry as for --dawn)
#   bash tools/device/gpu_session.sh --targets  # ~8 min: the mamba-1.4b rows through Dawn as
#     --mamba1 gives them, f16 in a bench of its own first, then f32, q8 and q4, then mamba-130m
#     f16 and q8 (carry as for --dawn)
#   bash tools/device/gpu_session.sh --gather-q  # ~7 min: q8's and q4's x_proj gathered into
#     in_proj (the rule since the thirty-eighth session), checked through Dawn, then timed
#     against them unfolded at mamba-1.4b beside f16 (tools/ab_decode) (carry as for --dawn)
#   bash tools/device/gpu_session.sh --retime  # ~3 min: mamba-1.4b f16 through Dawn, the rules
#     against the scan step's early loads and the norm's prologue (tools/ab_decode) (carry as for --dawn)
#   CALL_S=300 bash tools/device/gpu_session.sh --ratios  # ~5 min: mamba-130m f16 through
#     Dawn, transformers' eager mamba-130m and mamba-1.4b on the same card (tools/bench_torch_ref),
#     then mamba-1.4b f16 through Dawn, each while CALL_S (the command's seconds) allows it
#     (carry as for --dawn)
#   bash tools/device/gpu_session.sh --stream130  # ~7 min: mamba-130m f16's stream against
#     its GPU time: groups of 8, 16 and 32, the ramp off, four groups in flight, side by side in
#     one process (carry as for --dawn)
#   bash tools/device/gpu_session.sh --state    # ~8 min: the gathered x_proj fold checked at
#     mamba-1.4b's width through Dawn (every format gathers there), then --targets' benches
#     (carry as for --dawn)
#   bash tools/device/gpu_session.sh --rest     # ~8 min: q8's and q4's plain x_proj fold at
#     mamba-130m (MAMBAWEB_FUSE_XPROJ=1; q4 at two rows a thread too) timed against the rule
#     beside f16, then the README table's other rows (mamba-130m f32/q8/q4; Mamba-2, Mamba-3 and
#     the hybrid in f16 and q4), then the scan step's early loads against the rules at 1.4b f16
#     in three rounds, each only while time is left (carry as for --dawn)
#   bash tools/device/gpu_session.sh --table    # ~9 min: the README's GPU table through Dawn,
#     its two bench commands as written there (Mamba-1 at 1.4b and 130m in four formats, then
#     Mamba-2, Mamba-3 SISO and MIMO and the hybrid in f16 and q4) (carry as for --dawn); on a
#     cold machine its first bench may outrun its 330 s: --targets, then --rest on the warm
#     machine, give the same rows but MIMO's in two calls (the thirty-ninth session's H100 table)
# (each under the device's 10-minute limit per command; a bench killed by its timeout prints
# no report, so the timeouts below leave room; `bench --dawn` writes each part as it ends --
# the ceilings, then each model's formats -- to its .err as `bench --dawn: WHAT {json}` lines;
# `python -m tools.bench_summary` turns a report or those lines into the README's table rows).
set -uo pipefail
FINAL=${OUT:-/tmp/gpu_session}
mkdir -p "$FINAL"
OUT=$(mktemp -d)
trap 'tar czf "$FINAL/results.tgz" -C "$OUT" .' EXIT
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
T0=$(date +%s)
stamp() { echo "rc=$1 t=$(( $(date +%s) - T0 ))"; }
# remaining: the seconds the call (CALL_S, else 570 of its 600 s, from T0) has left;
# left SECONDS: whether that is more than SECONDS
remaining() { echo $(( ${CALL_S:-570} - ($(date +%s) - T0) )); }
left() { [ "$(remaining)" -gt "$1" ]; }
# wgpu-py and the server's wheels into /tmp/site, Node + Dawn unpacked: both engines ready
both_engines() {
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl .whl_dawn/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  bash tools/dawn/unpack.sh > "$OUT/unpack.txt" 2>&1
}
# checks_both NAME TEXT SECONDS: the device checks whose names hold TEXT, natively and through
# Dawn (or on the engines $CHECK_ENGINES names), into $OUT/checks_NAME_<engine>.txt
checks_both() {
  for eng in ${CHECK_ENGINES:-native dawn}; do
    timeout "$3" python3 -m tools.device_checks --engine $eng --only "$2" > "$OUT/checks_$1_$eng.txt" 2>&1
    stamp $? >> "$OUT/checks_$1_$eng.txt"
  done
}
# checks_at10 NAME TEXT SECONDS: those device checks natively on a device requested at 10
# storage bindings (a Mac's Chrome tier: the driver refuses any kernel binding more), appended
# to $OUT/checks_NAME_native10.txt
checks_at10() {
  MAMBAWEB_STORAGE_BINDINGS=10 timeout "$3" python3 -m tools.device_checks --engine native \
    --only "$2" >> "$OUT/checks_$1_native10.txt" 2>&1
  stamp $? >> "$OUT/checks_$1_native10.txt"
}
# tiers_ab NAME MODELS WEIGHTS SECONDS: decode at 16 and at 10 storage bindings side by side on
# one loaded model per shape, through Dawn (tools/ab_decode), into $OUT/NAME.txt
tiers_ab() {
  timeout "$4" python3 -m tools.ab_decode --dawn --models "$2" --weights "$3" --tokens 128 \
    --rounds 2 --setting t16:MAMBAWEB_STORAGE_BINDINGS=16 \
    --setting t10:MAMBAWEB_STORAGE_BINDINGS=10 > "$OUT/$1.txt" 2>&1
  stamp $? >> "$OUT/$1.txt"
}
# bench_1_4b SECONDS FMTS TOKENS MAX_SECONDS [BENCH_ARGS...]: mamba-1.4b through Dawn in the
# formats FMTS, into $OUT/mamba1_4b_dawn.json, or mamba1_4b_dawn_$BENCH_TAG.json where BENCH_TAG
# is set (the README table's rows: the GPU issue's targets)
bench_1_4b() { BENCH_MODEL=mamba1_4b bench_model "$@"; }
# bench_model: bench_1_4b for the model shape $BENCH_MODEL, into $OUT/${BENCH_MODEL}_dawn[_TAG].json
bench_model() {
  local name=${BENCH_MODEL}_dawn${BENCH_TAG:+_$BENCH_TAG}
  timeout "$1" python3 -m tools.cli bench --dawn --json --only model --models "$BENCH_MODEL" \
    --weights "$2" --decode-tokens "$3" --max-seconds "$4" "${@:5}" \
    > "$OUT/$name.json" 2> "$OUT/$name.err"
  stamp $? >> "$OUT/$name.err"
}
# targets_benches: the GPU issue's target rows through Dawn, each bench only while the call
# leaves it time: mamba-1.4b f16 alone (so that a bench killed by its timeout loses only its
# own; a cold machine's first bench took >150 s), then f32, q8 and q4 (leaving mamba-130m its
# 120 s), then mamba-130m f16 (the 2,000 tok/s target) and q8 (its plain x_proj fold a rule
# since the thirty-ninth session)
targets_benches() {
  left 185 && BENCH_TAG=f16 bench_1_4b 185 f16 256 2
  left 200 && BENCH_TAG=others bench_1_4b $(( $(remaining) - 130 )) f32,q8,q4 256 2
  left 120 && BENCH_MODEL=mamba130m bench_model 120 f16,q8 256 2
}
# ab_1_4b NAME SECONDS SETTING...: mamba-1.4b f16 (or the formats $AB_WEIGHTS) through Dawn, the settings side by side on one
# loaded model (tools/ab_decode, 128 tokens, two rounds), into $OUT/NAME.txt
ab_1_4b() {
  local name=$1 secs=$2
  shift 2
  local args=()
  for s in "$@"; do args+=(--setting "$s"); done
  timeout "$secs" python3 -m tools.ab_decode --dawn --models mamba1_4b --weights "${AB_WEIGHTS:-f16}" \
    --tokens 128 --rounds 2 "${args[@]}" > "$OUT/$name.txt" 2>&1
  stamp $? >> "$OUT/$name.txt"
}
if [ "${1:-}" = "--prefill" ]; then
  both_engines
  # the prefill's GEMMs (kk and scalar-staged), scan and conv alone, through each backend
  for be in native dawn; do
    timeout 110 python3 -m tools.cli bench --$be --json --only prefill_gemm --only prefill_ops \
      > "$OUT/gemm_$be.json" 2> "$OUT/gemm_$be.err"
    stamp $? >> "$OUT/gemm_$be.err"
  done
  # the 1.4b f32 prefill streamed and recorded-first: the engine's choices, the conv tap by tap
  # with the scan in four chunks (before the thirteenth session), and the kk GEMM forced on
  timeout 260 python3 -m tools.cli bench --dawn --json --only model --models mamba1_4b \
    --weights f32 --decode-tokens 16 --max-seconds 8 \
    --variant old:MAMBAWEB_CONV4=0,MAMBAWEB_SCAN_THREADS=16384 --variant kk:MAMBAWEB_TILED_KK=1 \
    > "$OUT/prefill_dawn.json" 2> "$OUT/prefill_dawn.err"
  stamp $? >> "$OUT/prefill_dawn.err"
  timeout 130 python3 -m tools.cli bench --native --json --only model --models mamba1_4b \
    --weights f32 --decode-tokens 16 --max-seconds 8 --variant nokk:MAMBAWEB_TILED_KK=0 \
    > "$OUT/prefill_native.json" 2> "$OUT/prefill_native.err"
  stamp $? >> "$OUT/prefill_native.err"
  # where the prefill's GPU time goes, kernel by kernel (native timestamps)
  timeout 170 python3 -m tools.profile_kernels --models mamba1_4b --weights f32 --tokens 8 \
    --prefill 1024 > "$OUT/profile.json" 2> "$OUT/profile.err"
  stamp $? >> "$OUT/profile.err"
  exit 0
fi
if [ "${1:-}" = "--ssd" ]; then
  both_engines
  checks_both ssd "ssd forward" 90
  for T in 1024 256; do
    timeout 90 python3 -m tools.ablate_ssd $T > "$OUT/ablate_ssd_$T.txt" 2>&1
    stamp $? >> "$OUT/ablate_ssd_$T.txt"
  done
  timeout 200 python3 -m tools.cli bench --dawn --json --only model --models mamba2_130m,hybrid_130m \
    --weights f16 --decode-tokens 64 --max-seconds 2 --variant classic:MAMBAWEB_SSD_PARALLEL=0 \
    > "$OUT/ssd_dawn.json" 2> "$OUT/ssd_dawn.err"
  stamp $? >> "$OUT/ssd_dawn.err"
  exit 0
fi
if [ "${1:-}" = "--mamba3" ]; then
  both_engines
  checks_both mamba3 "mamba3" 100
  # MIMO (rank 4) beside SISO, its decode step in one dispatch (ops/mamba3_mimo_step) and as the
  # separate kernels (two norms, prep, the thread-a-row step, the output: 7 dispatches a layer)
  timeout 150 python3 -m tools.cli bench --dawn --json --only model \
    --models mamba3_mimo_187m,mamba3_187m --weights f16,q4 --decode-tokens 128 --max-seconds 1 \
    --variant separate:MAMBAWEB_MAMBA3_MIMO_STEP=separate \
    > "$OUT/mamba3_mimo_dawn.json" 2> "$OUT/mamba3_mimo_dawn.err"
  stamp $? >> "$OUT/mamba3_mimo_dawn.err"
  timeout 130 python3 -m tools.cli bench --dawn --json --only model --models mamba3_187m \
    --weights f16 --decode-tokens 64 --max-seconds 2 --variant untiled:MAMBAWEB_MAMBA3_TILES=0 \
    --variant phiseg:MAMBAWEB_MAMBA3_PHI=segments \
    > "$OUT/mamba3_dawn.json" 2> "$OUT/mamba3_dawn.err"
  stamp $? >> "$OUT/mamba3_dawn.err"
  for T in 1024 256; do
    timeout 45 python3 -m tools.ablate_mamba3 $T > "$OUT/ablate_mamba3_$T.txt" 2>&1
    stamp $? >> "$OUT/ablate_mamba3_$T.txt"
  done
  # where the prefill's GPU time goes with the tiled kernels and the angles in segments
  MAMBAWEB_MAMBA3_PHI=segments timeout 60 python3 -m tools.profile_kernels --models mamba3_187m \
    --weights f16 --tokens 8 --prefill 1024 > "$OUT/mamba3_profile.json" 2> "$OUT/mamba3_profile.err"
  stamp $? >> "$OUT/mamba3_profile.err"
  exit 0
fi
if [ "${1:-}" = "--mimo" ]; then
  both_engines
  checks_both mimo "mimo step" 90
  # MIMO (rank 4) decode: 8 rows a workgroup (the rule), a head a workgroup, the separate kernels
  timeout 200 python3 -m tools.ab_decode --dawn --models mamba3_mimo_187m --weights f16,q4 \
    --tokens 128 --rounds 2 --setting rows:mamba3_mimo_rows=1 --setting head:mamba3_mimo_rows=0 \
    --setting separate:mamba3_mimo_fused=0 > "$OUT/mimo_ab.txt" 2>&1
  stamp $? >> "$OUT/mimo_ab.txt"
  timeout 80 python3 -m tools.profile_kernels --models mamba3_mimo_187m --weights f16 \
    --tokens 16 --prefill 64 > "$OUT/mimo_profile.json" 2> "$OUT/mimo_profile.err"
  stamp $? >> "$OUT/mimo_profile.err"
  exit 0
fi
if [ "${1:-}" = "--tiers" ]; then
  both_engines
  # Mamba-1's x_proj fold (its rows through one binding since the thirty-fourth session)
  # natively, through Dawn and natively on a device requested at 10 storage bindings (the driver
  # refuses any kernel binding more; the rules pick a Mac tab's kernels)
  checks_both xproj "decode x_proj" 150
  checks_at10 xproj "decode x_proj" 150
  # What a tab gets at each of Dawn's storage-binding tiers (a Mac's Chrome: 10; NVIDIA: 16),
  # every family's decode through Dawn on one loaded model per shape (gpu/settings.py)
  tiers_ab tiers_ab \
    mamba130m,mamba2_130m,hybrid_130m,mamba3_187m,mamba3_mimo_187m,mamba3_mimo_onorm_187m f16 330
  exit 0
fi
if [ "${1:-}" = "--tiers-mamba3" ]; then
  both_engines
  # Mamba-3's step kernels (the folded step reading x, B and C through the raw scalars' binding
  # where they share it: mamba3_step_folded_one.wgsl) natively, through Dawn and natively on a
  # device requested at 10 bindings; then mamba3-187m's decode at 16 and 10 bindings
  checks_both mamba3 "mamba3" 240
  checks_at10 mamba3 "mamba3" 240
  tiers_ab tiers_ab mamba3_187m f16,q4 150
  exit 0
fi
if [ "${1:-}" = "--tiers-conv" ]; then
  both_engines
  # Mamba-1's and Mamba-2's in_proj with the conv step folded in (10 storage bindings since the
  # thirty-fourth session), Mamba-1's x_proj fold (10), the scan's kernels (the fused decode
  # step reads its parameters packed: 9) natively and through Dawn; the conv fold and the scan
  # natively on a device requested at 10; then the Mamba-1/2 shapes at 16 and 10 bindings
  checks_both conv "decode conv" 150
  checks_both scan "scan " 150
  checks_both xproj "decode x_proj" 150
  checks_at10 conv "decode conv" 150
  checks_at10 scan "scan " 150
  tiers_ab tiers_ab mamba130m,mamba2_130m f16 150
  tiers_ab tiers_1_4b mamba1_4b f16 170
  exit 0
fi
if [ "${1:-}" = "--gather" ]; then
  both_engines
  # Mamba-1's x_proj shares gathered inside the in_proj dispatch (lib/matvec_xproj_gather.wgsl)
  # checked natively and through Dawn (every format, the d512 models), then timed on one loaded
  # model a shape: mamba-1.4b unfolded (the rule until now) against gathered (groups of 8, the
  # largest that fits) in f16 and q4 (its fold: blocks of 32 channels, by q4's rule there);
  # mamba-130m f16 folded (the rule) against gathered and unfolded
  checks_both gather "x_proj gathered" 150
  timeout 200 python3 -m tools.ab_decode --dawn --models mamba1_4b --weights f16,q4 \
    --tokens 128 --rounds 2 --setting base:MAMBAWEB_XPROJ_GATHER=0 \
    --setting gather:MAMBAWEB_XPROJ_GATHER=1 > "$OUT/gather_1_4b.txt" 2>&1
  stamp $? >> "$OUT/gather_1_4b.txt"
  timeout 90 python3 -m tools.ab_decode --dawn --models mamba130m --weights f16 --tokens 128 \
    --rounds 2 --setting fold:MAMBAWEB_XPROJ_GATHER=0 --setting gather:MAMBAWEB_XPROJ_GATHER=1 \
    --setting unfold:MAMBAWEB_FUSE_XPROJ=0 > "$OUT/gather_130m.txt" 2>&1
  stamp $? >> "$OUT/gather_130m.txt"
  exit 0
fi
if [ "${1:-}" = "--curve" ]; then
  both_engines
  # what a dependent read of S MB costs as one dispatch (tools/read_curve: the floor any
  # mat-vec of that size meets), the f16 decode mat-vecs at the 1.4b shapes beside it
  # (tools/sweep_matvec, the engine's choices), where mamba-1.4b's f16 token goes kernel by
  # kernel through Dawn (tools/profile_marginal), and x_proj's gather group sizes at 1.4b
  timeout 90 python3 -m tools.read_curve --sizes 1,2,4,8.4,16.8,33.5,67,134 --chain 300 \
    > "$OUT/read_curve.txt" 2>&1
  stamp $? >> "$OUT/read_curve.txt"
  timeout 150 python3 -m tools.sweep_matvec --chain 300 --formats f16 \
    --shapes '2*4096x2048nc,4096x2048nc,4096x2048n,2048x2048n,2048x4096,1024x4096,160x4096' \
    --rpts 1 --stages 1 --tprs '' --passes 2 --reps 10 > "$OUT/sweep_f16.txt" 2>&1
  stamp $? >> "$OUT/sweep_f16.txt"
  timeout 170 python3 -m tools.profile_marginal --dawn --models mamba1_4b --weights f16 \
    --tokens 64 > "$OUT/marginal.txt" 2>&1
  stamp $? >> "$OUT/marginal.txt"
  ab_1_4b xproj_ab 130 g8:MAMBAWEB_XPROJ_GATHER=8 g4:MAMBAWEB_XPROJ_GATHER=4 \
    off:MAMBAWEB_XPROJ_GATHER=0
  exit 0
fi
if [ "${1:-}" = "--mamba1" ]; then
  both_engines
  # the README table's mamba-1.4b rows alone (the GPU issue's targets), through Dawn
  bench_1_4b 450 "${2:-f32,f16,q8,q4}" 256 2 "${@:3}"
  exit 0
fi
if [ "${1:-}" = "--targets" ]; then
  both_engines
  targets_benches
  exit 0
fi
if [ "${1:-}" = "--gather-q" ]; then
  both_engines
  # q8's and q4's x_proj gathered into in_proj (148 dispatches a token, not 196): checked through
  # Dawn (with the early loads, now the rule), then f16, q8 and q4 side by side on one loaded
  # model each: the rules (gathered at 1.4b since this was measured) against the fold off
  CHECK_ENGINES=dawn checks_both gather "x_proj gathered" 90
  AB_WEIGHTS=q8,q4,f16 ab_1_4b gather_q 330 rule:MAMBAWEB_MATVEC_PREFETCH=3 \
    unfold:MAMBAWEB_XPROJ_GATHER=0
  exit 0
fi
if [ "${1:-}" = "--ratios" ]; then
  both_engines
  # the README's ratios to transformers' PyTorch path on the same card in one call (the GPU
  # issue's targets ask for both from one call): mamba-130m f16 through Dawn, transformers'
  # eager mamba-130m and mamba-1.4b (f32, no mamba_ssm kernels there), then mamba-1.4b f16
  # through Dawn -- each while the call's CALL_S leaves time for it
  left 80 && BENCH_MODEL=mamba130m bench_model 80 f16 256 2
  if left 100; then
    timeout 100 python3 -m tools.bench_torch_ref --models mamba130m,mamba1_4b --device cuda \
      --json > "$OUT/torch_ref.json" 2> "$OUT/torch_ref.err"
    stamp $? >> "$OUT/torch_ref.err"
  fi
  left 110 && BENCH_TAG=f16 bench_1_4b $(( $(remaining) - 5 )) f16 256 2
  exit 0
fi
if [ "${1:-}" = "--stream130" ]; then
  both_engines
  # where mamba-130m f16's stream loses ~5% to its lone group's GPU time (the thirty-ninth
  # session: 0.498 ms a token streamed where a group alone took 0.472 and a simulation of the
  # pipeline with the measured host and readback times gives 0.478): a cost a group, if it
  # grows with the number of groups -- groups of 8, 16 (the bench's), 32; the ramp off; four
  # groups in flight -- side by side in one process, 512 tokens a stream
  BENCH_MODEL=mamba130m bench_model 400 f16 512 2 --variant g8:MAMBAWEB_BENCH_GROUP=8 \
    --variant g32:MAMBAWEB_BENCH_GROUP=32 --variant noramp:MAMBAWEB_DECODE_RAMP=0 \
    --variant d4:MAMBAWEB_DECODE_DEPTH=4 --variant g16:MAMBAWEB_BENCH_GROUP=16
  exit 0
fi
if [ "${1:-}" = "--state" ]; then
  both_engines
  # the gathered fold where the bench times it: d 2,048, f16, q8 and q4 against the separate
  # x_proj dispatch (until now checked at d 512 on a GPU and d 64 on lavapipe)
  CHECK_ENGINES=dawn checks_both d2048 d2048 120
  targets_benches
  exit 0
fi
if [ "${1:-}" = "--rest" ]; then
  both_engines
  # q8's and q4's plain fold at mamba-130m (off by rule: 100 dispatches a token, f16's 76),
  # forced, q4 also at two rows a thread (its fold's blocks of 32 channels), beside f16
  timeout 170 python3 -m tools.ab_decode --dawn --models mamba130m --weights q8,q4,f16 \
    --tokens 128 --rounds 2 --setting rule:MAMBAWEB_MATVEC_PREFETCH=3 \
    --setting fold:MAMBAWEB_FUSE_XPROJ=1 \
    --setting fold2:MAMBAWEB_FUSE_XPROJ=1,MAMBAWEB_MATVEC_PLAN=q4:1536x768=2/16/- \
    > "$OUT/fold_q_130m.txt" 2>&1
  stamp $? >> "$OUT/fold_q_130m.txt"
  left 150 && BENCH_TAG=rest BENCH_MODEL=mamba130m bench_model 150 f32,q8,q4 256 2
  if left 200; then
    timeout 200 python3 -m tools.cli bench --dawn --json --only model \
      --models mamba2_130m,mamba3_187m,hybrid_130m --weights f16,q4 --decode-tokens 256 \
      --max-seconds 2 > "$OUT/table_others.json" 2> "$OUT/table_others.err"
    stamp $? >> "$OUT/table_others.err"
  fi
  left 170 && ab_1_4b sce_ab 170 base:MAMBAWEB_MATVEC_PREFETCH=3 sce:MAMBAWEB_SCAN_STEP_EARLY=1 \
    base2:MAMBAWEB_MATVEC_PREFETCH=3 sce2:MAMBAWEB_SCAN_STEP_EARLY=1
  exit 0
fi
if [ "${1:-}" = "--retime" ]; then
  both_engines
  # two older rules, timed on an H200 before the gathered fold, re-timed at mamba-1.4b f16 on
  # one loaded model: the scan step's dt-independent loads early, x's squares summed in a prologue
  ab_1_4b retime_ab 170 base:MAMBAWEB_MATVEC_PREFETCH=3 sce:MAMBAWEB_SCAN_STEP_EARLY=1 \
    nis0:MAMBAWEB_MATVEC_NORM_IN_STAGE=0 base2:MAMBAWEB_MATVEC_PREFETCH=3
  exit 0
fi
if [ "${1:-}" = "--tune16" ]; then
  both_engines
  # x_proj's chunks loaded early (weight_format.xproj_early): the same bits, checked first
  CHECK_ENGINES=dawn checks_both early early 70
  bench_1_4b 150 f16 128 1
  # f16's mat-vecs at other plans (rule at 1.4b: in_proj 1/16/staged, out_proj 1/64/unstaged,
  # LM head 4/16/staged; RPT/TPR/STAGE as weight_format.planned reads them)
  P=MAMBAWEB_MATVEC_PLAN
  ab_1_4b tune16_ab 200 base:MAMBAWEB_MATVEC_PREFETCH=3 \
    o32s:$P=f16:2048x4096=1/32/1 o128:$P=f16:2048x4096=1/128/0 o2r:$P=f16:2048x4096=2/64/0 \
    i32:$P=f16:4096x2048=1/32/1 i2r:$P=f16:4096x2048=2/16/1 h2:$P=f16:50280x2048=2/16/1 \
    pf0:MAMBAWEB_MATVEC_PREFETCH=0 g4:MAMBAWEB_XPROJ_GATHER=4 early:MAMBAWEB_XPROJ_EARLY=1 \
    base2:MAMBAWEB_MATVEC_PREFETCH=3
  if [ $(( $(date +%s) - T0 )) -lt 470 ]; then
    timeout 80 python3 -m tools.read_curve --sizes 1,2,4,8.4,16.8,33.5,67,134 --chain 300 \
      > "$OUT/read_curve.txt" 2>&1
    stamp $? >> "$OUT/read_curve.txt"
  fi
  exit 0
fi
if [ "${1:-}" = "--confirm" ]; then
  both_engines
  bench_1_4b 185 f16 128 1     # the first bench of a cold machine: >150 s (2026-12-06)
  ab_1_4b confirm_ab 160 rule:MAMBAWEB_XPROJ_EARLY=1 \
    before:MAMBAWEB_XPROJ_EARLY=0,MAMBAWEB_MATVEC_PLAN=f16:2048x4096=1/64/0 \
    pf0:MAMBAWEB_MATVEC_PREFETCH=0 rule2:MAMBAWEB_XPROJ_EARLY=1
  exit 0
fi
if [ "${1:-}" = "--table" ]; then
  both_engines
  timeout 330 python3 -m tools.cli bench --dawn --json --only model --models mamba1_4b,mamba130m \
    --weights f32,f16,q8,q4 --decode-tokens 256 --max-seconds 4 \
    > "$OUT/table_mamba1.json" 2> "$OUT/table_mamba1.err"
  stamp $? >> "$OUT/table_mamba1.err"
  timeout 220 python3 -m tools.cli bench --dawn --json --only model \
    --models mamba2_130m,mamba3_187m,mamba3_mimo_187m,hybrid_130m --weights f16,q4 \
    --decode-tokens 256 --max-seconds 2 > "$OUT/table_others.json" 2> "$OUT/table_others.err"
  stamp $? >> "$OUT/table_others.err"
  exit 0
fi
if [ "${1:-}" = "--split" ]; then
  both_engines
  checks_both split "split" 120
  timeout 200 python3 -m tools.ab_decode --dawn --models mamba3_187m --weights f16,q4 \
    --tokens 128 --rounds 2 --setting split:mamba3_step_split=1,mamba3_step_last=0 --setting one:mamba3_step_split=0 \
    --setting last:mamba3_step_split=1,mamba3_step_last=1 \
    > "$OUT/mamba3_split.txt" 2>&1
  stamp $? >> "$OUT/mamba3_split.txt"
  MAMBAWEB_MAMBA3_SPLIT=1 timeout 90 python3 -m tools.profile_kernels --models mamba3_187m \
    --weights f16 --tokens 16 --prefill 64 > "$OUT/mamba3_split_profile.json" \
    2> "$OUT/mamba3_split_profile.err"
  stamp $? >> "$OUT/mamba3_split_profile.err"
  exit 0
fi
if [ "${1:-}" = "--folds" ]; then
  both_engines
  # the thirtieth session's decode folds: their kernel checks natively and through Dawn
  checks_both pieces "pieces" 60
  checks_both packed "packed" 60
  checks_both grouped "grouped" 60
  # Mamba-3's in_proj: eight blocks packed in one dispatch (3 a layer) against three (5 a
  # layer), side by side on one loaded model, with a decode profile of the packed form
  timeout 200 python3 -m tools.ab_decode --dawn --models mamba3_187m --weights f16,q4 \
    --tokens 128 --rounds 2 --setting packed:matvec_pieces=1 --setting three:matvec_pieces=0 \
    > "$OUT/mamba3_pieces.txt" 2>&1
  stamp $? >> "$OUT/mamba3_pieces.txt"
  # the gated norm of 8 groups folded into out_proj's staging (NemotronH-style) against the
  # separate norm kernel
  timeout 100 python3 -m tools.ab_decode --dawn --models hybrid_130m_g8 --weights f16 \
    --tokens 128 --rounds 2 --setting fold:fuse_gated_norm=1 --setting sep:fuse_gated_norm=0 \
    > "$OUT/grouped_norm.txt" 2>&1
  stamp $? >> "$OUT/grouped_norm.txt"
  timeout 90 python3 -m tools.profile_kernels --models mamba3_187m --weights f16 --tokens 16 \
    --prefill 64 > "$OUT/mamba3_decode_profile.json" 2> "$OUT/mamba3_decode_profile.err"
  stamp $? >> "$OUT/mamba3_decode_profile.err"
  exit 0
fi
if [ "${1:-}" = "--dawn" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl_dawn/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  bash tools/dawn/unpack.sh > "$OUT/unpack.txt" 2>&1
  timeout 110 python3 -m tools.device_checks --engine dawn > "$OUT/checks_dawn.txt" 2>&1
  stamp $? >> "$OUT/checks_dawn.txt"
  # the reductions through subgroup shuffles and the norm summed in the staging turned off (old)
  timeout 330 python3 -m tools.cli bench --dawn --json --only model --models mamba1_4b,mamba130m \
    --weights f16,q4 --decode-tokens 256 --max-seconds 1 \
    --variant old:MAMBAWEB_MATVEC_SG=0,MAMBAWEB_MATVEC_NORM_IN_STAGE=0,MAMBAWEB_SCAN_STEP_SG=0 \
    > "$OUT/bench_dawn.json" 2> "$OUT/bench_dawn.err"
  stamp $? >> "$OUT/bench_dawn.err"
  timeout 120 python3 -m tools.cli bench --dawn --json --only model --models mamba2_130m,mamba3_187m \
    --weights f16 --decode-tokens 256 --max-seconds 1 \
    --variant old:MAMBAWEB_MATVEC_SG=0,MAMBAWEB_MATVEC_NORM_IN_STAGE=0 \
    > "$OUT/bench_dawn2.json" 2> "$OUT/bench_dawn2.err"
  stamp $? >> "$OUT/bench_dawn2.err"
  exit 0
fi
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl .whl_dawn/*.whl
export PYTHONPATH=/tmp/site:$PWD
timeout 100 python3 -m tools.device_checks --engine native > "$OUT/checks.txt" 2>&1
stamp $? >> "$OUT/checks.txt"
# every model under the engine's own choices, then with newer kernels turned off (rows, older,
# old: the reductions through subgroup shuffles and the norm summed in the staging; noramp: a
# stream's first groups as big as the rest)
timeout 450 python3 -m tools.cli bench --native --json --only model \
  --models mamba130m,mamba2_130m,mamba3_187m,mamba1_4b --weights f16,q4 --decode-tokens 256 \
  --max-seconds 2 --variant rows:MAMBAWEB_SSD_STEP=rows,MAMBAWEB_MAMBA3_STEP=rows \
  --variant older:MAMBAWEB_MATVEC_RULE=older \
  --variant old:MAMBAWEB_MATVEC_SG=0,MAMBAWEB_MATVEC_NORM_IN_STAGE=0,MAMBAWEB_SCAN_STEP_SG=0 \
  --variant noramp:MAMBAWEB_DECODE_RAMP=0 \
  > "$OUT/bench.json" 2> "$OUT/bench.err"
stamp $? >> "$OUT/bench.err"
