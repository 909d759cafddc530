"""The held-out leaderboard: every course language model scored on the Shakespeare test split.

The figure is **bits per character** (bpc) on ``load_shakespeare().test``: total negative log
likelihood in nats of the test characters, divided by (number of characters × ln 2). Lower is better;
a uniform guess over the shipped 82-character vocabulary scores log2(82) ≈ 6.36 bpc.

Rows are computed live, never typed in: each :class:`Row` holds its scorer, a function returning a
:class:`Score` (so a renamed scorer fails when this module is imported). Chapters append their rows
to ``ROWS`` (n-gram rows from chapter 1, then MLP, LSTM, GPT) and define their scorer here (or in
the module that owns the model, as the n-gram rows do). Scorers load trained models through
``minillm.hub.load_pretrained``, so a leaderboard call never retrains a shipped model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .metrics.lm import bits_per_char
from .ngram import (leaderboard_add_k3, leaderboard_kn3, leaderboard_kn5, leaderboard_kn7,
                    leaderboard_mkn7)
from .validation import check_int, check_str

__all__ = ["ROWS", "Row", "Score", "bits_per_char", "format_leaderboard", "leaderboard",
           "score_char_model", "score_gpt_bpe_shakespeare", "score_gpt_shakespeare", "score_lstm_shakespeare",
           "score_mlp_shakespeare", "score_row", "score_shipped_char_model", "score_token_model",
           "test_text"]


@dataclass(frozen=True)
class Score:
    bpc: float  # bits per character on the test split
    n_chars: int  # characters scored
    params: int | None = None  # trainable parameters (None for count-based models)
    notes: str = ""
    recipe: str | None = None  # the hub checkpoint scored (None for count-based models)


@dataclass(frozen=True)
class Row:
    name: str  # e.g. "char 5-gram, Kneser-Ney"
    chapter: int  # the chapter that builds the model
    scorer: Callable[[], Score]  # scores the model on the test text


def test_text() -> str:
    """The text every row is scored on: the Shakespeare test split."""
    from .data import load_shakespeare

    return load_shakespeare().test


def score_char_model(model: nn.Module, encode: Callable[[str], list[int]], *, block_size: int,
                     text: str | None = None, batch_size: int = 32,
                     device: torch.device | str | None = None) -> Score:
    """Score a character-level torch LM (ids (B, T) → logits (B, T, V)) on the test text.

    The text is cut into non-overlapping windows of ``block_size + 1`` characters overlapping by one
    (each window predicts its last ``block_size`` characters from what precedes them inside the
    window), so every character after the first of a window is scored exactly once. The loop is
    :func:`minillm.train.evaluate` (eval mode, no gradients, fp32) with a loss that sums.
    """
    from .train import evaluate, sequential_lm_batches

    block_size = check_int("block_size", block_size, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    text = test_text() if text is None else check_str("text", text)
    if len(text) < block_size + 1:
        raise ValueError(f"text must hold at least block_size + 1 = {block_size + 1} characters to "
                         f"score one window, got {len(text)}")
    batches = sequential_lm_batches(torch.tensor(encode(text), dtype=torch.long), block_size,
                                    batch_size)
    total, count = 0.0, 0

    def summed_nll(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        nonlocal total, count
        x, y = batch
        logits = model(x)
        logits = logits[0] if isinstance(logits, tuple) else logits  # RNNs return (logits, state)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1),
                              reduction="sum")
        total, count = total + float(nll), count + y.numel()
        return nll

    evaluate(model, batches, loss_fn=summed_nll, device=torch.device(device) if device else None,
             autocast=None)
    params = sum(p.numel() for p in model.parameters())
    return Score(bits_per_char(total, count), count, params)


def score_shipped_char_model(name: str, *, block_size: int | None = None, notes: str = "") -> Score:
    """Score the hand-off model ``name`` (``minillm.hub``) whose checkpoint metadata holds its
    character vocabulary; ``block_size`` defaults to the model's own context window."""
    from .hub import load_pretrained
    from .vocab import CharVocab

    model = load_pretrained(name, progress=False)
    vocab = CharVocab(model.checkpoint_metadata["vocab"])
    block_size = block_size or model.config.block_size
    score = score_char_model(model, vocab.encode, block_size=block_size)
    return Score(score.bpc, score.n_chars, score.params, notes, recipe=name)


def score_mlp_shakespeare() -> Score:
    """The shipped ``ch04-mlp-shakespeare`` model, in windows of 256 characters."""
    from .recipes import MLP_CONFIG

    return score_shipped_char_model("ch04-mlp-shakespeare", block_size=256,
                                    notes=f"Bengio MLP, context {MLP_CONFIG['context']} chars")


def score_lstm_shakespeare() -> Score:
    """The shipped ``ch05-lstm-shakespeare`` model, in windows of 256 characters."""
    return score_shipped_char_model("ch05-lstm-shakespeare", block_size=256,
                                    notes="2-layer LSTM, 256 units; windows of 256 chars, no carried state")


def score_gpt_shakespeare() -> Score:
    """The shipped ``ch08-gpt-shakespeare`` model, in windows of its own context."""
    from .models.gpt import GPTConfig

    c = GPTConfig.shakespeare_small()
    return score_shipped_char_model("ch08-gpt-shakespeare", notes=f"{c.n_layer} layers, width "
                                    f"{c.n_embd}, context {c.block_size}")


@torch.no_grad()
def score_token_model(model: nn.Module, tokenizer: Any, text: str, *,
                      block_size: int, batch_size: int = 32) -> tuple[float, int, int]:
    """Score a token-level LM on ``text`` in bits per character.

    The token ids are cut into windows of ``block_size + 1`` overlapping by one, as
    ``minillm.leaderboard.score_char_model`` does for characters, so every token after the first is
    predicted exactly once. Returns (bits per character, characters scored, tokens scored): the
    characters scored are those of every token but the first.
    """
    ids = torch.tensor(tokenizer.encode_ordinary(text), dtype=torch.long)
    n_windows = (len(ids) - 1) // block_size
    if n_windows < 1:
        raise ValueError(f"text of {len(ids)} tokens is too short for one window of "
                         f"{block_size + 1} tokens")
    used = ids[:n_windows * block_size + 1]
    n_chars = len(tokenizer.decode(used[1:].tolist()))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, n_windows, batch_size):
            rows = range(start, min(start + batch_size, n_windows))
            x = torch.stack([used[r * block_size:(r + 1) * block_size] for r in rows]).to(device)
            y = torch.stack([used[r * block_size + 1:(r + 1) * block_size + 1] for r in rows]).to(device)
            logits = model(x)
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"))
    finally:
        model.train(was_training)
    return bits_per_char(total, n_chars), n_chars, n_windows * block_size


def score_gpt_bpe_shakespeare() -> Score:
    """Leaderboard scorer: bits/char of the shipped BPE GPT on the Shakespeare test split."""
    from .models.gpt_bpe import load_gpt_bpe_shakespeare

    model, tokenizer = load_gpt_bpe_shakespeare()
    bpc, n_chars, n_tokens = score_token_model(model, tokenizer, test_text(),
                                               block_size=model.config.block_size)
    c = model.config
    return Score(bpc, n_chars, model.num_params(),
                 f"{c.n_layer} layers, width {c.n_embd}, context {c.block_size} BPE tokens "
                 f"(~{n_chars / n_tokens:.1f} chars each)", recipe="ch08-gpt-bpe-shakespeare")


def _score_shipped_decoder(name: str, describe_run: Callable[[dict], tuple[int, str]]) -> Score:
    """A shipped decoder trained on chapter 8's BPE tokenizer, scored on the test split.

    ``describe_run(checkpoint_metadata)`` returns the context length to score with and a note on how
    the model was trained; the checkpoint is loaded once."""
    from .hub import load_pretrained
    from .models.gpt_bpe import load_gpt_bpe_shakespeare

    model = load_pretrained(name)
    block_size, notes = describe_run(model.checkpoint_metadata)
    _, tokenizer = load_gpt_bpe_shakespeare()
    bpc, n_chars, _ = score_token_model(model, tokenizer, test_text(), block_size=block_size)
    c = model.config
    return Score(bpc, n_chars, model.num_params(),
                 f"{c.num_hidden_layers} layers, width {c.hidden_size}, context {block_size}, "
                 f"RMSNorm+RoPE+SwiGLU, {notes}", recipe=name)


def _race_run(meta: dict) -> tuple[int, str]:
    race = meta["race"]["config"]
    return race["block_size"], f"{race['budget_cpu_minutes']:g} CPU-min race budget"


def _best_run(meta: dict) -> tuple[int, str]:
    return meta["config"]["block_size"], f"{meta['cpu_minutes']:.0f} CPU-min recipe"


def score_race_modern() -> Score:
    """Leaderboard scorer: the modern decoder of chapter 11's race (``ch11-race``) on the test split."""
    return _score_shipped_decoder("ch11-race", _race_run)


def score_best() -> Score:
    """Leaderboard scorer: chapter 11's best recipe (``ch11-best``) on the test split."""
    return _score_shipped_decoder("ch11-best", _best_run)


ROWS: list[Row] = [
    # Chapters append their rows here, in chapter order.
    Row("char 3-gram, add-k", 1, leaderboard_add_k3),
    Row("char 3-gram, Kneser-Ney", 1, leaderboard_kn3),
    Row("char 5-gram, Kneser-Ney", 1, leaderboard_kn5),
    Row("char 7-gram, Kneser-Ney", 1, leaderboard_kn7),
    Row("char 7-gram, modified Kneser-Ney", 1, leaderboard_mkn7),
    Row("char MLP (Bengio), context 16", 4, score_mlp_shakespeare),
    Row("char LSTM, 2 layers", 5, score_lstm_shakespeare),
    Row("char GPT, 4 layers", 8, score_gpt_shakespeare),
    Row("BPE GPT, 6 layers (2,048 tokens)", 8, score_gpt_bpe_shakespeare),
    Row("modern decoder (Llama recipe), race", 11, score_race_modern),
    Row("modern decoder, one CPU-hour recipe", 11, score_best),
]


def score_row(row: Row) -> Score:
    """Run one row's scorer."""
    return row.scorer()


def leaderboard(upto_chapter: int | None = None) -> list[dict]:
    """Score every row (of chapters ≤ ``upto_chapter``); returns rows sorted by bpc."""
    check_int("upto_chapter", upto_chapter, low=0, allow_none=True)
    results = []
    for row in ROWS:
        if upto_chapter is not None and row.chapter > upto_chapter:
            continue
        s = score_row(row)
        results.append({"model": row.name, "chapter": row.chapter, "bpc": s.bpc,
                        "params": s.params, "chars": s.n_chars, "notes": s.notes,
                        "recipe": s.recipe})
    return sorted(results, key=lambda r: r["bpc"])


def format_leaderboard(results: list[dict]) -> str:
    """A fixed-width text table of :func:`leaderboard` results."""
    lines = [f"{'model':40s} {'ch':>3s} {'bits/char':>9s} {'params':>12s}  notes",
             "-" * 80]
    for r in results:
        params = f"{r['params']:,}" if r["params"] is not None else "—"
        lines.append(f"{r['model']:40s} {r['chapter']:3d} {r['bpc']:9.3f} {params:>12s}  {r['notes']}")
    return "\n".join(lines)
