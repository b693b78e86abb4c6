"""The float64 numpy references of Mamba-1 (tests/reference/*_numpy.py, mamba1_model_numpy.py
composing them) against transformers fixtures
(tools/make_fixtures.py), step/forward parity, and finite-difference checks of every backward op.

Pure numpy: no torch needed here.
"""

from pathlib import Path

import numpy as np
import pytest

from tests.reference import adamw_numpy as adamw_ref
from tests.reference import conv1d_numpy as conv_ref
from tests.reference import cross_entropy_numpy as ce_ref
from tests.reference import elementwise_numpy as ew_ref
from tests.reference import embedding_numpy as emb_ref
from tests.reference import linear_numpy as lin_ref
from tests.reference import mamba1_model_numpy as model_ref
from tests.reference import rmsnorm_numpy as rms_ref
from tests.reference import selective_scan_numpy as scan_ref

FIX = Path(__file__).resolve().parent.parent / "fixtures"
# Mamba-1 / Falcon-Mamba fixtures (Mamba-2 and NemotronH ones: test_mamba2_fixtures.py, test_hybrid_fixtures.py)
MODEL_DIRS = sorted(p for p in (FIX / "models").glob("*") if (p / "expected.npz").exists()
                    and not p.name.startswith(("mamba2-", "nemotronh-", "mamba3-")))
TRAIN_DIRS = sorted(p for p in (FIX / "train").glob("*") if (p / "expected.npz").exists()
                    and not p.name.startswith(("mamba2-", "nemotronh-", "mamba3-")))
BASE_DIRS = [p for p in MODEL_DIRS if not p.name.endswith(("-bf16", "-f16"))]

LOGITS_TOL = 1e-5


def ids_of(paths):
    return [p.name for p in paths]


def test_fixtures_present():
    assert len(MODEL_DIRS) == 12 and len(BASE_DIRS) == 4, "run tools/make_fixtures.py"
    assert len(TRAIN_DIRS) == 2
    total = sum(f.stat().st_size for f in FIX.rglob("*") if f.is_file())
    assert total < 6 * 1024 * 1024      # all families' fixtures together stay a few MB


# ---------------------------------------------------------------------------------------------
# Forward parity with transformers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=ids_of(MODEL_DIRS))
def test_forward_matches_transformers(folder):
    cfg, p = model_ref.load_model(folder)
    e = np.load(folder / "expected.npz")
    logits, state = model_ref.forward(p, cfg, e["prompt_ids"])
    assert logits.shape == e["logits"].shape == (len(e["prompt_ids"]), cfg.vocab_size)
    assert np.abs(logits - e["logits"]).max() <= LOGITS_TOL
    conv = np.stack([s[0] for s in state])
    ssm = np.stack([s[1] for s in state])
    assert conv.shape == e["conv_state"].shape == (cfg.n_layer, cfg.d_inner, cfg.d_conv)
    assert ssm.shape == e["ssm_state"].shape == (cfg.n_layer, cfg.d_inner, cfg.d_state)
    np.testing.assert_allclose(conv, e["conv_state"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ssm, e["ssm_state"], rtol=1e-5, atol=1e-5 * np.abs(e["ssm_state"]).max())


@pytest.mark.parametrize("folder", MODEL_DIRS, ids=ids_of(MODEL_DIRS))
def test_greedy_matches_transformers_generate(folder):
    cfg, p = model_ref.load_model(folder)
    e = np.load(folder / "expected.npz")
    new, step_logits = model_ref.generate_greedy(p, cfg, e["prompt_ids"], len(e["greedy_ids"]))
    assert new.tolist() == e["greedy_ids"].tolist()
    assert np.abs(step_logits - e["greedy_logits"]).max() <= LOGITS_TOL


def test_falcon_mixer_eps_is_used():
    """falcon-d40-untied has mixer_rms_eps=1e-3: using layer_norm_epsilon there must show."""
    folder = FIX / "models" / "falcon-d40-untied"
    cfg, p = model_ref.load_model(folder)
    e = np.load(folder / "expected.npz")
    assert cfg.falcon and cfg.mixer_rms_eps == 1e-3 and cfg.eps == 1e-5
    cfg.mixer_rms_eps = cfg.eps
    wrong = model_ref.forward(p, cfg, e["prompt_ids"])[0]
    assert np.abs(wrong - e["logits"]).max() > 100 * LOGITS_TOL


def test_tied_folders_have_no_head():
    for folder in MODEL_DIRS:
        cfg, _ = model_ref.load_model(folder)
        raw = model_ref.load_safetensors(folder / "model.safetensors")
        assert ("lm_head.weight" in raw) == (not cfg.tie), folder.name


def test_low_precision_folders_are_rounded_f32():
    for base in BASE_DIRS:
        _, p32 = model_ref.load_model(base)
        for suffix, rel in (("-bf16", 2.0**-8), ("-f16", 2.0**-11)):
            _, plo = model_ref.load_model(base.parent / (base.name + suffix))
            for k in p32:
                assert np.all(np.abs(plo[k] - p32[k]) <= rel * np.abs(p32[k]) + 1e-7), (base.name, suffix, k)


# ---------------------------------------------------------------------------------------------
# step == forward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", BASE_DIRS, ids=ids_of(BASE_DIRS))
def test_unrolled_step_equals_forward(folder):
    cfg, p = model_ref.load_model(folder)
    e = np.load(folder / "expected.npz")
    seq = np.concatenate([e["prompt_ids"], e["greedy_ids"]])
    for T in (2, len(seq)):  # T < K exercises the zero-padded conv state
        logits, state = model_ref.forward(p, cfg, seq[:T])
        st = model_ref.init_state(cfg)
        step_logits = []
        for tok in seq[:T]:
            lg, st = model_ref.step(p, cfg, int(tok), st)
            step_logits.append(lg)
        np.testing.assert_allclose(np.stack(step_logits), logits, rtol=1e-10, atol=1e-10)
        for (c1, h1), (c2, h2) in zip(state, st):
            np.testing.assert_allclose(c1, c2, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(h1, h2, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("folder", BASE_DIRS[:2], ids=ids_of(BASE_DIRS[:2]))
def test_forward_with_state_continues_and_batches(folder):
    cfg, p = model_ref.load_model(folder)
    e = np.load(folder / "expected.npz")
    seq = np.concatenate([e["prompt_ids"], e["greedy_ids"]])
    full, sfull = model_ref.forward(p, cfg, seq)
    for cut in (1, 3, 12):
        a, sa = model_ref.forward(p, cfg, seq[:cut])
        b, sb = model_ref.forward(p, cfg, seq[cut:], state=sa)
        np.testing.assert_allclose(np.concatenate([a, b]), full, rtol=1e-10, atol=1e-10)
        for (c1, h1), (c2, h2) in zip(sb, sfull):
            np.testing.assert_allclose(c1, c2, atol=1e-12)
            np.testing.assert_allclose(h1, h2, rtol=1e-10, atol=1e-10)
    batch = np.stack([seq[:10], seq[5:15]])
    lb, sbatch = model_ref.forward(p, cfg, batch)
    for r in range(2):
        lr, sr = model_ref.forward(p, cfg, batch[r])
        np.testing.assert_allclose(lb[r], lr, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sbatch[0][1][r], sr[0][1], rtol=1e-12, atol=1e-12)
    # batched step
    st = model_ref.init_state(cfg, batch=(2,))
    for t in range(batch.shape[1]):
        lg, st = model_ref.step(p, cfg, batch[:, t], st)
    np.testing.assert_allclose(lg, lb[:, -1], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Finite differences of every backward op
# ---------------------------------------------------------------------------------------------

H = 1e-6


def num_grad(f, x):
    """Central-difference gradient of scalar f() w.r.t. every entry of array x (mutated in place)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + H
        fp = f()
        x[i] = old - H
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * H)
    return g


def close(a, b, tol=1e-6):
    scale = max(1.0, np.abs(b).max())
    assert np.abs(a - b).max() <= tol * scale, (np.abs(a - b).max(), scale)


@pytest.mark.parametrize("shape", [(5,), (3, 4, 7)])
def test_fd_softplus_silu(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * 4
    x.flat[0] = 25.0  # threshold branch (x > 20: identity)
    x.flat[-1] = -30.0
    R = rng.normal(size=shape)
    close(ew_ref.softplus_backward(R, x), num_grad(lambda: np.sum(ew_ref.softplus(x) * R), x))
    close(ew_ref.silu_backward(R, x), num_grad(lambda: np.sum(ew_ref.silu(x) * R), x))
    assert ew_ref.softplus(np.array([20.5]))[0] == 20.5
    assert np.isclose(ew_ref.softplus(np.array([19.5]))[0], np.log1p(np.exp(19.5)), rtol=0, atol=0)


@pytest.mark.parametrize("shape,weighted", [((4, 6), True), ((2, 3, 5), True), ((3, 8), False), ((2, 2, 3), False)])
def test_fd_rmsnorm(shape, weighted):
    rng = np.random.default_rng(1)
    x = rng.normal(size=shape)
    w = rng.normal(size=shape[-1]) if weighted else None
    R = rng.normal(size=shape)
    eps = 1e-3
    dx, dw = rms_ref.rmsnorm_backward(R, x, w, eps)
    close(dx, num_grad(lambda: np.sum(rms_ref.rmsnorm(x, w, eps) * R), x))
    if weighted:
        close(dw, num_grad(lambda: np.sum(rms_ref.rmsnorm(x, w, eps) * R), w))
    else:
        assert dw is None


@pytest.mark.parametrize("lead,inp,out", [((4,), 5, 3), ((2, 3), 4, 6)])
def test_fd_linear(lead, inp, out):
    rng = np.random.default_rng(2)
    x, W, b = rng.normal(size=lead + (inp,)), rng.normal(size=(out, inp)), rng.normal(size=out)
    R = rng.normal(size=lead + (out,))
    dx, dW, db = lin_ref.linear_backward(R, x, W, True)
    f = lambda: np.sum(lin_ref.linear(x, W, b) * R)  # noqa: E731
    close(dx, num_grad(f, x))
    close(dW, num_grad(f, W))
    close(db, num_grad(f, b))


def test_fd_embedding():
    rng = np.random.default_rng(3)
    E = rng.normal(size=(7, 4))
    ids = np.array([[1, 3, 1], [6, 0, 1]])
    R = rng.normal(size=(2, 3, 4))
    close(emb_ref.embedding_backward(R, ids, 7), num_grad(lambda: np.sum(emb_ref.embedding(ids, E) * R), E))


@pytest.mark.parametrize("lead,T,I,K,bias,left", [((), 6, 3, 4, True, False), ((2,), 3, 5, 4, True, True),
                                                  ((), 2, 4, 3, False, True), ((2,), 7, 2, 2, False, False)])
def test_fd_conv1d(lead, T, I, K, bias, left):
    rng = np.random.default_rng(4)
    x, w = rng.normal(size=lead + (T, I)), rng.normal(size=(I, K))
    b = rng.normal(size=I) if bias else None
    lf = rng.normal(size=lead + (K - 1, I)) if left else None
    R = rng.normal(size=lead + (T, I))
    f = lambda: np.sum(conv_ref.causal_conv1d(x, w, b, lf) * R)  # noqa: E731
    dx, dw, db, dleft = conv_ref.causal_conv1d_backward(R, x, w, bias, lf)
    close(dx, num_grad(f, x))
    close(dw, num_grad(f, w))
    if bias:
        close(db, num_grad(f, b))
    if left:
        close(dleft, num_grad(f, lf))


def test_conv1d_matches_direct_formula_and_step():
    """y[t,i] = b[i] + sum_k w[i,k] x[t-(K-1)+k, i]; stepping a rolling [I,K] state gives the same."""
    rng = np.random.default_rng(5)
    T, I, K = 6, 3, 4
    x, w, b = rng.normal(size=(T, I)), rng.normal(size=(I, K)), rng.normal(size=I)
    y = conv_ref.causal_conv1d(x, w, b)
    for t in range(T):
        for i in range(I):
            ref = b[i] + sum(w[i, k] * x[t - (K - 1) + k, i] for k in range(K) if t - (K - 1) + k >= 0)
            assert np.isclose(y[t, i], ref, rtol=1e-13, atol=1e-13)
    s = np.zeros((I, K))
    for t in range(T):
        yt, s = conv_ref.causal_conv1d_step(x[t], s, w, b)
        np.testing.assert_allclose(yt, y[t], rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(s, conv_ref.conv_state_from_inputs(x, K))
    np.testing.assert_array_equal(s, x[-K:].T)


SCAN_CASES = [
    # lead, T, I, N, with z, with h0/dh_last, big dt
    ((), 5, 3, 4, True, False, False),
    ((2,), 4, 2, 3, True, True, False),
    ((), 3, 4, 2, False, True, True),
]


def scan_inputs(lead, T, I, N, with_z, with_h, big, seed=6):
    rng = np.random.default_rng(seed)
    d = dict(
        u=rng.normal(size=lead + (T, I)),
        delta=rng.normal(size=lead + (T, I)),
        A_log=np.log(np.arange(1, N + 1))[None, :] + 0.3 * rng.normal(size=(I, N)),
        B=rng.normal(size=lead + (T, N)),
        C=rng.normal(size=lead + (T, N)),
        D=rng.normal(size=I),
        z=rng.normal(size=lead + (T, I)) if with_z else None,
        delta_bias=rng.normal(size=I) * 0.5,
        h0=rng.normal(size=lead + (I, N)) if with_h else None,
    )
    if big:
        d["delta_bias"][0] = 22.0  # softplus threshold branch
    return d, rng


@pytest.mark.parametrize("case", SCAN_CASES)
def test_fd_selective_scan(case):
    lead, T, I, N, with_z, with_h, big = case
    d, rng = scan_inputs(*case)
    R = rng.normal(size=lead + (T, I))
    Rh = rng.normal(size=lead + (I, N)) if with_h else None

    def f():
        y, h = scan_ref.selective_scan(**d)
        return np.sum(y * R) + (np.sum(h * Rh) if with_h else 0.0)

    g = scan_ref.selective_scan_backward(R, d["u"], d["delta"], d["A_log"], d["B"], d["C"], d["D"], d["z"],
                                   d["delta_bias"], d["h0"], Rh)
    for key, name in [("u", "du"), ("delta", "ddelta"), ("A_log", "dA_log"), ("B", "dB"), ("C", "dC"),
                      ("D", "dD"), ("delta_bias", "ddelta_bias")] + ([("z", "dz")] if with_z else []) + (
                          [("h0", "dh0")] if with_h else []):
        close(g[name], num_grad(f, d[key]), tol=2e-6)


@pytest.mark.parametrize("case", SCAN_CASES)
def test_state_update_unrolls_to_scan(case):
    lead, T, I, N, with_z, with_h, big = case
    d, _ = scan_inputs(*case)
    y, hT = scan_ref.selective_scan(**d)
    h = np.zeros(lead + (I, N)) if d["h0"] is None else d["h0"]
    for t in range(T):
        yt, h = scan_ref.selective_state_update(h, d["u"][..., t, :], d["delta"][..., t, :], d["A_log"], d["B"][..., t, :],
                                          d["C"][..., t, :], d["D"], None if d["z"] is None else d["z"][..., t, :],
                                          d["delta_bias"])
        np.testing.assert_allclose(yt, y[..., t, :], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(h, hT, rtol=1e-12, atol=1e-12)


def test_scan_matches_explicit_loop():
    """The scan against a scalar triple loop written straight from the formulas."""
    d, _ = scan_inputs((), 4, 3, 2, True, False, False)
    y, _ = scan_ref.selective_scan(**d)
    A = -np.exp(d["A_log"])
    T, I = d["u"].shape
    N = A.shape[1]
    h = np.zeros((I, N))
    for t in range(T):
        for i in range(I):
            x = d["delta"][t, i] + d["delta_bias"][i]
            dt = x if x > 20 else np.log1p(np.exp(x))
            acc = 0.0
            for n in range(N):
                h[i, n] = np.exp(dt * A[i, n]) * h[i, n] + dt * d["B"][t, n] * d["u"][t, i]
                acc += h[i, n] * d["C"][t, n]
            zz = d["z"][t, i]
            ref = (acc + d["D"][i] * d["u"][t, i]) * zz / (1 + np.exp(-zz))
            assert np.isclose(y[t, i], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lead", [(6,), (2, 4)])
def test_fd_cross_entropy(lead):
    rng = np.random.default_rng(7)
    V = 5
    logits = rng.normal(size=lead + (V,)) * 2
    tg = rng.integers(0, V, size=lead)
    tg.flat[1] = ce_ref.IGNORE_INDEX
    loss, d = ce_ref.cross_entropy(logits, tg)
    valid = tg != ce_ref.IGNORE_INDEX
    lsm = ce_ref.log_softmax(logits)
    ref = -np.mean(np.take_along_axis(lsm, np.where(valid, tg, 0)[..., None], -1)[..., 0][valid])
    assert np.isclose(loss, ref, rtol=1e-13)
    close(d, num_grad(lambda: ce_ref.cross_entropy(logits, tg)[0], logits))
    assert np.all(d.reshape(-1, V)[1] == 0)
    # causal shift: position t predicts labels[t + 1]
    labels = rng.integers(0, V, size=lead)
    l2, d2 = ce_ref.causal_lm_loss(logits, labels)
    l3, _ = ce_ref.cross_entropy(logits[..., :-1, :], labels[..., 1:])
    assert np.isclose(l2, l3, rtol=1e-13) and np.all(d2[..., -1, :] == 0)


# ---------------------------------------------------------------------------------------------
# Whole-model gradients
# ---------------------------------------------------------------------------------------------


def random_model(falcon, tie, seed=8):
    cfg = model_ref.Config(dict(model_type="falcon_mamba" if falcon else "mamba", hidden_size=6, state_size=3,
                         time_step_rank=2, conv_kernel=3, num_hidden_layers=2, vocab_size=11,
                         tie_word_embeddings=tie, mixer_rms_eps=1e-2))
    rng = np.random.default_rng(seed)
    d, I, N, R, K, V = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv, cfg.vocab_size
    p = {"backbone.embeddings.weight": rng.normal(size=(V, d)), "backbone.norm_f.weight": 1 + 0.3 * rng.normal(size=d)}
    if not tie:
        p["lm_head.weight"] = rng.normal(size=(V, d)) * 0.5
    for i in range(cfg.n_layer):
        pre = f"backbone.layers.{i}."
        p.update({
            pre + "norm.weight": 1 + 0.3 * rng.normal(size=d),
            pre + "mixer.in_proj.weight": rng.normal(size=(2 * I, d)) * 0.4,
            pre + "mixer.conv1d.weight": rng.normal(size=(I, 1, K)) * 0.5,
            pre + "mixer.conv1d.bias": rng.normal(size=I) * 0.2,
            pre + "mixer.x_proj.weight": rng.normal(size=(R + 2 * N, I)) * 0.4,
            pre + "mixer.dt_proj.weight": rng.normal(size=(I, R)) * 0.5,
            pre + "mixer.dt_proj.bias": rng.normal(size=I) * 0.5 - 1,
            pre + "mixer.A_log": np.log(np.arange(1, N + 1))[None, :] + 0.3 * rng.normal(size=(I, N)),
            pre + "mixer.D": 1 + 0.5 * rng.normal(size=I),
            pre + "mixer.out_proj.weight": rng.normal(size=(d, I)) * 0.4,
        })
    return cfg, model_ref.normalize_params(cfg, p)


@pytest.mark.parametrize("falcon,tie", [(False, False), (True, True), (True, False), (False, True)])
def test_fd_whole_model_directional(falcon, tie):
    """<grad, v> against (L(p + hv) - L(p - hv)) / 2h, one random direction per parameter tensor."""
    cfg, p = random_model(falcon, tie)
    rng = np.random.default_rng(9)
    ids = rng.integers(0, cfg.vocab_size, size=(2, 5))
    labels = ids.copy()
    labels[0, 2] = ce_ref.IGNORE_INDEX
    loss, grads = model_ref.loss_and_grads(p, cfg, ids, labels)
    assert np.isclose(loss, model_ref.loss_only(p, cfg, ids, labels), rtol=1e-14)
    names = sorted(grads)
    assert ("lm_head.weight" in names) == (not tie)
    assert len(names) == 2 + (0 if tie else 1) + 10 * cfg.n_layer
    for k in names:
        v = rng.normal(size=p[k].shape)
        base = p[k]

        def at(s):
            p[k] = base + s * H * v
            if tie and k == "backbone.embeddings.weight":
                p["lm_head.weight"] = p[k]
            return model_ref.loss_only(p, cfg, ids, labels)

        num = (at(1) - at(-1)) / (2 * H)
        at(0)
        ana = float(np.sum(grads[k] * v))
        assert abs(num - ana) <= 1e-6 * max(1.0, abs(ana)), (k, num, ana)


@pytest.mark.parametrize("folder", TRAIN_DIRS, ids=ids_of(TRAIN_DIRS))
def test_whole_model_grad_matches_torch(folder):
    cfg, p = model_ref.load_model(folder)
    e = np.load(folder / "expected.npz")
    loss, grads = model_ref.loss_and_grads(p, cfg, e["input_ids"], e["labels"])
    assert abs(loss - float(e["loss"])) <= 1e-5
    torch_names = {k[len("grad."):] for k in e.files if k.startswith("grad.")}
    assert set(grads) == torch_names
    for k, g in grads.items():
        ref = e["grad." + k]
        assert g.shape == ref.shape, k
        assert np.abs(g - ref).max() <= 1e-5 * np.abs(ref).max() + 1e-9, k


@pytest.mark.parametrize("folder", TRAIN_DIRS, ids=ids_of(TRAIN_DIRS))
def test_adamw_five_steps_match_torch(folder):
    cfg, p = model_ref.load_model(folder)
    e = np.load(folder / "expected.npz")
    m, v = {}, {}
    losses = []
    for s in range(1, 6):
        loss, grads = model_ref.loss_and_grads(p, cfg, e["input_ids"], e["labels"])
        losses.append(loss)
        adamw_ref.adamw_step(p, grads, m, v, s, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    np.testing.assert_allclose(losses, e["adamw_losses"], atol=1e-5)
    assert losses[-1] < losses[0]
    for k in grads:
        np.testing.assert_allclose(p[k], e["adamw." + k], atol=1e-4, err_msg=k)
    assert adamw_ref.decays("backbone.layers.0.mixer.in_proj.weight") and not adamw_ref.decays("backbone.layers.0.mixer.A_log")
    assert not adamw_ref.decays("backbone.layers.0.mixer.conv1d.weight") and not adamw_ref.decays("backbone.norm_f.weight")
