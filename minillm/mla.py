"""Multi-head latent attention (MLA, 多头潜在注意力): DeepSeek's attention with a compressed KV cache.

During generation a Transformer keeps every past token's keys and values (the KV cache), and for long
contexts that cache, not the weights, fills the accelerator's memory. Multi-query and grouped-query
attention shrink it by letting heads share key/value heads. MLA (DeepSeek-V2, 2024, §2.1; kept in
DeepSeek-V3) shrinks it further without sharing heads:

1. **Compress.** Each token's hidden state x is projected down to one small latent vector
   ``c_kv = RMSNorm(W_dkv x)`` of ``kv_lora_rank`` numbers (512 in DeepSeek-V3, for 128 heads of 128).
   Only c_kv is cached.
2. **Expand.** Every head's key and value are linear functions of the latent:
   ``k_nope_h = W_uk_h c_kv`` and ``v_h = W_uv_h c_kv`` (one ``kv_b_proj``, split per head).
3. **Decoupled RoPE.** A rotation that depends on the position cannot sit between W_uk and c_kv (it
   would stop the absorption below), so the position goes into a separate, small key
   ``k_rope = RoPE(W_kr x)`` of ``qk_rope_head_dim`` numbers, shared by all heads and cached too.
   Each head's query is likewise ``[q_nope_h ; RoPE(q_rope_h)]`` and its score is
   ``q_nope_h · k_nope_h + q_rope_h · k_rope``, scaled by ``1/√(qk_nope_head_dim + qk_rope_head_dim)``.
4. **Absorb** (inference). Since ``q_nope_h · (W_uk_h c) = (W_uk_hᵀ q_nope_h) · c``, the key
   expansion can be folded into the query and the value expansion into ``o_proj``: every head then
   attends directly over the cached latents, like multi-query attention with one key/value head of
   width ``kv_lora_rank + qk_rope_head_dim`` (:meth:`MultiHeadLatentAttention.forward_absorbed`).

Queries are low-rank too when ``q_lora_rank`` is set (``q_a_proj`` → RMSNorm → ``q_b_proj``); that
saves activations in training, not cache. Per token and layer the cache holds
``kv_lora_rank + qk_rope_head_dim`` values, against ``2 · n_kv_heads · head_dim`` for MHA/GQA:
:func:`kv_cache_bytes_per_token` and :func:`kv_cache_table` do the arithmetic.

Parameter names, the RoPE layout (``rope_interleave``) and the numerics follow Hugging Face's
``DeepseekV3Attention``, so its weights load with ``load_state_dict`` and the tests compare outputs.
YaRN context extension (``rope_scaling``), which changes both the RoPE frequencies and the softmax
scale, is not implemented.

Shape letters: B batch, T new tokens, S all positions (cached + new), C model width, nh heads,
r kv_lora_rank, dn qk_nope_head_dim, dr qk_rope_head_dim, dv v_head_dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from .attention import attend, causal_mask
from .norms import RMSNorm
from .validation import check_bool, check_choice, check_float, check_int

__all__ = ["MLAConfig", "MLACache", "MultiHeadLatentAttention", "kv_cache_bytes_per_token",
           "kv_cache_table"]


@dataclass
class MLAConfig:
    hidden_size: int = 64
    num_heads: int = 4
    q_lora_rank: int | None = 32  # None: one plain q_proj (DeepSeek-V2-Lite), else low-rank queries
    kv_lora_rank: int = 16  # r: width of the cached latent c_kv
    qk_nope_head_dim: int = 8  # dn: per-head key/query part computed from the latent, no position
    qk_rope_head_dim: int = 4  # dr: decoupled RoPE part, one key shared by all heads (even)
    v_head_dim: int = 8  # dv: per-head value width
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6  # q_a_layernorm and kv_a_layernorm (HF fixes both at 1e-6)
    attention_bias: bool = False  # biases on q_a_proj, kv_a_proj_with_mqa and o_proj, as in HF
    rope_interleave: bool = True  # DeepSeek's checkpoints rotate pairs (x0, x1), (x2, x3), ...
    rope_scaling: dict | None = None  # YaRN etc.: not implemented, must stay None

    def __post_init__(self) -> None:
        check_int("hidden_size", self.hidden_size, low=1)
        check_int("num_heads", self.num_heads, low=1)
        check_int("q_lora_rank", self.q_lora_rank, low=1, allow_none=True)
        check_int("kv_lora_rank", self.kv_lora_rank, low=1)
        check_int("qk_nope_head_dim", self.qk_nope_head_dim, low=1)
        check_int("qk_rope_head_dim", self.qk_rope_head_dim, low=2)
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim must be even (RoPE rotates pairs of dimensions), "
                             f"got {self.qk_rope_head_dim}")
        check_int("v_head_dim", self.v_head_dim, low=1)
        self.rope_theta = check_float("rope_theta", self.rope_theta, low=0, low_inclusive=False)
        self.rms_norm_eps = check_float("rms_norm_eps", self.rms_norm_eps, low=0, low_inclusive=False)
        check_bool("attention_bias", self.attention_bias)
        check_bool("rope_interleave", self.rope_interleave)
        if self.rope_scaling is not None and self.rope_scaling.get("rope_type", "default") != "default":
            raise NotImplementedError(
                f"rope_scaling={self.rope_scaling!r} is not supported: DeepSeek's YaRN changes the RoPE "
                "frequencies and multiplies the softmax scale by mscale²; only plain RoPE "
                "(rope_scaling=None) is implemented")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def softmax_scale(self) -> float:
        return self.qk_head_dim ** -0.5

    @classmethod
    def from_hf(cls, hf_config) -> "MLAConfig":
        """The attention part of a transformers ``DeepseekV3Config``."""
        rope = dict(getattr(hf_config, "rope_parameters", None) or {})
        theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
        scaling = rope if rope.get("rope_type", "default") != "default" else None
        return cls(hidden_size=hf_config.hidden_size, num_heads=hf_config.num_attention_heads,
                   q_lora_rank=hf_config.q_lora_rank, kv_lora_rank=hf_config.kv_lora_rank,
                   qk_nope_head_dim=hf_config.qk_nope_head_dim, qk_rope_head_dim=hf_config.qk_rope_head_dim,
                   v_head_dim=hf_config.v_head_dim, rope_theta=theta,
                   rms_norm_eps=1e-6,  # DeepseekV3Attention's two norms ignore config.rms_norm_eps
                   attention_bias=hf_config.attention_bias,
                   rope_interleave=bool(getattr(hf_config, "rope_interleave", False)), rope_scaling=scaling)


class MLACache(NamedTuple):
    """What MLA keeps per past token: the normalised latent and the rotated shared RoPE key."""

    c_kv: torch.Tensor  # (B, S, r)
    k_rope: torch.Tensor  # (B, S, dr), RoPE already applied

    @property
    def seq_len(self) -> int:
        return self.c_kv.size(1)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self)


# ---------------------------------------------------------------------------------------------
# RoPE on the decoupled part (kept private: only the layout DeepSeek uses)


def _rope_cos_sin(position_ids: torch.Tensor, dim: int, theta: float, dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position · θ^(-2i/dim), i < dim/2: each (B, 1, T, dim/2), in ``dtype``.

    The frequencies are recomputed in fp32 on every call rather than kept in a buffer: a buffer would
    be cast by ``model.to(torch.bfloat16)``, and bf16 frequencies drift at large positions.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32,
                                             device=position_ids.device) / dim))  # (dim/2,)
    angles = position_ids[:, None, :, None].float() * inv_freq  # (B, 1, T, dim/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool) -> torch.Tensor:
    """Rotate each pair (a, b) of x (..., T, dim) by its angle: (a cos - b sin, b cos + a sin).

    The pairs are (x0, x1), (x2, x3), ... when ``interleave`` (DeepSeek's layout) and
    (x_i, x_{i+dim/2}) otherwise (Llama's). Either way the result is written as
    [all rotated a ; all rotated b], as Hugging Face does; queries and keys share the layout, so
    their dot products do not depend on it.
    """
    if interleave:
        a, b = x[..., 0::2], x[..., 1::2]  # (..., T, dim/2) each
    else:
        a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)  # (..., T, dim)


# ---------------------------------------------------------------------------------------------
# The layer


class MultiHeadLatentAttention(nn.Module):
    """DeepSeek-V2/V3 multi-head latent attention, causal, with a latent-only KV cache.

    ``forward(x, position_ids, attention_mask, cache)`` expands the cached latents into per-head keys
    and values (the form used in training, and Hugging Face's); :meth:`forward_absorbed` computes the
    same function by attending over the latents directly (the inference form). Both return
    ``(output (B, T, C), cache)``, where the cache holds every position seen so far (pass it back to
    decode the next tokens).
    """

    explicit_attention = False  # True: the written-out softmax (minillm.attention.set_attention_impl)

    def __init__(self, config: MLAConfig):
        super().__init__()
        self.config = c = config
        C, nh, bias = c.hidden_size, c.num_heads, c.attention_bias
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(C, nh * c.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(C, c.q_lora_rank, bias=bias)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, eps=c.rms_norm_eps, cast_to_input=True)
            self.q_b_proj = nn.Linear(c.q_lora_rank, nh * c.qk_head_dim, bias=False)
        # one projection gives both cached pieces: the latent (r) and the shared RoPE key (dr)
        self.kv_a_proj_with_mqa = nn.Linear(C, c.kv_lora_rank + c.qk_rope_head_dim, bias=bias)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, eps=c.rms_norm_eps, cast_to_input=True)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, nh * (c.qk_nope_head_dim + c.v_head_dim), bias=False)
        self.o_proj = nn.Linear(nh * c.v_head_dim, C, bias=bias)

    # -- shared by both forms: queries, the new latents, the cache -----------------------------

    def _prepare(self, x: torch.Tensor, position_ids: torch.Tensor | None, cache: MLACache | None
                 ) -> tuple[torch.Tensor, torch.Tensor, MLACache]:
        """Queries (q_nope (B, nh, T, dn), rotated q_rope (B, nh, T, dr)) and the cache extended by x."""
        c = self.config
        if x.dim() != 3 or x.size(-1) != c.hidden_size:
            raise ValueError(f"x must have shape (B, T, {c.hidden_size}), got {tuple(x.shape)}")
        B, T, _ = x.shape
        past = 0 if cache is None else cache.seq_len
        if cache is not None and (cache.c_kv.size(0) != B or cache.c_kv.size(-1) != c.kv_lora_rank):
            raise ValueError(f"cache holds c_kv of shape {tuple(cache.c_kv.shape)}; expected "
                             f"(B={B}, S, {c.kv_lora_rank})")
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=x.device)
        position_ids = position_ids.to(x.device)
        if position_ids.dim() == 1 or (position_ids.dim() == 2 and position_ids.size(0) == 1):
            position_ids = position_ids.reshape(1, -1).expand(B, -1)  # the same positions for every row
        if position_ids.shape != (B, T):
            raise ValueError(f"position_ids must have shape (T,), (1, T) or (B, T) = ({B}, {T}), "
                             f"got {tuple(position_ids.shape)}")

        q = self.q_proj(x) if c.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, T, c.num_heads, c.qk_head_dim).transpose(1, 2)  # (B, nh, T, dn + dr)
        q_nope, q_rope = q.split([c.qk_nope_head_dim, c.qk_rope_head_dim], dim=-1)

        c_kv, k_rope = self.kv_a_proj_with_mqa(x).split([c.kv_lora_rank, c.qk_rope_head_dim], dim=-1)
        c_kv = self.kv_a_layernorm(c_kv)  # (B, T, r)
        cos, sin = _rope_cos_sin(position_ids, c.qk_rope_head_dim, c.rope_theta, x.dtype)  # (B, 1, T, dr/2)
        q_rope = _apply_rope(q_rope, cos, sin, c.rope_interleave)  # (B, nh, T, dr)
        k_rope = _apply_rope(k_rope[:, None], cos, sin, c.rope_interleave)[:, 0]  # (B, T, dr), all heads'

        if cache is not None:
            c_kv = torch.cat([cache.c_kv, c_kv], dim=1)  # (B, S, r)
            k_rope = torch.cat([cache.k_rope, k_rope], dim=1)  # (B, S, dr)
        return q_nope, q_rope, MLACache(c_kv, k_rope)

    def _keep_mask(self, attention_mask: torch.Tensor | None, B: int, T: int, S: int) -> torch.Tensor | None:
        """A (B, S) "is a real token" mask → (B, 1, 1, S) bool; a bool mask broadcastable to
        (B, nh, T, S) passes through. Causality is added by the caller."""
        if attention_mask is None:
            return None
        if attention_mask.dim() == 2:
            if attention_mask.shape != (B, S):
                raise ValueError(f"a 2-D attention_mask must have shape (B, S) = ({B}, {S}): one entry per "
                                 f"cached and new position, got {tuple(attention_mask.shape)}")
            return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        if attention_mask.dtype != torch.bool or attention_mask.dim() != 4:
            raise ValueError(f"attention_mask must be (B, S) 1/0 or a 4-D bool mask (True = attend) "
                             f"broadcastable to (B, nh, T, S); got {tuple(attention_mask.shape)}, "
                             f"{attention_mask.dtype}")
        return attention_mask

    # -- the expanded (training / Hugging Face) form --------------------------------------------

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, cache: MLACache | None = None
                ) -> tuple[torch.Tensor, MLACache]:
        """Causal MLA over the cached positions and the T new ones.

        Args:
            x: (B, T, C) hidden states of the new tokens.
            position_ids: (T,), (1, T) or (B, T) positions for RoPE; default ``past, past+1, ...``.
            attention_mask: (B, S) with 1 = real token (padding), or a bool mask broadcastable to
                (B, nh, T, S), True = may attend; the causal rule is always applied on top.
            cache: the :class:`MLACache` returned by the previous call, or None.
        """
        c = self.config
        B, T = x.shape[:2]
        q_nope, q_rope, cache = self._prepare(x, position_ids, cache)
        S = cache.seq_len
        kv = self.kv_b_proj(cache.c_kv).view(B, S, c.num_heads, -1).transpose(1, 2)  # (B, nh, S, dn + dv)
        k_nope, v = kv.split([c.qk_nope_head_dim, c.v_head_dim], dim=-1)
        k_rope = cache.k_rope[:, None].expand(B, c.num_heads, S, c.qk_rope_head_dim)  # (B, nh, S, dr)
        q = torch.cat([q_nope, q_rope], dim=-1)  # (B, nh, T, dn + dr)
        k = torch.cat([k_nope, k_rope], dim=-1)  # (B, nh, S, dn + dr)
        out, _ = attend(q, k, v, mask=self._keep_mask(attention_mask, B, T, S), causal=True,
                        scale=c.softmax_scale, explicit=self.explicit_attention)  # (B, nh, T, dv)
        out = out.transpose(1, 2).reshape(B, T, c.num_heads * c.v_head_dim)  # (B, T, nh·dv)
        return self.o_proj(out), cache

    # -- the absorbed (inference) form ----------------------------------------------------------

    def forward_absorbed(self, x: torch.Tensor, position_ids: torch.Tensor | None = None,
                         attention_mask: torch.Tensor | None = None, cache: MLACache | None = None
                         ) -> tuple[torch.Tensor, MLACache]:
        """The same function as :meth:`forward`, attending over the cached latents directly.

        ``W_uk`` (kv_b_proj's key half) is applied to the queries instead of to every cached latent,
        and ``W_uv`` (its value half) is folded into ``o_proj``. All heads then read one shared
        "key" ``[c_kv ; k_rope]`` (B, S, r + dr) and one shared "value" ``c_kv`` (B, S, r), so the
        heads are simply more query rows: attention runs as a single head over nh·T queries, and
        nothing of size S × nh is ever built. That is what makes decoding from the small cache cheap
        (DeepSeek's FlashMLA kernel does the same). A real server would fold the weights once.
        """
        c = self.config
        B, T = x.shape[:2]
        nh, dn, r = c.num_heads, c.qk_nope_head_dim, c.kv_lora_rank
        q_nope, q_rope, cache = self._prepare(x, position_ids, cache)
        S = cache.seq_len
        w_kv = self.kv_b_proj.weight.view(nh, dn + c.v_head_dim, r)
        w_uk, w_uv = w_kv[:, :dn], w_kv[:, dn:]  # (nh, dn, r), (nh, dv, r)
        # q_nope_h · (W_uk_h c) = (W_uk_hᵀ q_nope_h) · c: move the key expansion onto the query
        q_latent = torch.einsum("bhtd,hdr->bhtr", q_nope, w_uk)  # (B, nh, T, r)
        q = torch.cat([q_latent, q_rope], dim=-1)  # (B, nh, T, r + dr)
        q = q.reshape(B, 1, nh * T, r + c.qk_rope_head_dim)  # (B, 1, nh·T, r + dr): heads become query rows
        k = torch.cat([cache.c_kv, cache.k_rope], dim=-1)[:, None]  # (B, 1, S, r + dr)
        v = cache.c_kv[:, None]  # (B, 1, S, r)

        keep = causal_mask(T, S, device=x.device)[None, None]  # (1, 1, T, S)
        user = self._keep_mask(attention_mask, B, T, S)
        if user is not None:
            keep = keep & user
        keep = keep.expand(B, nh, T, S).reshape(B, 1, nh * T, S)  # row h·T + t is head h, query t
        out, _ = attend(q, k, v, mask=keep, scale=c.softmax_scale,
                        explicit=self.explicit_attention)  # (B, 1, nh·T, r)
        out = out.view(B, nh, T, r)
        w_o = self.o_proj.weight.view(c.hidden_size, nh, c.v_head_dim)  # (C, nh, dv)
        w_o_latent = torch.einsum("chv,hvr->chr", w_o, w_uv)  # (C, nh, r): o_proj ∘ W_uv per head
        y = torch.einsum("bhtr,chr->btc", out, w_o_latent)  # (B, T, C)
        return (y if self.o_proj.bias is None else y + self.o_proj.bias), cache


# ---------------------------------------------------------------------------------------------
# KV-cache arithmetic


def kv_cache_bytes_per_token(kind: str, *, n_layers: int, n_heads: int, n_kv_heads: int | None = None,
                             head_dim: int | None = None, kv_lora_rank: int | None = None,
                             qk_rope_head_dim: int | None = None, bytes_per_value: int = 2) -> int:
    """Bytes of KV cache one token occupies across all layers (bytes_per_value 2 = fp16/bf16).

    MHA (n_kv_heads = n_heads), GQA (n_kv_heads divides n_heads) and MQA (n_kv_heads = 1) cache a key
    and a value per KV head: ``2 · n_layers · n_kv_heads · head_dim · bytes``. MLA caches one latent
    and one shared RoPE key: ``n_layers · (kv_lora_rank + qk_rope_head_dim) · bytes``, whatever the
    number of heads.
    """
    check_choice("kind", kind, ("mha", "gqa", "mqa", "mla"))
    check_int("n_layers", n_layers, low=1)
    check_int("n_heads", n_heads, low=1)
    check_int("bytes_per_value", bytes_per_value, low=1)
    if kind == "mla":
        check_int("kv_lora_rank", kv_lora_rank, low=1)
        check_int("qk_rope_head_dim", qk_rope_head_dim, low=0)
        return n_layers * (kv_lora_rank + qk_rope_head_dim) * bytes_per_value
    check_int("head_dim", head_dim, low=1)
    default = {"mha": n_heads, "mqa": 1, "gqa": None}[kind]
    n_kv_heads = default if n_kv_heads is None else check_int("n_kv_heads", n_kv_heads, low=1)
    if n_kv_heads is None:
        raise ValueError("kind='gqa' needs n_kv_heads (the number of key/value heads)")
    if kind in ("mha", "mqa") and n_kv_heads != default:
        raise ValueError(f"kind={kind!r} means n_kv_heads={default} (with n_heads={n_heads}), "
                         f"got n_kv_heads={n_kv_heads}")
    if n_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_value


def kv_cache_table(*, n_layers: int, n_heads: int, head_dim: int, n_kv_heads: int,
                   kv_lora_rank: int | None = None, qk_rope_head_dim: int | None = None,
                   bytes_per_value: int = 2) -> list[dict]:
    """KV-cache size per token of one model shape under MHA, GQA, MQA and MLA: one dict per row.

    The MLA sizes default to DeepSeek-V3's ratios scaled to ``head_dim``: V3 caches a latent of
    512 = 4 · 128 and a RoPE key of 64 = 128 / 2 for heads of 128, so ``kv_lora_rank = 4 · head_dim``
    and ``qk_rope_head_dim = head_dim / 2`` (256 and 32 at SmolLM2-135M's head_dim 64). MLA's cache
    does not grow with the number of heads, so its advantage over MHA is nh / 2.25 at these ratios:
    4× at SmolLM2's 9 heads, 57× at DeepSeek-V3's 128.
    """
    kv_lora_rank = 4 * head_dim if kv_lora_rank is None else kv_lora_rank
    qk_rope_head_dim = head_dim // 2 if qk_rope_head_dim is None else qk_rope_head_dim
    common = dict(n_layers=n_layers, n_heads=n_heads, bytes_per_value=bytes_per_value)
    specs = [("MHA", "mha", dict(head_dim=head_dim), f"K, V × {n_heads} heads × {head_dim}"),
             ("GQA", "gqa", dict(head_dim=head_dim, n_kv_heads=n_kv_heads),
              f"K, V × {n_kv_heads} heads × {head_dim}"),
             ("MQA", "mqa", dict(head_dim=head_dim), f"K, V × 1 head × {head_dim}"),
             ("MLA", "mla", dict(kv_lora_rank=kv_lora_rank, qk_rope_head_dim=qk_rope_head_dim),
              f"latent {kv_lora_rank} + RoPE key {qk_rope_head_dim}")]
    rows = []
    for name, kind, sizes, cached in specs:
        nbytes = kv_cache_bytes_per_token(kind, **common, **sizes)
        rows.append({"attention": name, "cached per layer": cached,
                     "values per token": nbytes // bytes_per_value, "bytes per token": nbytes})
    mha = rows[0]["bytes per token"]
    for row in rows:
        row["vs MHA"] = row["bytes per token"] / mha
    return rows
