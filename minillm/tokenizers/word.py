"""A word-level tokenizer: one id per distinct word or punctuation mark, ``<unk>`` for the rest.

The oldest kind of vocabulary (word n-gram models, word2vec): short sequences, but a huge vocabulary
and no way to spell a word it has not seen. The chapter uses it as the opposite extreme of characters.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .gpt2 import _as_id_list, _check_text

WORD_PATTERN = r"\w+|[^\w\s]"  # runs of letters/digits, or one punctuation mark


class WordTokenizer:
    """Maps words to ids; ``vocab`` is the list of tokens (id = position) and must contain ``unk_token``.

    Decoding joins words with single spaces, so the original spacing is lost.
    """

    def __init__(self, vocab: list[str], unk_token: str = "<unk>", lowercase: bool = False,
                 pattern: str = WORD_PATTERN):
        if isinstance(vocab, (str, dict)) or not isinstance(vocab, Iterable):
            raise TypeError(f"vocab must be a list of words, got {type(vocab).__name__}")
        self.itos = list(vocab)
        self.vocab = {w: i for i, w in enumerate(self.itos)}
        if len(self.vocab) != len(self.itos):
            raise ValueError("vocab has duplicate words")
        if unk_token not in self.vocab:
            raise ValueError(f"unk_token {unk_token!r} is not in the vocabulary")
        self.unk_token, self.unk_id = unk_token, self.vocab[unk_token]
        self.lowercase = lowercase
        self._pat = re.compile(pattern)

    @classmethod
    def train(cls, text: str | Iterable[str], max_vocab: int | None = None, min_count: int = 1,
              special_tokens: Iterable[str] = ("<unk>",), lowercase: bool = False) -> "WordTokenizer":
        """Keep the ``max_vocab`` most frequent words (ties in first-seen order) seen ``min_count`` times."""
        specials = list(special_tokens)
        if not specials:
            raise ValueError("special_tokens must include the unknown token (e.g. '<unk>')")
        if max_vocab is not None and (not isinstance(max_vocab, int) or max_vocab <= len(specials)):
            raise ValueError(f"max_vocab must be an int > {len(specials)} special tokens, got {max_vocab!r}")
        if isinstance(text, (bytes, dict)) or not isinstance(text, (str, Iterable)):
            raise TypeError(f"text must be a str or an iterable of str, got {type(text).__name__}")
        texts = [text] if isinstance(text, str) else list(text)
        pat = re.compile(WORD_PATTERN)
        counts: Counter = Counter()
        for t in texts:
            counts.update(pat.findall(_check_text(t).lower() if lowercase else _check_text(t)))
        words = [w for w, n in counts.most_common() if n >= min_count and w not in specials]
        if max_vocab is not None:
            words = words[: max_vocab - len(specials)]
        return cls(specials + words, unk_token=specials[0], lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def token_to_id(self, token: str) -> int:
        if token not in self.vocab:
            raise ValueError(f"token {token!r} is not in the vocabulary ({self.vocab_size} words)")
        return self.vocab[token]

    def tokenize(self, text: str) -> list[str]:
        text = _check_text(text)
        return self._pat.findall(text.lower() if self.lowercase else text)

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(w, self.unk_id) for w in self.tokenize(text)]

    def decode(self, ids: Any) -> str:
        ids = _as_id_list(ids)
        bad = [i for i in ids if not 0 <= i < len(self.itos)]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        return " ".join(self.itos[i] for i in ids)

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"
