"""Fine-tuning modes and data beyond plain LoRA, against torch / PEFT:
  * WSLA on Mamba-2 (only rows [I, I + 2GN) of in_proj's x|B|C piece train, under a row mask):
    loss, gradient and 5 AdamW steps equal torch AdamW over a parameter that is those rows
    alone; every other number in the model stays bit-identical;
  * rsLoRA: an adapter saved with use_rslora loads with PEFT's alpha/sqrt(r) scale;
  * completion-only and chat (assistant-only) losses equal a masked-label torch loss;
  * `mambaweb finetune --rslora / --wsla (chat data) / --full` end to end."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.browser
TRAIN = REPO / "tests" / "fixtures" / "train"
LORA = REPO / "tests" / "fixtures" / "lora"
TINY = REPO / "tests" / "fixtures" / "models" / "bytes-tiny-stdlib"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)

WSLA = """
from py_engine.io.hf_loader import load_model
from py_engine.train.trainer import Trainer
model = await load_model(device, args['url'])
before = {n: await t.to_bytes() for n, t in model.weights.items()}
tr = Trainer(model, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=0.0,
             wsla=True)
grads, loss = await tr.gradients(args['ids'], args['labels'], args['Bsz'], args['T'])
losses = []
for _ in range(5):
    r = await tr.train_step([(args['ids'], args['labels'])], args['Bsz'], args['T'], lr=1e-2)
    losses.append(r['loss'])
after = {n: await t.to_bytes() for n, t in model.weights.items()}
result = {'before': before, 'after': after, 'grads': grads, 'loss': loss, 'losses': losses,
          'trained': tr.trained_numel(), 'params': sorted(tr.params)}
tr.release()
model.release()
"""


def _serve(scratch_models, src, name, extra=None):
    dst = scratch_models / name
    if not dst.exists():
        shutil.copytree(src, dst)
        for f in (extra or []):
            shutil.copy(f, dst / f.name)
    return dst


def _torch_wsla(folder, ids, labels, steps=5):
    """Reference: torch AdamW over parameters that are the B/C rows of each in_proj alone
    (spliced into the frozen weight for every forward)."""
    import torch
    import transformers
    from torch.func import functional_call
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    c = model.config
    I, GN = c.num_heads * c.head_dim, c.n_groups * c.state_size
    lo, hi = 2 * I, 2 * I + 2 * GN                  # in_proj rows: z | x | B | C | dt
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = [n for n in frozen if n.endswith("mixer.in_proj.weight")]
    bc = {n: frozen[n][lo:hi].clone().requires_grad_(True) for n in names}
    opt = torch.optim.AdamW(list(bc.values()), **ADAMW)
    ids_t, lab_t = torch.tensor(ids), torch.tensor(labels)

    def loss_fn():
        w = dict(frozen)
        for n in names:
            w[n] = torch.cat([frozen[n][:lo], bc[n], frozen[n][hi:]])
        return functional_call(model, w, args=(ids_t,), kwargs={"labels": lab_t}).loss

    loss = loss_fn()
    loss.backward()
    grads = {n: bc[n].grad.clone() for n in names}
    first = float(loss.detach())
    losses = []
    opt.zero_grad()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
    return first, grads, losses, {n: bc[n].detach().numpy() for n in names}, (I, GN, c)


def test_wsla_on_mamba2_equals_adamw_over_the_bc_rows(engine, server, scratch_models):
    name = "mamba2-g2-untied"
    _serve(scratch_models, TRAIN / name, f"wsla-{name}")
    exp = np.load(TRAIN / name / "expected.npz")
    ids, labels = exp["input_ids"], exp["labels"]
    Bsz, T = ids.shape
    out = engine.run(WSLA, url=f"{server.url}/weights/wsla-{name}/", ids=ids.ravel().tolist(),
                     labels=labels.ravel().tolist(), Bsz=int(Bsz), T=int(T))
    first, grads, losses, rows, (I, GN, c) = _torch_wsla(TRAIN / name, ids, labels)
    D, L = c.hidden_size, c.num_hidden_layers
    piece = lambda i: f"backbone.layers.{i}.mixer.in_proj.weight#xBC"  # noqa: E731
    assert out["params"] == sorted(piece(i) for i in range(L))
    assert out["trained"] == L * 2 * GN * D
    assert abs(out["loss"] - first) <= 1e-5 * max(1.0, abs(first))
    for i in range(L):
        g = np.frombuffer(out["grads"][piece(i)], np.float32).reshape(I + 2 * GN, D)
        ref = grads[f"backbone.layers.{i}.mixer.in_proj.weight"].numpy()
        assert np.abs(g[I:] - ref).max() <= 1e-4 * np.abs(ref).max()     # exact gradient
        assert not g[:I].any()                                             # the mask
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-4)
    for n, before in out["before"].items():
        after = out["after"][n]
        if n not in out["params"]:
            assert after == before, n                                      # untouched
            continue
        i = int(n.split(".")[2])
        a = np.frombuffer(after, np.float32).reshape(I + 2 * GN, D)
        b = np.frombuffer(before, np.float32).reshape(I + 2 * GN, D)
        assert np.array_equal(a[:I], b[:I]), n          # x rows: bit-identical despite decay
        err = np.abs(a[I:] - rows[f"backbone.layers.{i}.mixer.in_proj.weight"])
        assert err.max() <= 0.01 * 5 * 1e-2 and np.median(err) <= 1e-6, n
        assert np.abs(a[I:] - b[I:]).max() > 1e-3                         # B/C rows moved


def test_rslora_adapter_loads_with_peft_scale(engine, server, scratch_models, tmp_path):
    """A PEFT adapter saved with use_rslora=True: the tab scales it by alpha/sqrt(r) and gives
    PEFT's logits (the plain alpha/r fixture logits differ)."""
    import torch
    import transformers
    from peft import PeftModel
    from tools.make_lora_fixtures import allow_out_proj
    name = "mamba2-g2-untied"
    adapter = tmp_path / "rslora"
    shutil.copytree(LORA / name / "adapter", adapter)
    conf = json.loads((adapter / "adapter_config.json").read_text())
    conf["use_rslora"] = True
    (adapter / "adapter_config.json").write_text(json.dumps(conf))
    _serve(scratch_models, TRAIN / name, "rslora-" + name,
           [adapter / "adapter_config.json", adapter / "adapter_model.safetensors"])
    exp = np.load(LORA / name / "expected.npz")
    prompt = exp["prompt_ids"].tolist()
    out = engine.run("""
from py_engine.io.byte_sources import HttpSource
from py_engine.io.hf_loader import load_model
from py_engine.train.lora import load_adapter
m = await load_model(device, args['url'])
ad = await load_adapter(m, HttpSource(args['url']))
result = {'logits': await m.logits(args['prompt']), 'scale': ad.scale, 'V': m.cfg.vocab_size}
ad.release()
m.release()
""", url=f"{server.url}/weights/rslora-{name}/", prompt=prompt)
    assert out["scale"] == conf["lora_alpha"] / conf["r"] ** 0.5
    base = transformers.AutoModelForCausalLM.from_pretrained(TRAIN / name, dtype=torch.float32)
    with allow_out_proj():
        pm = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        ref = pm(torch.tensor([prompt])).logits[0].numpy()
    got = np.frombuffer(out["logits"], np.float32).reshape(len(prompt), out["V"])
    assert np.abs(got - ref).max() <= 1e-4
    assert np.abs(ref - exp["logits"]).max() > 1e-2          # the scale matters here


MASKED = """
from py_engine.app import generate_session as G
from py_engine.app import finetune as FT
await G.load(args['url'], args['name'])
s = FT.prepare(args['text'], tokenizer_config=args['tc'], seq_len=args['T'], eval_frac=0.5,
               batch=2, steps=1)
ev = await FT.evaluate()
result = {'eval': ev, 'rows': [[list(i), list(l)] for i, l in FT.state['eval']], 'summary': s}
FT.release()
"""


def test_completion_and_chat_losses_equal_a_masked_label_torch_loss(engine, server):
    """JSONL prompt/completion and chat records: the tab's held-out loss is torch's
    cross-entropy over the labels that are not -100 (completion / assistant tokens)."""
    import torch
    import transformers
    from py_engine.tokenizer.tokenizer import Tokenizer
    chats = [[{"role": "system", "content": "You answer in one word."},
              {"role": "user", "content": f"Colour of item {k}?"},
              {"role": "assistant", "content": ["red", "green", "blue"][k % 3]},
              {"role": "user", "content": "Sure?"},
              {"role": "assistant", "content": "Yes."}] for k in range(3)]
    pcs = [{"prompt": f"def add{k}(a, b):\n", "completion": "    return a + b\n"}
           for k in range(3)]
    records = [r for pair in zip(pcs, ({"messages": c} for c in chats)) for r in pair]
    text = "\n".join(json.dumps(r) for r in records) + "\n"
    T = 160
    out = engine.run(MASKED, url=f"{server.url}/weights/{TINY.name}/", name=TINY.name,
                     text=text, tc={"chat_template": CHATML}, T=T)
    rows = out["rows"]
    assert len(rows) == 3 and out["summary"]["eval_rows"] == 3
    tok = Tokenizer.from_file(str(TINY / "tokenizer.json"))
    # what the labels cover: the completion (+ eos), or each reply and its end marker
    kinds = []
    for ids, labels in rows:
        kept = tok.decode([l for l in labels if l != -100], skip_special_tokens=False)
        kinds.append(kept)
        assert all(l in (i, -100) for i, l in zip(ids, labels)) and len(ids) == T
    assert kinds[0] == "green<|im_end|>\nYes.<|im_end|>\n"
    assert kinds[1].startswith("    return a + b\n")
    assert kinds[2] == "blue<|im_end|>\nYes.<|im_end|>\n"
    model = transformers.AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in rows:
            logits = model(torch.tensor([ids])).logits[0, :-1]
            tgt = torch.tensor(labels[1:])
            total += float(torch.nn.functional.cross_entropy(logits, tgt, ignore_index=-100,
                                                             reduction="sum"))
            count += int((tgt != -100).sum())
    assert out["eval"]["eval_tokens"] == count
    assert abs(out["eval"]["eval_loss"] - total / count) <= 1e-5 * total / count


def mambaweb(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tools.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _evals(r):
    return json.loads([l for l in r.stderr.splitlines() if "eval_loss_before" in l][-1])


def test_finetune_cli_rslora_adapter_is_what_peft_computes(tmp_path):
    """--rslora: the saved adapter says use_rslora, and PEFT on it gives the logits of the
    tab's own merge (W += alpha/sqrt(r) B A), so both scale alike."""
    data = tmp_path / "notes.txt"
    data.write_text("mambaweb fine-tunes in the tab; nothing leaves the browser. " * 60)
    out = tmp_path / "adapter"
    r = mambaweb("finetune", "--model", TINY, "--data", data, "--out", out, "--rslora",
                 "--steps", 8, "--batch", 2, "--seq-len", 64, "--lr", "5e-3", "--lora-r", 4,
                 "--merge")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _evals(r)["eval_loss_after"] < _evals(r)["eval_loss_before"]
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["use_rslora"] is True and cfg["r"] == 4
    import torch
    import transformers
    from peft import PeftModel
    base = transformers.AutoModelForCausalLM.from_pretrained(TINY)
    ids = torch.tensor([list(b"mambaweb fine-tunes")])
    with torch.no_grad():
        plain = base(ids).logits
        peft = PeftModel.from_pretrained(base, out).eval()
        assert peft.peft_config["default"].use_rslora
        tuned = peft(ids).logits
        merged = transformers.AutoModelForCausalLM.from_pretrained(out / "merged")(ids).logits
    assert (tuned - plain).abs().max() > 1e-3
    assert (merged - tuned).abs().max() <= 1e-4
    r = mambaweb("finetune", "--model", TINY, "--data", data, "--out", tmp_path / "x",
                 "--full", "--rslora")
    assert r.returncode == 2 and "--rslora scales a LoRA adapter" in r.stderr


def _tiny_chat_mamba2(folder):
    """A small random Mamba-2 (transformers' init) with the byte-level tokenizer.json and a
    tokenizer_config.json holding a ChatML template."""
    import torch
    import transformers
    from py_engine.train.data import byte_level_tokenizer_config
    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=256, hidden_size=32, num_hidden_layers=2,
                                    num_heads=4, head_dim=16, n_groups=1, state_size=16,
                                    expand=2, conv_kernel=4, tie_word_embeddings=True)
    transformers.Mamba2ForCausalLM(cfg).save_pretrained(folder)
    (folder / "tokenizer.json").write_text(json.dumps(byte_level_tokenizer_config()))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": CHATML, "eos_token": "<|im_end|>"}))
    return cfg


def test_finetune_cli_wsla_on_chat_data_trains_the_bc_rows_only(tmp_path):
    """--wsla on a Mamba-2 with chat records (the template read from the model folder's
    tokenizer_config.json): the held-out loss drops, OUT is an HF folder transformers loads,
    and it differs from the base in the B/C rows of each in_proj only."""
    from safetensors.numpy import load_file
    model = tmp_path / "chat-model"
    _tiny_chat_mamba2(model)
    recs = [{"messages": [{"role": "user", "content": f"What does module {m} do?"},
                          {"role": "assistant", "content": f"The {m} module {what}."}]}
            for m, what in [("os", "talks to the operating system"), ("re", "matches patterns"),
                            ("json", "reads and writes JSON"), ("math", "does arithmetic")] * 6]
    data = tmp_path / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    out = tmp_path / "wsla"
    r = mambaweb("finetune", "--model", model, "--data", data, "--out", out, "--wsla",
                 "--steps", 12, "--batch", 2, "--seq-len", 96, "--lr", "3e-2", "--eval-frac",
                 "0.25")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads([l for l in r.stderr.splitlines() if '"trainable_params"' in l][0])
    cfg = json.loads((model / "config.json").read_text())
    I, GN = cfg["num_heads"] * cfg["head_dim"], cfg["n_groups"] * cfg["state_size"]
    assert summary["mode"] == "wsla"
    assert summary["trainable_params"] == cfg["num_hidden_layers"] * 2 * GN * cfg["hidden_size"]
    ev = _evals(r)
    assert ev["eval_loss_after"] < ev["eval_loss_before"]
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    base, tuned = load_file(model / "model.safetensors"), load_file(out / "model.safetensors")
    assert set(tuned) >= set(base)
    for n, w in base.items():
        if n.endswith("mixer.in_proj.weight"):
            rows = np.ones(w.shape[0], bool)
            rows[2 * I:2 * I + 2 * GN] = False
            assert np.array_equal(tuned[n][rows], w[rows]), n
            assert np.abs(tuned[n][~rows] - w[~rows]).max() > 1e-4, n
        else:
            assert np.array_equal(tuned[n], w), n
    import transformers
    assert type(transformers.AutoModelForCausalLM.from_pretrained(out)).__name__ == \
        "Mamba2ForCausalLM"


def test_finetune_cli_full_trains_every_weight(tmp_path):
    data = tmp_path / "notes.txt"
    data.write_text("mambaweb fine-tunes in the tab; nothing leaves the browser. " * 60)
    out = tmp_path / "full"
    r = mambaweb("finetune", "--model", TINY, "--data", data, "--out", out, "--full",
                 "--steps", 10, "--batch", 2, "--seq-len", 64, "--lr", "2e-3")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads([l for l in r.stderr.splitlines() if '"trainable_params"' in l][0])
    assert summary["mode"] == "full" and summary["trainable_params"] == summary["model_params"]
    ev = _evals(r)
    assert ev["eval_loss_after"] < 0.8 * ev["eval_loss_before"]
    assert not (out / "adapter_config.json").exists()
    from safetensors.numpy import load_file
    base, tuned = load_file(TINY / "model.safetensors"), load_file(out / "model.safetensors")
    changed = [n for n in base if not np.array_equal(base[n], tuned[n])]
    assert len(changed) == len(base)          # every tensor trained (no LoRA, no mask)
    import torch
    import transformers
    m = transformers.AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.isfinite(m(torch.tensor([[1, 2, 3]])).logits).all()
    assert (out / "tokenizer.json").read_bytes() == (TINY / "tokenizer.json").read_bytes()
