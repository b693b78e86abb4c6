"""Where the q4 decode mat-vec's time goes, by ablation (native backend): the token's GPU time
(py_engine/benchmarks/model.py) with parts of shaders/matvec_q4.wgsl removed -- results wrong on
purpose, timing only -- and with the mat-vec's choices changed through their environment
variables, beside f16, all in one process on the same random weights.

  python -m tools.ablate_matvec_q4 mamba1_4b 64      # model shape (tools/cmd_bench.py), tokens

Ablations: noscale (every group scale 1: no scale loads), lowonly (half the nibbles decoded and
summed), nodecode (the words bitcast to floats: no decode), onex (one x vector per chunk instead
of eight). Prints one JSON line per run: variant, format, GPU ms per token, streamed tok/s.
On an H200 the sixth session read none of the ablations moving the 1.4b q4 token, but the
native backend kept the compiled module, so that run timed the unedited kernel; with the module
dropped too (twenty-sixth session, docs/gpu_journal.md): 1.776 ms as is, 1.577 without scale
loads, 1.586 half the nibbles, 1.626 no decode, 1.676 one x vector (f16 1.694).
"""
import json
import sys
import tempfile
from pathlib import Path
SNIPPET = r"""
import os
from py_engine.benchmarks import model as mb
from py_engine.gpu import shaders as S
from py_engine.io.hf_loader import load_model_local
models = {f: await load_model_local(device, args['folder'], weights_format=f) for f in ('f16', 'q4')}
S.shader_source('matvec_q4')
base = S._cache['matvec_q4']
EXTRA = {
 'noscale': "fn chunk_scale(g: u32, row: u32, c: u32) -> f32 { return 1.0; }",
 'lowonly': "fn raw_dot(q: Raw, xo: u32, no: u32) -> f32 { return dot(q4_low(q.x), xin(xo, no)) + dot(q4_low(q.y), xin(xo + 2u, no + 2u)) + dot(q4_low(q.z), xin(xo + 4u, no + 4u)) + dot(q4_low(q.w), xin(xo + 6u, no + 6u)); }",
 'nodecode': "fn raw_dot(q: Raw, xo: u32, no: u32) -> f32 { return dot(bitcast<vec4<f32>>(q), xin(xo, no) + xin(xo + 1u, no + 1u) + xin(xo + 2u, no + 2u) + xin(xo + 3u, no + 3u) + xin(xo + 4u, no + 4u) + xin(xo + 5u, no + 5u) + xin(xo + 6u, no + 6u) + xin(xo + 7u, no + 7u)); }",
 'onex': "fn raw_dot(q: Raw, xo: u32, no: u32) -> f32 { let v = xin(xo, no); return dot(q4_low(q.x), v) + dot(q4_high(q.x), v) + dot(q4_low(q.y), v) + dot(q4_high(q.y), v) + dot(q4_low(q.z), v) + dot(q4_high(q.z), v) + dot(q4_low(q.w), v) + dot(q4_high(q.w), v); }",
}
def set_src(name):
    src = base
    if name in EXTRA:
        fn = EXTRA[name].split('(')[0].split()[-1]
        src = src.replace(f'fn {fn}(', f'fn {fn}_orig(', 1) + '\n' + EXTRA[name] + '\n'
    S._cache['matvec_q4'] = src
    device.forget_shader('matvec_q4')
ENVS = {'rpt1': {'MAMBAWEB_MATVEC_RPT': '1'}, 'rpt4': {'MAMBAWEB_MATVEC_RPT': '4'},
        'pf1': {'MAMBAWEB_MATVEC_PREFETCH': '1'}, 'pf2': {'MAMBAWEB_MATVEC_PREFETCH': '2'},
        'g96': {'MAMBAWEB_MATVEC_GROUPS': '96'}, 'g768': {'MAMBAWEB_MATVEC_GROUPS': '768'},
        'tpr32': {'MAMBAWEB_MATVEC_TPR': '32'}, 'nostage': {'MAMBAWEB_MATVEC_STAGE': '0'}}
out = []
async def one(label, fmt):
    best = await mb.least_gpu_decode(models[fmt], args['tokens'])
    out.append({'v': label, 'fmt': fmt, 'gpu_ms': round(best['gpu_ms_per_token'], 4),
                'tok_s': round(best['tokens_per_s'], 1)})
await one('base', 'f16')
for name in ['base'] + list(EXTRA):
    set_src(name)
    await one(name, 'q4')
set_src('base')
for name, env in ENVS.items():
    os.environ.update(env)
    device._pipelines.clear()
    try:
        await one(name, 'q4')
        if name in ('pf1', 'pf2', 'rpt4', 'nostage'):
            await one(name, 'f16')
    except Exception as e:
        out.append({'v': name, 'error': repr(e)[:300]})
    for k in env:
        del os.environ[k]
device._pipelines.clear()
await one('base-again', 'q4')
await one('base-again', 'f16')
result = out
"""


def main(argv):
    from tools.cmd_bench import MODEL_CONFIGS, _write_random_model
    from tools.native_engine import NativeEngine
    m = argv[0] if argv else "mamba1_4b"
    tokens = int(argv[1]) if len(argv) > 1 else 64
    with tempfile.TemporaryDirectory() as tmp, NativeEngine() as eng:
        folder = Path(tmp) / m
        _write_random_model(folder, MODEL_CONFIGS[m])
        for row in eng.run(SNIPPET, folder=str(folder), tokens=tokens):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
