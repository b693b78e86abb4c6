"""The chat-template renderer (py_engine/tokenizer/chat_template.py) against transformers'
apply_chat_template on public templates (ChatML, Llama-3, Zephyr, Gemma, Mistral) and one that
uses every supported construct; what it refuses, by name; and the assistant-only labels of
py_engine/train/chat_data.py against transformers' own assistant mask ({% generation %})."""
import pytest

from py_engine.tokenizer.chat_template import ChatTemplate, ChatTemplateError, render_chat
from py_engine.tokenizer.tokenizer import Tokenizer
from py_engine.train import chat_data
from tests.conftest import REPO

TOKENIZER = REPO / "models" / "default" / "tokenizer.json"
SPECIALS = {"bos_token": "<s>", "eos_token": "</s>"}

# Written from the models' tokenizer_config.json files (teknium/OpenHermes ChatML,
# meta-llama/Meta-Llama-3-8B-Instruct, HuggingFaceH4/zephyr-7b-beta, google/gemma-7b-it,
# mistralai/Mistral-7B-Instruct-v0.2's later revision).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] "
          "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
          "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>\n' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>\n'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""
GEMMA = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role "
         "not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == "
         "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must "
         "alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == "
         "'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
         "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
         "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
         "{{'<start_of_turn>model\n'}}{% endif %}")
MISTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""
# every other construct the subset supports, in the layouts templates use them
FEATURES = """{# a comment #}
{%- set n = messages | length -%}
{%- set sep = "\\n" -%}
<count {{ n }} | {{ (messages[-1].content | trim) | length }}>{{ sep }}
{%- for message in messages %}
  {%+ if loop.first %}[first {{ loop.index }}/{{ loop.length }}]{% endif %}
  {% if message.role in ['system', 'developer'] %}
S: {{ message['content'] | tojson }}
  {% elif message.role == "user" and not (message.content is none) %}
U{{ loop.index0 ~ ':' }} {{ message.content.strip() ~ ("!" if message.content.endswith('?') else ".") }}
  {% else %}
A: {{ message.get('content', 'none') | trim }}{{ eos_token if loop.last else '' }}
  {% endif %}
{%- endfor %}
{{ {'n': n, 'roles': messages[1:3] | length, 'x': [1, 2.5, none, true]} | tojson(indent=2) }}
{% if add_generation_prompt and tools is none and undefined_name is not defined %}A:{% endif %}
"""
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3, "zephyr": ZEPHYR, "gemma": GEMMA,
             "mistral": MISTRAL, "features": FEATURES}

CONVERSATIONS = [
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "  What is 2+2? \n"},
     {"role": "assistant", "content": " 4\n"},
     {"role": "user", "content": "é, 'quotes' and \"more\" — {{ not jinja }} {% either %}"}],
    [{"role": "user", "content": "def f(x):\n    return x  # tab\there"},
     {"role": "assistant", "content": "It returns x.\n\nSee:\n```py\nf(1)\n```"},
     {"role": "user", "content": "ok?"},
     {"role": "assistant", "content": "ok"}],
    [{"role": "user", "content": ""}],
]


def _hf_tokenizer(template):
    from transformers import PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER), **SPECIALS)
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_renders_exactly_what_transformers_renders(name):
    hf = _hf_tokenizer(TEMPLATES[name])
    ours = ChatTemplate(TEMPLATES[name])
    compared = 0
    for conv in CONVERSATIONS:
        for gen in (False, True):
            try:
                want = hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            except Exception as e:         # the template raised: ours must raise the same
                with pytest.raises(ChatTemplateError, match=str(e).replace(".", r"\.")):
                    render_chat(ours, conv, add_generation_prompt=gen, **SPECIALS)
                continue
            assert render_chat(ours, conv, add_generation_prompt=gen, **SPECIALS) == want
            compared += 1
    assert compared >= 4


@pytest.mark.parametrize("source, refused", [
    ("{% set ns = namespace(found=false) %}", "namespace() is not supported"),
    ("{% set ns.found = true %}", "needs namespace()"),
    ("{{ messages | map(attribute='role') | list }}", "the filter 'map' is not supported"),
    ("{% for m in messages if m.role %}{% endfor %}", "filtered for-loop"),
    ("{% for m in messages %}{{ loop.cycle('a', 'b') }}{% endfor %}", "loop.cycle is not supported"),
    ("{% macro f() %}{% endmacro %}", "{% macro %} is not supported"),
    ("{% include 'x' %}", "{% include %} is not supported"),
    ("{{ 3 is divisibleby 3 }}", "the test 'is divisibleby' is not supported"),
    ("{{ strftime_now('%Y') }}", "strftime_now() is not supported"),
    ("{{ 'a'.format(1) }}", "calling format is not supported"),
    ("{% if true %}x", "the template ends inside a block (expected {% endif %})"),
    ("{{ messages ", "a tag is never closed"),
    ("{% endfor %}", "{% endfor %} without its opening tag"),
    ("{% for m in messages %}{% else %}{% endfor %}", "{% for %}...{% else %} is not supported"),
])
def test_refuses_what_it_does_not_support_by_name(source, refused):
    with pytest.raises(ChatTemplateError) as e:
        render_chat(source, CONVERSATIONS[0])
    assert refused in str(e.value)
    assert str(e.value).startswith("chat template")


def test_undefined_values_behave_as_jinja():
    assert render_chat("[{{ nothing }}|{{ messages[9] }}|{{ messages[0].nope }}]",
                       CONVERSATIONS[0]) == "[||]"
    with pytest.raises(ChatTemplateError, match="'nothing' is undefined"):
        render_chat("{{ nothing + 'a' }}", CONVERSATIONS[0])


GENERATION_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + "
    "'<|im_end|>\n' }}{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}")


@pytest.mark.parametrize("conv", [c for c in CONVERSATIONS if any(m["role"] == "assistant"
                                                                   for m in c)])
def test_assistant_labels_equal_transformers_assistant_mask(conv):
    """Our prefix-rendered spans give the tokens transformers marks with a {% generation %}
    template (return_assistant_tokens_mask), on the same ids as its tokenization."""
    hf = _hf_tokenizer(GENERATION_CHATML)
    enc = hf.apply_chat_template(conv, tokenize=True, return_dict=True,
                                 return_assistant_tokens_mask=True)
    tok = Tokenizer.from_file(str(TOKENIZER))
    ids, labels = chat_data.chat_row(tok, ChatTemplate(GENERATION_CHATML), SPECIALS, conv)
    assert ids == list(enc["input_ids"])
    assert [int(lab != chat_data.IGNORE) for lab in labels] == list(enc["assistant_masks"])
    assert all(lab in (i, chat_data.IGNORE) for i, lab in zip(ids, labels))


@pytest.mark.parametrize("name", ["chatml", "llama3", "zephyr", "gemma", "mistral"])
def test_assistant_labels_cover_the_replies_and_their_end_markers(name):
    conv = CONVERSATIONS[2]
    tok = Tokenizer.from_file(str(TOKENIZER))
    ids, labels = chat_data.chat_row(tok, ChatTemplate(TEMPLATES[name]), SPECIALS, conv)
    import tokenizers                # tokenizer.json as it is ('<s>' is plain text in it)
    text = render_chat(TEMPLATES[name], conv, **SPECIALS)
    assert ids == tokenizers.Tokenizer.from_file(str(TOKENIZER)).encode(
        text, add_special_tokens=False).ids
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != chat_data.IGNORE:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur, skip_special_tokens=False))
            cur = []
    if cur:
        runs.append(tok.decode(cur, skip_special_tokens=False))
    end = {"chatml": "<|im_end|>\n", "llama3": "<|eot_id|>", "zephyr": "</s>\n",
           "gemma": "<end_of_turn>\n", "mistral": "</s>"}[name]
    replies = [m["content"] for m in conv if m["role"] == "assistant"]
    lead = " " if name == "mistral" else ""
    assert runs == [lead + (r.strip() if name in ("llama3", "gemma") else r) + end
                    for r in replies]


def test_chat_data_errors_name_the_problem():
    tok = Tokenizer.from_file(str(TOKENIZER))
    tpl, specials = chat_data.template_from_config({"chat_template": CHATML, "eos_token":
                                                    {"content": "</s>"}})
    assert specials == {"eos_token": "</s>"}
    with pytest.raises(ValueError, match="has no chat_template"):
        chat_data.template_from_config({"eos_token": "</s>"})
    with pytest.raises(ValueError, match="message 1 is .*needs a \"role\" string"):
        chat_data.chat_row(tok, tpl, specials, [{"role": "user", "content": "a"}, {"role": 1}],
                           "data line 3")
    with pytest.raises(ValueError, match="data line 3: no assistant message"):
        chat_data.chat_row(tok, tpl, specials, [{"role": "user", "content": "a"}],
                           "data line 3")
    with pytest.raises(ValueError, match="data line 2: the chat template refused"):
        chat_data.chat_row(tok, ChatTemplate(GEMMA), SPECIALS, CONVERSATIONS[1], "data line 2")
