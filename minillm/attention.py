"""Self-attention, built up as a ladder of named classes, plus masks and sparse attention.

The ladder (each rung computes the same function as the one before, faster or more generally):

1. :func:`scaled_dot_product_attention` — ``softmax(Q Kᵀ / √d + mask) V`` written out, returning
   the weights too (Vaswani et al. 2017, "Attention Is All You Need", eq. 1).
2. :class:`SelfAttentionV1` — one head, a Python loop over query positions: the formula read aloud.
3. :class:`MultiHeadAttentionExplicit` — several heads at once, matrix form, explicit softmax.
4. :class:`MultiHeadAttention` — the same parameters, but the core is PyTorch's fused
   ``F.scaled_dot_product_attention`` (no T×T matrix kept for backward on the fast kernels).

Every model of the course (chapter 7's block, GPT, BERT, T5, the Llama family) attends through one
core, :func:`attend`: boolean or additive masks, an additive bias (T5's relative positions, ALiBi),
prefix keys/values (prefix tuning), grouped-query heads, and PyTorch's fused SDPA as the fast path
with the explicit softmax (:func:`scaled_dot_product_attention`) as its tested twin.
Boolean masks use PyTorch's SDPA convention: ``True`` = this query may attend to this key; additive
masks are added to the scores (0 = attend, a large negative number or ``-inf`` = hide).
Sparse attention (Child et al. 2019, used by GPT-3 in alternating layers): :func:`local_mask`,
:func:`strided_mask`, and :func:`block_local_attention`, whose cost grows linearly with length.

Shape letters: B batch, T query length, S key/value length, C model width (d_model),
nh number of heads, hs head size (C // nh), nb number of blocks, b block size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# Masks


def causal_mask(T: int, S: int | None = None, *, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, S) bool: query i may see key j iff j <= i + (S - T) (queries are the last T positions).

    With S == T this is the lower triangle. S > T is the KV-cache case: the T new queries sit at
    the end of the S keys.
    """
    S = T if S is None else S
    if T < 1 or S < T:
        raise ValueError(f"causal_mask needs 1 <= T <= S, got T={T}, S={S}")
    i = torch.arange(T, device=device)[:, None]  # (T, 1)
    j = torch.arange(S, device=device)[None, :]  # (1, S)
    return j <= i + (S - T)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, S) 1/0 (or bool) "is a real token" → (B, 1, 1, S) bool mask hiding padded keys."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (B, S), got {tuple(attention_mask.shape)}")
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S): broadcasts over heads and queries


def local_mask(T: int, window: int, *, causal: bool = True,
               device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) bool band: query i sees the ``window`` most recent keys (i-window, i]; both sides if not causal."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    near = (i - j).abs() < window
    return near & (j <= i) if causal else near


def strided_mask(T: int, stride: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) bool causal strided pattern (Child et al. 2019): the last ``stride`` keys plus every
    ``stride``-th key before them, so two layers connect any pair of positions."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    d = i - j
    return (d >= 0) & ((d < stride) | (d % stride == 0))


def block_local_mask(T: int, block_size: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) bool: the pattern :func:`block_local_attention` computes — causal, and a query in
    block n sees keys in blocks n-1 and n only."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (j >= (i // block_size - 1) * block_size)


def _check_mask(name: str, mask: torch.Tensor | None) -> None:
    if mask is not None and not (mask.dtype == torch.bool or mask.is_floating_point()):
        raise TypeError(f"{name} must be a bool tensor (True = may attend) or a float tensor added to "
                        f"the scores, got dtype {mask.dtype}")


def _combine(mask: torch.Tensor | None, causal: bool, T: int, S: int, device) -> torch.Tensor | None:
    """One mask from a bool/additive ``mask`` and the causal rule (bool stays bool)."""
    _check_mask("mask", mask)
    if not causal:
        return mask
    c = causal_mask(T, S, device=device)
    if mask is None:
        return c
    if mask.dtype == torch.bool:
        return mask & c
    return mask.masked_fill(~c, float("-inf"))


def additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A bool mask (True = attend) as scores to add: 0 where allowed, ``-inf`` where hidden."""
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return zero.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else mask.to(dtype)


# ---------------------------------------------------------------------------------------------
# Rung 1: the formula


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None, *, scale: float | None = None,
                                 dropout_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``softmax(q kᵀ · scale, masked) v`` with an explicit softmax; returns (output, weights).

    q (..., T, hs), k (..., S, hs), v (..., S, hv); mask broadcastable to (..., T, S): bool
    (True = attend) or float (added to the scores). ``scale`` defaults to 1/√hs. A query row whose
    keys are all hidden by a bool mask gives NaN (no keys to average).
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k need the same last dim, got {q.shape[-1]} and {k.shape[-1]}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T, S)
    if mask is not None:
        _check_mask("mask", mask)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)  # softmax in fp32, cast back
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v, weights  # (..., T, hv), (..., T, S)


# ---------------------------------------------------------------------------------------------
# The core every model attends through


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, mask: torch.Tensor | None = None,
           bias: torch.Tensor | None = None, causal: bool = False, scale: float | None = None,
           dropout_p: float = 0.0, prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
           explicit: bool = False, need_weights: bool = False
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Multi-head attention of queries over keys/values: the one core GPT, BERT and T5 share.

    q (B, nh, T, hs); k, v (B, nkv, S, hs) with nh a multiple of nkv (grouped-query attention:
    each key/value head serves nh // nkv query heads). Returns (output (B, nh, T, hs), weights
    (B, nh, T, P+S) if ``need_weights`` else None).

    mask: bool (True = attend) or additive float, broadcastable to (B, nh, T, P+S) — or to
        (B, nh, T, S) when a prefix is given (the prefix is then visible to every query).
    bias: float added to the scores, same broadcasting as mask (T5's relative positions, ALiBi).
    causal: query i also sees no key after position P+S-T+i (the queries are the last T of the
        keys: the rule for a KV cache and for prefixes).
    scale: score scale, default 1/√hs (T5 uses 1).
    prefix: (k_prefix, v_prefix), each (B, nkv, P, hs), put in front of k and v (prefix tuning).
    explicit: the written-out softmax (:func:`scaled_dot_product_attention`) instead of PyTorch's
        fused SDPA — the slow twin the fast path is tested against; ``need_weights`` implies it.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D (B, heads, length, head size), got shapes "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if prefix is not None:
        pk, pv = prefix
        if pk.shape[:2] != k.shape[:2] or pk.shape[-1] != k.shape[-1] or pk.shape != pv.shape:
            raise ValueError(f"prefix keys/values must have shape (B={k.size(0)}, heads={k.size(1)}, "
                             f"P, hs={k.size(-1)}), got {tuple(pk.shape)} and {tuple(pv.shape)}")
        P = pk.size(2)
        k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
        mask = _pad_keys(mask, P, k.size(2))
        bias = _pad_keys(bias, P, k.size(2))
    nh, nkv = q.size(1), k.size(1)
    if nkv != nh:
        if nh % nkv:
            raise ValueError(f"{nh} query heads cannot share {nkv} key/value heads (need a multiple)")
        k = k.repeat_interleave(nh // nkv, dim=1)  # (B, nh, S, hs): each kv head serves a group
        v = v.repeat_interleave(nh // nkv, dim=1)
    T, S = q.size(-2), k.size(-2)
    if causal and T == 1:
        causal = False  # one query, the newest position (decoding with a cache): it sees every key
    _check_mask("mask", mask)
    if bias is not None:
        if not bias.is_floating_point():
            raise TypeError(f"bias must be a float tensor added to the scores, got dtype {bias.dtype}")
        mask = bias if mask is None else additive_mask(mask, bias.dtype) + bias
    if explicit or need_weights:
        return scaled_dot_product_attention(q, k, v, _combine(mask, causal, T, S, q.device),
                                            scale=scale, dropout_p=dropout_p)
    fast_causal = causal and mask is None and T == S  # SDPA's is_causal aligns top-left
    if causal and not fast_causal:
        mask = _combine(mask, True, T, S, q.device)
    if mask is not None and mask.is_floating_point() and mask.dtype != q.dtype:
        # in bf16/fp16 a float32 "minimum" would overflow to -inf: clamp it to the type's own
        # minimum, so a fully hidden row stays finite (as Hugging Face's additive masks do)
        mask = mask.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                         is_causal=fast_causal, scale=scale)
    return out, None


def _pad_keys(mask: torch.Tensor | None, P: int, total: int) -> torch.Tensor | None:
    """Widen a mask/bias over S keys to P + S keys, the P prefix keys visible (True or 0)."""
    if mask is None or mask.size(-1) == total or mask.size(-1) == 1:
        return mask
    if mask.size(-1) != total - P:
        raise ValueError(f"mask/bias covers {mask.size(-1)} keys; expected {total - P} (the keys) or "
                         f"{total} (prefix + keys)")
    fill = True if mask.dtype == torch.bool else 0.0
    pad = torch.full((*mask.shape[:-1], P), fill, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


def set_attention_impl(model: nn.Module, impl: str) -> nn.Module:
    """Switch every attention layer of ``model`` to ``"sdpa"`` (fused, default) or ``"explicit"``
    (the written-out softmax, which can also return the weights); returns the model."""
    if impl not in ("sdpa", "explicit"):
        raise ValueError(f"impl must be 'sdpa' or 'explicit', got {impl!r}")
    found = 0
    for module in model.modules():
        if hasattr(module, "explicit_attention"):
            module.explicit_attention = impl == "explicit"
            found += 1
    if not found:
        raise ValueError(f"{type(model).__name__} has no attention layers that attend through "
                         "minillm.attention.attend")
    return model


# ---------------------------------------------------------------------------------------------
# Rung 2: one head, one query at a time


class SelfAttentionV1(nn.Module):
    """Single-head self-attention with a Python loop over query positions: the formula read aloud.

    For each query position t: score every key with q_t · k_s / √d, softmax the scores over the
    allowed keys, and average the values with those weights. Slow (T Python iterations) but
    every step is visible. Parity with the vectorised classes is tested.
    """

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=bias)
        self.W_key = nn.Linear(d_in, d_out, bias=bias)
        self.W_value = nn.Linear(d_in, d_out, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                need_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, d_in) → (B, T, d_out); mask broadcastable to (B, T, T), True = attend."""
        if x.dim() != 3:
            raise ValueError(f"x must have shape (B, T, d_in), got {tuple(x.shape)}")
        B, T, _ = x.shape
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # (B, T, d_out) each
        allowed = torch.ones(B, T, T, dtype=torch.bool, device=x.device)
        if mask is not None:
            allowed = allowed & mask
        if causal:
            allowed = allowed & causal_mask(T, device=x.device)
        outputs, all_weights = [], []
        for t in range(T):
            scores = (k @ q[:, t, :, None]).squeeze(-1) / math.sqrt(q.shape[-1])  # (B, T): q_t · k_s
            scores = scores.masked_fill(~allowed[:, t], float("-inf"))
            w = torch.softmax(scores.float(), dim=-1).to(x.dtype)  # (B, T)
            outputs.append((w[:, :, None] * v).sum(dim=1))  # (B, d_out): weighted average of values
            all_weights.append(w)
        out = torch.stack(outputs, dim=1)  # (B, T, d_out)
        return (out, torch.stack(all_weights, dim=1)) if need_weights else out


# ---------------------------------------------------------------------------------------------
# Rungs 3 and 4: multi-head


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) → (B, nh, T, hs): each head gets its own slice of the channels."""
    B, T, C = x.shape
    if C % n_heads:
        raise ValueError(f"width {C} is not divisible by n_heads={n_heads}")
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, nh, T, hs)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) → (B, T, C): the inverse of :func:`split_heads`."""
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).contiguous().view(B, T, nh * hs)  # (B, T, C)


class MultiHeadAttentionExplicit(nn.Module):
    """Multi-head attention (Vaswani et al. 2017, §3.2.2) with an explicit softmax.

    Project to queries, keys and values, split the width into ``n_heads`` heads, attend in each
    head independently, concatenate the heads and mix them with ``out_proj``. Pass ``context`` for
    cross-attention (keys and values from another sequence). Parameter names follow
    ``torch.nn.MultiheadAttention``'s ``out_proj``; :meth:`from_torch` copies its weights.
    """

    def __init__(self, d_model: int, n_heads: int, *, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.d_model, self.n_heads, self.dropout = d_model, n_heads, dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                mask: torch.Tensor | None = None, causal: bool = False, need_weights: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C), context (B, S, C) or None (= x) → (B, T, C) [, weights (B, nh, T, S)].

        mask: bool, broadcastable to (B, nh, T, S), True = attend (see :func:`padding_mask`).
        causal: also hide future keys (:func:`causal_mask`).
        """
        if x.dim() != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x must have shape (B, T, {self.d_model}), got {tuple(x.shape)}")
        context = x if context is None else context
        q = split_heads(self.q_proj(x), self.n_heads)  # (B, nh, T, hs)
        k = split_heads(self.k_proj(context), self.n_heads)  # (B, nh, S, hs)
        v = split_heads(self.v_proj(context), self.n_heads)  # (B, nh, S, hs)
        out, weights = self._attend(q, k, v, mask, causal, need_weights)  # (B, nh, T, hs)
        out = self.out_proj(merge_heads(out))  # (B, T, C)
        return (out, weights) if need_weights else out

    explicit_attention = True  # this rung writes the softmax out (see minillm.attention.attend)

    def _attend(self, q, k, v, mask, causal, need_weights):
        p = self.dropout if self.training else 0.0
        return attend(q, k, v, mask=mask, causal=causal, dropout_p=p,
                      explicit=self.explicit_attention, need_weights=need_weights)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> "MultiHeadAttentionExplicit":
        """A copy of a ``torch.nn.MultiheadAttention`` (``batch_first`` or not) with the same weights."""
        if not mha._qkv_same_embed_dim:
            raise ValueError("only nn.MultiheadAttention with kdim == vdim == embed_dim is supported")
        has_bias = mha.in_proj_bias is not None
        new = cls(mha.embed_dim, mha.num_heads, bias=has_bias, dropout=mha.dropout)
        new.to(mha.in_proj_weight.device, mha.in_proj_weight.dtype)
        with torch.no_grad():
            for proj, w in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_weight.chunk(3)):
                proj.weight.copy_(w)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                for proj, b in zip((new.q_proj, new.k_proj, new.v_proj), mha.in_proj_bias.chunk(3)):
                    proj.bias.copy_(b)
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new


class MultiHeadAttention(MultiHeadAttentionExplicit):
    """:class:`MultiHeadAttentionExplicit` with PyTorch's fused ``F.scaled_dot_product_attention``.

    Same parameters (state dicts are interchangeable), same outputs to ~1e-6; faster, and the fused
    kernels do not keep the (T, S) weight matrix for the backward pass. Asking for the weights
    (``need_weights=True``) falls back to the explicit path, since the fused kernel never forms them.
    """

    explicit_attention = False


# ---------------------------------------------------------------------------------------------
# Sparse attention with linear cost


def block_local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, *,
                          scale: float | None = None) -> torch.Tensor:
    """Causal attention in which each query block sees only its own and the previous key block.

    Equal to dense attention with :func:`block_local_mask`, but each of the T/b blocks scores only
    2b keys, so time and memory grow as T·b instead of T². q, k, v (..., T, hs) → (..., T, hs).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not (q.shape == k.shape and k.shape[:-1] == v.shape[:-1]):
        raise ValueError(f"q, k, v must share (..., T, hs), got {tuple(q.shape)}, {tuple(k.shape)}, "
                         f"{tuple(v.shape)}")
    *lead, T, hs = q.shape
    b = block_size
    nb = -(-T // b)  # ceil
    pad = nb * b - T  # padded keys come after every real query, so the causal mask hides them
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    qb = q.reshape(*lead, nb, b, hs)  # (..., nb, b, hs)
    kb = k.reshape(*lead, nb, b, hs)
    vb = v.reshape(*lead, nb, b, v.shape[-1])

    def with_previous(t: torch.Tensor) -> torch.Tensor:  # (..., nb, b, h) → (..., nb, 2b, h)
        prev = torch.cat([torch.zeros_like(t[..., :1, :, :]), t[..., :-1, :, :]], dim=-3)
        return torch.cat([prev, t], dim=-2)

    kk, vv = with_previous(kb), with_previous(vb)  # (..., nb, 2b, hs)
    r = torch.arange(b, device=q.device)[:, None]  # query offset within its block
    c = torch.arange(2 * b, device=q.device)[None, :]  # key offset, previous block first
    mask = (c <= r + b).expand(nb, b, 2 * b).clone()  # (nb, b, 2b): causal within the window
    mask[0, :, :b] = False  # block 0 has no previous block
    out, _ = scaled_dot_product_attention(qb, kk, vv, mask, scale=scale)  # (..., nb, b, hs)
    return out.reshape(*lead, nb * b, -1)[..., :T, :]
