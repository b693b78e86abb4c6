"""Chat records -> (token ids, labels) with the loss on the assistant's tokens only.

A record is {"messages": [{"role", "content"}, ...]}; the model's chat template
(tokenizer_config.json `chat_template`, rendered by py_engine/tokenizer/chat_template.py exactly
as transformers' apply_chat_template) turns it into one text. What the assistant says is found
by rendering prefixes: for an assistant message i,
    P = render(messages[:i], add_generation_prompt=True)     (everything before the reply)
    Q = render(messages[:i+1])                               (... and the reply)
and the reply's span is Q[len(P):] (the reply and whatever end-of-turn marker the template
writes after it, e.g. '<|im_end|>\n' or eos). Templates render conversations as growing prefixes;
one that does not is refused with the message index.
The whole text is tokenized at once (the ids apply_chat_template(tokenize=True) gives), each
token is placed on the text's UTF-8 bytes by the bytes it decodes to, and a token's label is its
id when it covers any byte of an assistant span, else IGNORE (-100) — the labels of a masked-
label torch loss. Pure stdlib (Pyodide).
"""
from py_engine.tokenizer.bytelevel import token_bytes
from py_engine.tokenizer.chat_template import ChatTemplate, ChatTemplateError

IGNORE = -100


def template_from_config(tokenizer_config, where="tokenizer_config.json"):
    """(ChatTemplate, {bos_token, eos_token, ...}) from a parsed tokenizer_config.json; a
    `chat_template` string, or the list form [{name, template}] (its "default" entry)."""
    if not isinstance(tokenizer_config, dict):
        raise ValueError(f"{where}: expected a JSON object")
    src = tokenizer_config.get("chat_template")
    if isinstance(src, list):
        named = {t.get("name"): t.get("template") for t in src if isinstance(t, dict)}
        if "default" not in named:
            raise ValueError(f"{where}: chat_template lists {sorted(map(str, named))} and no "
                             "'default' template; keep one named 'default'")
        src = named["default"]
    if not isinstance(src, str) or not src:
        raise ValueError(f"{where} has no chat_template: chat records ({{\"messages\": ...}}) "
                         "need the model's template; give prompt/completion records instead")
    specials = {}
    for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = tokenizer_config.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            specials[key] = v
    try:
        return ChatTemplate(src), specials
    except ChatTemplateError as e:
        raise ValueError(f"{where}: {e}") from None


def check_messages(messages, where):
    """The record's messages as a list of {"role": str, "content": str}, or one clear error."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: \"messages\" must be a non-empty list of "
                         "{\"role\", \"content\"} objects")
    for n, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: message {n} is {str(m)[:60]!r}; each message needs a "
                             "\"role\" string and a \"content\" string")
    return messages


def assistant_spans(template, messages, specials, where="conversation"):
    """(text, [(start, end) character spans of the assistant's replies])."""
    def render(msgs, gen):
        try:
            return template.render(messages=msgs, add_generation_prompt=gen, **specials)
        except ChatTemplateError as e:
            raise ValueError(f"{where}: {e}") from None

    text = render(messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(messages[:i], True) if i else render([], True)
        upto = render(messages[:i + 1], False)
        if not upto.startswith(before) or not text.startswith(upto):
            raise ValueError(f"{where}: the chat template does not render this conversation as "
                             f"a growing prefix at message {i}, so the reply's tokens cannot be "
                             "told apart; give prompt/completion records instead")
        if len(upto) > len(before):
            spans.append((len(before), len(upto)))
    return text, spans


def token_labels(tok, text, spans):
    """(ids, labels): `text` encoded whole (no added BOS/EOS: the template writes them), labels
    = the id where the token covers a byte of a span, else IGNORE."""
    ids = list(tok.encode(text, add_special_tokens=False))
    ends, at = [], 0
    for i in ids:
        at += len(token_bytes(tok.id_to_token(i)))
        ends.append(at)
    if at != len(text.encode("utf-8")):
        raise ValueError("this tokenizer changes the text while encoding it (a normalizer), so "
                         "its tokens cannot be placed on the chat text for the loss mask; "
                         "give prompt/completion records instead")
    byte_spans = [(len(text[:a].encode("utf-8")), len(text[:b].encode("utf-8")))
                  for a, b in spans]
    labels, start = [], 0
    for i, end in zip(ids, ends):
        hit = any(start < b and a < end for a, b in byte_spans)
        labels.append(i if hit else IGNORE)
        start = end
    return ids, labels


def chat_row(tok, template, specials, messages, where="conversation"):
    """(ids, labels) of one conversation, loss on the assistant's tokens."""
    text, spans = assistant_spans(template, check_messages(messages, where), specials, where)
    if not spans:
        raise ValueError(f"{where}: no assistant message, so nothing to learn from it")
    return token_labels(tok, text, spans)
