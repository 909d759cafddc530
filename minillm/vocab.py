"""Vocabularies of the early chapters: characters (:class:`CharVocab`) and words (:class:`WordVocab`).

A vocabulary is a list ``itos`` (id → token, the id is the position) and its inverse ``stoi``.
Both classes here build theirs reproducibly (sorted characters; words by frequency, ties
alphabetical), so a checkpoint's ids mean the same after a rebuild.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

import torch

from .validation import check_int, check_str


def token_id_list(name: str, ids: Any, size: int) -> list[int]:
    """``ids`` (a sequence of ints or an integer tensor) as a list of ints in ``[0, size)``.

    Floats are refused rather than truncated (``1.7`` is a slip, not id 1).
    """
    if isinstance(ids, torch.Tensor):
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer ids, got a tensor of dtype {ids.dtype}")
        ids = ids.flatten().tolist()
    elif isinstance(ids, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of integer ids, got {type(ids).__name__}")
    out = [check_int(f"{name}[{k}]", i) for k, i in enumerate(ids)]
    bad = [i for i in out if not 0 <= i < size]
    if bad:
        raise ValueError(f"{name} {bad[:5]} are outside the vocabulary [0, {size})")
    return out


class CharVocab:
    """Maps each distinct character of a text to an id (sorted, so the mapping is reproducible)."""

    def __init__(self, chars: Iterable[str]):
        self.itos = sorted(set(chars))
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls(text)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        check_str("text", text)
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary "
                             f"({len(self)} characters)") from None

    def encode_tensor(self, text: str) -> torch.Tensor:
        """``encode`` as a 1-D int64 tensor."""
        return torch.tensor(self.encode(text), dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[i] for i in token_id_list("ids", ids, len(self)))

    def to_dict(self) -> dict:
        return {"itos": self.itos}

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters)"


class WordVocab:
    """Word ↔ id table: the special tokens ``specials`` first (ids 0, 1, ...), then the words;
    a word not in the table maps to ``unk``. Subclasses choose their specials and how text
    becomes words (the chapter-4 word LM, the chapter-6 translation model)."""

    specials: tuple[str, ...] = ("<unk>",)
    unk: str = "<unk>"

    def __init__(self, itos: Sequence[str]):
        itos = list(itos)
        if tuple(itos[:len(self.specials)]) != self.specials:
            raise ValueError(f"a {type(self).__name__} must start with {self.specials}, "
                             f"got {tuple(itos[:len(self.specials)])}")
        self.itos = itos
        self.stoi = {w: i for i, w in enumerate(itos)}
        if len(self.stoi) != len(itos):
            raise ValueError(f"the vocabulary has duplicate words: "
                             f"{sorted(w for w, n in Counter(itos).items() if n > 1)[:5]}")
        self.unk_id = self.stoi[self.unk]

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1,
              max_size: int | None = None) -> "WordVocab":
        """The words of ``sentences`` (lists of words) seen at least ``min_freq`` times, most
        frequent first (ties alphabetical), at most ``max_size`` entries with the specials."""
        min_freq = check_int("min_freq", min_freq, low=1)
        n_special = len(cls.specials)
        max_size = check_int("max_size", max_size, low=n_special + 1, allow_none=True)
        counts = Counter(w for words in sentences for w in words)
        words = sorted((w for w, n in counts.items() if n >= min_freq and w not in cls.specials),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size - n_special]
        return cls(list(cls.specials) + words)

    def __len__(self) -> int:
        return len(self.itos)

    def encode_words(self, words: Sequence[str]) -> list[int]:
        """Ids of ``words``; unknown words get ``unk_id``."""
        return [self.stoi.get(w, self.unk_id) for w in words]

    def decode_words(self, ids: Iterable[int]) -> list[str]:
        """The words of ``ids`` (every id must be in the vocabulary)."""
        return [self.itos[i] for i in token_id_list("ids", ids, len(self))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} words)"


def shakespeare_char_vocab() -> CharVocab:
    """The character vocabulary of the whole shipped Shakespeare corpus (all three splits, sorted),
    shared by every character model of the course so their checkpoints and scores line up."""
    from .data import load_shakespeare

    text = load_shakespeare()
    return CharVocab.from_text(text.train + text.validation + text.test)
