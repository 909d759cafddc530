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


# ----------------------------------------------------------------------------- a larger exercise: ALiBi

def _alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes for a power-of-two head count: 2^(-8/n), 2^(-16/n), ..., 2^(-8) (Press et al., 2022)."""
    if n_heads < 1 or n_heads & (n_heads - 1):
        raise ValueError(f"n_heads must be a power of two, got {n_heads}")
    return 2.0 ** (-8.0 * torch.arange(1, n_heads + 1, dtype=torch.float32) / n_heads)  # (nh,)


def _ref_alibi_self_attention(x, params, n_heads, use_alibi=True):
    from ..attention import MultiHeadAttention, causal_mask, merge_heads, split_heads

    B, T, C = x.shape
    mha = MultiHeadAttention(C, n_heads)
    mha.load_state_dict(params)
    with torch.no_grad():
        if not use_alibi:
            return mha(x, causal=True)
        q, k, v = (split_heads(proj(x), n_heads) for proj in (mha.q_proj, mha.k_proj, mha.v_proj))
        pos = torch.arange(T)
        distance = (pos[None, :] - pos[:, None]).float()  # (T, T): j - i, <= 0 for visible keys
        bias = _alibi_slopes(n_heads)[:, None, None] * distance  # (nh, T, T)
        bias = bias.masked_fill(~causal_mask(T), float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, nh, T, hs)
        return mha.out_proj(merge_heads(out))


def check_alibi_self_attention(fn) -> CheckResult:
    """``fn(x (B, T, C), params, n_heads, use_alibi=True)`` → (B, T, C): causal multi-head self-attention
    from a ``MultiHeadAttention`` state dict, with ALiBi biases ``-m_h (i - j)`` added to the scores.

    Without ALiBi it must equal ``minillm.attention.MultiHeadAttention(causal=True)`` on the same
    weights; with ALiBi, SDPA with the bias as a float mask (slopes as in BLOOM's ``build_alibi_tensor``).
    """
    g = torch.Generator().manual_seed(11)

    def case(B, T, C, nh, use_alibi, description, scale=1.0):
        r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
        params = {}
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            params[f"{name}.weight"] = r(C, C) * scale / C ** 0.5
            params[f"{name}.bias"] = r(C) * 0.1
        return Case((r(B, T, C), params, nh), {"use_alibi": use_alibi}, description=description)

    cases = [case(2, 6, 16, 4, False, "no ALiBi: plain causal multi-head attention"),
             case(2, 6, 16, 4, True, "4 heads with ALiBi"),
             case(1, 12, 32, 8, True, "8 heads, 12 positions"),
             case(3, 20, 8, 1, True, "a single head (slope 1/256)"),
             case(1, 16, 16, 2, True, "2 heads, small weights: the biases dominate the scores", scale=0.1)]
    return run_check("alibi_self_attention", fn, _ref_alibi_self_attention, cases, atol=1e-5,
                     hint="project with params['q_proj.weight'] etc. (x @ W.T + b), split into heads "
                          "(B, nh, T, hs), scores = q @ k^T / sqrt(hs) + slope_h * (j - i) with "
                          "slope_h = 2 ** (-8 * h / nh) for h = 1..nh, causal mask, softmax, @ v, "
                          "merge heads, output projection")
