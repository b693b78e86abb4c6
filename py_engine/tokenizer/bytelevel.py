"""GPT-2's byte-level alphabet: every byte is shown as one printable Unicode character.

BPE then works on strings over a 256-character alphabet, so any UTF-8 text is representable
without an unknown token. Printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
themselves; the other 68 bytes (controls, space, NBSP, soft hyphen) are shifted to U+0100 + n in
byte order, which is why a space shows as 'Ġ' (U+0120) and a newline as 'Ċ' (U+010A).
"""


def _bytes_to_unicode():
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1))
            + list(range(0xAE, 0xFF + 1)))
    table = {}
    n = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_CHAR = _bytes_to_unicode()                      # {byte: char}
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}  # {char: byte}

# str.translate table over Latin-1: text.encode('utf-8').decode('latin-1').translate(...) maps
# each UTF-8 byte to its byte-level character in one C-level pass.
_LATIN1_TO_BYTELEVEL = {b: BYTE_TO_CHAR[b] for b in range(256)}


def to_bytelevel(text):
    """'a b' -> 'aĠb': the byte-level string the BPE model sees."""
    return text.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_BYTELEVEL)


def token_bytes(token):
    """Bytes a token decodes to, as the tokenizers ByteLevel decoder does it: the byte-level
    characters mapped back, or, when any character is outside the alphabet (added tokens such
    as '<|endoftext|>' are inside it; runs of real spaces are not), the token's own UTF-8."""
    out = bytearray()
    for ch in token:
        b = CHAR_TO_BYTE.get(ch)
        if b is None:
            return token.encode("utf-8")
        out.append(b)
    return bytes(out)
