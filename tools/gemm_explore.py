"""Candidate forms of the prefill GEMM's 128 x 128 tile beside the engine's own, timed on one GPU.

  python -m tools.gemm_explore [--variants v16,engine] [--shapes 1024x8192x2048,...] [--reps 3]

y = x @ W^T (x [M, K], W [N, K], both read along k: every forward GEMM of prefill) at shapes
that are whole tiles (M, N multiples of 128, K of 16): the generated variants have no edge
handling, so each is an upper bound on what its form gives once made general. Every variant
is checked against float64 (where the shape is small enough) and timed from WebGPU timestamps
around a pass of 20 dispatches (best of --reps). Prints JSON lines: variant, shape, us per
dispatch, TFLOP/s, relative error. The variants (a 16 x 16 workgroup, each thread 8 x 8 of C
as named vec4 registers, as in shaders/lib/matmul_tiled_body.wgsl):
  engine   the engine's matmul_tiled_128 itself (shaders/matmul_tiled.wgsl, its Params)
  engine_kk  the engine's 16-byte-staged matmul_tiled_128_kk (shaders/matmul_tiled_kk.wgsl)
  b8       the engine's form: K steps of 8, each thread staging 4 rows of A and of B at one k
           in 8 scalar loads, loaded a step ahead; b8_checks with its bounds tests
  b8_db    ... two staging buffers (one barrier a step instead of two)
  b16      K steps of 16 (two cells a thread); b16_db with two buffers
  v16      K steps of 16 with 16-byte loads: threads 0..127 read A's 128 x 16 slice, the rest
           B's, each a 4 x 4 block (four rows at k .. k+3), transposed in registers into the
           same cells; v16_db with two buffers, v16_s32 with rows of 32 cells instead of 33
  v16_rows, v16_clamp, v16_chk, v16_krange, v16_extra, v16_put, g16, g16_put, g16_s32_put:
           v16 with the steps a general kernel takes (each row's address held from the start;
           those rows clamped to M / N; the store testing each element; K from a split-K
           slice's range; another entry point with its own workgroup arrays in the module; the
           store through the engine's put with its bias / accumulate flags; all of them;
           g16_s32_put: g16_put with rows of 32 cells and without the other entry point)
On one H200 (2026-12-02, native wgpu over Vulkan), us at 1024 x 8192 x 2048: engine
1,211-1,255, b8_checks 1,332, b8 1,385, b8_db 1,253, b16 1,372, b16_db 1,797, v16 1,087
(31.6 TFLOP/s), v16_db 1,503, v16_s32 1,102, v16_rows 1,107, v16_clamp 1,101, v16_chk 1,214,
v16_krange 1,166, v16_put 1,189, g16_put 1,165, g16_s32_put 1,210; engine_kk (the kernel
made from g16_put) 1,157 and its unpadded form 1,218 against engine 1,239 in the same call.
Both engine kernels now write their k loop out (shaders/lib/matmul_tiled_acc.wgsl); these
variants keep theirs as loops.
"""
import argparse
import json
import struct
import sys

import numpy as np


def gen(BK=8, load="scalar", dbuf=False, checks=False, s4=33, rowregs=False, clamp=False,
        checked=False, krange=False, extra=False, put=False):
    """WGSL of one generated variant (entry `main`; bindings: P, x, W, C): K steps of BK,
    staging `load` = scalar (4 rows at one k a cell) or vec4 (a 4 x 4 block a thread, BK 16),
    dbuf: two staging buffers, checks: bounds tests in the scalar loads, s4: cells a row.
    The vec4 staging's steps toward a general kernel (the engine's form that lost v16's gain
    took all of them): rowregs: each row's address held from the start (a vec4<u32>) instead of
    recomputed per step; clamp: rows past M / N read the last row's (min); checked: the
    store tests each element against M and N; krange: K walked from a slice's range (P._p is
    the slice length, workgroup z the slice) as split-K does; extra: another entry point in
    the module with its own workgroup arrays (as the engine's shader file has); put: the
    store goes through the engine's put (bias and old C by run-time flags, both off here)."""
    S4 = s4  # (128 + 4) / 4 by default: 4 cells of padding against bank conflicts
    nbuf = 2 if dbuf else 1
    cells = BK * S4
    src = [f"""
struct P {{ M: u32, N: u32, K: u32, _p: u32, flags: u32, _q: u32, _r: u32, _s: u32 }};
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<{'vec4<f32>' if load == 'vec4' else 'f32'}>;
@group(0) @binding(2) var<storage, read> w: array<{'vec4<f32>' if load == 'vec4' else 'f32'}>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
{'@group(0) @binding(4) var<storage, read> bias: array<f32>;' if put else ''}
var<workgroup> As: array<vec4<f32>, {nbuf * cells}>;
var<workgroup> Bs: array<vec4<f32>, {nbuf * cells}>;
"""]
    if load == "scalar":
        per = BK // 8  # cells per thread per operand: 128/4 * BK / 256
        src.append(f"""
struct Sl {{ a: array<vec4<f32>, {per}>, b: array<vec4<f32>, {per}> }};
fn ld(src_is_a: bool, r: u32, k: u32) -> f32 {{
  {'if (r >= select(p.N, p.M, src_is_a) || k >= p.K) { return 0.0; }' if checks else ''}
  if (src_is_a) {{ return a[r * p.K + k]; }}
  return w[r * p.K + k];
}}
fn load_slice(lid: u32, i0: u32, j0: u32, k0: u32) -> Sl {{
  var s: Sl;
  for (var q = 0u; q < {per}u; q++) {{
    let cell = lid + q * 256u;
    let r = 4u * (cell / {BK}u);
    let k = k0 + cell % {BK}u;
    s.a[q] = vec4<f32>(ld(true, i0 + r, k), ld(true, i0 + r + 1u, k),
                       ld(true, i0 + r + 2u, k), ld(true, i0 + r + 3u, k));
    s.b[q] = vec4<f32>(ld(false, j0 + r, k), ld(false, j0 + r + 1u, k),
                       ld(false, j0 + r + 2u, k), ld(false, j0 + r + 3u, k));
  }}
  return s;
}}
fn store_slice(s: Sl, lid: u32, buf: u32) {{
  for (var q = 0u; q < {per}u; q++) {{
    let cell = lid + q * 256u;
    let at = buf * {cells}u + (cell % {BK}u) * {S4}u + cell / {BK}u;
    As[at] = s.a[q];
    Bs[at] = s.b[q];
  }}
}}
""")
    else:
        assert BK == 16
        src.append(f"""
struct Sl {{ v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32> }};
// rowregs: the vec4 index of the thread's four rows at k = 0 (clamp: rows past the end read
// the last row)
fn row_bases(lid: u32, i0: u32, j0: u32) -> vec4<u32> {{
  let blk = lid % 128u;
  let r0 = select(j0, i0, lid < 128u) + (blk / 4u) * 4u;
  let last = select(p.N, p.M, lid < 128u) - 1u;
  let r = {'min(vec4<u32>(r0, r0 + 1u, r0 + 2u, r0 + 3u), vec4<u32>(last))' if clamp else
           'vec4<u32>(r0, r0 + 1u, r0 + 2u, r0 + 3u)'};
  return r * (p.K / 4u) + vec4<u32>(blk % 4u);
}}
fn load_rows(lid: u32, h: vec4<u32>, k0: u32) -> Sl {{
  let k4 = k0 / 4u;
  var s: Sl;
  if (lid < 128u) {{
    s.v0 = a[h.x + k4]; s.v1 = a[h.y + k4]; s.v2 = a[h.z + k4]; s.v3 = a[h.w + k4];
  }} else {{
    s.v0 = w[h.x + k4]; s.v1 = w[h.y + k4]; s.v2 = w[h.z + k4]; s.v3 = w[h.w + k4];
  }}
  return s;
}}
// thread lid < 128: a 4x4 block of A (rows rb*4.., k kb*4..); else the same block of W
fn load_slice(lid: u32, i0: u32, j0: u32, k0: u32) -> Sl {{
  let blk = lid % 128u;
  let rb = blk / 4u;
  let kb = blk % 4u;
  let K4 = p.K / 4u;
  var s: Sl;
  if (lid < 128u) {{
    let base = (i0 + rb * 4u) * K4 + k0 / 4u + kb;
    s.v0 = a[base]; s.v1 = a[base + K4]; s.v2 = a[base + 2u * K4]; s.v3 = a[base + 3u * K4];
  }} else {{
    let base = (j0 + rb * 4u) * K4 + k0 / 4u + kb;
    s.v0 = w[base]; s.v1 = w[base + K4]; s.v2 = w[base + 2u * K4]; s.v3 = w[base + 3u * K4];
  }}
  return s;
}}
fn store_slice(s: Sl, lid: u32, buf: u32) {{
  let blk = lid % 128u;
  let rb = blk / 4u;
  let kb = blk % 4u;
  let at = buf * {cells}u + kb * 4u * {S4}u + rb;
  let t0 = vec4<f32>(s.v0.x, s.v1.x, s.v2.x, s.v3.x);
  let t1 = vec4<f32>(s.v0.y, s.v1.y, s.v2.y, s.v3.y);
  let t2 = vec4<f32>(s.v0.z, s.v1.z, s.v2.z, s.v3.z);
  let t3 = vec4<f32>(s.v0.w, s.v1.w, s.v2.w, s.v3.w);
  if (lid < 128u) {{
    As[at] = t0; As[at + {S4}u] = t1; As[at + {2 * S4}u] = t2; As[at + {3 * S4}u] = t3;
  }} else {{
    Bs[at] = t0; Bs[at + {S4}u] = t1; Bs[at + {2 * S4}u] = t2; Bs[at + {3 * S4}u] = t3;
  }}
}}
""")
    regs = "\n".join(f"  var r{i}a = vec4<f32>(0.0); var r{i}b = vec4<f32>(0.0);" for i in range(8))
    fmas = "\n".join(
        f"      r{i}a += a{i // 4}.{'xyzw'[i % 4]} * b0; r{i}b += a{i // 4}.{'xyzw'[i % 4]} * b1;"
        for i in range(8))
    stores = "\n".join(
        f"  st(i0 + {64 * (i // 4)}u + ty * 4u + {i % 4}u, j0 + tx * 4u, r{i}a);\n"
        f"  st(i0 + {64 * (i // 4)}u + ty * 4u + {i % 4}u, j0 + 64u + tx * 4u, r{i}b);"
        for i in range(8))
    compute = f"""
    for (var kk = 0u; kk < {BK}u; kk++) {{
      let o = buf * {cells}u + kk * {S4}u;
      let a0 = As[o + ty]; let a1 = As[o + 16u + ty];
      let b0 = Bs[o + tx]; let b1 = Bs[o + 16u + tx];
{fmas}
    }}"""
    if dbuf:
        loop = f"""
  var nxt = LOAD(KBEG);
  store_slice(nxt, lid, 0u);
  workgroupBarrier();
  var buf = 0u;
  for (var k0 = KBEG; k0 < KEND; k0 += {BK}u) {{
    let more = k0 + {BK}u < KEND;
    if (more) {{ nxt = LOAD(k0 + {BK}u); }}
{compute}
    if (more) {{ store_slice(nxt, lid, buf ^ 1u); }}
    workgroupBarrier();
    buf ^= 1u;
  }}"""
    else:
        loop = f"""
  var nxt = LOAD(KBEG);
  let buf = 0u;
  for (var k0 = KBEG; k0 < KEND; k0 += {BK}u) {{
    store_slice(nxt, lid, 0u);
    workgroupBarrier();
    if (k0 + {BK}u < KEND) {{ nxt = LOAD(k0 + {BK}u); }}
{compute}
    workgroupBarrier();
  }}"""
    PUT = ("let idx = i * p.N + j + s;\n    var x = v[s];\n"
           "    if ((p.flags & 1u) != 0u) { x += bias[j + s]; }\n"
           "    if ((p.flags & 2u) != 0u) { x += c[idx]; }\n    c[idx] = x;") if put else \
        "c[i * p.N + j + s] = v[s];"
    STORE = ("if (i >= p.M) { return; }\n  for (var s = 0u; s < 4u; s++) {\n"
             "    if (j + s >= p.N) { return; }\n    " + PUT + "\n  }") \
        if checked else \
        "let o = i * p.N + j;\n  c[o] = v.x; c[o + 1u] = v.y; c[o + 2u] = v.z; c[o + 3u] = v.w;"
    src.append(f"""
fn st(i: u32, j: u32, v: vec4<f32>) {{
  {STORE}
}}
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {{
  let i0 = wid.y * 128u;
  let j0 = wid.x * 128u;
  let tx = l3.x;
  let ty = l3.y;
{"  let h = row_bases(lid, i0, j0);" if rowregs else ""}
{"  let kbeg = wid.z * p._p;" if krange else ""}
{"  let kend = min(p.K, kbeg + p._p);" if krange else ""}
{regs}
{loop}
{stores}
}}
""")
    if rowregs and load != "vec4":
        raise ValueError("rowregs: the vec4 staging only")
    if extra:
        src.append("""
var<workgroup> X1: array<vec4<f32>, 272>;
var<workgroup> X2: array<vec4<f32>, 272>;
@compute @workgroup_size(256)
fn other(@builtin(local_invocation_index) lid: u32) {
  X1[lid] = vec4<f32>(f32(lid));
  workgroupBarrier();
  X2[lid] = X1[255u - lid];
  workgroupBarrier();
  c[lid] = X2[lid].x;
}
""")
    text = "".join(src).replace("KBEG", "kbeg" if krange else "0u")
    text = text.replace("KEND", "kend" if krange else "p.K")
    return text.replace("LOAD(", "load_rows(lid, h, " if rowregs else "load_slice(lid, i0, j0, ")


VARIANTS = {
    "b8_checks": dict(BK=8, load="scalar", dbuf=False, checks=True),
    "b8": dict(BK=8, load="scalar", dbuf=False),
    "b8_db": dict(BK=8, load="scalar", dbuf=True),
    "b16": dict(BK=16, load="scalar", dbuf=False),
    "b16_db": dict(BK=16, load="scalar", dbuf=True),
    "v16": dict(BK=16, load="vec4", dbuf=False),
    "v16_db": dict(BK=16, load="vec4", dbuf=True),
    "v16_s32": dict(BK=16, load="vec4", dbuf=False, s4=32),
    "v16_rows": dict(BK=16, load="vec4", rowregs=True),
    "v16_clamp": dict(BK=16, load="vec4", rowregs=True, clamp=True),
    "v16_chk": dict(BK=16, load="vec4", checked=True),
    "v16_krange": dict(BK=16, load="vec4", krange=True),
    "v16_extra": dict(BK=16, load="vec4", extra=True),
    "v16_put": dict(BK=16, load="vec4", checked=True, put=True),
    "g16": dict(BK=16, load="vec4", rowregs=True, clamp=True, checked=True, krange=True,
                extra=True),
    "g16_put": dict(BK=16, load="vec4", rowregs=True, clamp=True, checked=True, krange=True,
                    extra=True, put=True),
    "g16_s32_put": dict(BK=16, load="vec4", rowregs=True, clamp=True, checked=True,
                        krange=True, put=True, s4=32),
}


ENGINE = {"engine": ("matmul_tiled", "matmul_tiled_128", {}),
          "engine_kk": ("matmul_tiled_kk", "matmul_tiled_128_kk", {})}


def engine_source(name="engine"):
    """An engine tiled GEMM shader, includes resolved: `engine` (matmul_tiled_128) or
    `engine_kk` (the 16-byte-staged matmul_tiled_128_kk)."""
    from py_engine.gpu.shaders import shader_source
    return shader_source(ENGINE[name][0])


def run(variants, shapes, reps=3):
    """[{variant, M, N, K, us, tflops, rel_err}] for each shape and variant."""
    from tools.native_engine import NativeEngine
    # the engine's device (adapter limits), created on the engine's own loop thread: the
    # caller's thread may already run a loop (Playwright's, in the test suite)
    engine = NativeEngine()
    try:
        return _run(engine.device, variants, shapes, reps)
    finally:
        engine.close()


def _run(native, variants, shapes, reps):
    import wgpu
    if "timestamp-query" not in native.info["features"]:
        raise RuntimeError("this adapter offers no timestamp-query: nothing to time with")
    dev = native.gpu
    U, S = wgpu.BufferUsage.UNIFORM, wgpu.BufferUsage.STORAGE
    rng = np.random.default_rng(0)
    out = []
    for (M, N, K) in shapes:
        if M % 128 or N % 128 or K % 16:
            raise ValueError(f"shape {M}x{N}x{K}: M and N must be multiples of 128, K of 16")
        x = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((N, K), dtype=np.float32) * 0.02
        ref = x.astype(np.float64) @ w.T.astype(np.float64) if M * N * K <= 2 ** 35 else None
        bx = dev.create_buffer_with_data(data=x.tobytes(), usage=S)
        bw = dev.create_buffer_with_data(data=w.tobytes(), usage=S)
        bc = dev.create_buffer(size=M * N * 4,
                               usage=S | wgpu.BufferUsage.COPY_SRC | wgpu.BufferUsage.COPY_DST)
        bias = dev.create_buffer(size=max(256, N * 4), usage=S)
        # generated: M N K and the K slice's length (all of K); the engine's Params:
        # M N K flags sa0 sa1 sb0 sb1 ks N0 N1 _
        pg = dev.create_buffer_with_data(data=struct.pack("<8I", M, N, K, K, 0, 0, 0, 0),
                                         usage=U)
        pe = dev.create_buffer_with_data(
            data=struct.pack("<12I", M, N, K, 0, K, 1, 1, K, K, 0, 0, 0), usage=U)
        for name in variants:
            eng = name in ENGINE
            mod = dev.create_shader_module(code=engine_source(name) if eng
                                           else gen(**VARIANTS[name]))
            pipe = dev.create_compute_pipeline(layout="auto", compute={
                "module": mod, "entry_point": ENGINE[name][1] if eng else "main",
                "constants": ENGINE[name][2] if eng else {}})
            ents = [(0, pe), (1, bx), (2, bw), (3, bias), (4, bc)] if eng else \
                [(0, pg), (1, bx), (2, bw), (3, bc)] + \
                ([(4, bias)] if VARIANTS[name].get("put") else [])
            bg = dev.create_bind_group(layout=pipe.get_bind_group_layout(0), entries=[
                {"binding": i, "resource": {"buffer": b}} for i, b in ents])
            qs = dev.create_query_set(type=wgpu.QueryType.timestamp, count=2)
            qb = dev.create_buffer(size=16, usage=wgpu.BufferUsage.QUERY_RESOLVE
                                   | wgpu.BufferUsage.COPY_SRC)
            R, times = 20, []
            for rep in range(reps + 1):          # the first pass warms up
                enc = dev.create_command_encoder()
                enc.clear_buffer(bc)             # no form is judged on an earlier one's C
                cp = enc.begin_compute_pass(timestamp_writes={
                    "query_set": qs, "beginning_of_pass_write_index": 0,
                    "end_of_pass_write_index": 1})
                cp.set_pipeline(pipe)
                cp.set_bind_group(0, bg)
                for _ in range(R):
                    cp.dispatch_workgroups(N // 128, M // 128, 1)
                cp.end()
                enc.resolve_query_set(qs, 0, 2, qb, 0)
                dev.queue.submit([enc.finish()])
                t = np.frombuffer(dev.queue.read_buffer(qb), dtype=np.uint64)
                if rep:
                    times.append((int(t[1]) - int(t[0])) / R / 1e3)
            err = None
            if ref is not None:
                got = np.frombuffer(dev.queue.read_buffer(bc), dtype=np.float32).reshape(M, N)
                err = float(np.abs(got - ref).max() / np.abs(ref).max())
            us = min(times)
            out.append({"variant": name, "M": M, "N": N, "K": K, "us": round(us, 1),
                        "tflops": round(2 * M * N * K / max(us, 1e-9) / 1e6, 2), "rel_err": err})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default=",".join(list(ENGINE) + list(VARIANTS)))
    ap.add_argument("--shapes", default="1024x8192x2048,2048x8192x2048,1024x2048x4096")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    names = [v for v in a.variants.split(",") if v]
    bad = [v for v in names if v not in ENGINE and v not in VARIANTS]
    if bad:
        ap.error(f"unknown variants {bad}: pick from {', '.join(list(ENGINE) + list(VARIANTS))}")
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",") if s]
    for row in run(names, shapes, a.reps):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    sys.exit(main())
