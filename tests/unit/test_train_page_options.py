"""The train page's host-side pieces (issues 17, 14, 16): the architecture chooser's virtual
layers and bidirectional option (validation sentences, the memory estimate counting logical
layers), fine-tune data sniffing (plain text, prompt/completion and chat JSONL: kinds, counts,
completion/assistant-only labels, the packed rows a run autosaves), and the generate page's
refusal of a bidirectional model before any weight is read."""
import json

import pytest

from py_engine.app import finetune_data as FD
from py_engine.app.generate_session import refuse_bidirectional
from py_engine.models.schedule import logical_kinds
from py_engine.nn import registry
from py_engine.train import session as S
from py_engine.train.data import ByteTokenizer
from py_engine.train.init import param_count
from tests.async_run import run

TRAIN = {"batch": 2, "seq_len": 16}
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")


def describe(**model):
    return S.describe({"model": dict(size="tiny", **model), "train": TRAIN, "vocab_size": 256})


def test_memory_estimate_counts_activations_of_every_logical_layer():
    """8 logical layers over 2 physical ones keep 8 layers' activations and 2 layers' weights:
    the estimate sits between the 2-layer model and the unrolled 8-layer one, exactly."""
    t = S.train_config(TRAIN)
    plain = S.model_config({"size": "tiny"}, 256)
    virtual = S.model_config({"size": "tiny", "virtual": "8:cyclic"}, 256)
    unrolled = S.model_config({"size": "tiny", "num_hidden_layers": 8}, 256)
    assert len(logical_kinds(virtual)) == 8 and virtual.num_hidden_layers == 2
    rows, D = t["batch"] * t["seq_len"], plain.hidden_size
    per_layer = registry.get("mamba1").train_floats(plain, t["batch"], t["seq_len"]) + rows * 3 * D
    assert S.memory_estimate(virtual, t) - S.memory_estimate(plain, t) == 4 * 6 * per_layer
    # weights, gradients and two AdamW moments: 16 bytes per parameter, physical layers only
    assert S.memory_estimate(unrolled, t) - S.memory_estimate(virtual, t) == \
        16 * (param_count(unrolled) - param_count(virtual))
    r = describe(virtual="8:stretched")
    assert r["ok"] and r["memory_bytes"] == S.memory_estimate(virtual, t)
    assert r["shape"]["logical_layers"] == 8 and r["shape"]["virtual_layers"] == [0] * 4 + [1] * 4


@pytest.mark.parametrize("field, words", [
    ("8:foo", "'foo' is not one of cyclic, stretched"),
    ("x", "expected L, L:cyclic, L:stretched"),
    ("1", "1 logical layers cannot use all 2 physical ones; give at least 2"),
    ("0,1,5", "5 is not a physical layer; the model has 2 (0..1)"),
    ("0,0,0", "never uses physical layer(s) 1: use each at least once"),
    ("0,a", "a custom schedule is physical layer indices separated by commas"),
])
def test_a_bad_virtual_schedule_is_one_sentence(field, words):
    r = describe(virtual=field)
    assert not r["ok"] and r["error"].startswith(f"virtual schedule {field!r}")
    assert words in r["error"] and "\n" not in r["error"] and "config" not in r["error"]


@pytest.mark.parametrize("merge", ["mean", "concat"])
@pytest.mark.parametrize("family, letter", [("mamba1", "m"), ("mamba2", "M"), ("mamba3", "3")])
def test_bidirectional_choice_wraps_every_layer(family, letter, merge):
    plain, r = describe(family=family), describe(family=family, bidi=merge)
    assert r["ok"] and r["shape"]["bidi"] == merge and r["shape"]["pattern"] == letter * 2
    assert r["config"]["mambaweb_bidirectional"] == {"merge": merge, "mask_token_id": 256}
    # a second (reversed) block per layer: about twice the layer weights, and the presets'
    # sizes the chooser lists say the same
    assert r["params"] > plain["params"] and r["presets"]["tiny"] == r["params"]
    assert r["memory_bytes"] > plain["memory_bytes"]
    hybrid = describe(family="hybrid", bidi=merge)
    assert not hybrid["ok"] and "wrap the Mamba families" in hybrid["error"]


def _jsonl(records):
    return "\n".join(json.dumps(r) for r in records) + "\n"


PC = [{"prompt": f"Q{k}: ", "completion": f"answer {k}"} for k in range(5)]
CHATS = [{"messages": [{"role": "user", "content": f"colour {k}?"},
                       {"role": "assistant", "content": ["red", "blue"][k % 2]}]}
         for k in range(4)]


def test_fine_tune_data_kinds_and_counts():
    assert FD.parse(["plain notes\n{ not a record }\n"], ["notes.txt"]) == ("text", None)
    kind, recs = FD.parse([_jsonl(PC)], ["pc.jsonl"])
    assert kind == "prompt_completion" and len(recs) == 5
    kind, recs = FD.parse([_jsonl(CHATS), _jsonl(PC[:2])], ["c.jsonl", "pc.jsonl"])
    d = FD.describe(kind, recs)
    assert (kind, d["records"], d["chat"], d["prompt_completion"]) == ("mixed", 6, 4, 2)
    with pytest.raises(ValueError, match=r"mixes plain text \(notes.txt\) with JSONL records"):
        FD.parse([_jsonl(PC), "some prose"], ["pc.jsonl", "notes.txt"])
    with pytest.raises(ValueError, match=r'^pc.jsonl: data line 6: a JSONL record needs'):
        FD.parse([_jsonl(PC) + '{"prompt": "no completion"}\n'], ["pc.jsonl"])


def test_chat_records_need_the_base_models_template():
    for conf, where in ((None, "no tokenizer_config.json"),
                        ({"eos_token": "</s>"}, "no chat_template in its tokenizer_config.json")):
        with pytest.raises(ValueError) as e:
            FD.chat_config(conf, "bytes-tiny")
        text = str(e.value)
        assert text.startswith(f"bytes-tiny has no chat template ({where})")
        assert "give prompt/completion records" in text and "\n" not in text
    assert FD.chat_config({"chat_template": CHATML, "eos_token": "</s>", "x": 1}, "m") == \
        {"chat_template": CHATML, "eos_token": "</s>"}


def test_record_rows_put_the_loss_on_the_answer_only_and_pack_losslessly():
    tok = ByteTokenizer()
    kind, recs = FD.parse([_jsonl(PC)], ["pc.jsonl"])
    rows = FD.rows(kind, recs, tok, 24)
    for (ids, labels), rec in zip(rows, PC):
        kept = bytes(l for l in labels if l != -100)
        assert kept == rec["completion"].encode() + b"\0"         # + the end token (id 0)
        assert bytes(ids[:len(rec["prompt"])]) == rec["prompt"].encode() and len(ids) == 24
        assert FD.prompt_of((ids, labels)) == list(rec["prompt"].encode())
    kind, recs = FD.parse([_jsonl(CHATS)], ["c.jsonl"])
    rows = FD.rows(kind, recs, tok, 64, FD.chat_config({"chat_template": CHATML}, "m"))
    for (ids, labels), rec in zip(rows, CHATS):
        reply = rec["messages"][1]["content"]
        assert bytes(l for l in labels if l != -100) == f"{reply}<|im_end|>\n".encode()
    packed = FD.pack(rows)
    assert len(packed) == 2 * 64 * len(rows) and FD.unpack(packed, 64) == rows
    with pytest.raises(ValueError, match="at least 2"):
        FD.rows("prompt_completion", FD.parse([_jsonl(PC[:1])])[1], tok, 24)


def test_row_batcher_is_a_seeded_order_that_resumes_where_it_stopped():
    tok = ByteTokenizer()
    rows = FD.rows(*FD.parse([_jsonl(PC)]), tok, 16)
    a, b = FD.RowBatcher(rows, 2, seed=3), FD.RowBatcher(rows, 2, seed=3)
    first = [a.next_pair() for _ in range(4)]                # 8 rows: into the second epoch
    assert a.position == {"epoch": 1, "index": 3}
    seen = [bytes(first[i][0][j * 16:(j + 1) * 16]) for i in range(2) for j in range(2)]
    assert len(set(seen)) == 4                               # no row twice within an epoch
    b.restore({"epoch": 1, "index": 1})
    c = FD.RowBatcher(rows, 2, seed=3)
    for _ in range(3):
        c.next_pair()
    assert b.next_pair() == c.next_pair()


class _Source:
    def __init__(self, config):
        self.config = config
        self.reads = []

    def where(self, name):
        return f"model/{name}"

    async def read(self, name):
        self.reads.append(name)
        return json.dumps(self.config).encode()


def test_generate_refuses_a_bidirectional_model_before_reading_weights():
    bidi = S.model_config({"size": "tiny", "bidi": "concat"}, 256).to_hf_dict()
    src = _Source(bidi)
    with pytest.raises(ValueError) as e:
        run(refuse_bidirectional(src, "bidi-tiny"))
    assert str(e.value).startswith("bidi-tiny is a bidirectional model (concat merge): every "
                                   "output reads the tokens after it, so it cannot generate")
    assert src.reads == ["config.json"]
    # a left-to-right model (virtual layers included) and an unreadable config pass through
    virtual = S.model_config({"size": "tiny", "virtual": "4"}, 256).to_hf_dict()
    assert run(refuse_bidirectional(_Source(virtual), "v")) is None
    assert run(refuse_bidirectional(_Source(["not", "a", "config"]), "x")) is None
