"""Positional encodings: how a permutation-blind attention layer learns where each token is.

Attention treats its input as a set — permute the tokens and the outputs are permuted the same
way. Adding a position-dependent vector to each token embedding breaks that symmetry:

* :func:`sinusoidal_encoding` / :class:`SinusoidalPositionalEncoding` — fixed sines and cosines of
  geometrically spaced frequencies (Vaswani et al. 2017, §3.5):
  ``PE[p, 2i] = sin(p / base^(2i/d))``, ``PE[p, 2i+1] = cos(p / base^(2i/d))``.
* :class:`LearnedPositionalEmbedding` — one trained vector per position (GPT-2's ``wpe``, BERT).

Shape letters: B batch, T sequence length, C model width (d_model).
"""

from __future__ import annotations

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
