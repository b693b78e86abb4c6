"""Exceptions the tokenizer raises. Every message names the file part that is wrong."""


class TokenizerError(ValueError):
    """A tokenizer file is malformed, inconsistent, or asks for something we refuse."""


class UnsupportedTokenizer(TokenizerError):
    """The file uses a model, normalizer, pre-tokenizer, pattern or option we do not implement.

    We refuse it instead of guessing: a tokenizer that is almost right silently produces other
    ids than the model was trained on.
    """
