"""Mamba-1's decode step with x_proj folded in: x_proj, dt_proj and the scan step of one token
in ONE dispatch (shaders/selective_scan_step_xproj.wgsl) instead of two (x_proj's mat-vec, then
ops.selective_scan.selective_scan_step with dt_w).

Shapes: u_t, z_t [Bsz, I] (u_t: the conv step's output, a whole tensor); x_ws the three row
blocks of x_proj.weight, dt [R, I], B [N, I], C [N, I], one weight format (f32, f16, bf16, q8,
q4); dt_w [I, R] f32; A_log [I, N]; state [Bsz, I, N] updated in place -> y_t [Bsz, I].

Every workgroup (16 channels) computes the whole x_proj for its sequence, the same sums in the
same order, so each reads all of W_x: it pays where W_x is small next to the ~5 us a dispatch
costs on a real GPU (mamba-130m: 80 x 1536, 245 KB at f16), not at mamba-1.4b's 160 x 4096
(1.3 MB at f16, read by each of 256 workgroups). `step_folds_x_proj` is the rule.
"""
from py_engine.gpu.tensor import Tensor
from py_engine.ops._common import dummy
from py_engine.ops.conv1d import view
from py_engine.ops.lora import adapter_of
from py_engine.ops import selective_scan as ss

SHADER = "selective_scan_step_xproj"
XPROJ_ROWS = 160      # R + 2N at most: MAXROWS of the shader (its workgroup copy of x_proj)
CPW = 16              # channels per workgroup (the shader's CPW)
STORAGE_BUFFERS = 12  # u, dt_bias, A_log, D, z, y, state, dt_w, three W_x blocks, u as vec4s
FORMATS = {"f32": (0, 4), "f16": (1, 8), "bf16": (2, 8), "q8": (3, 16), "q4": (4, 32)}
# W_x bytes up to which the rule folds x_proj in (what each workgroup reads again): mamba-130m's
# at f32 (491 KB) and below; mamba-1.4b's f16 (1.3 MB) stays a dispatch of its own.
FOLD_BYTES = 512 * 1024


def _fits(device, u_t, x_ws, dt_w):
    """Whether the folded kernel can run these operands on this device at all."""
    from py_engine.gpu.row_chunks import RowChunks
    if len(x_ws) != 3 or dt_w is None or dt_w.dtype != "f32":
        return False
    fmt = x_ws[0].dtype
    I = u_t.shape[-1]
    if fmt not in FORMATS or I % FORMATS[fmt][1] != 0:
        return False
    if any(isinstance(w, RowChunks) or w.dtype != fmt or tuple(w.shape[1:]) != (I,)
           or adapter_of(device, w) is not None for w in x_ws):
        return False
    if sum(w.shape[0] for w in x_ws) > XPROJ_ROWS or adapter_of(device, dt_w) is not None:
        return False
    _, off, stride = view(u_t)
    return ("subgroups" in device.features and off % 4 == 0 and stride % 4 == 0
            and device.limits.get("maxStorageBuffersPerShaderStage", 8) >= STORAGE_BUFFERS)


def step_folds_x_proj(device, u_t, x_ws, dt_w):
    """Whether Mamba-1's decode step takes x_proj into the scan step's dispatch: where the
    kernel fits (three blocks of one format, no adapter or row blocks, R + 2N <= 160, subgroups,
    12 storage buffers -- not SwiftShader's 10), then `device.scan_step_xproj` (tests), else
    MAMBAWEB_SCAN_XPROJ = 1 | 0 (bench variants), else where the decode mat-vecs run (a real
    GPU, or `device.force_matvec`: linear._matvec_ok) when W_x is at most FOLD_BYTES."""
    from py_engine.ops.linear import _matvec_ok
    from py_engine.ops.step_kernels import choose
    if not _fits(device, u_t, x_ws, dt_w):
        return False
    return choose(device, "scan_step_xproj", "MAMBAWEB_SCAN_XPROJ", "1", "0",
                  lambda: _matvec_ok(device) and sum(w.nbytes for w in x_ws) <= FOLD_BYTES)


def selective_scan_step_xproj(batch, u_t, x_ws, dt_w, A_log, state, D=None, z_t=None,
                              dt_bias=None, out=None, norm_bc_eps=None):
    """One token of Mamba-1's scan with x_proj and dt_proj applied inside (shapes: the module
    docstring); the same math as x_proj's mat-vec then selective_scan_step(..., dt_w=dt_w).
    Callers check step_folds_x_proj first; operands it refuses raise ValueError here."""
    dev = batch.device
    if not _fits(dev, u_t, x_ws, dt_w):
        raise ValueError("selective_scan_step_xproj: these operands do not fit the folded kernel "
                         "(ask step_folds_x_proj first)")
    I, R = dt_w.shape
    N = A_log.shape[1]
    if tuple(x_ws[0].shape) != (R, I) or any(tuple(w.shape) != (N, I) for w in x_ws[1:]):
        raise ValueError(f"x_proj blocks {[list(w.shape) for w in x_ws]} do not fit dt_w "
                         f"{list(dt_w.shape)} and A_log {list(A_log.shape)}")
    spec = ss._Spec(u_t, None, A_log, None, None, D, z_t, dt_bias, T=1)
    ss._state_shape(spec, state, "state")
    y = out if out is not None else Tensor(dev, tuple(u_t.shape))
    flags = ss._flags(D, z_t, dt_bias, norm_bc_eps) | ss.HAS_INIT | ss.WRITE_FINAL
    views = {"u": view(u_t), "y": view(y)}
    views["z"] = view(z_t) if z_t is not None else (dummy(dev), 0, 0)
    un = dev.uniform(ss._fields(spec, flags, 1, 1, norm_bc_eps or 0.0, views, dt_rank=R))
    resources = [un, views["u"][0], None,
                 dt_bias.binding if dt_bias is not None else dummy(dev), A_log.binding,
                 None, None, D.binding if D is not None else dummy(dev), views["z"][0],
                 views["y"][0], state.binding, None, None, dt_w.binding] + \
        [w.binding for w in x_ws] + [views["u"][0]]
    batch.run(SHADER, "selective_scan_step_xproj", resources, -(-I // CPW), spec.nb,
              constants={"NS": N, "FMT": FORMATS[x_ws[0].dtype][0],
                         "SUBGROUPS": int(ss.step_subgroups(dev))})
    return y
