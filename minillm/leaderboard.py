"""The held-out leaderboard: every course language model scored on the Shakespeare test split.

The figure is **bits per character** (bpc) on ``load_shakespeare().test``: total negative log
likelihood in nats of the test characters, divided by (number of characters × ln 2). Lower is better;
a uniform guess over a 70-character vocabulary scores log2(70) ≈ 6.1 bpc.

Rows are computed live, never typed in: each row names a scorer ``"module:function"`` returning a
:class:`Score`. Chapters append their rows to ``ROWS`` (n-gram rows from chapter 1, then MLP,
LSTM, GPT). Scorers should load trained models through ``minillm.hub.load_pretrained`` so that a
leaderboard call never retrains a shipped model.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class Score:
    bpc: float  # bits per character on the test split
    n_chars: int  # characters scored
    params: int | None = None  # trainable parameters (None for count-based models)
    notes: str = ""


@dataclass(frozen=True)
class Row:
    name: str  # e.g. "char 5-gram, Kneser-Ney"
    chapter: int  # the chapter that builds the model
    scorer: str  # "module:function" returning a Score


ROWS: list[Row] = [
    # Chapters append their rows here, in chapter order.
    Row("char 3-gram, add-k", 1, "minillm.ngram:leaderboard_add_k3"),
    Row("char 3-gram, Kneser-Ney", 1, "minillm.ngram:leaderboard_kn3"),
    Row("char 5-gram, Kneser-Ney", 1, "minillm.ngram:leaderboard_kn5"),
    Row("char 7-gram, Kneser-Ney", 1, "minillm.ngram:leaderboard_kn7"),
    Row("char 7-gram, modified Kneser-Ney", 1, "minillm.ngram:leaderboard_mkn7"),
    Row("char MLP (Bengio), context 16", 4, "minillm.models.mlp_lm:score_mlp_shakespeare"),
    Row("char LSTM, 2 layers", 5, "minillm.models.char_rnn:score_lstm_shakespeare"),
    Row("char GPT, 4 layers", 8, "minillm.models.gpt_recipe:score_gpt_shakespeare"),
]


def test_text() -> str:
    """The text every row is scored on: the Shakespeare test split."""
    from .data import load_shakespeare

    return load_shakespeare().test


def bits_per_char(total_nats: float, n_chars: int) -> float:
    """Convert a summed negative log-likelihood in nats over ``n_chars`` characters to bits/char."""
    if n_chars <= 0:
        raise ValueError(f"n_chars must be positive, got {n_chars}")
    return total_nats / (n_chars * math.log(2))


@torch.no_grad()
def score_char_model(model: nn.Module, encode: Callable[[str], list[int]], *, block_size: int,
                     text: str | None = None, batch_size: int = 32,
                     device: torch.device | str | None = None) -> Score:
    """Score a character-level torch LM (ids (B, T) → logits (B, T, V)) on the test text.

    The text is cut into non-overlapping windows of ``block_size + 1`` characters overlapping by one
    (each window predicts its last ``block_size`` characters from what precedes them inside the
    window), so every character after the first is scored exactly once.
    """
    text = test_text() if text is None else text
    ids = torch.tensor(encode(text), dtype=torch.long)
    device = torch.device(device) if device else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_windows = (len(ids) - 1) // block_size
    total, count = 0.0, 0
    try:
        for start in range(0, n_windows, batch_size):
            rows = range(start, min(start + batch_size, n_windows))
            x = torch.stack([ids[r * block_size:(r + 1) * block_size] for r in rows]).to(device)
            y = torch.stack([ids[r * block_size + 1:(r + 1) * block_size + 1] for r in rows]).to(device)
            logits = model(x)
            logits = logits[0] if isinstance(logits, tuple) else logits
            total += float(torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"))
            count += y.numel()
    finally:
        model.train(was_training)
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
    return Score(score.bpc, score.n_chars, score.params, notes)


def score_row(row: Row) -> Score:
    module, _, func = row.scorer.partition(":")
    return getattr(importlib.import_module(module), func)()


def leaderboard(upto_chapter: int | None = None) -> list[dict]:
    """Score every row (of chapters ≤ ``upto_chapter``); returns rows sorted by bpc."""
    results = []
    for row in ROWS:
        if upto_chapter is not None and row.chapter > upto_chapter:
            continue
        s = score_row(row)
        results.append({"model": row.name, "chapter": row.chapter, "bpc": s.bpc,
                        "params": s.params, "chars": s.n_chars, "notes": s.notes})
    return sorted(results, key=lambda r: r["bpc"])


def format_leaderboard(results: list[dict]) -> str:
    """A fixed-width text table of :func:`leaderboard` results."""
    lines = [f"{'model':40s} {'ch':>3s} {'bits/char':>9s} {'params':>12s}  notes",
             "-" * 80]
    for r in results:
        params = f"{r['params']:,}" if r["params"] is not None else "—"
        lines.append(f"{r['model']:40s} {r['chapter']:3d} {r['bpc']:9.3f} {params:>12s}  {r['notes']}")
    return "\n".join(lines)
