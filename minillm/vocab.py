"""A character vocabulary: the simplest tokenizer, shared by the early chapters."""

from __future__ import annotations

from typing import Iterable

import torch


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
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"character {e.args[0]!r} is not in the vocabulary "
                             f"({len(self)} characters)") from None

    def encode_tensor(self, text: str) -> torch.Tensor:
        return torch.tensor(self.encode(text), dtype=torch.long)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < len(self)]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary [0, {len(self)})")
        return "".join(self.itos[i] for i in ids)

    def to_dict(self) -> dict:
        return {"itos": self.itos}

    def __repr__(self) -> str:
        return f"CharVocab({len(self)} characters)"


def shakespeare_char_vocab() -> CharVocab:
    """The character vocabulary of the whole shipped Shakespeare corpus (all three splits, sorted),
    shared by every character model of the course so their checkpoints and scores line up."""
    from .data import load_shakespeare

    text = load_shakespeare()
    return CharVocab.from_text(text.train + text.validation + text.test)
