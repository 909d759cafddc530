"""Chapter 10's T5 models: pretrained with span corruption on the course corpus, then fine-tuned
text to text on four tasks at once (the recipes ``ch10-t5-pretrain`` and ``ch10-t5-multitask``).

**Model.** T5 v1.1's gated-GELU feed-forward (Shazeer 2020, "GLU Variants Improve Transformer":
better quality for the same parameters and compute, and T5 v1.1's choice) with v1.0's tied
embeddings (one 4,096 × 256 matrix in and out, with the d_model**-0.5 output scaling): at this size
the embedding is a fifth of the model, and tying keeps the checkpoint at 23 MB (5.8M parameters,
fp32) and gives the rare tokens of a small corpus gradient from both ends. 3 + 3 layers, width 256,
4 heads of 64, d_ff 512: about as much as 2 CPU cores train in half an hour.
No dropout while pretraining (T5 v1.1 pretrains without), 0.1 while fine-tuning.

**Pretraining** (:func:`train_t5_pretrain`): a :class:`~minillm.tokenizers.t5_bpe.T5BPETokenizer`
learned on the training splits (Shakespeare, both sides of the chapter-6 English–Spanish verses,
Rotten Tomatoes), then random 128-token windows of those splits, span-corrupted
(:mod:`minillm.span_corruption`: 15% noise, mean span 3), each side closed by ``</s>``.

**Multi-task fine-tuning** (:func:`train_t5_multitask`), every task written as text with a prefix:

| prefix | target | data |
|---|---|---|
| ``translate English to Spanish: …`` | the Spanish verse | chapter 6's pairs (≤ 20 words a side) |
| ``translate Spanish to English: …`` | the English verse | the same pairs, reversed |
| ``sentiment: …`` | ``positive`` / ``negative`` | Rotten Tomatoes |
| ``restore case and punctuation: …`` | the English verse as written | chapter 6's English verses,
  lower-cased with punctuation removed (:func:`strip_case_and_punctuation`) |

Test metrics (:func:`evaluate_multitask`): English→Spanish BLEU with beam 8 scored exactly as
chapter 6 scores its GRU (its test pairs, its lower-cased word tokenisation, ``tokenize="none"``),
Spanish→English BLEU the same way, sentiment accuracy (an answer that is neither label is wrong), and
for the restoration task cased BLEU (sacrebleu's ``13a``: punctuation marks are tokens) and exact-match
rate beside the do-nothing baseline of returning the input unchanged.

**Recipe version 2.** A first run of both recipes (AdamW at 2e-3 / 1e-3, 2,000 + 2,000 steps) left the
model undertrained: the decoder had not learned to use the encoder (translations repeated one
unconditional phrase, test BLEU 0.10; sentiment at chance, 54.6%). Version 2 trains with Adafactor
(T5's own optimizer, relative step sizes), which made the decoder use the encoder within 500 steps
in probes, and fewer steps, so that each recipe fits 30 minutes of a 2-core CPU without AVX-512.

**Multi-task recipe version 3** adds the fourth task (a generation task whose output is mostly
copied from the input: it trains the cross-attention that translation needs) and fixes a doubled
``</s>``: version 2 closed every source and target with two (``encode`` already appends one), so the
model learnt to end its outputs with ``</s></s>``. 500 steps.
The recipes are registered in :mod:`minillm.recipes` under :data:`PRETRAIN_NAME` (version
:data:`PRETRAIN_VERSION`) and :data:`MULTITASK_NAME` (version :data:`MULTITASK_VERSION`).
"""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ..span_corruption import span_corrupt
from ..tokenizers.t5_bpe import EOS, PAD, T5BPETokenizer
from ..validation import check_int, check_nonempty
from .t5 import IGNORE_INDEX, T5Config, T5ForConditionalGeneration

PRETRAIN_NAME = "ch10-t5-pretrain"
MULTITASK_NAME = "ch10-t5-multitask"
VOCAB_SIZE = 4096  # 3 specials + 3,993 BPE tokens + 100 sentinels
MODEL_CONFIG = dict(vocab_size=VOCAB_SIZE, d_model=256, d_kv=64, d_ff=512, num_layers=3,
                    num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=32,
                    relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                    tie_word_embeddings=True, dropout_rate=0.0, n_positions=128)  # T5Config fields
WINDOW = 128  # tokens per pretraining window before corruption
PRETRAIN_BATCH = 32
# Adafactor (T5's own optimizer; torch.optim.Adafactor): its step is relative to each weight's RMS, so
# lr 1e-2 = "move each matrix by about 1% per step". AdamW at 1e-3/2e-3 (the first recipes) left the
# decoder ignoring its encoder after 2,000 + 2,000 steps; Adafactor at 1e-2 made it use the encoder
# within 500 (probes in the chapter's closing note). fp32: bf16 autocast is 10x slower on CPUs without
# bf16 instructions, and "auto" would pick it on those that have them, changing the recipe.
PRETRAIN_TRAIN = dict(steps=450, lr=1e-2, min_lr=1e-3, warmup_steps=50, weight_decay=0.0,
                      eval_every=150, eval_batches=8, autocast=None)  # TrainConfig fields
MULTITASK_BATCH = 32
MULTITASK_TRAIN = dict(steps=500, lr=5e-3, min_lr=5e-4, warmup_steps=50, weight_decay=0.0,
                       eval_every=150, eval_batches=8, autocast=None)
PRETRAIN_VERSION = 2  # 2: Adafactor, fewer steps (fits 30 min on a 2-core CPU without AVX-512)
MULTITASK_VERSION = 3  # 3: + case/punctuation restoration, one </s> per side (v2 had two), 500 steps
MULTITASK_DROPOUT = 0.1
TASK_WEIGHTS = {"en-es": 0.4, "es-en": 0.15, "sentiment": 0.2, "restore": 0.25}  # share of each batch
PREFIXES = {"en-es": "translate English to Spanish: ", "es-en": "translate Spanish to English: ",
            "sentiment": "sentiment: ", "restore": "restore case and punctuation: "}
LABELS = ("negative", "positive")  # Rotten Tomatoes label 0, 1
MAX_SOURCE, MAX_TARGET = 128, 64  # tokens kept per fine-tuning example (with </s>)

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask, labels


# ----------------------------------------------------------------------------- data


def corpus_texts(split: str = "train", max_chars: int | None = None) -> dict[str, str]:
    """The course corpus of one split, by source: Shakespeare, English and Spanish verses (one per
    line), Rotten Tomatoes snippets (one per line); ``max_chars`` cuts each source (for tests)."""
    from ..data import load_en_es, load_rotten_tomatoes, load_shakespeare

    en_es = load_en_es()[split]
    texts = {"shakespeare": load_shakespeare()[split],
             "english": "\n".join(p.en for p in en_es), "spanish": "\n".join(p.es for p in en_es),
             "rotten_tomatoes": "\n".join(x.text for x in load_rotten_tomatoes()[split])}
    if max_chars is not None:
        texts = {k: v[:check_int("max_chars", max_chars, low=1)] for k, v in texts.items()}
    return texts


def token_stream(tokenizer: T5BPETokenizer, texts: dict[str, str]) -> torch.Tensor:
    """Every text encoded and joined, ``</s>`` after each source: one long (N,) id tensor."""
    ids: list[int] = []
    for text in texts.values():
        ids.extend(tokenizer.encode(text))
    return torch.tensor(ids, dtype=torch.long)


def pad_examples(examples: Sequence[tuple[list[int], list[int]]]) -> Batch:
    """(source ids, target ids) pairs → input_ids (B, S) padded with ``<pad>``, attention_mask
    (B, S), labels (B, T) padded with -100."""
    check_nonempty("examples", examples)
    S = max(len(s) for s, _ in examples)
    T = max(len(t) for _, t in examples)
    ids = torch.full((len(examples), S), PAD, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for i, (s, t) in enumerate(examples):
        ids[i, :len(s)] = torch.tensor(s)
        labels[i, :len(t)] = torch.tensor(t)
    return ids, (ids != PAD).long(), labels


class SpanCorruptionBatches:
    """Calling it returns a batch of span-corrupted random windows of ``stream`` (seeded)."""

    def __init__(self, stream: torch.Tensor, vocab_size: int, *, window: int = WINDOW,
                 batch_size: int = PRETRAIN_BATCH, seed: int = 0):
        self.stream, self.vocab_size = stream, vocab_size
        self.window = check_int("window", window, low=2, high=len(stream))
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> Batch:
        starts = torch.randint(len(self.stream) - self.window + 1, (self.batch_size,),
                               generator=self.generator)
        examples = []
        for s in starts.tolist():
            inputs, targets = span_corrupt(self.stream[s:s + self.window], vocab_size=self.vocab_size,
                                           generator=self.generator)
            examples.append((inputs.tolist() + [EOS], targets.tolist() + [EOS]))
        return pad_examples(examples)


def t5_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Teacher-forced cross-entropy of the labels (the model shifts them right itself)."""
    input_ids, attention_mask, labels = batch
    return model(input_ids, attention_mask=attention_mask, labels=labels).loss


def encode_side(tokenizer: T5BPETokenizer, text: str, max_tokens: int) -> list[int]:
    """``text`` as ids cut to ``max_tokens`` including the one closing ``</s>``."""
    return tokenizer.encode(text, add_eos=False)[:max_tokens - 1] + [EOS]


def task_examples(tokenizer: T5BPETokenizer, split: str) -> dict[str, list[tuple[list[int], list[int]]]]:
    """The fine-tuning tasks of one split as (source ids, target ids), prefix included."""
    _, texts = task_texts(split)
    return {task: [(encode_side(tokenizer, src, MAX_SOURCE), encode_side(tokenizer, tgt, MAX_TARGET))
                   for src, tgt in items] for task, items in texts.items()}


_PUNCTUATION = re.compile(r"[^\w\s']+|(?<!\w)'|'(?!\w)")  # marks; apostrophes except inside words


def strip_case_and_punctuation(text: str) -> str:
    """The restoration task's input: lower case, punctuation marks removed (an apostrophe inside a
    word stays: "God's" → "god's"), single spaces.

    >>> strip_case_and_punctuation("Then Jesus said, 'Go to God's house!'")
    "then jesus said go to god's house"
    """
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def task_texts(split: str) -> tuple[list, dict[str, list[tuple[str, str]]]]:
    """(chapter 6's kept translation pairs, each task's (source text, target text) list) of a split."""
    from ..data import load_rotten_tomatoes
    from .seq2seq import prepare_en_es

    pairs = prepare_en_es().pairs[split]  # chapter 6's pairs: at most 20 words a side
    reviews = load_rotten_tomatoes()[split]
    return pairs, {
        "en-es": [(PREFIXES["en-es"] + p.en, p.es) for p in pairs],
        "es-en": [(PREFIXES["es-en"] + p.es, p.en) for p in pairs],
        "sentiment": [(PREFIXES["sentiment"] + r.text, LABELS[r.label]) for r in reviews],
        "restore": [(PREFIXES["restore"] + strip_case_and_punctuation(p.en), p.en) for p in pairs],
    }


class MultiTaskBatches:
    """Calling it returns a batch mixing the tasks: each example's task drawn with ``weights``."""

    def __init__(self, examples: dict[str, list], weights: dict[str, float], batch_size: int, seed: int = 0):
        self.tasks = list(weights)
        self.examples = {t: check_nonempty(f"examples[{t!r}]", examples[t]) for t in self.tasks}
        self.weights = torch.tensor([float(weights[t]) for t in self.tasks])
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> Batch:
        tasks = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)
        picked = []
        for t in tasks.tolist():
            pool = self.examples[self.tasks[t]]
            picked.append(pool[int(torch.randint(len(pool), (1,), generator=self.generator))])
        return pad_examples(picked)


# ----------------------------------------------------------------------------- training


def _train(model, batches, val, train_config: dict, progress: bool):
    from ..train import train

    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    optimizer = torch.optim.Adafactor(model.parameters(), lr=train_config["lr"],
                                      weight_decay=train_config.get("weight_decay", 0.0))
    history = train(model, batches, val_data=val, loss_fn=t5_loss, progress=progress, optimizer=optimizer,
                    device=torch.device("cpu"), **train_config)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    timing = {"train_seconds": round(time.perf_counter() - wall0, 1),
              "train_cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
              "threads": torch.get_num_threads()}
    return history, timing


def train_t5_pretrain(progress: bool = True, *, model_config: dict | None = None,
                      train_config: dict | None = None, batch_size: int = PRETRAIN_BATCH,
                      window: int = WINDOW, max_chars: int | None = None,
                      seed: int = 0) -> tuple[T5ForConditionalGeneration, dict]:
    """Learn the tokenizer, then pretrain a T5 with span corruption on the course corpus (CPU).

    The defaults are the shipped recipe; the keywords exist for tiny test runs (``model_config`` /
    ``train_config`` override fields of :data:`MODEL_CONFIG` / :data:`PRETRAIN_TRAIN`;
    ``max_chars`` cuts each source text).
    """
    from ..device import seed_everything

    seed_everything(seed)
    cfg = T5Config(**{**MODEL_CONFIG, **(model_config or {})})
    tcfg = {**PRETRAIN_TRAIN, **(train_config or {})}
    texts = corpus_texts("train", max_chars)
    t0 = time.perf_counter()
    tokenizer = T5BPETokenizer.train(list(texts.values()), cfg.vocab_size)
    tokenizer_seconds = time.perf_counter() - t0
    train_ids = token_stream(tokenizer, texts)
    val_ids = token_stream(tokenizer, corpus_texts("validation", max_chars))
    window = min(window, len(val_ids))
    val_batches = SpanCorruptionBatches(val_ids, cfg.vocab_size, window=window, batch_size=batch_size,
                                        seed=seed + 1)
    val = [val_batches() for _ in range(tcfg["eval_batches"])]  # the same corrupted windows each time
    model = T5ForConditionalGeneration(cfg)
    history, timing = _train(model, SpanCorruptionBatches(train_ids, cfg.vocab_size, window=window,
                                                          batch_size=batch_size, seed=seed),
                             val, tcfg, progress)
    metadata = {
        "tokenizer": tokenizer.to_dict(), "history": history.to_dict(), "train_config": tcfg,
        "batch_size": batch_size, "window": window, "params": model.num_params(),
        "corpus_tokens": len(train_ids), "chars_per_token": round(sum(map(len, texts.values()))
                                                                  / len(train_ids), 4),
        "tokens_seen": tcfg["steps"] * batch_size * window,
        "metrics": {"val_loss": history.final_val_loss, **timing,
                    "tokenizer_seconds": round(tokenizer_seconds, 1)},
    }
    return model.eval(), metadata


def train_t5_multitask(progress: bool = True, *, pretrained: tuple[nn.Module, T5BPETokenizer] | None = None,
                       train_config: dict | None = None, batch_size: int = MULTITASK_BATCH,
                       eval_limit: int | None = None, num_beams: int = 8,
                       seed: int = 0) -> tuple[T5ForConditionalGeneration, dict]:
    """Fine-tune the pretrained T5 on the four prefixed tasks at once, then score the test splits.

    ``pretrained`` = (model, tokenizer) to start from (default: ``load_t5_pretrain()``);
    ``eval_limit`` scores only the first examples of each test set (for tests).
    """
    from ..device import seed_everything

    model0, tokenizer = pretrained if pretrained is not None else load_t5_pretrain()
    seed_everything(seed)
    cfg = T5Config(**{**asdict(model0.config), "dropout_rate": MULTITASK_DROPOUT})
    model = T5ForConditionalGeneration(cfg)
    model.load_state_dict(model0.state_dict())
    tcfg = {**MULTITASK_TRAIN, **(train_config or {})}
    train_ex, val_ex = task_examples(tokenizer, "train"), task_examples(tokenizer, "validation")
    val_batches = MultiTaskBatches(val_ex, TASK_WEIGHTS, batch_size, seed=seed + 1)
    val = [val_batches() for _ in range(tcfg["eval_batches"])]
    history, timing = _train(model, MultiTaskBatches(train_ex, TASK_WEIGHTS, batch_size, seed=seed),
                             val, tcfg, progress)
    model.eval()
    t0 = time.perf_counter()
    metrics = evaluate_multitask(model, tokenizer, num_beams=num_beams, limit=eval_limit, progress=progress)
    metadata = {
        "tokenizer": tokenizer.to_dict(), "history": history.to_dict(), "train_config": tcfg,
        "batch_size": batch_size, "task_weights": TASK_WEIGHTS, "prefixes": PREFIXES,
        "params": model.num_params(),
        "pretrained_from": getattr(model0, "checkpoint_metadata", {}).get("recipe", "(given)"),
        "metrics": {"val_loss": history.final_val_loss, **timing, **metrics,
                    "eval_seconds": round(time.perf_counter() - t0, 1)},
    }
    return model, metadata


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def generate_texts(model: T5ForConditionalGeneration, tokenizer: T5BPETokenizer, sources: Sequence[str], *,
                   num_beams: int = 1, max_new_tokens: int = MAX_TARGET, batch_size: int = 32,
                   progress: bool = False) -> list[str]:
    """The model's output text for each source text (padded batches, beam or greedy search)."""
    check_nonempty("sources", sources)
    check_int("batch_size", batch_size, low=1)
    from tqdm.auto import tqdm

    out = []
    for i in tqdm(range(0, len(sources), batch_size), desc=f"generate (beam {num_beams})",
                  disable=not progress, leave=False):
        chunk = [encode_side(tokenizer, s, MAX_SOURCE) for s in sources[i:i + batch_size]]
        ids, mask, _ = pad_examples([(s, [EOS]) for s in chunk])
        seqs = model.generate(ids, mask, num_beams=num_beams, max_new_tokens=max_new_tokens)
        out.extend(tokenizer.decode(row) for row in seqs)
    return out


def translation_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU exactly as chapter 6 computes it: lower-cased words and punctuation marks
    (:func:`minillm.models.seq2seq.tokenize`) joined by spaces, ``tokenize="none"``."""
    from ..metrics import corpus_bleu
    from .seq2seq import tokenize

    hyps = [" ".join(tokenize(h)) for h in hypotheses]
    refs = [" ".join(tokenize(r)) for r in references]
    return corpus_bleu(hyps, [refs], tokenize="none", force=True).score


def restoration_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Cased BLEU (sacrebleu's default ``13a`` tokenisation, so every comma and capital counts) and
    the exact-match rate of restored verses."""
    from ..metrics import corpus_bleu

    check_nonempty("hypotheses", hypotheses)
    exact = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references, strict=True))
    return {"bleu": corpus_bleu(list(hypotheses), [list(references)], force=True).score,
            "exact_match": exact / len(references)}


def evaluate_multitask(model: T5ForConditionalGeneration, tokenizer: T5BPETokenizer, *, num_beams: int = 8,
                       limit: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Test-split metrics: BLEU en→es with ``num_beams`` (chapter 6's scoring), BLEU es→en (same
    beam), sentiment accuracy with greedy decoding, case/punctuation restoration (same beam) beside
    the do-nothing baseline; ``limit`` = first examples only."""
    _, texts = task_texts("test")
    metrics: dict[str, Any] = {"num_beams": num_beams}
    for task in ("en-es", "es-en"):
        items = texts[task][:limit]
        hyps = generate_texts(model, tokenizer, [s for s, _ in items], num_beams=num_beams,
                              progress=progress)
        metrics[f"bleu_{task.replace('-', '_')}"] = round(translation_bleu(hyps, [t for _, t in items]), 2)
        metrics[f"n_{task.replace('-', '_')}"] = len(items)
    items = texts["sentiment"][:limit]
    answers = [a.strip() for a in generate_texts(model, tokenizer, [s for s, _ in items],
                                                 max_new_tokens=4, batch_size=64, progress=progress)]
    metrics["sentiment_accuracy"] = round(sum(a == t for a, (_, t) in zip(answers, items)) / len(items), 4)
    metrics["sentiment_invalid"] = sum(a not in LABELS for a in answers)
    metrics["n_sentiment"] = len(items)
    items = texts["restore"][:limit]
    refs = [t for _, t in items]
    hyps = generate_texts(model, tokenizer, [s for s, _ in items], num_beams=num_beams, progress=progress)
    unchanged = [s.removeprefix(PREFIXES["restore"]) for s, _ in items]
    for name, outputs in (("restore", hyps), ("restore_baseline", unchanged)):
        scores = restoration_scores(outputs, refs)
        metrics[f"{name}_bleu"] = round(scores["bleu"], 2)
        metrics[f"{name}_exact_match"] = round(scores["exact_match"], 4)
    metrics["n_restore"] = len(items)
    return metrics


# ----------------------------------------------------------------------------- recipes and loading


def _load(name: str) -> tuple[T5ForConditionalGeneration, T5BPETokenizer]:
    from ..hub import load_pretrained

    model = load_pretrained(name)
    return model, T5BPETokenizer.from_dict(model.checkpoint_metadata["tokenizer"])


def load_t5_pretrain() -> tuple[T5ForConditionalGeneration, T5BPETokenizer]:
    """The span-corruption-pretrained T5 (eval mode) and its tokenizer."""
    return _load(PRETRAIN_NAME)


def load_t5_multitask() -> tuple[T5ForConditionalGeneration, T5BPETokenizer]:
    """The multi-task fine-tuned T5 (eval mode) and its tokenizer."""
    return _load(MULTITASK_NAME)

