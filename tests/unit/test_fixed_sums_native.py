"""shaders/lib/fixed_sums.wgsl: sums through integer atomics that come out the same in any
order (Mamba-1's folded x_proj adds its workgroups' shares this way). On the native backend
(lavapipe here), values added by many threads of many workgroups against the exact sum of
the values truncated at 2^-48 (Python integers): within one f32 rounding, bit-identical when
the same values come in another order, NaN for a value that is not finite or not below 2^31,
0 for values below 2^-48."""
import numpy as np

from py_engine.gpu.shaders import shader_source
from tests.native_support import engine, native as pytestmark  # noqa: F401

TEST_ENTRIES = """
@group(0) @binding(0) var<storage, read> vals: array<f32>;              // [n]
@group(0) @binding(1) var<storage, read_write> acc: array<atomic<i32>>; // [rows, FX_WORDS]
@group(0) @binding(2) var<storage, read_write> sums: array<f32>;        // [rows]
override ROWS: u32 = 1u;

// value i goes into sum i % ROWS, one thread a value (64 a workgroup, many workgroups)
@compute @workgroup_size(64)
fn add(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= arrayLength(&vals)) { return; }
  let v = vals[i];
  let base = (i % ROWS) * FX_WORDS;
  let a = abs(v);
  if (!(a < FX_LIMIT)) { atomicOr(&acc[base + FX_DIGITS], 1); return; }
  let s = select(1, -1, v < 0.0);
  let d = fx_digits(a);
  for (var k = 0u; k < FX_DIGITS; k++) {
    if (d[k] != 0.0) { atomicAdd(&acc[base + k], s * i32(d[k])); }
  }
}

@compute @workgroup_size(64)
fn read_sums(@builtin(global_invocation_id) gid: vec3<u32>) {
  let r = gid.x;
  if (r >= ROWS) { return; }
  var w: array<i32, 6>;
  for (var k = 0u; k < FX_WORDS; k++) { w[k] = atomicLoad(&acc[r * FX_WORDS + k]); }
  sums[r] = fx_value(w);
}
"""

RUN = """
from py_engine.gpu import shaders
from py_engine.gpu.tensor import Tensor
shaders._cache['test_fixed_sums'] = args['src']
shaders._line_map['test_fixed_sums'] = []
vals = Tensor.from_bytes(device, (args['n'],), args['vals'])
rows = args['rows']
acc = Tensor.from_bytes(device, (rows * 6,), bytes(rows * 24), dtype='i32')
sums = Tensor(device, (rows,))
batch = device.batch()
c = {'ROWS': rows}
batch.run('test_fixed_sums', 'add', [vals.binding, acc.binding], -(-args['n'] // 64), constants=c)
batch.run('test_fixed_sums', 'read_sums', [None, acc.binding, sums.binding], -(-rows // 64), constants=c)
batch.submit()
result = await sums.to_bytes()
device.release_tensors([vals, acc, sums])
"""


def _src():
    return shader_source("lib/fixed_sums") + TEST_ENTRIES


def _sums(engine, values, rows):
    v = np.asarray(values, np.float32)
    out = engine.run(RUN, src=_src(), vals=v.tobytes(), n=len(v), rows=rows)
    return np.frombuffer(out, np.float32)


def _exact(values, rows):
    """Each sum exactly: every value truncated toward zero at 2^-48, as Python integers."""
    tot = [0] * rows
    for i, v in enumerate(np.asarray(values, np.float32).astype(np.float64)):
        n, d = float(abs(v)).as_integer_ratio()
        q = (n << 48) // d
        tot[i % rows] += -q if v < 0 else q
    return [t / 2.0 ** 48 for t in tot]   # the float64 nearest (what f32 rounding is checked on)


def test_sums_within_one_rounding_of_the_exact_sum(engine):
    rng = np.random.default_rng(3)
    rows = 59
    # sum r of values with magnitudes 2^(e - 14) .. 2^e, e from -30 to 28 (every place of the
    # leading one in its digit, each digit on top), both signs; 100 values a sum, the values
    # spread over 93 workgroups
    top = np.arange(rows, dtype=np.float64) - 30.0
    e = np.tile(top, 100) - rng.uniform(0, 14, rows * 100)
    vals = (rng.choice([-1.0, 1.0], rows * 100) * 2.0 ** e).astype(np.float32)
    got = _sums(engine, vals, rows)
    want = np.asarray(_exact(vals, rows))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(got - want) <= ulp), np.max(np.abs(got - want) / ulp)


def test_the_same_sums_in_any_order(engine):
    rng = np.random.default_rng(4)
    rows = 8
    vals = (rng.standard_normal(2048) * 10.0 ** rng.integers(-6, 6, 2048)).astype(np.float32)
    a = _sums(engine, vals, rows)
    # the same values into the same sums, in another order (index i % rows kept per value)
    order = np.empty_like(vals)
    for r in range(rows):
        idx = np.arange(r, 2048, rows)
        order[idx] = vals[rng.permutation(idx)]
    b = _sums(engine, order, rows)
    assert a.tobytes() == b.tobytes()


def test_cancellation_negative_sums_and_tiny_values(engine):
    rows = 4
    # row 0: big values that cancel, leaving a small one; row 1: a negative sum;
    # row 2: values below 2^-48 only (truncated to 0); row 3: zero values
    vals = np.zeros(16, np.float32)
    vals[0::4] = [1e8, -1e8, 3.25e-3, 0.0]
    vals[1::4] = [-5.5, 2.0, -0.125, -1e-9]
    vals[2::4] = [2.0 ** -50, -2.0 ** -49, 2.0 ** -60, 1e-30]
    got = _sums(engine, vals, rows)
    want = _exact(vals, rows)
    assert got[0] == np.float32(want[0]) == np.float32(3.25e-3)
    assert abs(got[1] - want[1]) <= np.spacing(np.float32(abs(want[1])))
    assert got[1] < 0
    assert got[2] == 0.0 and got[3] == 0.0


def test_values_out_of_range_or_not_finite_give_nan(engine):
    rows = 4
    vals = np.array([1.0, np.inf, np.nan, 2.0 ** 31,
                     2.0, 3.0, -np.inf, 2.0 ** 31 * 0.99], np.float32)
    got = _sums(engine, vals, rows)
    assert np.isnan(got[1]) and np.isnan(got[2]) and np.isnan(got[3])
    assert got[0] == 3.0
