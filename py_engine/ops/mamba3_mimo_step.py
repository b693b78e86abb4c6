"""Mamba-3 MIMO's decode step in one dispatch (shaders/mamba3_step_mimo.wgsl): the per-token
scalars, B's and C's RMSNorm, the angles, k_r / q_r, the state update, y_r and the MIMO output
(gate, head-wise norm where is_outproj_norm, mimo_o) -- 3 dispatches a decoded layer with in_proj
and out_proj, where the separate kernels (two rmsnorm_forward, mamba3_prep, mamba3_step,
mamba3_mimo_out; ops/mamba3.py, ops/mamba3_mimo.py) make it 7. Same math, same order per state
(y_r's sum over N meets in a 32-lane tree instead of one thread's loop).

    mamba3_mimo_step(batch, ins, state, *, weights, S, A_floor, heavy_tail, n_heads, n_groups,
                     eps_bc, eps_o, out=None) -> out [Bsz, H*P]
ins     dict of in_proj's outputs for one token, views of ONE buffer (the mixer's packed in_proj
        writes them side by side): x [Bsz, H*P], B / C [Bsz, R*G*N] (raw: normalised here),
        z [Bsz, H*P], dd_dt / dd_A / trap [Bsz, H], angles [Bsz, S]
state   angle [Bsz, H, S], ssm [Bsz, H, P, N], k [Bsz, R, H, N], v [Bsz, H, P], in place
weights dict: dt_bias [H], B_bias / C_bias [H, R, N], D [H], mimo_x / mimo_z / mimo_o [H, R, P],
        B_norm / C_norm [N], norm_w [H*P] or None (is_outproj_norm)
out     the MIMO output, out_proj's input: a new Tensor, or the given Tensor / Cols view
1 dispatch: one 256-thread workgroup a head (grid (H, Bsz)), or, by `rows_form` (without the
out-projection norm), 8 rows of a head a workgroup (grid (H * ceil(P / 8), Bsz)).
"""
from py_engine.gpu.batch import MAX_WORKGROUPS
from py_engine.gpu.settings import choose, storage_bindings
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import params, workgroup_storage
from py_engine.ops.conv1d import view
from py_engine.ops.mamba3 import HEAVY, MIMO, _arrived, _Spec, _uniform_fn, one_binding

SHADER = ENTRY = "mamba3_step_mimo"
ROWS_ENTRY = "mamba3_step_mimo_rows"
RPW = 8                  # the rows form's rows a workgroup (the shader's RPW)
STORAGE = 8              # storage bindings of the rows form (the head form: 7; the shader's header)
INS = ("x", "B", "C", "z", "dd_dt", "dd_A", "trap", "angles")
# the parameters read through `prm`, in MimoStep's offset order (norm_w last: ONORM only)
PARAMS = ("mimo_z", "mimo_o", "dt_bias", "B_bias", "C_bias", "D", "mimo_x", "B_norm", "C_norm",
          "norm_w")


def packed_params(weights):
    """(binding, element offsets in PARAMS order) of a layer's parameters when they lie in one
    buffer (nn/mamba3.decode_param_packs packs them at load), else None -- the kernel then does
    not run (fused() says no) and the separate kernels decode the layer."""
    ts = [weights[k] for k in PARAMS if weights.get(k) is not None]
    one = one_binding(ts)
    if one is None:
        return None
    binding, offs = one
    return binding, [o for o, _ in offs]


def sh_floats(R, N, P, S, rows=False):
    """The kernel's `sh`: k, k_prev, q [R][N] each | phi [S] | 1/rms of B, C (and, in the
    one-workgroup form, y) per rank | y [R][P] (the head's rows' y_r: that form only)."""
    return 3 * R * N + S + (2 * R if rows else 3 * R + R * P)


def red_floats(R):
    """The kernel's `red`: a 256-lane tree a rank (the norm sums use two)."""
    return 256 * max(R, 2)


def fits(dev, R, N, P, S, rows=False):
    """Whether the kernel's bindings and workgroup memory fit the device (each workgroup variable
    counted rounded up to 16 bytes, as ops/mamba3.lanes_fit counts)."""
    if storage_bindings(dev) < STORAGE:
        return False
    rounded = lambda n: -(-n // 4) * 4  # noqa: E731
    need = 4 * (rounded(sh_floats(R, N, P, S, rows)) + red_floats(R)) + (16 if rows else 0)
    return need <= workgroup_storage(dev)


def rows_form(dev, H, R, N, P, S, onorm=False):
    """Whether the step runs 8 rows of a head a workgroup (mamba3_step_mimo_rows: H * P / 8
    workgroups) rather than a head a workgroup (mamba3_step_mimo: H workgroups): without the
    out-projection norm (`onorm`: a head-wise norm of each y_r, which needs all of a head's
    rows), where it fits and its grid fits one dispatch's x, unless `device.mamba3_mimo_rows`
    (tests) or MAMBAWEB_MAMBA3_MIMO_ROWS=1|0 (bench variants) says otherwise. On an H100
    through Dawn (tools/ab_decode, one process; gpu_session.sh --mimo), GPU ms a token rows /
    head / the separate kernels: mamba3_mimo_187m (rank 4) f16 0.668 / 1.251 / 4.405, q4
    0.609 / 1.194 / 4.335. With the norm, the rows form followed by mamba3_mimo_out (a thread a
    (row, head): 24 threads a decoded token) took 2.582 ms against the head form's 1.329
    (mamba3_mimo_onorm_187m f16; that form was removed after the measurement, commit b12161a
    has it)."""
    if onorm or not fits(dev, R, N, P, S, rows=True) or H * -(-P // RPW) > MAX_WORKGROUPS:
        return False
    return choose(dev, "mamba3_mimo_rows", "MAMBAWEB_MAMBA3_MIMO_ROWS", "1", "0", lambda: True)


def fused(dev, H, R, N, P, S, onorm=False, weights=None):
    """Whether a MIMO layer decodes through one of this module's kernels: the form
    `mamba3_mimo_step` would take fits (rows_form's, else the one-workgroup form's), the
    layer's parameters (`weights`, mamba3_mimo_step's) lie in one buffer where given, and on a
    real GPU (the decode mat-vec's rule, ops/linear._matvec_ok: not a CPU adapter unless
    `device.force_matvec`), unless `device.mamba3_mimo_fused` (tests) or
    MAMBAWEB_MAMBA3_MIMO_STEP=fused|separate (bench variants) says otherwise."""
    from py_engine.ops.linear import _matvec_ok
    return ((rows_form(dev, H, R, N, P, S, onorm) or fits(dev, R, N, P, S))
            and (weights is None or packed_params(weights) is not None)
            and choose(dev, "mamba3_mimo_fused", "MAMBAWEB_MAMBA3_MIMO_STEP", "fused",
                       "separate", lambda: _matvec_ok(dev)))


def mamba3_mimo_step(batch, ins, state, *, weights, S, A_floor, heavy_tail, n_heads, n_groups,
                     eps_bc, eps_o, out=None):
    dev = batch.device
    pr = weights
    if state is None:
        raise ValueError("mamba3_mimo_step needs a state (angle, ssm, k, v)")
    s = _Spec(ins["x"], ins["B"], ins["C"], ins["dd_dt"], ins["dd_A"], ins["trap"],
              ins["angles"], pr["dt_bias"], pr["B_bias"], pr["C_bias"], pr["D"], n_heads,
              n_groups, S, step=True, mimo_x=pr["mimo_x"])
    H, P, N, R = s.H, s.P, s.N, s.R
    for name in ("mimo_z", "mimo_o"):
        if tuple(pr[name].shape) != (H, R, P):
            raise ValueError(f"{name} has shape {list(pr[name].shape)}, expected {[H, R, P]}")
    for name in ("B_norm", "C_norm"):
        if pr[name].numel != N:
            raise ValueError(f"{name} must have {N} elements, got {list(pr[name].shape)}")
    if pr.get("norm_w") is not None and pr["norm_w"].numel != H * P:
        raise ValueError(f"norm_w must have {H * P} elements, got {list(pr['norm_w'].shape)}")
    if ins["z"].shape[-1] != H * P:
        raise ValueError(f"z has last dim {ins['z'].shape[-1]}, expected H*P = {H * P}")
    onorm = pr.get("norm_w") is not None
    rows = rows_form(dev, H, R, N, P, S, onorm)
    if not rows and not fits(dev, R, N, P, S):
        raise ValueError("mamba3_mimo_step: this shape's step does not fit the device "
                         "(mamba3_mimo_step.fits): decode through the separate kernels")
    one = one_binding([ins[k] for k in INS])
    if one is None:
        raise ValueError("mamba3_mimo_step: in_proj's outputs must be views of one buffer "
                         "(the packed in_proj's block)")
    inp, offs = one
    packed = packed_params(pr)
    if packed is None:
        raise ValueError("mamba3_mimo_step: the layer's parameters must lie in one buffer "
                         "(nn/mamba3.decode_param_packs, packed at load)")
    prm, poffs = packed
    (xo, xs), (bo, bs), (co, cs), (zo, zs), *raws = offs
    st = s.states(state, dev)
    y = out if out is not None else Tensor(dev, (s.nb, H * P))
    if y.shape[-1] != H * P:
        raise ValueError(f"out has shape {list(y.shape)}, expected [{s.nb}, {H * P}]")
    if any(view(t)[0][0] is inp[0] for t in [y] + st):
        raise ValueError("mamba3_mimo_step: out and the states must not lie in in_proj's "
                         "output buffer (read and written in one dispatch)")
    yv = view(y)
    flags = MIMO | (HEAVY if heavy_tail else 0)
    un = _uniform_fn(dev, s, flags, A_floor, (None, xo, xs), (None, bo, bs), (None, co, cs), yv,
                     raws, 0, 0, 0, 0)()
    poffs += [0] * (len(PARAMS) - len(poffs))          # norm_w's slot unread without ONORM
    mq = dev.uniform(params(zo, zs, float(eps_o), float(eps_bc), *poffs, 0, 0))
    res = [un, inp, mq, prm] + [None] * 9 + [yv[0]] + [t.binding for t in st]
    consts = {"RK": R, "RED": red_floats(R)}
    if not rows:
        batch.run(SHADER, ENTRY, res, H, s.nb,
                  constants=dict(consts, ONORM=int(onorm), WSM=sh_floats(R, N, P, S)))
        return y
    res += [None] * 3 + [_arrived(dev, s.nb * H)]
    batch.run(SHADER, ROWS_ENTRY, res, H * -(-P // RPW), s.nb,
              constants=dict(consts, WSM=sh_floats(R, N, P, S, rows=True)))
    return y
