"""Checks for chapter 7's exercises: masks, attention, heads, positions and LayerNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention import causal_mask, scaled_dot_product_attention, split_heads
from ..positional import sinusoidal_encoding
from . import Case, CheckResult, run_check


def check_causal_mask(fn) -> CheckResult:
    """``fn(T)`` → (T, T) bool tensor, True where query i may attend to key j (j <= i)."""
    cases = [Case((1,), description="T=1"), Case((4,), description="T=4"),
             Case((9,), description="T=9")]
    # compare() requires a bool tensor here: a float 0/1 mask breaks `~mask` and masked_fill
    return run_check("causal_mask", fn, lambda T: causal_mask(T), cases,
                     hint="True on and below the diagonal: torch.tril(torch.ones(T, T, dtype=torch.bool)) "
                          "or compare arange(T)[None, :] <= arange(T)[:, None]")


def _ref_attention(q, k, v, mask=None):
    return scaled_dot_product_attention(q, k, v, mask)[0]


def check_attention(fn) -> CheckResult:
    """``fn(q, k, v, mask=None)`` → softmax(q kᵀ / √d, masked) v, with mask True = may attend."""
    g = torch.Generator().manual_seed(7)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)[:, None, None, :]
    cases = [
        Case((r(4, 8), r(4, 8), r(4, 8)), description="one sequence, no mask"),
        Case((r(3, 16) * 3, r(6, 16) * 3, r(6, 5)), description="3 queries over 6 keys, values of width 5"),
        Case((r(2, 2, 5, 4), r(2, 2, 5, 4), r(2, 2, 5, 4)),
             {"mask": causal_mask(5)}, description="batch of 2, 2 heads, causal mask"),
        Case((r(2, 2, 5, 4), r(2, 2, 5, 4), r(2, 2, 5, 4)),
             {"mask": pad}, description="padding mask: the last 2 keys of sequence 2 are padding"),
    ]
    return run_check("attention", fn, _ref_attention, cases, atol=1e-5,
                     hint="scores = q @ k.transpose(-2, -1) / sqrt(d); set masked scores to -inf "
                          "with masked_fill(~mask, float('-inf')); softmax over the last dim; @ v")


def check_split_heads(fn) -> CheckResult:
    """``fn(x, n_heads)`` → (B, T, C) reshaped to (B, n_heads, T, C // n_heads)."""
    g = torch.Generator().manual_seed(3)
    cases = [Case((torch.arange(2 * 3 * 4.).view(2, 3, 4), 2), description="tiny, readable values"),
             Case((torch.randn(2, 7, 12, generator=g), 3), description="3 heads of size 4"),
             Case((torch.randn(1, 5, 8, generator=g), 1), description="one head")]
    return run_check("split_heads", fn, split_heads, cases,
                     hint="view(B, T, n_heads, C // n_heads) then transpose(1, 2) — head h owns "
                          "channels h*hs ... (h+1)*hs - 1")


def check_sinusoidal_encoding(fn) -> CheckResult:
    """``fn(n_positions, d_model)`` → (n_positions, d_model) table, sin on even, cos on odd channels."""
    cases = [Case((4, 2), description="4 positions, width 2"), Case((10, 8), description="width 8"),
             Case((100, 32), description="100 positions, width 32")]
    return run_check("sinusoidal_encoding", fn, sinusoidal_encoding, cases, atol=1e-5,
                     hint="angle[p, i] = p / 10000 ** (2i / d) for i in 0 .. d/2 - 1; "
                          "pe[:, 0::2] = sin(angle), pe[:, 1::2] = cos(angle)")


def _ref_layer_norm(x, weight, bias, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def check_layer_norm(fn) -> CheckResult:
    """``fn(x, weight, bias, eps=1e-5)`` → LayerNorm over the last dimension (biased variance)."""
    g = torch.Generator().manual_seed(5)
    cases = [Case((torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.ones(4), torch.zeros(4)),
                  description="one row, weight 1, bias 0"),
             Case((torch.randn(2, 5, 16, generator=g) * 4 + 3, torch.randn(16, generator=g),
                   torch.randn(16, generator=g)), description="(2, 5, 16) with a weight and bias"),
             Case((torch.full((3, 8), 2.5), torch.ones(8), torch.zeros(8)), {"eps": 1e-3},
                  description="constant rows: variance 0, eps keeps it finite"),
             Case((torch.randn(4, 32, generator=g) * 1e-3, torch.ones(32), torch.zeros(32)),
                  description="tiny variance (1e-6, below eps=1e-5): eps belongs inside the square "
                              "root, sqrt(var + eps)"),
             Case((torch.randn(2, 16, generator=g) * 0.05, torch.ones(16), torch.zeros(16)),
                  {"eps": 0.01}, description="eps=0.01 passed by keyword must be used")]
    return run_check("layer_norm", fn, _ref_layer_norm, cases, atol=1e-5,
                     hint="mean and variance over dim=-1 with keepdim=True; var = ((x - mean)**2).mean "
                          "(not the unbiased .var()); (x - mean) / sqrt(var + eps) * weight + bias")
