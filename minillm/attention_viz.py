"""Pictures of attention: one head's weights as a heatmap, and an interactive explorer over
sentences, layers and heads (chapter 7's tiny Transformer, chapter 9's BERT).

:func:`plot_attention` draws a (T, S) weight matrix with the tokens on both axes (rows are queries,
columns are the keys they attend to). :func:`attention_explorer` wraps it in ipywidgets (a sentence
dropdown and layer / head sliders) around a ``get_maps(sentence)`` callable that runs a model; the
first view is drawn at once, so a notebook saved without a live kernel still shows one static plot.
matplotlib and ipywidgets are imported only when something is drawn.

Shape letters: T queries, S keys, nh heads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .validation import check_int, check_nonempty, check_str, describe

__all__ = ["plot_attention", "attention_explorer", "display_tokens"]


def display_tokens(tokens: Sequence[str]) -> list[str]:
    """Tick labels for ``tokens``: a space becomes ``␣`` so that it stays visible."""
    return [("␣" if t == " " else str(t)) for t in tokens]


def _as_matrix(weights: Any) -> torch.Tensor:
    if not isinstance(weights, torch.Tensor):
        try:
            weights = torch.as_tensor(weights)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"weights must be a (T, S) tensor or array of attention weights, got "
                            f"{describe(weights)}") from None
    if weights.dim() != 2:
        raise ValueError(f"weights must be one head's (T, S) attention matrix, got shape "
                         f"{tuple(weights.shape)}")
    return weights.detach().float().cpu()


def plot_attention(weights: Any, tokens: Sequence[str], ax=None, title: str | None = None, *,
                   key_tokens: Sequence[str] | None = None, fontsize: int = 7, vmax: float = 1.0):
    """Heatmap of one head's attention ``weights`` (T, S): row t = where query token t looks.

    Args:
        weights: (T, S) tensor or array (rows sum to 1 for softmax attention).
        tokens: the T query tokens (the key tokens too, unless ``key_tokens`` is given).
        ax: a matplotlib axes to draw on (default: a new 7×6 figure).
        title: the axes title.
        key_tokens: the S key tokens, when they differ from the queries (cross-attention).
        fontsize: tick label size.
        vmax: the weight drawn in the brightest colour (weights run from 0).

    Returns:
        The matplotlib axes.
    """
    w = _as_matrix(weights)  # (T, S)
    check_nonempty("tokens", tokens)
    tokens = list(tokens)  # a string is its characters
    keys = tokens if key_tokens is None else list(key_tokens)
    if len(tokens) != w.shape[0] or len(keys) != w.shape[1]:
        raise ValueError(f"tokens must label every row and column of weights {tuple(w.shape)}: got "
                         f"{len(tokens)} query tokens and {len(keys)} key tokens")
    if title is not None:
        check_str("title", title)
    fontsize = check_int("fontsize", fontsize, low=1)
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(w.numpy(), cmap="viridis", vmin=0, vmax=vmax)
    wide = max(len(str(k)) for k in keys) > 1  # word pieces: vertical labels fit, characters don't need it
    ax.set_xticks(range(len(keys)), display_tokens(keys), fontsize=fontsize, rotation=90 if wide else 0)
    ax.set_yticks(range(len(tokens)), display_tokens(tokens), fontsize=fontsize)
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query")
    if title is not None:
        ax.set_title(title)
    return ax


def _check_maps(maps: Any, tokens: Sequence[str]) -> list[torch.Tensor]:
    """get_maps' attention: one (nh, T, T) or (1, nh, T, T) tensor per layer → list of (nh, T, T)."""
    if isinstance(maps, torch.Tensor) or not isinstance(maps, Sequence) or not maps:
        raise TypeError(f"get_maps must return (tokens, maps) with maps a non-empty list of "
                        f"per-layer (nh, T, T) attention tensors, got {describe(maps)}")
    out = []
    for i, m in enumerate(maps):
        m = torch.as_tensor(m).detach().float().cpu()
        if m.dim() == 4 and m.size(0) == 1:
            m = m[0]
        if m.dim() != 3 or m.shape[1:] != (len(tokens), len(tokens)):
            raise ValueError(f"maps[{i}] must have shape (nh, T, T) with T={len(tokens)} tokens, "
                             f"got {tuple(m.shape)}")
        out.append(m)
    return out


def attention_explorer(get_maps: Callable[[str], tuple[Sequence[str], Sequence[Any]]],
                       sentences: Sequence[str], *, figsize: tuple[float, float] = (7, 6),
                       fontsize: int = 7, title: str | None = None):
    """An ipywidgets explorer: pick a sentence, a layer and a head, see that head's attention.

    Args:
        get_maps: ``sentence -> (tokens, maps)``: the T tokens the model read and its attention,
            one (nh, T, T) (or (1, nh, T, T)) tensor per layer. Called once per redraw.
        sentences: the choices of the dropdown (the first one is drawn at once).
        figsize, fontsize: the size of the figure and of its tick labels.
        title: a prefix of each plot's title (``"{title} · layer l, head h"``).

    Returns:
        The ``ipywidgets.interactive`` widget (``display`` it). Layers and heads are counted from the
        first sentence's maps.
    """
    if not callable(get_maps):
        raise TypeError(f"get_maps must be a callable sentence -> (tokens, maps), got {describe(get_maps)}")
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(f"sentences must be a list of strings, got {describe(sentences)}")
    check_nonempty("sentences", sentences)
    for k, s in enumerate(sentences):
        check_str(f"sentences[{k}]", s, allow_empty=False)
    tokens, maps = get_maps(sentences[0])
    maps = _check_maps(maps, tokens)
    n_layers, n_heads = len(maps), maps[0].size(0)

    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    def show(sentence: str, layer: int, head: int) -> None:
        toks, layer_maps = get_maps(sentence)
        layer_maps = _check_maps(layer_maps, toks)
        _, ax = plt.subplots(figsize=figsize)
        where = f"layer {layer}, head {head}"
        plot_attention(layer_maps[layer][head], toks, ax=ax, fontsize=fontsize,
                       title=where if title is None else f"{title} · {where}")
        plt.show()

    options = list(sentences)
    return widgets.interactive(
        show,
        sentence=widgets.Dropdown(options=options, value=options[0], description="sentence",
                                  layout={"width": "520px"}),
        layer=widgets.IntSlider(0, 0, n_layers - 1, description="layer"),
        head=widgets.IntSlider(0, 0, n_heads - 1, description="head"))
