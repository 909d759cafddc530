"""What each leaderboard row cost to build, and a plot of bits/char against that cost.

For a neural row the training compute is estimated as FLOPs ≈ 6 · N · D (Kaplan et al., 2020,
"Scaling Laws for Neural Language Models"): N parameters, D training tokens processed, 2 FLOPs per
parameter per token forward and 4 backward. N and D are read from the row's checkpoint (its
parameters and the training history in its metadata), never typed. An n-gram row is "trained" by
counting: each training character updates one count per order 1..n, so its cost is n · characters
counting operations; its size is the number of distinct m-grams it stores.

Used by chapter 8 next to :func:`minillm.leaderboard.leaderboard`; matplotlib is imported only when
a plot is drawn.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .validation import check_nonempty, describe


@dataclass(frozen=True)
class TrainingCost:
    """What it took to build one leaderboard model, next to its score."""

    model: str  # the leaderboard row's name
    bpc: float  # bits per character on the test split
    kind: str  # "neural" (FLOPs ≈ 6·N·D) or "counting" (n-gram count updates)
    operations: float  # training FLOPs, or counting operations for an n-gram
    size: int  # trainable parameters, or stored n-gram counts
    train_tokens: int  # tokens processed in training (repeats counted); n-gram: characters counted
    chars_per_token: float | None  # 1 for character models; None if the checkpoint does not say
    context_tokens: int | None  # the model's window in tokens; None: recurrent (no fixed window)
    context_chars: float | None  # the same in characters; None if unbounded or chars/token unknown
    train_minutes: float | None  # recorded training time (machine-dependent); None for n-grams
    recipe: str | None  # the checkpoint the numbers come from (None for n-grams)


def _ngram_order(name: str) -> int | None:
    m = re.search(r"(\d+)-gram", name)
    return int(m.group(1)) if m else None


def _counting_cost(result: dict[str, Any], n: int) -> TrainingCost:
    from .data import load_shakespeare
    from .ngram import shakespeare_char_model

    chars = len(load_shakespeare().train)
    model = shakespeare_char_model(n)  # the counts every n-gram row is scored with (cached fit)
    stored = sum(model.distinct_ngrams(m) for m in range(1, n + 1))
    return TrainingCost(result["model"], result["bpc"], "counting", float(n * chars), stored, chars,
                        1.0, n - 1, float(n - 1), None, None)


def available_models() -> dict[str, Any]:
    """Every recipe's trained model that is shipped or cached (never trained here), by recipe name."""
    from . import hub
    from .checkpoint import load_checkpoint
    from .recipes import RECIPES

    models = {}
    for name in RECIPES:
        for path in (hub.shipped_path(name), hub.cached_path(name)):
            if (path / "config.json").is_file():
                models[name] = load_checkpoint(path)
                break
    return models


def find_checkpoint(result: dict[str, Any], models: dict[str, Any] | None = None):
    """The trained model behind a neural leaderboard row (its ``"recipe"``). Returns (recipe, model)."""
    models = available_models() if models is None else models
    recipe = result.get("recipe")
    if recipe is None:
        raise ValueError(f"leaderboard row {result['model']!r} names no checkpoint: its scorer must "
                         "return a Score with recipe=<hub name>")
    if recipe not in models:
        raise ValueError(f"row {result['model']!r} scores {recipe!r}, which is neither shipped nor "
                         f"cached here (available: {sorted(models)})")
    return recipe, models[recipe]


def _tokens_seen(recipe: str, model, metadata: dict[str, Any]) -> int:
    if "tokens_seen" in metadata:
        return int(metadata["tokens_seen"])
    if "block_size" not in metadata:
        raise ValueError(f"checkpoint {recipe!r} records neither tokens_seen nor block_size")
    return int(metadata["history"]["items_seen"]) * int(metadata["block_size"])


def _neural_cost(result: dict[str, Any], models: dict[str, Any]) -> TrainingCost:
    recipe, model = find_checkpoint(result, models)
    meta = model.checkpoint_metadata
    params = sum(p.numel() for p in model.parameters())
    tokens = _tokens_seen(recipe, model, meta)
    cpt = meta.get("chars_per_token") or (1.0 if "vocab" in meta else None)
    window = getattr(model.config, "block_size", None) or getattr(model.config, "context", None)
    context = window * cpt if (window is not None and cpt is not None) else None
    seconds = meta.get("history", {}).get("seconds")
    return TrainingCost(result["model"], result["bpc"], "neural", 6.0 * params * tokens, params,
                        tokens, cpt, window, context, seconds / 60 if seconds else None, recipe)


def training_costs(results: list[dict[str, Any]]) -> list[TrainingCost]:
    """One :class:`TrainingCost` per row of :func:`minillm.leaderboard.leaderboard`, same order."""
    if not isinstance(results, (list, tuple)):
        raise TypeError(f"results must be the list returned by leaderboard(), got {describe(results)}")
    check_nonempty("results", results)
    for r in results:
        if not isinstance(r, dict) or not {"model", "bpc", "params"} <= set(r):
            raise TypeError("results must hold leaderboard() rows (dicts with 'model', 'bpc' and "
                            f"'params'), got {describe(r)}")
    models: dict[str, Any] | None = None  # loaded once, on the first neural row
    costs = []
    for r in results:
        n = _ngram_order(r["model"]) if r.get("params") is None else None
        if n is not None:
            costs.append(_counting_cost(r, n))
        else:
            models = available_models() if models is None else models
            costs.append(_neural_cost(r, models))
    return costs


def format_costs(costs: list[TrainingCost]) -> str:
    """A fixed-width table: score, size, training tokens, compute, context, recorded minutes."""
    lines = [f"{'model':34s} {'bits/char':>9s} {'size':>11s} {'train tokens':>13s} "
             f"{'chars/tok':>9s} {'compute':>9s} {'context':>9s} {'minutes':>7s}", "-" * 109]
    for c in costs:
        size = f"{c.size:,}" + (" c" if c.kind == "counting" else " p")
        ops = f"{c.operations:.1e}" + (" op" if c.kind == "counting" else " F")
        cpt = "?" if c.chars_per_token is None else f"{c.chars_per_token:.2f}"
        ctx = (f"{c.context_chars:.0f}" if c.context_chars is not None else
               f"{c.context_tokens} tok" if c.context_tokens is not None else "recurrent")
        minutes = "—" if c.train_minutes is None else f"{c.train_minutes:.1f}"
        lines.append(f"{c.model[:34]:34s} {c.bpc:9.3f} {size:>11s} {c.train_tokens:13,d} {cpt:>9s} "
                     f"{ops:>9s} {ctx:>9s} {minutes:>7s}")
    lines.append("size: p = parameters, c = stored n-gram counts; compute: F = training FLOPs "
                 "(6·N·D), op = counting operations;\ncontext: the most preceding characters one "
                 "prediction can use; minutes: training time recorded when the checkpoint was made "
                 "(machine-dependent)")
    return "\n".join(lines)


def plot_costs(costs: list[TrainingCost], axes=None):
    """Two panels: bits/char against training compute and against model size; returns the axes."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, attr, xlabel in [
            (axes[0], "operations", "training compute: FLOPs ≈ 6·N·D (neural), count updates (n-gram)"),
            (axes[1], "size", "model size: parameters (neural), stored counts (n-gram)")]:
        crowd: dict[tuple[float, float], int] = {}  # labels already placed near a point
        for kind, marker, color in [("counting", "s", "C1"), ("neural", "o", "C0")]:
            pts = [c for c in costs if c.kind == kind]
            ax.scatter([getattr(c, attr) for c in pts], [c.bpc for c in pts], marker=marker,
                       color=color, s=50, label="n-gram (counting)" if kind == "counting" else "neural")
            for c in pts:
                near = (round(math.log10(getattr(c, attr)), 1), round(c.bpc, 1))
                shift = crowd.get(near, 0)
                crowd[near] = shift + 1
                ax.annotate(c.model, (getattr(c, attr), c.bpc), fontsize=7,
                            xytext=(4, 3 - 9 * shift), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("test bits per character (lower is better)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0].set_title("score against what training cost")
    axes[1].set_title("score against how many numbers the model holds")
    return axes
