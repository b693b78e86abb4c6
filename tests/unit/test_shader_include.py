"""The WGSL `//#include` of py_engine/gpu/shaders.py, and the uniform Params structs of every
shader against the bytes the ops pack for them (host only: no GPU, the ops record into a fake
batch).
"""
import re

import pytest

from py_engine.gpu import shaders
from py_engine.gpu.shaders import (SHADER_DIR, ShaderIncludeError, params_struct_size,
                                   shader_location, shader_source)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A private shaders/ folder; write(rel, text) adds a file."""
    monkeypatch.setattr(shaders, "SHADER_DIR", tmp_path)
    monkeypatch.setattr(shaders, "_cache", {})
    monkeypatch.setattr(shaders, "_line_map", {})

    def write(rel, text):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return write


def test_include_is_recursive_and_once_per_shader(tree):
    tree("lib/a.wgsl", "fn a() {}\n")
    tree("lib/b.wgsl", '//#include "lib/a.wgsl"\nfn b() {}')        # no final newline
    tree("k.wgsl", '// top\n//#include "lib/b.wgsl"\n//#include "lib/a.wgsl"\n'
                   '  //#include "lib/missing.wgsl"\nfn k() {}\n')
    src = shader_source("k")
    assert src == ("// top\nfn a() {}\nfn b() {}\n// (already included: lib/a.wgsl)\n"
                   '  //#include "lib/missing.wgsl"\nfn k() {}\n')   # indented: a plain comment
    assert shader_location("k", 2) == "lib/a.wgsl:1"
    assert shader_location("k", 3) == "lib/b.wgsl:2"
    assert shader_location("k", 6) == "k.wgsl:5"


def test_include_cycle_is_refused(tree):
    tree("lib/x.wgsl", '\n//#include "lib/y.wgsl"\n')
    tree("lib/y.wgsl", '//#include "./lib/x.wgsl"\n')
    tree("k.wgsl", '//#include "lib/x.wgsl"\n')
    with pytest.raises(ShaderIncludeError, match=r"shaders/lib/y\.wgsl:1: include cycle "
                                                 r"lib/x\.wgsl -> lib/y\.wgsl -> lib/x\.wgsl"):
        shader_source("k")
    tree("self.wgsl", 'fn s() {}\n//#include "self.wgsl"\n')
    with pytest.raises(ShaderIncludeError, match=r"shaders/self\.wgsl:2: include cycle"):
        shader_source("self")


@pytest.mark.parametrize("line,msg", [
    ('//#include "lib/nope.wgsl"', r"shaders/k\.wgsl:3: included file shaders/lib/nope\.wgsl not found"),
    ('//#include "../k.wgsl"', r"shaders/k\.wgsl:3: include path '\.\./k\.wgsl' must be relative"),
    ('//#include "/etc/passwd"', r"shaders/k\.wgsl:3: include path '/etc/passwd' must be relative"),
    ('//#include "lib/a.wgsl" x', r"shaders/k\.wgsl:3: text after the //#include path"),
])
def test_bad_includes_name_the_file_and_line(tree, line, msg):
    tree("lib/a.wgsl", "fn a() {}\n")
    tree("k.wgsl", f"// k\n\n{line}\n")
    with pytest.raises(ShaderIncludeError, match=msg):
        shader_source("k")


# -- the real shaders ------------------------------------------------------------------------

SHADERS = sorted(p.stem for p in SHADER_DIR.glob("*.wgsl"))
FN = re.compile(r"^\s*fn\s+(\w+)", re.M)


@pytest.mark.parametrize("name", SHADERS)
def test_real_shaders_resolve(name):
    src = shader_source(name)
    assert not re.search(r"^//#include", src, re.M)
    names = FN.findall(src)
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"{name}.wgsl defines {sorted(dup)} more than once"


def test_shared_helpers_exist_once():
    """The activations and workgroup sums live in shaders/lib/ only."""
    helpers = ("sigmoid", "silu", "dsilu", "log1p_unit", "softplus", "workgroup_sum64",
               "workgroup_sum256")
    users = {"elementwise_forward", "elementwise_backward", "selective_scan_forward",
             "selective_scan_backward", "conv1d_forward", "conv1d_backward", "rmsnorm_forward",
             "rmsnorm_backward", "reduce", "adamw", "gated_rmsnorm_forward",
             "gated_rmsnorm_backward"}
    for name in users:
        own = (SHADER_DIR / f"{name}.wgsl").read_text()
        assert not set(FN.findall(own)) & set(helpers), name
        assert re.search(r'^//#include "lib/', own, re.M), name
    # the numerics the kernels were validated with: PyTorch's threshold 20, the series log1p
    act = (SHADER_DIR / "lib" / "activations.wgsl").read_text()
    assert "if (x > 20.0) { return x; }" in act
    assert "return max(x, 0.0) + log1p_unit(exp(-abs(x)));" in act
    assert "t2 * (1.0 / 11.0 + t2 * (1.0 / 13.0 + t2 * (1.0 / 15.0)))))));" in act


def test_engine_zip_ships_lib():
    from server.engine_pack import REPO, _engine_files
    rel = {p.relative_to(REPO).as_posix() for p in _engine_files(REPO)}
    assert {"shaders/lib/activations.wgsl", "shaders/lib/reduce.wgsl"} <= rel


# -- Params sizes ----------------------------------------------------------------------------

@pytest.mark.parametrize("body,size", [
    ("a: u32, b: f32, c: i32, d: u32", 16),
    ("a: u32", 4),
    ("a: u32, v: vec4<f32>", 32),
    ("a: u32, v: vec3<f32>, b: u32", 32),     # vec3 aligns to 16; b packs after its 12 bytes
    ("a: u32, v: vec2f", 16),
    ("a: u32, xs: array<vec4<u32>, 3>", 64),
    ("a: u32, // comment, with: commas\n b: f32,", 8),
    ("a: f32, xs: array<vec4f, 2>, b: u32", 64),   # b at 48; size rounds up to align 16
])
def test_params_struct_size_rules(body, size):
    assert params_struct_size(f"struct Other {{ q: vec4<f32> }};\nstruct Params {{ {body} }};") == size


def test_params_struct_size_refuses_what_uniforms_cannot_hold():
    with pytest.raises(ValueError, match="multiple of 16"):
        params_struct_size("struct Params { a: u32, xs: array<f32, 4> };")
    assert params_struct_size("struct Other { a: u32 };") is None


UNIFORM = re.compile(r"var<uniform>\s+\w+\s*:\s*(\w+)")


@pytest.mark.parametrize("name", SHADERS)
def test_uniform_structs_are_a_multiple_of_16(name):
    """Params, and any other struct a shader binds as a uniform (matvec's MultiParams): the
    ops pack whole 16-byte rows (py_engine.ops._common.params)."""
    src = shader_source(name)
    for struct in set(UNIFORM.findall(src)) | {"Params"}:
        size = params_struct_size(src, struct)
        if struct == "Params" and size is None:
            continue
        assert size is not None and size % 16 == 0, (name, struct, size)


# -- what the ops pack, per entry point --------------------------------------------------------

class _Buf:
    def __init__(self, n):
        self.size = n


class _Pool:
    def acquire(self, n):
        return _Buf(n)

    def release(self, buf):
        pass


class _Uniform:
    def __init__(self, data):
        self.data = data


class FakeDevice:
    """Just enough of py_engine.gpu.device.Device for ops to record dispatches."""

    def __init__(self, features=(), fallback=True):
        self.features = set(features)
        self.info = {"is_fallback": fallback, "backend": "native"}   # every tile's rule
        self.limits = {"maxComputeWorkgroupStorageSize": 32768}   # room for every tile
        self.pool = _Pool()

    def buffer(self, n, usage=None, label=None):
        return _Buf(n)

    def write(self, buf, data, offset=0):
        pass

    def uniform(self, data):
        return _Uniform(data)


class FakeBatch:
    def __init__(self, device):
        self.device = device
        self.runs = []   # (shader, entry, packed uniform bytes)

    def run(self, shader, entry, resources, x, y=1, z=1, constants=None):
        assert isinstance(resources[0], _Uniform), f"{shader}:{entry} binding 0 is not a uniform"
        self.runs.append((shader, entry, resources[0].data))

    def copy(self, *args):
        pass


def _record_ops(batch):
    """Call every op entry point of the wired modules at tiny shapes."""
    from py_engine.gpu.tensor import Tensor
    from py_engine.ops import (conv1d, cross_entropy, elementwise, embedding, gated_rmsnorm,
                               linear, reduce, rmsnorm, sampling, selective_scan)
    from py_engine.ops.conv1d import Cols
    dev = batch.device
    t = lambda *shape, dtype="f32": Tensor(dev, shape, dtype)  # noqa: E731
    nb, T, I, N, K = 2, 70, 40, 8, 4
    # rmsnorm
    x, w = t(5, 24), t(24)
    y, r = rmsnorm.rmsnorm_forward(batch, x, w)
    rmsnorm.rmsnorm_backward(batch, t(5, 24), x, r, w)
    # gated rmsnorm (M > 64: the reduce pass runs)
    proj = t(130, 2 * 24 + 3)
    z = Cols(proj, 0, 24)
    yg = t(130, 24)
    out, rs = gated_rmsnorm.gated_rmsnorm_forward(batch, yg, z, t(24), group_size=12, eps=1e-5)
    gated_rmsnorm.gated_rmsnorm_backward(batch, t(130, 24), yg, z, t(24), rs, group_size=12,
                                         eps=1e-5, dz=Cols(t(130, 51), 0, 24))
    # conv1d
    xc, wc, bc = t(nb, T, I), t(I, K), t(I)
    _, st = conv1d.conv1d_forward(batch, xc, wc, bc, silu=True, write_state=True)
    conv1d.conv1d_step(batch, t(nb, I), st, wc, bc)
    conv1d.conv1d_backward(batch, t(nb, T, I), xc, wc, bc, silu=True)
    conv1d.conv1d_forward(batch, xc, t(I, 3), bc, silu=True)    # a width other than 4: tap by tap
    # selective scan: chunked forward (+ carry), step, backward without saved states
    u, dl, A, Bm, Cm, D, zz, dtb = (t(nb, T, I), t(nb, T, I), t(I, N), t(nb, T, N), t(nb, T, N),
                                    t(I), t(nb, T, I), t(I))
    _, h, _ = selective_scan.selective_scan_forward(batch, u, dl, A, Bm, Cm, D, zz, dtb, chunk=16)
    selective_scan.selective_scan_step(batch, t(nb, I), t(nb, I), A, t(nb, N), t(nb, N), h, D,
                                       t(nb, I), dtb)
    selective_scan.selective_scan_backward(batch, t(nb, T, I), u, dl, A, Bm, Cm, D, zz, dtb,
                                           chunk=16, want_dh0=True)
    # elementwise
    a, b2 = t(300), t(300)
    for fn in (elementwise.add, elementwise.mul, elementwise.silu_backward,
               elementwise.softplus_backward):
        fn(batch, a, b2)
    elementwise.silu(batch, a)
    elementwise.softplus(batch, a)
    elementwise.fill(batch, a, 1.0)
    elementwise.accumulate(batch, a, b2)
    elementwise.scale(batch, a, 0.5, out=b2)
    # reduce
    reduce.reduce_sum(batch, a, mean=True)
    reduce.checksum(batch, a)
    # cross entropy
    logits, tg = t(3, 11), t(3, dtype="i32")
    loss, stats = cross_entropy.cross_entropy_forward(batch, logits, tg)
    cross_entropy.cross_entropy_backward(batch, logits, tg, stats, loss)
    # embedding
    ids, emb = t(4, dtype="u32"), t(10, 8)
    embedding.embedding_forward(batch, ids, emb)
    embedding.embedding_backward(batch, ids, t(4, 8), emb)
    # linear: tiled matmul, bias backward (matvec below, on a "real GPU" device)
    linear.linear_forward(batch, t(5, 8), t(6, 8), t(6))
    linear.linear_backward_bias(batch, t(5, 6))
    # sampling, with a repetition penalty (2 entry points), and greedy (2 more, penalising
    # their slices in the second call)
    sampling.sample(batch, t(2, 50), sampling.make_control(dev, 2), repetition_penalty=1.2,
                    history=t(2, 4, dtype="u32"), top_k=5, top_p=0.9)
    sampling.sample(batch, t(2, 50), greedy=True)
    sampling.sample(batch, t(2, 50), sampling.make_control(dev, 2), repetition_penalty=1.2,
                    history=t(2, 4, dtype="u32"), greedy=True)
    # top-k spread over slices of the row (sampling_candidates, penalising them itself)
    sampling.sample(batch, t(2, 600), sampling.make_control(dev, 2), repetition_penalty=1.2,
                    history=t(2, 4, dtype="u32"), top_k=5, top_p=0.9)
    # top-p alone as passes over the whole row, spread (sampling_topp_pass, sampling_slices_draw;
    # the first pass penalising its slice)
    dev.sample_spread = dev.sample_passes = True
    sampling.sample(batch, t(2, 5000), sampling.make_control(dev, 2), repetition_penalty=1.2,
                    history=t(2, 4, dtype="u32"), top_p=0.9)
    # and top-k past the candidates' 128 (sampling_topk_pass, then top-p's passes)
    sampling.sample(batch, t(2, 5000), sampling.make_control(dev, 2), top_k=300, top_p=0.9)
    # and plain temperature (sampling_max_pass, then the draw)
    sampling.sample(batch, t(2, 5000), sampling.make_control(dev, 2), temperature=0.8)
    dev.sample_spread = dev.sample_passes = None


def _record_matvec(batch):
    from py_engine.gpu.tensor import Tensor
    from py_engine.ops import linear, sampling
    from py_engine.ops import weight_format as wf
    dev = batch.device
    t = lambda *shape: Tensor(dev, shape)  # noqa: E731
    for kind in ("classic", "rows"):          # the scalar f32 kernel and the 16-byte-chunk one
        dev.matvec_kernel = kind
        linear.linear_forward(batch, t(1, 32), t(6, 32))
        linear.linear_multi(batch, t(1, 32), [t(6, 32), t(5, 32)])
    for fmt in ("f16", "bf16", "q8", "q4"):   # narrow weights: stored, read by decode and GEMMs
        q = wf.quantize(batch, t(6, 32), fmt)
        linear.linear_forward(batch, t(1, 32), q)
        linear.linear_forward(batch, t(9, 32), q)
    # in_proj with the conv step folded in (Mamba-1 decode), every format; the conv's weight
    # and bias side by side in one buffer, as packed at load (weight_format.conv_binding)
    def conv_params(n):
        buf = t(4096)
        return (Tensor(dev, (n, 4), buffer=buf.buffer, offset=0),
                Tensor(dev, (n,), buffer=buf.buffer, offset=512))
    for fmt in ("f32", "f16", "bf16", "q8", "q4"):
        q = wf.quantize(batch, t(6, 32), fmt) if fmt != "f32" else t(6, 32)
        wf.matvec(batch, t(1, 32), [q, q], [t(1, 6), t(1, 6)], 1,
                  conv=conv_params(6) + (t(1, 6, 4), 0))
    # row blocks packed side by side, one dispatch for all (Mamba-3's in_proj), every format
    for fmt in ("f32", "f16", "bf16", "q8", "q4"):
        ws_, ys_ = t(4096), t(4096)
        w3 = [Tensor(dev, (6, 32), fmt, buffer=ws_.buffer, offset=1024 * i) for i in range(3)]
        y3 = [Tensor(dev, (1, 6), buffer=ys_.buffer, offset=256 * i) for i in range(3)]
        wf.matvec_pieces(batch, t(1, 32), w3, y3, 1)
    # and with x_proj's shares (Mamba-1 decode where it folds, 10 storage bindings): f32, f16,
    # bf16; x_proj's dt, B and C rows side by side in one buffer (xproj_rows_binding)
    dev.limits["maxStorageBuffersPerShaderStage"] = 16
    for fmt in ("f32", "f16", "bf16", "q8", "q4"):
        n = lambda *shape: wf.quantize(batch, t(*shape), fmt) if fmt != "f32" else t(*shape)  # noqa: E731
        I = 32 if fmt == "q4" else 16            # q4: whole 32-value groups of x_proj's inputs
        dev.matvec_rpt = 2 if fmt == "q4" else None   # and blocks of 32 channels
        q = n(I, 32)
        cb = wf.xproj_block(dev, fmt, 32, [I, I], 1, 10, rule=False)
        xbuf = t(4096)
        rows = [Tensor(dev, (r, I), fmt, buffer=xbuf.buffer, offset=256 * i)
                for i, r in enumerate((2, 4, 4))]
        wf.matvec(batch, t(1, 32), [q, q], [t(1, I), t(1, I)], 1,
                  conv=conv_params(I) + (t(1, I, 4), 0),
                  xproj=tuple(rows) + (t(1, -(-I // cb), 12), 4, 0))
        # the shares gathered in groups of 2 (lib/matvec_xproj_gather.wgsl)
        words = wf.xproj_words(1, -(-I // cb), 2, 10)
        wf.matvec(batch, t(1, 32), [q, q], [t(1, I), t(1, I)], 1,
                  conv=conv_params(I) + (t(1, I, 4), 0),
                  xproj=tuple(rows) + (t(words), 4, 2))
    dev.matvec_rpt = None
    # the tiled GEMM of real GPUs: 128x128 (16-byte-staged where K % 16 == 0, else scalar) and
    # 64x64 blocks, and split-K with its reduce
    linear.linear_forward(batch, t(80, 32), t(70, 32))
    linear.linear_forward(batch, t(80, 30), t(70, 30))
    linear.linear_forward(batch, t(9, 1024), t(6, 1024))
    sampling.advance(batch, Tensor(dev, (1,), "u32"), Tensor(dev, (2,), "u32"),
                     Tensor(dev, (8,), "u32"))


# Shaders whose uniforms are packed by py_engine.ops._common.params elsewhere, not wired here:
# adamw (py_engine/train/adamw.py), init (py_engine/train/init.py), convert
# (py_engine/io/hf_loader.py), ssd_* (being written). Their structs are still checked above.
WIRED = {"rmsnorm_forward", "rmsnorm_backward", "gated_rmsnorm_forward",
         "gated_rmsnorm_backward", "conv1d_forward", "conv1d_backward", "selective_scan_forward",
         "selective_scan_backward", "elementwise_forward", "elementwise_backward", "reduce",
         "cross_entropy_forward", "cross_entropy_backward", "embedding_forward",
         "embedding_backward", "matmul", "linear_backward", "matvec", "sampling",
         "matvec_f32", "matvec_f16", "matvec_bf16", "matvec_q8", "matvec_q4", "quantize",
         "dequant", "decode_control", "matmul_tiled", "matmul_tiled_kk"}
# Modules that hold another module's entry points too (for their shared code), of which only
# these are called: the gathered x_proj fold's (its y2 words read and written atomically)
ONLY = {f"matvec_{fmt}_gather": {"matvec_forward_conv_xproj_gather"}
        for fmt in ("f32", "f16", "bf16", "q8", "q4")}
ENTRY = re.compile(r"@compute[^;{]*?fn\s+(\w+)", re.S)
STRUCT_OF = {("matvec", "matvec_multi_forward"): "MultiParams"}   # entries not bound to Params


def test_ops_pack_exactly_the_params_struct():
    batch = FakeBatch(FakeDevice())
    _record_ops(batch)
    gpu = FakeBatch(FakeDevice(features={"subgroups"}, fallback=False))
    _record_matvec(gpu)
    runs = batch.runs + gpu.runs
    seen = {}
    for shader, entry, data in runs:
        struct = STRUCT_OF.get((shader, entry), "Params")
        size = params_struct_size(shader_source(shader), struct)
        assert len(data) == size, f"{shader}:{entry} packs {len(data)} bytes, {struct} has {size}"
        seen.setdefault(shader, set()).add(entry)
    assert set(seen) == WIRED | set(ONLY)
    for shader in WIRED:   # every entry point was called at least once
        assert seen[shader] == set(ENTRY.findall(shader_source(shader))), shader
    for shader, entries in ONLY.items():
        assert seen[shader] == entries, shader
