"""Chapter 9's two pretrained BERTs: their data, their training, their tokenizers, and loading them.

* ``ch09-bert-en``: a small English BERT pretrained with MLM + NSP (Devlin et al., 2019). Its
  WordPiece vocabulary (~8k tokens) is learned on the training text; NSP pairs come from
  Shakespeare's training split (a "document" is a stretch of a work between two double blank lines,
  its "sentences" are consecutive lines packed to at most 62 tokens), and MLM also runs on the
  Rotten Tomatoes training snippets (labels unused: domain text for the chapter's classifier),
  packed into 128-token windows.
* ``ch09-bert-zh-char``: a character-level Chinese BERT pretrained with MLM only on the training
  splits of People's Daily (January 1998) and the Chinese sentiment reviews, packed into windows.
  Its vocabulary is every character seen at least twice there, plus BERT's special tokens.

Both use the same small size (4 layers, width 192, 4 heads, FFN 768, 128 positions; 3.5M and
2.7M parameters) and 2,000 steps, sized to under a quarter of an hour of one CPU core's time (the
checkpoint metadata records the measured ``train_cpu_seconds``), and ship as files of 11–14 MB.
Both are weak by BERT standards (far fewer tokens than any published BERT saw): they predict
masked tokens well above a unigram guess, which is what chapter 9 compares against random init.
Validation and test text is never trained on: the recorded metrics are measured on the
validation splits with a fixed masking seed.

The loss gathers the masked positions before the vocabulary projection (as the original BERT code
does with ``masked_lm_positions``): the same loss as ``BertForPreTraining(**batch).loss`` (tests
check it), for a fraction of the cost of projecting every position onto the vocabulary.

Shape letters: B batch, T sequence length, H hidden size, V vocabulary, N masked positions.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..mlm import (IGNORE_INDEX, PretrainingCollator, SentencePair, make_nsp_pairs, pack_sentences,
                   pack_stream)
from ..tokenizers.wordpiece import BERT_SPECIAL_TOKENS, WordPiece
from ..validation import check_int, check_str, describe

EN_RECIPE_NAME = "ch09-bert-en"
ZH_RECIPE_NAME = "ch09-bert-zh-char"
MAX_LENGTH = 128  # positions of both models: [CLS] A [SEP] B [SEP] fits in it
# BertConfig fields (vocab_size comes from the tokenizer). No dropout while pretraining: in a run
# this short it slows learning more than it regularises (Geiping & Goldstein, 2022, "Cramming",
# drop it too); the validation metrics show whether the model overfits. Fine-tuning sets its own.
BERT_SIZE = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=768, max_position_embeddings=MAX_LENGTH,
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
EN_VOCAB_SIZE = 8192  # WordPiece.train target
ZH_MIN_FREQUENCY = 2  # characters seen fewer times become [UNK]
EN_BATCH = dict(nsp_pairs=24, mlm_windows=8)  # per step: Shakespeare pairs + Rotten Tomatoes windows
ZH_BATCH = 32  # MLM windows per step
# TrainConfig fields. lr 1e-3 beat 5e-4 and 2e-3 in 300- and 500-step trial runs of ch09-bert-en
EN_TRAIN = dict(steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.01,
                betas=(0.9, 0.98), eval_every=250, eval_batches=12)
ZH_TRAIN = dict(steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100, weight_decay=0.01,
                betas=(0.9, 0.98), eval_every=250, eval_batches=12)
EN_VALIDATION = dict(nsp_pairs=256, mlm_windows=64)  # held-out examples behind the metrics
ZH_VALIDATION = dict(mlm_windows=256)
VALIDATION_MASK_SEED = 1234  # the fixed masks of the validation examples


# ----------------------------------------------------------------------------- tokenizer

class CharTokenizer:
    """A character-level BERT tokenizer: one id per character (unknown characters → ``[UNK]``),
    with BERT's special tokens ``[PAD] [UNK] [CLS] [SEP] [MASK]`` as ids 0–4, as in
    :class:`~minillm.tokenizers.wordpiece.WordPiece`. One id per character keeps character-level
    labels (BIO tags for Chinese NER) aligned with the tokens without any offset bookkeeping."""

    def __init__(self, vocab: Sequence[str], unk_token: str = "[UNK]",
                 special_tokens: Iterable[str] = BERT_SPECIAL_TOKENS):
        if isinstance(vocab, (str, dict)) or not isinstance(vocab, Iterable):
            raise TypeError(f"vocab must be a list of token strings, got {describe(vocab)}")
        self.itos = [check_str(f"vocab[{k}]", t, allow_empty=False) for k, t in enumerate(vocab)]
        self.vocab = {t: i for i, t in enumerate(self.itos)}
        if len(self.vocab) != len(self.itos):
            dup = [t for t, n in Counter(self.itos).items() if n > 1]
            raise ValueError(f"vocab has duplicate tokens, e.g. {dup[:3]}")
        if unk_token not in self.vocab:
            raise ValueError(f"unk_token {unk_token!r} is not in the vocabulary")
        self.unk_token = unk_token
        self.special_tokens = {t: self.vocab[t] for t in special_tokens if t in self.vocab}

    @classmethod
    def train(cls, texts: Iterable[str], min_frequency: int = ZH_MIN_FREQUENCY,
              special_tokens: Iterable[str] = BERT_SPECIAL_TOKENS) -> "CharTokenizer":
        """Specials, then every non-space character seen at least ``min_frequency`` times in
        ``texts``, most frequent first (ties by code point), so the ids are reproducible."""
        min_frequency = check_int("min_frequency", min_frequency, low=1)
        if isinstance(texts, str) or not isinstance(texts, Iterable):
            raise TypeError(f"texts must be an iterable of str, got {describe(texts)}")
        counts: Counter = Counter()
        for k, t in enumerate(texts):
            counts.update(check_str(f"texts[{k}]", t))
        specials = list(special_tokens)
        chars = sorted((c for c, n in counts.items()
                        if n >= min_frequency and not c.isspace() and c not in specials),
                       key=lambda c: (-counts[c], c))
        return cls(specials + chars, special_tokens=specials)

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
        id = check_int("id", id, low=0, high=self.vocab_size - 1)
        return self.itos[id]

    def tokenize(self, text: str | Sequence[str]) -> list[str]:
        """The tokens of ``text`` (a str or a list of characters): one per character."""
        chars = self._chars(text)
        return [c if c in self.vocab else self.unk_token for c in chars]

    def encode(self, text: str | Sequence[str], add_special_tokens: bool = True) -> list[int]:
        """One id per character of ``text``, wrapped in ``[CLS] ... [SEP]`` when
        ``add_special_tokens``."""
        unk = self.vocab[self.unk_token]
        ids = [self.vocab.get(c, unk) for c in self._chars(text)]
        if add_special_tokens:
            ids = [self.token_to_id("[CLS]"), *ids, self.token_to_id("[SEP]")]
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """The characters of ``ids`` joined (specials dropped when ``skip_special_tokens``)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        specials = set(self.special_tokens.values()) if skip_special_tokens else set()
        return "".join(self.id_to_token(i) for i in ids if i not in specials)

    def batch_encode(self, texts: Sequence[str | Sequence[str]], *,
                     max_length: int | None = None) -> dict[str, torch.Tensor]:
        """``[CLS] text [SEP]`` for each text, truncated to ``max_length`` and padded on the right
        with ``[PAD]``: a dict of int64 tensors ``input_ids``, ``token_type_ids``,
        ``attention_mask`` (1 = real token), each (B, T)."""
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
            raise TypeError(f"texts must be a non-empty list of texts, got {describe(texts)}")
        max_length = check_int("max_length", max_length, low=2, allow_none=True)
        rows = [self.encode(t) for t in texts]
        if max_length is not None:
            rows = [r if len(r) <= max_length else r[:max_length - 1] + [r[-1]] for r in rows]
        T = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), T), self.token_to_id("[PAD]"), dtype=torch.long)
        attention_mask = torch.zeros(len(rows), T, dtype=torch.long)
        for b, r in enumerate(rows):
            input_ids[b, :len(r)] = torch.tensor(r)
            attention_mask[b, :len(r)] = 1
        return {"input_ids": input_ids, "token_type_ids": torch.zeros_like(input_ids),
                "attention_mask": attention_mask}

    @staticmethod
    def _chars(text: Any) -> list[str]:
        if isinstance(text, str):
            return list(text)
        if isinstance(text, Sequence) and all(isinstance(c, str) and len(c) == 1 for c in text):
            return list(text)
        raise TypeError(f"text must be a str or a list of single characters, got {describe(text)}")

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# ----------------------------------------------------------------------------- loss and metrics

def _heads(model: nn.Module, batch: dict[str, torch.Tensor]
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """MLM logits at the masked positions (N, V) and their labels (N,), and NSP logits (B, 2) and
    labels (B,) when the model has an NSP head and the batch NSP labels (else None, None)."""
    out = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     token_type_ids=batch["token_type_ids"])
    hidden = out.last_hidden_state  # (B, T, H)
    labels = batch["labels"]  # (B, T)
    chosen = labels != IGNORE_INDEX  # (B, T)
    mlm_logits = model.cls.predictions(hidden[chosen])  # (N, V)
    nsp_head = getattr(model.cls, "seq_relationship", None)
    nsp_labels = batch.get("next_sentence_label")
    if nsp_head is None or nsp_labels is None or not bool((nsp_labels != IGNORE_INDEX).any()):
        return mlm_logits, labels[chosen], None, None
    return mlm_logits, labels[chosen], nsp_head(out.pooler_output), nsp_labels  # (B, 2), (B,)


def pretraining_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """MLM cross-entropy over the masked positions, plus NSP cross-entropy over the examples with
    an NSP label when the model has an NSP head: equal to Hugging Face's
    ``BertForPreTraining(**batch).loss`` (or ``BertForMaskedLM``'s), computed only where needed."""
    mlm_logits, mlm_labels, nsp_logits, nsp_labels = _heads(model, batch)
    loss = F.cross_entropy(mlm_logits.float(), mlm_labels)
    if nsp_logits is not None:
        loss = loss + F.cross_entropy(nsp_logits.float(), nsp_labels, ignore_index=IGNORE_INDEX)
    return loss


@torch.no_grad()
def evaluate_pretraining(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Held-out MLM loss (nats per masked token) and accuracy over every masked position of
    ``batches`` (token-weighted), and NSP accuracy over the labelled pairs (None if there are none).
    Runs in eval mode (no dropout) and fp32, and restores the model's mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count, nsp_correct, nsp_count = 0.0, 0, 0, 0, 0
    try:
        for batch in batches:
            mlm_logits, mlm_labels, nsp_logits, nsp_labels = _heads(model, batch)
            loss_sum += float(F.cross_entropy(mlm_logits.float(), mlm_labels, reduction="sum"))
            correct += int((mlm_logits.argmax(-1) == mlm_labels).sum())
            count += mlm_labels.numel()
            if nsp_logits is not None:
                keep = nsp_labels != IGNORE_INDEX
                nsp_correct += int((nsp_logits.argmax(-1)[keep] == nsp_labels[keep]).sum())
                nsp_count += int(keep.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("the batches hold no masked positions (labels are all -100)")
    return {"mlm_loss": loss_sum / count, "mlm_accuracy": correct / count, "masked_tokens": count,
            "nsp_accuracy": nsp_correct / nsp_count if nsp_count else None, "nsp_pairs": nsp_count}


# ----------------------------------------------------------------------------- data

def shakespeare_documents(text: str, tokenizer: WordPiece,
                          max_segment: int = (MAX_LENGTH - 3) // 2) -> list[list[list[int]]]:
    """NSP documents from Shakespeare text: the stretches between double blank lines (scenes,
    poems), each a list of "sentences" made of consecutive non-empty lines packed to at most
    ``max_segment`` tokens."""
    docs = []
    for block in text.split("\n\n\n"):
        lines = [tokenizer.encode(l, add_special_tokens=False) for l in block.splitlines() if l.strip()]
        segments = pack_sentences([l for l in lines if l], max_segment)
        if segments:
            docs.append(segments)
    return docs


def windows(texts: Iterable[Sequence[int]], sep_token_id: int, length: int = MAX_LENGTH - 2
            ) -> list[SentencePair]:
    """Single-segment MLM examples: ``texts`` packed into windows of ``length`` ids (with
    ``[SEP]`` between texts), so that ``[CLS] window [SEP]`` fills the model's context."""
    return [SentencePair(w, [], IGNORE_INDEX) for w in pack_stream(list(texts), length, sep_token_id)]


class PretrainingBatches:
    """A zero-argument callable returning one masked batch per call: ``n_pairs`` NSP pairs and
    ``n_windows`` MLM windows, each drawn in a shuffled order that is redrawn every epoch (new NSP
    pairs too: ``make_pairs(epoch)``) and masked afresh every time (dynamic masking, as RoBERTa).
    Counts the real (non-padding) tokens it has produced in ``tokens_seen``."""

    def __init__(self, collator: PretrainingCollator, *, make_pairs: Any = None, n_pairs: int = 0,
                 window_examples: Sequence[SentencePair] = (), n_windows: int = 0, seed: int = 0):
        self.collator = collator
        self.n_pairs = check_int("n_pairs", n_pairs, low=0)
        self.n_windows = check_int("n_windows", n_windows, low=0)
        if self.n_pairs + self.n_windows == 0:
            raise ValueError("n_pairs + n_windows must be at least 1")
        if self.n_pairs and make_pairs is None:
            raise ValueError("n_pairs > 0 needs make_pairs(epoch) -> list of SentencePair")
        if self.n_windows and not window_examples:
            raise ValueError("n_windows > 0 needs window_examples")
        self.make_pairs = make_pairs
        self.window_examples = list(window_examples)
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.tokens_seen = 0
        self.pair_epochs = 0  # NSP pair sets drawn so far
        self._pairs: list[SentencePair] = []
        self._windows: list[SentencePair] = []

    def _take(self, pool: list, n: int, refill: Any) -> list:
        out = []
        while len(out) < n:
            if not pool:
                pool.extend(refill())
                self.rng.shuffle(pool)
            out.append(pool.pop())
        return out

    def _next_pairs(self) -> list[SentencePair]:
        pairs = self.make_pairs(self.pair_epochs)
        self.pair_epochs += 1
        return pairs

    def __call__(self) -> dict[str, torch.Tensor]:
        examples = (self._take(self._pairs, self.n_pairs, self._next_pairs)
                    + self._take(self._windows, self.n_windows, lambda: self.window_examples))
        batch = self.collator(examples, generator=self.generator)
        self.tokens_seen += int(batch["attention_mask"].sum())
        return batch


def fixed_batches(collator: PretrainingCollator, examples: Sequence[SentencePair], batch_size: int,
                  seed: int = VALIDATION_MASK_SEED) -> list[dict[str, torch.Tensor]]:
    """Evaluation batches with masks fixed by ``seed``: the same masked tokens on every call."""
    generator = torch.Generator().manual_seed(seed)
    return [collator(examples[i:i + batch_size], generator=generator)
            for i in range(0, len(examples), batch_size)]


def en_validation_batches(tokenizer: WordPiece, *, max_length: int = MAX_LENGTH,
                          batch_size: int = sum(EN_BATCH.values()),
                          nsp_pairs: int = EN_VALIDATION["nsp_pairs"],
                          mlm_windows: int = EN_VALIDATION["mlm_windows"]) -> dict[str, list[dict]]:
    """The fixed held-out batches of ``ch09-bert-en``: ``nsp_pairs`` NSP pairs from Shakespeare's
    validation split and ``mlm_windows`` MLM windows of the Rotten Tomatoes validation texts, masked
    with :data:`VALIDATION_MASK_SEED`. Keys: ``"shakespeare"``, ``"rotten_tomatoes"``."""
    from ..data import load_rotten_tomatoes, load_shakespeare

    collator = PretrainingCollator.from_tokenizer(tokenizer)
    documents = shakespeare_documents(load_shakespeare().validation, tokenizer, (max_length - 3) // 2)
    pairs = make_nsp_pairs(documents, max_length=max_length, seed=0)
    pairs = random.Random(0).sample(pairs, min(nsp_pairs, len(pairs)))
    reviews = windows((tokenizer.encode(ex.text, add_special_tokens=False)
                       for ex in load_rotten_tomatoes().validation),
                      collator.sep_token_id, max_length - 2)[:mlm_windows]
    return {"shakespeare": fixed_batches(collator, pairs, batch_size),
            "rotten_tomatoes": fixed_batches(collator, reviews, batch_size)}


def zh_validation_batches(tokenizer: CharTokenizer, *, max_length: int = MAX_LENGTH,
                          batch_size: int = ZH_BATCH,
                          mlm_windows: int = ZH_VALIDATION["mlm_windows"]) -> dict[str, list[dict]]:
    """The fixed held-out batches of ``ch09-bert-zh-char``: ``mlm_windows // 2`` MLM windows from
    each validation split (People's Daily, sentiment), masked with :data:`VALIDATION_MASK_SEED`.
    Keys: ``"people_daily"``, ``"sentiment"``."""
    collator = PretrainingCollator.from_tokenizer(tokenizer)
    news, reviews = zh_validation_texts()
    return {source: fixed_batches(collator, windows(
                (tokenizer.encode(t, add_special_tokens=False) for t in texts),
                collator.sep_token_id, max_length - 2)[:mlm_windows // 2], batch_size)
            for source, texts in (("people_daily", news), ("sentiment", reviews))}


# ----------------------------------------------------------------------------- training

def _train_config_dict(train_config: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else
                str(v) if not isinstance(v, (int, float, bool, type(None))) else v)
            for k, v in vars(train_config).items()}


def _run(model: nn.Module, batches: PretrainingBatches, val: list[dict[str, torch.Tensor]],
         train_overrides: dict[str, Any], progress: bool) -> tuple[Any, dict[str, Any]]:
    """Train with ``minillm.train.train`` on the CPU; returns the history and timing metrics."""
    import resource
    import time

    from ..train import TrainConfig, train

    config = TrainConfig(**{**train_overrides, "progress": progress})
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    history = train(model, batches, config, val_data=val, loss_fn=pretraining_loss,
                    device=torch.device("cpu"))
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    timing = {"train_seconds": round(wall1 - wall0, 1),
              "train_cpu_seconds": round((cpu1.ru_utime + cpu1.ru_stime)
                                         - (cpu0.ru_utime + cpu0.ru_stime), 1),
              "threads": torch.get_num_threads()}
    return history, {"train_config": _train_config_dict(config), **timing}


def _metrics(model: nn.Module, val: dict[str, list[dict[str, torch.Tensor]]]) -> dict[str, Any]:
    """Held-out metrics over all validation batches, and per source."""
    everything = [b for batches in val.values() for b in batches]
    overall = evaluate_pretraining(model, everything)
    metrics = {f"val_{k}": v for k, v in overall.items()}
    for source, batches in val.items():
        part = evaluate_pretraining(model, batches)
        metrics[f"val_mlm_loss_{source}"] = part["mlm_loss"]
        metrics[f"val_mlm_accuracy_{source}"] = part["mlm_accuracy"]
    return metrics


def train_bert_en(progress: bool = True, *, size: dict[str, int] | None = None,
                  vocab_size: int = EN_VOCAB_SIZE, train_options: dict[str, Any] | None = None,
                  batch: dict[str, int] | None = None, validation: dict[str, int] | None = None,
                  max_train_chars: int | None = None, seed: int = 0) -> tuple[nn.Module, dict]:
    """The ``ch09-bert-en`` recipe (defaults): learn the WordPiece vocabulary on the training text,
    then pretrain ``BertForPreTraining`` with MLM + NSP on the CPU. The keyword arguments shrink it
    for tests (``max_train_chars`` cuts the Shakespeare training text)."""
    from ..data import load_rotten_tomatoes, load_shakespeare
    from ..device import seed_everything
    from .bert import BertConfig, BertForPreTraining

    size = {**BERT_SIZE, **(size or {})}
    train_overrides = {**EN_TRAIN, **(train_options or {})}
    batch = {**EN_BATCH, **(batch or {})}
    validation = {**EN_VALIDATION, **(validation or {})}
    seed_everything(seed)
    shakespeare, reviews = load_shakespeare(), load_rotten_tomatoes()
    train_text = shakespeare.train[:max_train_chars]
    review_texts = [ex.text for ex in reviews.train]
    tokenizer = WordPiece.train([train_text, *review_texts], vocab_size)
    collator = PretrainingCollator.from_tokenizer(tokenizer)
    sep = collator.sep_token_id
    max_segment = (size["max_position_embeddings"] - 3) // 2
    documents = shakespeare_documents(train_text, tokenizer, max_segment)
    review_windows = windows((tokenizer.encode(t, add_special_tokens=False) for t in review_texts),
                             sep, size["max_position_embeddings"] - 2)
    batches = PretrainingBatches(
        collator, make_pairs=lambda epoch: make_nsp_pairs(
            documents, max_length=size["max_position_embeddings"], seed=seed + epoch),
        n_pairs=batch["nsp_pairs"], window_examples=review_windows, n_windows=batch["mlm_windows"],
        seed=seed)

    val = en_validation_batches(tokenizer, max_length=size["max_position_embeddings"],
                                batch_size=batch["nsp_pairs"] + batch["mlm_windows"], **validation)
    model = BertForPreTraining(BertConfig(vocab_size=tokenizer.vocab_size, **size))
    history, timing = _run(model, batches, val["shakespeare"] + val["rotten_tomatoes"],
                           train_overrides, progress)
    model.eval()
    metadata = {
        "vocab": tokenizer.itos, "lowercase": tokenizer.lowercase, "tokenizer": "WordPiece",
        "history": history.to_dict(), "train_config": timing.pop("train_config"),
        "batch": batch, "validation": validation, "max_length": size["max_position_embeddings"],
        "params": sum(p.numel() for p in model.parameters()),
        "steps": train_overrides["steps"], "tokens_seen": batches.tokens_seen,
        "nsp_pair_epochs_started": batches.pair_epochs,
        "data": {"nsp_and_mlm": "Shakespeare train split", "mlm": "Rotten Tomatoes train texts",
                 "validation": "Shakespeare validation split (NSP pairs), Rotten Tomatoes "
                               "validation texts (MLM windows)",
                 "train_documents": len(documents), "train_review_windows": len(review_windows)},
        "metrics": {**_metrics(model, val), **timing},
    }
    return model, metadata


def zh_train_texts(max_texts: int | None = None) -> tuple[list[str], list[str]]:
    """The Chinese pretraining text (training splits only): People's Daily sentences and sentiment
    review texts, whitespace removed. ``max_texts`` keeps the first that many of each (tests)."""
    from ..data import load_chinese_sentiment, load_people_daily_ner

    news = ["".join(ex.text.split()) for ex in load_people_daily_ner().train[:max_texts]]
    reviews = ["".join(ex.text.split()) for ex in load_chinese_sentiment().train[:max_texts]]
    return [t for t in news if t], [t for t in reviews if t]


def zh_validation_texts() -> tuple[list[str], list[str]]:
    """The held-out Chinese text behind the recorded metrics (validation splits)."""
    from ..data import load_chinese_sentiment, load_people_daily_ner

    news = ["".join(ex.text.split()) for ex in load_people_daily_ner().validation]
    reviews = ["".join(ex.text.split()) for ex in load_chinese_sentiment().validation]
    return [t for t in news if t], [t for t in reviews if t]


def train_bert_zh_char(progress: bool = True, *, size: dict[str, int] | None = None,
                       train_options: dict[str, Any] | None = None, batch_size: int = ZH_BATCH,
                       validation: dict[str, int] | None = None, max_texts: int | None = None,
                       seed: int = 0) -> tuple[nn.Module, dict]:
    """The ``ch09-bert-zh-char`` recipe (defaults): build the character vocabulary of the training
    texts, then pretrain ``BertForMaskedLM`` with MLM on them on the CPU. The keyword arguments
    shrink it for tests."""
    from ..device import seed_everything
    from .bert import BertConfig, BertForMaskedLM

    size = {**BERT_SIZE, **(size or {})}
    train_overrides = {**ZH_TRAIN, **(train_options or {})}
    validation = {**ZH_VALIDATION, **(validation or {})}
    seed_everything(seed)
    news, reviews = zh_train_texts(max_texts)
    tokenizer = CharTokenizer.train([*news, *reviews], ZH_MIN_FREQUENCY)
    collator = PretrainingCollator.from_tokenizer(tokenizer)
    length = size["max_position_embeddings"] - 2
    train_windows = windows((tokenizer.encode(t, add_special_tokens=False) for t in [*news, *reviews]),
                            collator.sep_token_id, length)
    batches = PretrainingBatches(collator, window_examples=train_windows, n_windows=batch_size,
                                 seed=seed)
    val = zh_validation_batches(tokenizer, max_length=size["max_position_embeddings"],
                                batch_size=batch_size, **validation)
    model = BertForMaskedLM(BertConfig(vocab_size=tokenizer.vocab_size, **size))
    history, timing = _run(model, batches, val["people_daily"] + val["sentiment"], train_overrides,
                           progress)
    model.eval()
    metadata = {
        "vocab": tokenizer.itos, "tokenizer": "CharTokenizer", "min_frequency": ZH_MIN_FREQUENCY,
        "history": history.to_dict(), "train_config": timing.pop("train_config"),
        "batch_size": batch_size, "validation": validation,
        "max_length": size["max_position_embeddings"],
        "params": sum(p.numel() for p in model.parameters()),
        "steps": train_overrides["steps"], "tokens_seen": batches.tokens_seen,
        "data": {"mlm": "People's Daily NER train split (sentences) + Chinese sentiment train texts",
                 "validation": "their validation splits",
                 "train_windows": len(train_windows), "train_characters": sum(map(len, news))
                 + sum(map(len, reviews))},
        "metrics": {**_metrics(model, val), **timing},
    }
    return model, metadata


# ----------------------------------------------------------------------------- loading

def load_bert_en() -> tuple[nn.Module, WordPiece]:
    """The shipped English BERT (``BertForPreTraining``, eval mode) and its WordPiece tokenizer,
    rebuilt from the vocabulary stored in the checkpoint."""
    from ..hub import load_pretrained

    model = load_pretrained(EN_RECIPE_NAME)
    meta = model.checkpoint_metadata
    return model, WordPiece(meta["vocab"], lowercase=meta["lowercase"])


def load_bert_zh_char() -> tuple[nn.Module, CharTokenizer]:
    """The shipped character-level Chinese BERT (``BertForMaskedLM``, eval mode) and its
    character tokenizer, rebuilt from the vocabulary stored in the checkpoint."""
    from ..hub import load_pretrained

    model = load_pretrained(ZH_RECIPE_NAME)
    return model, CharTokenizer(model.checkpoint_metadata["vocab"])
