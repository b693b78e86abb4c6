"""The float64 SSD reference (tests/reference/ssd_numpy.py) against transformers' torch paths
(``mamba2_chunk_scan``, ``mamba2_selective_state_update``) run in float64, and its three forms
(sequential, chunked, step) against each other.

transformers casts to float32 inside those functions (``.float()``); the tests make ``.float()``
a no-op on float64 tensors for the duration of the call, so the comparison is float64 against
float64 and the tolerance can be 1e-10.
"""
import numpy as np
import pytest

from tests.reference import ssd_numpy as sn

torch = pytest.importorskip("torch")
m2 = pytest.importorskip("transformers.models.mamba2.modeling_mamba2")

TOL = 1e-10


@pytest.fixture
def f64_float(monkeypatch):
    """Tensor.float() keeps float64 tensors float64 (transformers' casts would lose precision)."""
    orig = torch.Tensor.float

    def keep64(self, *a, **k):
        return self if self.dtype == torch.float64 else orig(self, *a, **k)
    monkeypatch.setattr(torch.Tensor, "float", keep64)


def make(rng, nb, T, H, P, G, N, dt_shift=0.0):
    return dict(x=rng.standard_normal((nb, T, H * P)),
                dt=rng.standard_normal((nb, T, H)) + dt_shift,
                A_log=rng.uniform(-1.0, 1.5, H),
                B=rng.standard_normal((nb, T, G * N)), C=rng.standard_normal((nb, T, G * N)),
                D=rng.standard_normal(H), dt_bias=rng.standard_normal(H) * 0.5,
                h0=rng.standard_normal((nb, H, P, N)))


def rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(b).max(), 1e-30)


CASES = [  # nb, T, H, P, G, N, chunk, dt_max, with h0
    (2, 13, 4, 3, 1, 5, 4, float("inf"), True),    # T not a multiple of chunk
    (1, 16, 4, 5, 2, 3, 8, float("inf"), True),    # n_groups 2, T a multiple of chunk
    (2, 7, 6, 2, 2, 4, 16, 0.3, False),            # one short chunk, dt clamp, zero state
    (1, 9, 2, 4, 1, 6, 1, float("inf"), True),     # chunk 1
]


@pytest.mark.parametrize("nb,T,H,P,G,N,chunk,dt_max,with_h0", CASES)
def test_reference_matches_transformers_chunk_scan(f64_float, nb, T, H, P, G, N, chunk, dt_max,
                                                   with_h0):
    rng = np.random.default_rng(7 + T)
    a = make(rng, nb, T, H, P, G, N)
    h0 = a["h0"] if with_h0 else None
    kw = dict(n_groups=G, D=a["D"], dt_bias=a["dt_bias"], dt_min=0.05, dt_max=dt_max, h0=h0,
              chunk=chunk)
    t = {k: torch.from_numpy(v) for k, v in a.items()}
    y_t, h_t = m2.mamba2_chunk_scan(
        t["x"].view(nb, T, H, P), t["dt"], -torch.exp(t["A_log"]),
        t["B"].view(nb, T, G, N), t["C"].view(nb, T, G, N), chunk_size=chunk, D=t["D"],
        dt_bias=t["dt_bias"], initial_states=t["h0"] if with_h0 else None, dt_softplus=True,
        dt_limit=(0.05, dt_max), return_final_states=True)
    assert y_t.dtype == torch.float64 and h_t.dtype == torch.float64
    y_t = y_t.reshape(nb, T, H * P).numpy()
    h_t = h_t.numpy()
    for fn in (sn.ssd_sequential, sn.ssd_chunked):
        y, h, hc = fn(a["x"], a["dt"], a["A_log"], a["B"], a["C"], **kw)
        assert rel(y, y_t) <= TOL, fn.__name__
        assert rel(h, h_t) <= TOL, fn.__name__
        assert hc.shape == (nb, -(-T // chunk), H, P, N)
    # chunk start states: both forms agree, and hc[:, 0] is the initial state
    _, _, hc_s = sn.ssd_sequential(a["x"], a["dt"], a["A_log"], a["B"], a["C"], **kw)
    _, _, hc_c = sn.ssd_chunked(a["x"], a["dt"], a["A_log"], a["B"], a["C"], **kw)
    assert rel(hc_c, hc_s) <= TOL
    assert np.array_equal(hc_s[:, 0], h0 if with_h0 else np.zeros_like(a["h0"]))


@pytest.mark.parametrize("G", [1, 2])
def test_step_matches_transformers_state_update(f64_float, G):
    rng = np.random.default_rng(3)
    nb, H, P, N = 2, 4, 3, 5
    a = make(rng, nb, 1, H, P, G, N)
    x, dt, B, C = a["x"][:, 0], a["dt"][:, 0], a["B"][:, 0], a["C"][:, 0]
    y, h = sn.ssd_step(x, dt, a["A_log"], B, C, a["h0"], G, D=a["D"], dt_bias=a["dt_bias"])
    # transformers' Mamba2Mixer expands the per-head scalars over head_dim (and A over N)
    state = torch.from_numpy(a["h0"].copy())
    A = (-torch.exp(torch.from_numpy(a["A_log"])))[:, None, None].expand(H, P, N)
    y_t = m2.mamba2_selective_state_update(
        state, torch.from_numpy(x).view(nb, H, P),
        torch.from_numpy(dt)[:, :, None].expand(nb, H, P), A,
        torch.from_numpy(B).view(nb, G, N), torch.from_numpy(C).view(nb, G, N),
        torch.from_numpy(a["D"])[:, None].expand(H, P), z=None,
        dt_bias=torch.from_numpy(a["dt_bias"])[:, None].expand(H, P), dt_softplus=True)
    assert rel(y, y_t.reshape(nb, H * P).numpy()) <= TOL
    assert rel(h, state.numpy()) <= TOL


def test_unrolled_step_equals_forward_and_large_dt():
    """Step unrolled == forward; dt far above the softplus threshold and chunks long enough that
    exp(cumsum) underflows: the stable segment sum keeps everything finite."""
    rng = np.random.default_rng(11)
    nb, T, H, P, G, N = 2, 11, 4, 3, 2, 4
    a = make(rng, nb, T, H, P, G, N, dt_shift=3.0)
    a["dt"][0, 2] = 40.0    # softplus threshold branch
    a["A_log"][0] = 4.0     # A = -e^4: chunk cumsums reach -1e3 and beyond
    kw = dict(D=a["D"], dt_bias=a["dt_bias"])
    y, h, _ = sn.ssd_chunked(a["x"], a["dt"], a["A_log"], a["B"], a["C"], G, h0=a["h0"],
                             chunk=8, **kw)
    assert np.isfinite(y).all() and np.isfinite(h).all()
    st = a["h0"].copy()
    ys = []
    for t in range(T):
        yt, st = sn.ssd_step(a["x"][:, t], a["dt"][:, t], a["A_log"], a["B"][:, t], a["C"][:, t],
                             st, G, **kw)
        ys.append(yt)
    assert rel(np.stack(ys, 1), y) <= TOL
    assert rel(st, h) <= TOL
