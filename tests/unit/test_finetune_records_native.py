"""The train page's fine-tune session on JSONL records (py_engine/app/finetune_session.py with
finetune_data.py), on the native backend (wgpu-py, the tab's WGSL): prompt/completion and chat
records train with the loss on the answers only (the held-out token count is the completion's
or the reply's), the held-out loss falls, samples continue a held-out prompt, the packed rows
an autosave keeps rebuild the same split, a downloaded state's re-encoding gives the same rows,
and chat records for a base without a template are refused in one sentence."""
import json
import math
import shutil

import pytest

from tests.conftest import REPO
from tools.native_engine import wgpu_adapter_problem

_problem = wgpu_adapter_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=f"no native GPU adapter: {_problem}")
TINY = REPO / "tests" / "fixtures" / "models" / "bytes-tiny-stdlib"
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
PCS = [{"prompt": f"def add{k}(a, b):\n", "completion": f"    return a + b + {k}\n"}
       for k in range(12)]
CHATS = [{"messages": [{"role": "user", "content": f"Colour of item {k}?"},
                       {"role": "assistant", "content": ["red", "green", "blue"][k % 3]}]}
         for k in range(10)]

RUN = """
from py_engine.app import finetune_session as F
from py_engine.io.byte_sources import LocalSource
F._source = lambda base: LocalSource(base['path'])        # a folder on this machine
out = {}
for name, text, T in (('pc', args['pc'], 48), ('chat', args['chat'], 96)):
    spec = {'mode': 'lora', 'train': {'steps': 3, 'batch': 2, 'seq_len': T, 'lr': 1e-2,
                                      'sample_every': 0}}
    s = await F.FinetuneSession.create(device, {'path': args['base'], 'name': 'b'}, [text],
                                       {'names': [name + '.jsonl']}, spec)
    await s.evaluate_heldout()
    for _ in range(3):
        await s.train_one()
    ev = await s.evaluate_heldout()
    sample = await s.sample()
    meta = s.state_meta()
    labelled = [bytes(l for l in lab if l != -100) for _, lab in s.batcher.rows]
    heldout = [bytes(l for l in lab[1:] if l != -100) for _, lab in s.eval_rows]
    # an autosave keeps s.ids (the packed rows): they rebuild the same split and order
    again = F.FinetuneSession(device)
    again.data, again.train, again.cfg = meta['finetune']['data'], s.train, s.cfg
    again.eval_frac = s.eval_frac
    again._set_split_corpus(s.ids, {})
    # a downloaded state re-encodes the texts with the chat settings it saved
    again.tokenizer, again.base = s.tokenizer, s.base
    reencoded = again._encode([text], chat=again.data.get('chat_config'))
    out[name] = {'data': s.summary()['data'], 'loss': [p[1] for p in s.history],
                 'evals': [v for _, v in s.evals], 'eval_tokens': ev['eval_tokens'],
                 'prompt': sample['prompt'], 'labelled': labelled, 'heldout': heldout,
                 'same_split': [again.batcher.rows == s.batcher.rows,
                                again.eval_rows == s.eval_rows, again.digest == s.digest],
                 'same_encoding': list(reencoded) == list(s.ids)}
    s.release()
try:
    await F.FinetuneSession.create(device, {'path': args['plain'], 'name': 'plain-base'},
                                   [args['chat']], {'names': ['c.jsonl']},
                                   {'mode': 'lora', 'train': {'steps': 3, 'seq_len': 96}})
except ValueError as e:
    out['refused'] = str(e)
result = out
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tools.native_engine import NativeEngine
    base = tmp_path_factory.mktemp("chat") / "bytes-tiny-chat"
    shutil.copytree(TINY, base)
    (base / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHATML}))
    eng = NativeEngine()
    try:
        yield eng.run(RUN, base=str(base), plain=str(TINY),
                      pc="\n".join(map(json.dumps, PCS)), chat="\n".join(map(json.dumps, CHATS)))
    finally:
        eng.close()


@pytest.mark.parametrize("name, records, want", [
    ("pc", PCS, [p["completion"].encode() + b"\0" for p in PCS]),         # + the end token
    ("chat", CHATS, [f"{c['messages'][1]['content']}<|im_end|>\n".encode() for c in CHATS]),
])
def test_records_train_on_the_answers_only(runs, name, records, want):
    r = runs[name]
    n = len(records)
    assert r["data"]["records"] == n and (r["data"]["train_records"],
                                          r["data"]["heldout_records"]) == (n - 1, 1)
    assert r["data"]["kind"] == {"pc": "prompt_completion", "chat": "chat"}[name]
    assert "chat_config" not in r["data"]                   # the page gets counts, not templates
    assert sorted(r["labelled"]) == sorted(want[:-1]) and r["heldout"] == want[-1:]
    assert r["eval_tokens"] == len(want[-1])
    assert all(math.isfinite(v) for v in r["loss"]) and len(r["loss"]) == 3
    assert r["evals"][-1] < r["evals"][0]                   # the held-out answer got likelier
    assert r["same_split"] == [True, True, True] and r["same_encoding"]


def test_samples_continue_a_held_out_prompt(runs):
    assert runs["pc"]["prompt"] == PCS[-1]["prompt"]
    assert runs["chat"]["prompt"].endswith("Colour of item 9?<|im_end|>\n<|im_start|>assistant\n"[-40:])


def test_chat_records_without_a_template_are_refused(runs):
    assert runs["refused"] == (
        "plain-base has no chat template (no tokenizer_config.json), so chat records "
        "(\"messages\") cannot be rendered the way the model expects: give prompt/completion "
        "records, or fine-tune a model that has a template")
