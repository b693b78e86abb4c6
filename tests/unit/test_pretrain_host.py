"""Pretraining pieces that need no browser: presets, the pure-Python reference init against
tools/init_weights.py's distributions, the data order, the byte-level tokenizer.json, the
checkpoint writers (byte-identical to tools/convert_host.py), settings validation and the
CLI's corpus reader."""
import asyncio
import json

import numpy as np
import pytest

from py_engine.io import gpu_layout, hf_names
from py_engine.train import checkpoint as ckpt
from py_engine.train import data as D
from py_engine.train import init as pinit
from py_engine.train import session as S
from tools import convert_host
from tools import init_weights as host_init


def run(coro):
    """Run a coroutine to completion in a fresh thread: a session-wide headless browser
    (Playwright's sync API) may already own a running loop in this one."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


def mamba1_param_count(d, L, V, N=16, k=4):
    """Mamba-1's parameters counted from its layer's formulas (not from the engine's tensor
    list): in_proj, conv weight + bias, x_proj, dt_proj + bias, A_log, D, out_proj, the
    layer's norm; the tied embedding and the final norm."""
    di, r = 2 * d, -(-d // 16)
    layer = 2 * di * d + di * k + di + di * (r + 2 * N) + r * di + di + di * N + di + d * di + d
    return V * d + L * layer + d


def test_presets_are_the_mamba_shapes_they_name():
    # the host tools take the one preset table (tools/init_weights.make_config is the engine's)
    assert host_init.make_config is pinit.preset_config
    shapes = {"tiny": (64, 2, 256), "nano": (128, 4, 4096), "micro": (256, 8, 6144),
              "small": (512, 8, 12288), "base": (768, 24, 50280)}
    for name, (d, L, V) in shapes.items():
        cfg = pinit.preset_config(name)
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.state_size,
                cfg.tie_word_embeddings) == (d, L, V, 16, True), name
        assert pinit.param_count(cfg) == mamba1_param_count(d, L, V), name
    # "base" is mamba-130m's shape (d 768, 24 layers, vocab 50280, tied): the 129M its card states
    assert pinit.param_count(pinit.preset_config("base")) == 129_135_360
    with pytest.raises(ValueError, match="unknown size"):
        pinit.preset_config("huge")


def test_python_init_follows_the_reference_distributions():
    cfg = pinit.preset_config("tiny", hidden_size=48, num_hidden_layers=3, vocab_size=300)
    ours = {n: np.frombuffer(b, np.float32) for n, b in pinit.init_weights_python(cfg, 1).items()}
    ref = host_init.init_weights(cfg, 0)
    assert set(ours) == set(ref) == set(hf_names.expected_tensors(cfg))
    for name, r in ref.items():
        o = ours[name].reshape(r.shape)
        if name.endswith(("A_log", ".D", "norm.weight", "norm_f.weight")):
            assert np.allclose(o, r, atol=1e-6), name                    # deterministic
        elif name.endswith("dt_proj.bias"):
            dt = np.log1p(np.exp(o.astype(np.float64)))
            assert dt.min() >= cfg.time_step_min * 0.999 and dt.max() <= cfg.time_step_max * 1.001
            # log-uniform: log dt spreads over the range like the reference's
            assert abs(np.log(dt).mean() - np.log(np.log1p(np.exp(r.astype(np.float64)))).mean()) < 0.5
        else:   # uniform / normal: same bound, same spread
            assert o.shape == r.shape, name
            assert abs(o.std() - r.std()) <= 0.15 * r.std() + 1e-7, (name, o.std(), r.std())
            assert np.abs(o).max() <= np.abs(r).max() * 1.05 + 5 * r.std() * name.endswith("embeddings.weight")
    # counter-based: the same (seed, name, element) gives the same value, seeds differ
    a = pinit.draw(cfg, "x", (10,), "uniform", 1.0, seed=3)
    b = pinit.draw(cfg, "x", (10,), "uniform", 1.0, seed=3, start=4, count=3)
    assert list(a[4:7]) == list(b)
    assert list(a) != list(pinit.draw(cfg, "x", (10,), "uniform", 1.0, seed=4))
    # pinned, so a change to the generator is a deliberate one
    assert pinit.stream_key(0, "backbone.embeddings.weight") == 2448194907
    assert list(a[:3]) == [-0.8061641454696655, 0.9329878091812134, -0.5450302362442017]


def test_permutation_and_batcher_are_fixed_and_resumable():
    assert D.permutation(10, 0, 0) == D.permutation(10, 0, 0)
    assert D.permutation(10, 0, 0) != D.permutation(10, 0, 1)
    assert sorted(D.permutation(1000, 5, 2)) == list(range(1000))
    assert D.permutation(8, 1, 0) == [7, 1, 2, 0, 4, 6, 5, 3]   # pinned across Pythons
    ids = list(range(1000))
    b = D.Batcher(ids, seq_len=10, batch_size=3, seed=1)
    assert b.windows == (1000 - 10) // 9 + 1
    seen = []
    for _ in range(b.windows):
        seen.append(b.next_window())
    assert sorted(seen) == b.starts and b.position == {"epoch": 1, "index": 0}
    # every adjacent pair is a target exactly once per epoch (windows overlap by one token)
    pairs = {(s + k, s + k + 1) for s in b.starts for k in range(9)}
    assert len(pairs) == len(b.starts) * 9
    b2 = D.Batcher(ids, 10, 3, seed=1)
    first = [list(b2.next_batch()) for _ in range(5)]
    pos = b2.position
    rest = [list(b2.next_batch()) for _ in range(3)]
    b3 = D.Batcher(ids, 10, 3, seed=1)
    b3.restore(pos)
    assert [list(b3.next_batch()) for _ in range(3)] == rest
    assert len(first[0]) == 30
    with pytest.raises(ValueError, match="fewer than one sequence"):
        D.Batcher([1, 2, 3], 10, 1)


def test_byte_level_tokenizer_json_gives_the_bytes_in_hf_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    p = tmp_path / "tokenizer.json"
    p.write_text(D.ByteTokenizer().to_json())
    tok = tokenizers.Tokenizer.from_file(str(p))
    for s in ["héllo wörld ✓\n\tdef f(x):  return x", " leading", "日本語", ""]:
        assert tok.encode(s).ids == list(s.encode()), s
        assert tok.decode(list(s.encode())) == s
    assert isinstance(D.tokenizer_from_json(p.read_text()), D.ByteTokenizer)
    with pytest.raises(ValueError, match="not valid JSON"):
        D.tokenizer_from_json("{")


def test_encode_corpus_joins_documents():
    tok = D.ByteTokenizer()
    ids = D.encode_corpus(["ab", "", "c"], tok)
    assert list(ids) == [97, 98, 10, 10, 99]
    with pytest.raises(ValueError, match="corpus is empty"):
        D.encode_corpus(["", ""], tok)


class FakeTensor:
    def __init__(self, arr):
        self.arr = np.ascontiguousarray(arr, np.float32)
        self.shape = self.arr.shape
        self.numel = self.arr.size

    async def to_bytes(self):
        return self.arr.tobytes()


class FakeModel:
    def __init__(self, cfg, hf):
        self.cfg = cfg
        self.weights = {}
        for name, shape in hf_names.expected_tensors(cfg).items():
            flat = hf[name].reshape(shape[0], -1)
            for piece, r0, r1, pshape in gpu_layout.pieces(cfg, name, shape):
                self.weights[piece] = FakeTensor(flat[r0:r1].reshape(pshape))


def test_exports_are_byte_identical_to_convert_host(tmp_path):
    cfg = pinit.preset_config("tiny", hidden_size=24, num_hidden_layers=2, vocab_size=64)
    hf = host_init.init_weights(cfg, 0)
    model = FakeModel(cfg, hf)
    files = {n: run(ckpt.parts_bytes(p)) for n, p in ckpt.hf_files(model).items()}
    convert_host.write_hf(tmp_path / "hf", cfg, hf)
    assert files["model.safetensors"] == (tmp_path / "hf" / "model.safetensors").read_bytes()
    conf = json.loads(files["config.json"])
    assert conf["rescale_prenorm_residual"] is False and conf["hidden_size"] == 24
    mb = run(ckpt.parts_bytes(run(ckpt.mbjs_parts(model)), crc_trailer=True))
    convert_host.write_mbjs(tmp_path / "m.bin", cfg, hf.__getitem__)
    assert mb == (tmp_path / "m.bin").read_bytes()


def test_state_file_round_trip():
    cfg = pinit.preset_config("tiny", hidden_size=24, num_hidden_layers=1, vocab_size=64)
    hf = host_init.init_weights(cfg, 0)
    model = FakeModel(cfg, hf)

    class Opt:
        m = {n: FakeTensor(np.full(t.shape, 1.5)) for n, t in model.weights.items()}
        v = {n: FakeTensor(np.full(t.shape, 2.5)) for n, t in model.weights.items()}

    class Trainer:
        pass
    tr = Trainer()
    tr.model, tr.opt = model, Opt()
    meta = {"step": 7, "adam_t": 7, "data": {"position": {"epoch": 0, "index": 3}}}
    data = run(ckpt.parts_bytes(ckpt.state_parts(tr, meta)))
    st = run(ckpt.StateFile.from_bytes(data))
    assert st.meta["step"] == 7 and st.meta["version"] == ckpt.STATE_VERSION
    from safetensors.numpy import load
    loaded = load(data)
    for name, arr in hf.items():
        assert np.array_equal(loaded[name], arr), name
    assert np.all(loaded["optimizer.exp_avg_sq/backbone.layers.0.mixer.x_proj.weight#B"] == 2.5)
    with pytest.raises(ValueError, match="not a mambaweb training state"):
        run(ckpt.StateFile.from_bytes(b"\x08" + b"\0" * 7 + b"{}      "))


def test_settings_are_validated_in_plain_words():
    t = S.train_config({"steps": 50})
    assert t["warmup"] == 5 and t["lr"] == 2e-3
    for bad, words in [({"lr": 0}, "learning rate"), ({"batch": 0}, "batch"),
                       ({"steps": "x"}, "steps must be a whole number"),
                       ({"seq_len": 1}, "seq len")]:
        with pytest.raises(ValueError, match=words):
            S.train_config(bad)
    d = S.describe({"model": {"size": "nano"}, "train": {}, "vocab_size": 256},
                   {"maxStorageBufferBindingSize": 1 << 30, "maxBufferSize": 1 << 30})
    assert d["ok"] and d["params"] == pinit.param_count(pinit.preset_config("nano", vocab_size=256))
    assert set(d["presets"]) == set(pinit.PRESETS)
    small = {"maxStorageBufferBindingSize": 1 << 20, "maxBufferSize": 1 << 20}
    d = S.describe({"model": {"size": "small"}, "train": {}, "vocab_size": 12288}, small)
    assert not d["ok"] and any("smaller vocabulary" in p for p in d["problems"])
    assert not S.describe({"model": {"size": "nano", "hidden_size": "x"}, "train": {}})["ok"]
    lrs = [S._lr_at(s, S.train_config({"steps": 100, "warmup": 10, "lr": 1.0 - 1e-9}))
           for s in range(100)]
    assert lrs[0] < lrs[8] < lrs[9] == pytest.approx(max(lrs)) and lrs[-1] < 0.15


def test_cli_corpus_reader(tmp_path):
    from tools.cmd_pretrain import read_corpus, tokenizer_spec
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.txt").write_text("hidden")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.py").write_text("x = 1\n")
    (tmp_path / "bin.dat").write_bytes(b"\0\1\2")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    texts, info = read_corpus(tmp_path)
    assert texts == ["hello", "x = 1\n"] and info["files"] == 2 and len(info["skipped"]) == 2
    with pytest.raises(ValueError, match="does not exist"):
        read_corpus(tmp_path / "missing")

    class A:
        tokenizer, vocab_size, size = str(tmp_path / "none.json"), None, "nano"
    with pytest.raises(ValueError, match="not 'byte', 'bpe'"):
        tokenizer_spec(A)
    A.tokenizer = "bpe"
    assert tokenizer_spec(A) == {"kind": "bpe", "vocab_size": 4096}
