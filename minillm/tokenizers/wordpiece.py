"""WordPiece, BERT's tokenizer (Devlin et al., 2019; Wu et al., 2016): greedy longest-match subwords.

A word is split into the longest vocabulary entry that starts it, then the longest entry (written
with a ``##`` prefix) that continues it, and so on; if some position matches nothing, the whole word
becomes ``[UNK]``. Before that, BERT normalizes text (drops control characters, lowercases, strips
accents, puts spaces around CJK ideographs) and splits it on whitespace and punctuation. Both steps
follow Hugging Face ``tokenizers``' ``BertNormalizer`` and ``BertPreTokenizer`` (tests check parity).

``WordPiece.train`` learns a vocabulary with the BPE loop of ``minillm.tokenizers.bpe`` on characters,
marking non-initial characters with ``##`` (how Hugging Face's ``WordPieceTrainer`` works too).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import regex

from .bpe import train_merges
from .gpt2 import _as_id_list, _check_text

BERT_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


# ASCII text needs no Unicode tables: tab/newline/return become spaces, other control bytes go.
_ASCII_CLEAN = {**{c: None for c in [*range(32), 127]}, **{ord(c): " " for c in "\t\n\r"}}
# One word = a run of non-space, non-punctuation characters; each punctuation mark stands alone.
_PUNCT = r"\p{P}!-/:-@\[-`{-~"
_WORD_OR_PUNCT = regex.compile(rf"[^\s{_PUNCT}]+|[{_PUNCT}]")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return cp >= 0x3400 and any(lo <= cp <= hi for lo, hi in _CJK)


def bert_normalize(text: str, lowercase: bool = True) -> str:
    """BERT's normalizer: drop control characters, map whitespace to spaces, space out CJK
    ideographs, and (when ``lowercase``) strip accents and lowercase."""
    if text.isascii():
        text = text.translate(_ASCII_CLEAN)
        return text.lower() if lowercase else text
    out = []
    for ch in text:
        if ch in "\t\n\r" or (ch.isspace() and not unicodedata.category(ch).startswith("C")):
            out.append(" ")
        elif ch in "\x00\ufffd" or unicodedata.category(ch).startswith("C"):
            continue
        elif _is_cjk(ch):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = "".join(out)
    if lowercase:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        text = text.lower()
    return text


def bert_pretokenize(text: str) -> list[str]:
    """Split normalized text on whitespace, and make every punctuation character its own word."""
    return _WORD_OR_PUNCT.findall(text)


class WordPiece:
    """BERT-style WordPiece tokenizer over a fixed vocabulary (a list of token strings; id = position).

    Args:
        vocab: the tokens; continuation pieces start with ``##``.
        unk_token: the token for words that cannot be split.
        lowercase: lowercase and strip accents (BERT "uncased").
        max_input_chars_per_word: longer words become ``unk_token`` directly.
    """

    def __init__(self, vocab: list[str], unk_token: str = "[UNK]", lowercase: bool = True,
                 max_input_chars_per_word: int = 100,
                 special_tokens: Iterable[str] = BERT_SPECIAL_TOKENS):
        if isinstance(vocab, (str, dict)) or not isinstance(vocab, Iterable):
            raise TypeError(f"vocab must be a list of token strings, got {type(vocab).__name__}")
        self.itos = list(vocab)
        self.vocab = {t: i for i, t in enumerate(self.itos)}
        if len(self.vocab) != len(self.itos):
            dup = [t for t, n in Counter(self.itos).items() if n > 1]
            raise ValueError(f"vocab has duplicate tokens, e.g. {dup[:3]}")
        if unk_token not in self.vocab:
            raise ValueError(f"unk_token {unk_token!r} is not in the vocabulary")
        self.unk_token = unk_token
        self.lowercase = lowercase
        self.max_input_chars_per_word = max_input_chars_per_word
        self.special_tokens = {t: self.vocab[t] for t in special_tokens if t in self.vocab}

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int,
              special_tokens: Iterable[str] = BERT_SPECIAL_TOKENS, *, lowercase: bool = True,
              min_frequency: int = 2, progress: bool = False) -> "WordPiece":
        """Learn a vocabulary of ``vocab_size`` tokens: special tokens, every character seen (alone
        and as ``##`` continuation), then BPE merges of the most frequent adjacent pieces. The
        vocabulary is never smaller than that alphabet, and ends early if no pair occurs
        ``min_frequency`` times."""
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        specials = list(special_tokens)
        if isinstance(texts, (bytes, dict)) or not isinstance(texts, (str, Iterable)):
            raise TypeError(f"texts must be a str or an iterable of str, got {type(texts).__name__}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        words: Counter = Counter()
        for t in texts:
            words.update(bert_pretokenize(bert_normalize(_check_text(t), lowercase)))
        pieces = {}
        for w in words:
            pieces[w] = [w[0]] + ["##" + c for c in w[1:]]
        alphabet = sorted({p for ps in pieces.values() for p in ps} - set(specials))
        symbols = specials + alphabet
        index = {s: i for i, s in enumerate(symbols)}
        word_ids = {tuple(index[p] for p in pieces[w]): n for w, n in words.items()}
        train_merges(word_ids, symbols, max(vocab_size, len(symbols)),
                     join=lambda a, b: a + b.removeprefix("##"), min_frequency=min_frequency,
                     progress=progress)
        unk = "[UNK]" if "[UNK]" in symbols else specials[0] if specials else None
        if unk is None:
            raise ValueError("WordPiece needs an unknown token: include '[UNK]' in special_tokens")
        return cls(symbols, unk_token=unk, lowercase=lowercase, special_tokens=specials)

    @classmethod
    def from_file(cls, vocab_txt: str | Path, **kwargs: Any) -> "WordPiece":
        """Load a BERT ``vocab.txt`` (one token per line, id = line number)."""
        return cls(Path(vocab_txt).read_text(encoding="utf-8").splitlines(), **kwargs)

    def save(self, vocab_txt: str | Path) -> Path:
        """Write the vocabulary as a BERT ``vocab.txt`` (readable by Hugging Face's BERT tokenizers)."""
        path = Path(vocab_txt)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(t + "\n" for t in self.itos), encoding="utf-8")
        return path

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def __len__(self) -> int:
        return len(self.itos)

    def token_to_id(self, token: str) -> int:
        if token not in self.vocab:
            raise ValueError(f"token {token!r} is not in the vocabulary ({self.vocab_size} tokens)")
        return self.vocab[token]

    def id_to_token(self, id: int) -> str:
        return self.itos[self._check_ids([id])[0]]

    def split_word(self, word: str) -> list[str]:
        """Greedy longest-match-first split of one pre-tokenized word into vocabulary pieces."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Token strings of ``text`` (without [CLS]/[SEP])."""
        words = bert_pretokenize(bert_normalize(_check_text(text), self.lowercase))
        return [p for w in words for p in self.split_word(w)]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``, wrapped in ``[CLS] ... [SEP]`` when ``add_special_tokens``."""
        ids = [self.vocab[t] for t in self.tokenize(text)]
        if add_special_tokens:
            for tok in ("[CLS]", "[SEP]"):
                if tok not in self.vocab:
                    raise ValueError(f"add_special_tokens=True needs {tok!r} in the vocabulary")
            ids = [self.vocab["[CLS]"]] + ids + [self.vocab["[SEP]"]]
        return ids

    def _check_ids(self, ids: Any) -> list[int]:
        ids = _as_id_list(ids)
        bad = [i for i in ids if not 0 <= i < len(self.itos)]
        if bad:
            raise ValueError(f"ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})")
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Join the pieces: ``##`` pieces attach to the previous one, words are separated by spaces.

        Lossy by design: case, accents and the spacing around punctuation are gone.
        """
        ids = self._check_ids(ids)
        specials = set(self.special_tokens.values()) if skip_special_tokens else set()
        text = " ".join(self.itos[i] for i in ids if i not in specials)
        return text.replace(" ##", "")

    def __repr__(self) -> str:
        return f"WordPiece(vocab_size={self.vocab_size}, lowercase={self.lowercase})"

    # ---- pairs and padded batches (BERT's model inputs)

    def encode_pair(self, text: str, pair: str | None = None, *, max_length: int | None = None
                    ) -> tuple[list[int], list[int]]:
        """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` ids and their token_type_ids (0 for the
        first part, 1 for B's tokens and its [SEP]). With ``max_length`` the text is truncated as
        Hugging Face's ``longest_first`` does: the shorter part keeps at most half the room."""
        for tok in ("[CLS]", "[SEP]"):
            if tok not in self.vocab:
                raise ValueError(f"encode_pair needs {tok!r} in the vocabulary")
        a = self.encode(text, add_special_tokens=False)
        b = None if pair is None else self.encode(pair, add_special_tokens=False)
        specials = 2 if b is None else 3
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < specials:
                raise ValueError(f"max_length must be an int >= {specials} (room for the special "
                                 f"tokens), got {max_length!r}")
            room = max_length - specials
            if b is None:
                a = a[:room]
            elif len(a) + len(b) > room:
                if len(a) <= len(b):  # the shorter part keeps at most half the room (ties: A)
                    keep_a = min(len(a), room // 2)
                    a, b = a[:keep_a], b[:room - keep_a]
                else:
                    keep_b = min(len(b), room // 2)
                    a, b = a[:room - keep_b], b[:keep_b]
        cls, sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        ids = [cls, *a, sep]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, sep]
            types += [1] * (len(b) + 1)
        return ids, types

    def batch_encode(self, texts: list[str], pairs: list[str] | None = None, *,
                     max_length: int | None = None, padding: str = "longest") -> dict[str, Any]:
        """Encode a batch for a BERT model: a dict of int64 tensors ``input_ids``,
        ``token_type_ids`` and ``attention_mask`` (1 = real token), each (B, T), padded on the right
        with ``[PAD]`` to the longest text (``padding="longest"``) or to ``max_length``
        (``padding="max_length"``); texts longer than ``max_length`` are truncated."""
        import torch

        if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
            raise TypeError(f"texts must be a non-empty list of strings, got {type(texts).__name__}")
        if pairs is not None and (isinstance(pairs, str) or len(pairs) != len(texts)):
            raise ValueError(f"pairs must be a list with one text per text ({len(texts)}), got "
                             f"{type(pairs).__name__} of length {len(pairs)}")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if "[PAD]" not in self.vocab:
            raise ValueError("batch_encode needs '[PAD]' in the vocabulary")
        rows = [self.encode_pair(t, None if pairs is None else pairs[i], max_length=max_length)
                for i, t in enumerate(texts)]
        T = max_length if padding == "max_length" else max(len(ids) for ids, _ in rows)
        pad = self.vocab["[PAD]"]
        ids = torch.full((len(rows), T), pad, dtype=torch.long)
        types = torch.zeros(len(rows), T, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        for r, (i, t) in enumerate(rows):
            ids[r, :len(i)] = torch.tensor(i)
            types[r, :len(t)] = torch.tensor(t)
            mask[r, :len(i)] = 1
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
