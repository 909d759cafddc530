"""Positional encodings: how a permutation-blind attention layer learns where each token is.

Attention treats its input as a set — permute the tokens and the outputs are permuted the same
way. Adding a position-dependent vector to each token embedding breaks that symmetry:

* :func:`sinusoidal_encoding` / :class:`SinusoidalPositionalEncoding` — fixed sines and cosines of
  geometrically spaced frequencies (Vaswani et al. 2017, §3.5):
  ``PE[p, 2i] = sin(p / base^(2i/d))``, ``PE[p, 2i+1] = cos(p / base^(2i/d))``.
* :class:`LearnedPositionalEmbedding` — one trained vector per position (GPT-2's ``wpe``, BERT).
* :func:`alibi_slopes` / :func:`alibi_bias` — no vector at all: ALiBi (Press et al. 2022, "Train
  Short, Test Long"; BLOOM, Baichuan-13B) adds ``-m_h · (i - j)`` to the attention score of query
  ``i`` and key ``j``, a penalty growing linearly with distance, with one slope ``m_h`` per head
  (a geometric sequence). It is an additive bias for :func:`minillm.attention.attend`, like T5's
  relative positions, and nothing in it depends on a maximum length — hence its extrapolation.

Shape letters: B batch, T sequence length, C model width (d_model).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .validation import check_float, check_int, check_tensor


def sinusoidal_encoding(n_positions: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """(n_positions, d_model) float32 table; even channels are sines, odd channels cosines."""
    check_int("n_positions", n_positions, low=1)
    if check_int("d_model", d_model) < 2 or d_model % 2:
        raise ValueError(f"d_model must be an even number >= 2, got {d_model}")
    check_float("base", base, low=1, low_inclusive=False)
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    inv_freq = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (C/2,)
    angles = pos * inv_freq  # (P, C/2); float64 so large positions keep their precision
    pe = torch.empty(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.float()


def _check_input(x: torch.Tensor, d_model: int, offset: int, max_len: int) -> None:
    check_tensor("x", x, dtype_kind="float")
    check_int("offset", offset)
    if x.dim() != 3 or x.shape[-1] != d_model:
        raise ValueError(f"x must have shape (B, T, {d_model}), got {tuple(x.shape)}")
    if offset < 0 or offset + x.shape[1] > max_len:
        raise ValueError(f"positions {offset}..{offset + x.shape[1] - 1} exceed max_len={max_len}")


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table to token embeddings. No parameters; the table is a
    non-persistent buffer, so it follows ``.to(device)`` but is not saved in checkpoints."""

    def __init__(self, d_model: int, max_len: int = 4096, base: float = 10000.0):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model, base), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x (B, T, C) → x + PE[offset : offset+T] (positions start at ``offset``, e.g. a cache length)."""
        _check_input(x, self.d_model, offset, self.max_len)
        return x + self.pe[offset:offset + x.shape[1]].to(x.dtype)  # (T, C) broadcasts over B


class LearnedPositionalEmbedding(nn.Module):
    """Adds a trained vector per position (``wpe`` in GPT-2); cannot go past ``max_len``."""

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        check_int("max_len", max_len, low=1)
        check_int("d_model", d_model, low=1)
        self.d_model, self.max_len = d_model, max_len
        self.wpe = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.wpe.weight, std=0.02)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x (B, T, C) → x + wpe[offset : offset+T]."""
        _check_input(x, self.d_model, offset, self.max_len)
        pos = torch.arange(offset, offset + x.shape[1], device=x.device)  # (T,)
        return x + self.wpe(pos)


# ---------------------------------------------------------------------------------------------
# ALiBi: attention with linear biases


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """The per-head slopes m_h of ALiBi, shape (n_heads,).

    For a power of two n: ``m_h = 2^(-8h/n)``, h = 1..n (n = 8: 1/2, 1/4, …, 1/256). Otherwise the
    slopes of the largest power of two below n, then every other slope of twice that power, until
    there are n (the paper's recipe, which BLOOM uses).
    """
    check_int("n_heads", n_heads, low=1)
    closest = 2 ** math.floor(math.log2(n_heads))

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    slopes = geometric(closest)
    if closest < n_heads:
        slopes += geometric(2 * closest)[0::2][:n_heads - closest]
    return torch.tensor(slopes)


def alibi_bias(n_heads: int, T: int, S: int | None = None, *, device: torch.device | str | None = None
               ) -> torch.Tensor:
    """ALiBi's additive attention bias, shape (1, n_heads, T, S): ``-m_h · (i - j)`` for query i and
    key j, where the T queries are the last T of the S keys (S defaults to T; a KV cache has S > T).

    Keys after the query get a positive bias here; causal masking hides them anyway. Softmax ignores
    a constant added to a row, so this equals BLOOM's cheaper ``m_h · j`` (no query term) wherever
    a mask hides the same keys.
    """
    T = check_int("T", T, low=1)
    S = T if S is None else check_int("S", S, low=T)
    q_pos = torch.arange(S - T, S, device=device)[:, None]  # (T, 1)
    k_pos = torch.arange(S, device=device)[None, :]  # (1, S)
    distance = (q_pos - k_pos).float()  # (T, S): i - j
    return -alibi_slopes(n_heads).to(device)[None, :, None, None] * distance  # (1, nh, T, S)
