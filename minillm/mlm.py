"""BERT's two pretraining tasks as data: masked-language-model masking and next-sentence pairs.

Masked language modelling (Devlin et al., 2019, §3.1): choose 15% of the real tokens; of those, 80%
become ``[MASK]``, 10% a random token and 10% stay unchanged; the model predicts the original token
at every chosen position (labels -100 elsewhere, which the cross-entropy ignores). The random and
unchanged 20% keep the model from learning that only ``[MASK]`` positions matter, since ``[MASK]``
never appears when the model is later fine-tuned.

:func:`mask_tokens` draws exactly as Hugging Face's ``DataCollatorForLanguageModeling`` does (one
Bernoulli draw per position for "chosen", one for "[MASK]", one for "random", then random ids over
the whole vocabulary), so with the same ``torch.Generator`` state both give the same tensors. The
15% is therefore a per-position probability, not an exact count per sequence.

Next-sentence prediction: a pair ``[CLS] A [SEP] B [SEP]`` where B is A's true successor half of the
time (label 0, "IsNext", as in Hugging Face) and a sentence from another document otherwise
(label 1, "NotNext"). :func:`make_nsp_pairs` builds the pairs, :class:`PretrainingCollator` turns
them into padded, masked batches that ``BertForPreTraining(**batch)`` takes.

Shape letters: B batch, T sequence length (the longest example of the batch).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .validation import check_float, check_int, check_tensor, describe

IGNORE_INDEX = -100  # label of positions the MLM loss skips (and of examples the NSP loss skips)
IS_NEXT, NOT_NEXT = 0, 1  # next_sentence_label values, as in Hugging Face's BertForPreTraining


# ----------------------------------------------------------------------------- MLM masking

def mask_tokens(input_ids: torch.Tensor, *, vocab_size: int, mask_token_id: int,
                special_ids: Collection[int], mlm_probability: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's 80/10/10 masking of ``input_ids`` (any shape, usually (B, T)); returns new tensors.

    Args:
        input_ids: integer token ids; not modified.
        vocab_size: random replacements are drawn from ``[0, vocab_size)`` (as BERT and HF do).
        mask_token_id: the id of ``[MASK]``.
        special_ids: ids never chosen: ``[CLS]``, ``[SEP]``, ``[PAD]``… (include the padding id).
        mlm_probability: probability that a non-special position is chosen.
        generator: a seeded ``torch.Generator`` for reproducible masks (default: the global RNG).

    Returns:
        ``(inputs, labels)``, both shaped like ``input_ids``: ``inputs`` with the chosen positions
        replaced, ``labels`` holding the original id at chosen positions and -100 elsewhere.
    """
    check_tensor("input_ids", input_ids, dtype_kind="int")
    vocab_size = check_int("vocab_size", vocab_size, low=1)
    mask_token_id = check_int("mask_token_id", mask_token_id, low=0, high=vocab_size - 1)
    mlm_probability = check_float("mlm_probability", mlm_probability, low=0, high=1)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {describe(generator)}")
    special = _special_id_tensor(special_ids)
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise ValueError(f"input_ids must be token ids in [0, {vocab_size}), got values in "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]")
    input_ids = input_ids.long()
    labels = input_ids.clone()
    inputs = input_ids.clone()

    probability = torch.full(labels.shape, mlm_probability)
    probability.masked_fill_(torch.isin(input_ids.cpu(), special), 0.0)
    chosen = torch.bernoulli(probability, generator=generator).bool()
    labels[~chosen.to(labels.device)] = IGNORE_INDEX

    # 80% of the chosen -> [MASK]; half of the other 20% -> a random id; the rest stay as they are
    to_mask = torch.bernoulli(torch.full(labels.shape, 0.8), generator=generator).bool() & chosen
    to_random = (torch.bernoulli(torch.full(labels.shape, 0.5), generator=generator).bool()
                 & chosen & ~to_mask)
    random_ids = torch.randint(vocab_size, labels.shape, dtype=torch.long, generator=generator)
    inputs[to_mask.to(inputs.device)] = mask_token_id
    inputs[to_random.to(inputs.device)] = random_ids[to_random].to(inputs.device)
    return inputs, labels


def _special_id_tensor(special_ids: Any) -> torch.Tensor:
    if isinstance(special_ids, (str, bytes)) or not isinstance(special_ids, Collection):
        raise TypeError(f"special_ids must be a collection of ints (e.g. the ids of [PAD], [CLS], "
                        f"[SEP], [MASK]), got {describe(special_ids)}")
    ids = [check_int(f"special_ids[{k}]", i, low=0) for k, i in enumerate(special_ids)]
    return torch.tensor(ids, dtype=torch.long)


# ----------------------------------------------------------------------------- NSP pairs

@dataclass(frozen=True)
class SentencePair:
    """One pretraining example: segment A, segment B (empty for a single-segment example) and the
    NSP label (0 IsNext, 1 NotNext, -100 none). ``source_a``/``source_b`` are the (document,
    sentence) indices the segments came from, so a test can check what "next" meant."""

    tokens_a: list[int]
    tokens_b: list[int]
    next_sentence_label: int
    source_a: tuple[int, int] = (-1, -1)
    source_b: tuple[int, int] = (-1, -1)


def truncate_pair(a: list[int], b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Shorten the longer of ``a``/``b`` from its end, one token at a time, until
    ``len(a) + len(b) <= max_tokens`` (BERT's ``truncate_seq_pair``, without its random side)."""
    a, b = list(a), list(b)
    while len(a) + len(b) > max_tokens:
        (a if len(a) >= len(b) else b).pop()
    return a, b


def make_nsp_pairs(documents: Sequence[Sequence[Sequence[int]]], *, max_length: int = 128,
                   random_next_probability: float = 0.5, seed: int = 0) -> list[SentencePair]:
    """Next-sentence-prediction pairs from ``documents`` (each a list of sentences of token ids).

    Every sentence that has a successor in its document becomes segment A once. With probability
    ``random_next_probability`` its B is a random sentence of another document (label 1, NotNext),
    otherwise the next sentence (label 0, IsNext). The pair is truncated so that
    ``[CLS] A [SEP] B [SEP]`` fits ``max_length`` tokens. Deterministic for a given ``seed``.
    """
    max_length = check_int("max_length", max_length, low=5)
    random_next_probability = check_float("random_next_probability", random_next_probability,
                                          low=0, high=1)
    seed = check_int("seed", seed)
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of documents, each a list of sentences of token "
                        f"ids, got {describe(documents)}")
    docs = [[list(s) for s in doc if len(s) > 0] for doc in documents]
    if sum(1 for d in docs if d) < 2 and random_next_probability > 0:
        raise ValueError(f"documents must hold at least 2 non-empty documents to draw NotNext "
                         f"sentences from another document, got {sum(1 for d in docs if d)}")
    others = [i for i, d in enumerate(docs) if d]
    rng = random.Random(seed)
    pairs = []
    for d, doc in enumerate(docs):
        for i in range(len(doc) - 1):
            if rng.random() < random_next_probability:
                other = d
                while other == d:
                    other = others[rng.randrange(len(others))]
                j = rng.randrange(len(docs[other]))
                b, label, source_b = docs[other][j], NOT_NEXT, (other, j)
            else:
                b, label, source_b = doc[i + 1], IS_NEXT, (d, i + 1)
            a, b = truncate_pair(doc[i], b, max_length - 3)
            pairs.append(SentencePair(a, b, label, (d, i), source_b))
    return pairs


def pack_sentences(sentences: Sequence[Sequence[int]], max_tokens: int) -> list[list[int]]:
    """Join consecutive sentences greedily into segments of at most ``max_tokens`` ids (a sentence
    longer than that is cut into pieces): short lines become segments worth predicting across."""
    max_tokens = check_int("max_tokens", max_tokens, low=1)
    segments: list[list[int]] = []
    current: list[int] = []
    for sentence in sentences:
        sentence = list(sentence)
        if current and len(current) + len(sentence) > max_tokens:
            segments.append(current)
            current = []
        while len(sentence) > max_tokens:
            segments.append(sentence[:max_tokens])
            sentence = sentence[max_tokens:]
        current += sentence
    if current:
        segments.append(current)
    return segments


def pack_stream(texts: Sequence[Sequence[int]], length: int, sep_token_id: int) -> list[list[int]]:
    """Concatenate ``texts`` (token ids) with ``sep_token_id`` after each and cut the stream into
    windows of exactly ``length`` ids (the partial last window is dropped): MLM examples without
    padding, as RoBERTa's "full sentences"."""
    length = check_int("length", length, low=1)
    sep_token_id = check_int("sep_token_id", sep_token_id, low=0)
    stream: list[int] = []
    for t in texts:
        stream.extend(t)
        stream.append(sep_token_id)
    return [stream[i:i + length] for i in range(0, len(stream) - length + 1, length)]


# ----------------------------------------------------------------------------- batches

@dataclass(frozen=True)
class PretrainingCollator:
    """Turns :class:`SentencePair` examples into one padded, masked batch (a dict of tensors that
    ``BertForPreTraining(**batch)`` accepts): ``[CLS] A [SEP] B [SEP]``, token types 0 for
    ``[CLS] A [SEP]`` and 1 for ``B [SEP]``, then :func:`mask_tokens` on the real tokens.

    A single-segment example (empty ``tokens_b``) becomes ``[CLS] A [SEP]`` with NSP label -100."""

    vocab_size: int  # random MLM replacements come from [0, vocab_size)
    pad_token_id: int
    cls_token_id: int
    sep_token_id: int
    mask_token_id: int
    special_ids: tuple[int, ...]  # never masked (all of the above, [UNK] too)
    mlm_probability: float = 0.15  # per-position chance of being chosen for prediction

    def __post_init__(self) -> None:
        check_int("vocab_size", self.vocab_size, low=1)
        for name in ("pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id"):
            check_int(name, getattr(self, name), low=0, high=self.vocab_size - 1)
        object.__setattr__(self, "special_ids", tuple(_special_id_tensor(self.special_ids).tolist()))
        check_float("mlm_probability", self.mlm_probability, low=0, high=1)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, mlm_probability: float = 0.15) -> "PretrainingCollator":
        """A collator for a tokenizer with ``token_to_id``, ``vocab_size`` and BERT's five specials
        ``[PAD] [UNK] [CLS] [SEP] [MASK]``."""
        ids = {t: tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")}
        return cls(vocab_size=tokenizer.vocab_size, pad_token_id=ids["[PAD]"],
                   cls_token_id=ids["[CLS]"], sep_token_id=ids["[SEP]"],
                   mask_token_id=ids["[MASK]"], special_ids=tuple(ids.values()),
                   mlm_probability=mlm_probability)

    def layout(self, examples: Sequence[SentencePair]) -> dict[str, torch.Tensor]:
        """The unmasked batch: input_ids, token_type_ids, attention_mask (B, T) and
        next_sentence_label (B,), padded on the right to the longest example."""
        if isinstance(examples, SentencePair) or not isinstance(examples, Sequence) or not examples:
            raise TypeError(f"examples must be a non-empty list of SentencePair, got {describe(examples)}")
        rows, types = [], []
        for k, ex in enumerate(examples):
            if not isinstance(ex, SentencePair):
                raise TypeError(f"examples[{k}] must be a SentencePair, got {describe(ex)}")
            ids = [self.cls_token_id, *ex.tokens_a, self.sep_token_id]
            tt = [0] * len(ids)
            if ex.tokens_b:
                ids += [*ex.tokens_b, self.sep_token_id]
                tt += [1] * (len(ex.tokens_b) + 1)
            rows.append(ids)
            types.append(tt)
        T = max(len(r) for r in rows)
        B = len(rows)
        input_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long)  # (B, T)
        token_type_ids = torch.zeros(B, T, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros(B, T, dtype=torch.long)  # (B, T): 1 = real token
        for b, (ids, tt) in enumerate(zip(rows, types)):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            token_type_ids[b, :len(ids)] = torch.tensor(tt)
            attention_mask[b, :len(ids)] = 1
        next_sentence_label = torch.tensor([ex.next_sentence_label for ex in examples])  # (B,)
        return {"input_ids": input_ids, "token_type_ids": token_type_ids,
                "attention_mask": attention_mask, "next_sentence_label": next_sentence_label}

    def __call__(self, examples: Sequence[SentencePair],
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The masked batch: :meth:`layout` plus MLM ``labels`` (B, T) and masked ``input_ids``."""
        batch = self.layout(examples)
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], vocab_size=self.vocab_size, mask_token_id=self.mask_token_id,
            special_ids=self.special_ids, mlm_probability=self.mlm_probability, generator=generator)
        return batch
