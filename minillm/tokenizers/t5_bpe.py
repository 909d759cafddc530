"""The tokenizer of the chapter-10 T5: our byte-level BPE with T5's special tokens and sentinels.

T5 itself uses a 32k SentencePiece vocabulary; ours is the course's byte-level BPE (chapter 3)
trained on the course corpus, laid out the way T5 lays out its ids, so the model code needs no
special cases:

| ids | tokens |
|---|---|
| 0, 1, 2 | ``<pad>`` (also the decoder start), ``</s>`` (end of sequence), ``<unk>`` |
| 3 ... 3 + n − 1 | the n byte-level BPE tokens (BPE id k is id k + 3) |
| vocab_size − 100 ... vocab_size − 1 | the sentinels ``<extra_id_99>`` ... ``<extra_id_0>`` |

``<unk>`` is never produced (every byte has a token) but exists, as in T5. The tokenizer is
rebuilt from its BPE merges alone (:meth:`T5BPETokenizer.to_dict` / :meth:`from_dict`), so a
checkpoint's metadata carries it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ..validation import check_bool, check_int, check_str, describe
from .gpt2 import ByteLevelBPE, bytes_to_unicode

PAD, EOS, UNK = 0, 1, 2
NUM_SPECIAL = 3  # <pad> </s> <unk> before the BPE tokens
SPECIAL_NAMES = ("<pad>", "</s>", "<unk>")
_SENTINEL = re.compile(r"<extra_id_(\d+)>")


class T5BPETokenizer:
    """Byte-level BPE ids shifted past ``<pad> </s> <unk>``, with ``num_sentinels`` sentinels on top.

    ``encode(text)`` turns ``<extra_id_N>`` written in the text into sentinel N (so a learner can
    write a fill-in-the-blanks prompt) and appends ``</s>`` unless ``add_eos=False``; ``decode``
    drops ``<pad>``/``</s>`` (``skip_special_tokens=True``, the default) and writes sentinels as
    ``<extra_id_N>``.
    """

    def __init__(self, bpe: ByteLevelBPE, num_sentinels: int = 100):
        if not isinstance(bpe, ByteLevelBPE):
            raise TypeError(f"bpe must be a ByteLevelBPE, got {describe(bpe)}")
        if bpe.special_tokens:
            raise ValueError(f"bpe must have no special tokens (the T5 layout adds its own), got "
                             f"{sorted(bpe.special_tokens)}")
        self.bpe = bpe
        self.num_sentinels = check_int("num_sentinels", num_sentinels, low=1)
        self.vocab_size = NUM_SPECIAL + bpe.vocab_size + self.num_sentinels
        self.pad_token_id, self.eos_token_id, self.unk_token_id = PAD, EOS, UNK

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int, num_sentinels: int = 100) -> "T5BPETokenizer":
        """Learn the BPE on ``texts`` so that the whole vocabulary (specials + BPE + sentinels) has
        ``vocab_size`` ids."""
        check_int("num_sentinels", num_sentinels, low=1)
        low = NUM_SPECIAL + 256 + num_sentinels
        check_int("vocab_size", vocab_size, low=low)
        return cls(ByteLevelBPE.train(texts, vocab_size - NUM_SPECIAL - num_sentinels,
                                      special_tokens=()), num_sentinels)

    def __len__(self) -> int:
        return self.vocab_size

    def sentinel_id(self, i: int) -> int:
        """The id of ``<extra_id_i>``: ``vocab_size - 1 - i``."""
        check_int("i", i, low=0, high=self.num_sentinels - 1)
        return self.vocab_size - 1 - i

    @property
    def first_sentinel_id(self) -> int:
        """The lowest sentinel id; every ordinary token id is below it."""
        return self.vocab_size - self.num_sentinels

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Token ids of ``text`` (``<extra_id_N>`` → sentinel N), then ``</s>`` if ``add_eos``."""
        check_str("text", text)
        check_bool("add_eos", add_eos)
        out: list[int] = []
        start = 0
        for m in _SENTINEL.finditer(text):
            out.extend(i + NUM_SPECIAL for i in self.bpe.encode_ordinary(text[start:m.start()]))
            out.append(self.sentinel_id(int(m.group(1))))
            start = m.end()
        out.extend(i + NUM_SPECIAL for i in self.bpe.encode_ordinary(text[start:]))
        return out + [EOS] if add_eos else out

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; sentinels as ``<extra_id_N>``; ``<pad> </s> <unk>`` dropped when
        ``skip_special_tokens`` else written out. Ids may be a list or a 1-D tensor."""
        check_bool("skip_special_tokens", skip_special_tokens)
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        parts: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                parts.append(self.bpe.decode(run))
                run.clear()

        for i in ids:
            check_int("ids entries", i, low=0, high=self.vocab_size - 1)
            if i < NUM_SPECIAL:
                flush()
                if not skip_special_tokens:
                    parts.append(SPECIAL_NAMES[i])
            elif i >= self.first_sentinel_id:
                flush()
                parts.append(f"<extra_id_{self.vocab_size - 1 - i}>")
            else:
                run.append(i - NUM_SPECIAL)
        flush()
        return "".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """What rebuilds this tokenizer: the BPE merges (as token-string pairs) and the sentinel count."""
        return {"bpe_merges": [list(m) for m in self.bpe.merges], "num_sentinels": self.num_sentinels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "T5BPETokenizer":
        """The tokenizer :meth:`to_dict` described (byte tokens, then one token per new merge)."""
        if not isinstance(d, dict) or "bpe_merges" not in d:
            raise ValueError(f"expected a dict with 'bpe_merges' (from T5BPETokenizer.to_dict), got "
                             f"{describe(d)}")
        names = [bytes_to_unicode()[b] for b in bytes_to_unicode()]
        seen = set(names)
        for a, b in d["bpe_merges"]:
            if a + b not in seen:  # as ByteLevelBPE.train numbers them
                names.append(a + b)
                seen.add(a + b)
        bpe = ByteLevelBPE({t: i for i, t in enumerate(names)}, [tuple(m) for m in d["bpe_merges"]],
                           special_tokens=())
        return cls(bpe, d.get("num_sentinels", 100))

    def __repr__(self) -> str:
        return (f"T5BPETokenizer(vocab_size={self.vocab_size}, bpe={self.bpe.vocab_size}, "
                f"sentinels={self.num_sentinels})")


__all__ = ["T5BPETokenizer", "PAD", "EOS", "UNK"]
