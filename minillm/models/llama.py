"""The modern decoder: Llama, and its close relatives SmolLM2, Qwen2 and Qwen3.

Touvron et al. (2023, "LLaMA") kept GPT-2's decoder-only shape and changed four parts, which every
open model since has copied: RMSNorm instead of LayerNorm (:class:`minillm.norms.RMSNorm`), no
learned position table — the queries and keys are *rotated* by an angle proportional to their
position instead (RoPE, Su et al. 2021, "RoFormer") —, a gated SiLU feed-forward net (SwiGLU,
Shazeer 2020), and no biases. Grouped-query attention (GQA, Ainslie et al. 2023) lets several query
heads share one key/value head, which shrinks the key/value cache. Qwen2 puts biases back on the
q/k/v projections; Qwen3 adds an RMSNorm over each query and key head before the rotation.

Parameter names are Hugging Face's (``model.layers.{i}.self_attn.q_proj`` ...), so ``state_dict()``
keys equal those of ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` and importing
weights is a key-for-key copy with no transpose. :meth:`LlamaForCausalLM.from_gguf` reads a
llama.cpp GGUF file through :mod:`minillm.gguf`. Attention goes through the course's one core,
:func:`minillm.attention.attend` (SDPA fast path, explicit softmax as its tested twin); generation
uses a preallocated key/value cache.

Shape letters: B batch, T tokens in this call, L tokens already in the cache, S = L + T keys,
C hidden size, nh query heads, nkv key/value heads, hd head size, V vocabulary.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..attention import attend
from ..norms import RMSNorm
from ..sampling import check_generate_args, sample_next
from ..search import beam_search
from ..validation import (check_bool, check_choice, check_float, check_int, check_shape,
                          check_tensor, check_token_ids)
from .gpt import KVCache as _KVCacheBase
from .gpt import past_length
from .hf_io import read_hf_directory, write_hf_directory

IDS = "input_ids (int64/int32 token ids, shape (B, T))"  # how errors name the model's input
MODEL_TYPES = ("llama", "qwen2", "qwen3")  # Hugging Face model_type values this module reads/writes
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}


@dataclass
class LlamaConfig:
    """Sizes and switches of a :class:`LlamaForCausalLM` (Hugging Face's field names)."""

    vocab_size: int = 256  # tokens
    hidden_size: int = 64  # C: width of the residual stream
    intermediate_size: int = 172  # width of the SwiGLU hidden layer (Llama: about 8/3 · C)
    num_hidden_layers: int = 2  # decoder layers
    num_attention_heads: int = 4  # query heads nh
    num_key_value_heads: int | None = None  # nkv; None = nh (plain multi-head attention)
    head_dim: int | None = None  # hd; None = hidden_size // num_attention_heads (Qwen3 sets its own)
    max_position_embeddings: int = 2048  # the longest sequence the model was trained on
    rms_norm_eps: float = 1e-6  # RMSNorm epsilon
    rope_theta: float = 10000.0  # RoPE base: channel pair i turns by position · theta^(-2i/hd)
    tie_word_embeddings: bool = False  # lm_head shares its matrix with embed_tokens
    attention_bias: bool = False  # biases on q/k/v (Qwen2: always); Llama and Qwen3 also on o_proj
    qk_norm: bool = False  # RMSNorm over each query and key head before RoPE (Qwen3)
    model_type: str = "llama"  # "llama", "qwen2" or "qwen3": what save_pretrained writes
    bos_token_id: int | None = None  # written to config.json for Hugging Face
    eos_token_id: int | None = None  # generate stops here unless told otherwise

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self.num_key_value_heads = check_int("num_key_value_heads", self.num_key_value_heads, low=1)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads={self.num_attention_heads} must be a multiple of "
                             f"num_key_value_heads={self.num_key_value_heads} (each key/value head "
                             f"serves an equal group of query heads)")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size={self.hidden_size} must be divisible by "
                                 f"num_attention_heads={self.num_attention_heads}, or give head_dim")
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.head_dim = check_int("head_dim", self.head_dim, low=2)
        if self.head_dim % 2:
            raise ValueError(f"head_dim={self.head_dim} must be even: RoPE rotates pairs of channels")
        self.rms_norm_eps = check_float("rms_norm_eps", self.rms_norm_eps, low=0, low_inclusive=False)
        self.rope_theta = check_float("rope_theta", self.rope_theta, low=0, low_inclusive=False)
        for name in ("tie_word_embeddings", "attention_bias", "qk_norm"):
            check_bool(name, getattr(self, name))
        check_choice("model_type", self.model_type, MODEL_TYPES)
        for name in ("bos_token_id", "eos_token_id"):
            check_int(name, getattr(self, name), low=0, high=self.vocab_size - 1, allow_none=True)
        # each Hugging Face class hard-wires some switches: keep configs that it can load
        if self.qk_norm != (self.model_type == "qwen3"):
            raise ValueError(f"qk_norm={self.qk_norm} does not fit model_type={self.model_type!r}: "
                             f"Qwen3 (and only Qwen3) normalises query/key heads")
        if self.model_type == "qwen2" and not self.attention_bias:
            raise ValueError("model_type='qwen2' always has q/k/v biases: set attention_bias=True")

    @property
    def o_proj_bias(self) -> bool:
        """Whether o_proj has a bias: Llama and Qwen3 follow attention_bias; Qwen2 never has one."""
        return self.attention_bias and self.model_type != "qwen2"

    @classmethod
    def tiny(cls, **overrides) -> "LlamaConfig":
        """A model small enough for unit tests: 2 layers, width 64, 4 query / 2 key-value heads."""
        return cls(**{**dict(vocab_size=256, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=128), **overrides})

    @classmethod
    def smollm2_135m(cls, **overrides) -> "LlamaConfig":
        """SmolLM2-135M (Allal et al., 2025): 30 layers, width 576, 9 query / 3 key-value heads of
        size 64, 49,152 tokens, tied embeddings, context 8,192 (134.5M parameters)."""
        return cls(**{**dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                             num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                             max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
                             tie_word_embeddings=True, bos_token_id=1, eos_token_id=2), **overrides})


# ---------------------------------------------------------------------------------------------
# Rotary position embedding (RoPE)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0, *,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the RoPE angles for integer ``positions`` (...): two tensors (..., hd).

    Channel pair i of a token at position p turns by the angle ``p · theta^(-2i/hd)``: fast turns
    in the first pairs, slow ones in the last. In the half-split layout of :func:`apply_rope` the
    pair i is (channel i, channel i + hd/2), so each table is its hd/2 angles written twice.
    Computed in fp32 (angles reach 10⁴ and more) and cast to ``dtype`` at the end, as Hugging Face.
    """
    check_tensor("positions", positions, dtype_kind="int")
    head_dim = check_int("head_dim", head_dim, low=2)
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float()
    inv_freq = 1.0 / (theta ** (exponent / head_dim))  # (hd/2,) radians per position
    angles = positions[..., None].float() * inv_freq  # (..., hd/2)
    emb = torch.cat((angles, angles), dim=-1)  # (..., hd): pair i = channels i and i + hd/2
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) → (-x2, x1) with x1, x2 the two halves of the last dimension."""
    x1, x2 = x[..., : x.size(-1) // 2], x[..., x.size(-1) // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x (B, heads, T, hd) by the angles of their positions.

    cos, sin: (B, T, hd) or (T, hd) from :func:`rope_cos_sin`. Each pair (x_i, x_{i+hd/2}) becomes
    (x_i cos − x_{i+hd/2} sin, x_{i+hd/2} cos + x_i sin): a 2-D rotation, so q·k then depends only
    on the distance between the two positions.

    The convention is Hugging Face's "rotate_half": the pairs are the two *halves* of the head.
    Meta's original code (and llama.cpp) rotates *interleaved* neighbours (x_0, x_1), (x_2, x_3)
    instead. The two are the same function up to a fixed reordering of the head's channels, which
    can be folded into the rows of q_proj and k_proj: Hugging Face's checkpoint converter permutes
    those rows so that the half-split works, and llama.cpp's converter permutes them back when it
    writes GGUF. So GGUF q/k weights must be un-permuted before they work here
    (:func:`minillm.gguf.unpermute_qk`); v and o are unaffected — the classic import pitfall, and
    the parity test against transformers would catch it.
    """
    cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)  # (B, 1, T, hd): the same angles for every head
    return (x * cos) + (rotate_half(x) * sin)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, nkv, S, hd) → (B, nkv · n_rep, S, hd): key/value head j serves query heads
    j·n_rep … j·n_rep + n_rep − 1 (grouped-query attention)."""
    if n_rep == 1:
        return x
    B, nkv, S, hd = x.shape
    return x[:, :, None].expand(B, nkv, n_rep, S, hd).reshape(B, nkv * n_rep, S, hd)


# ---------------------------------------------------------------------------------------------
# The blocks


class KVCache(_KVCacheBase):
    """Preallocated keys and values, (num_hidden_layers, B, nkv, max_len, hd) each, filled in place.

    The cache stores the nkv key/value heads only — GQA's memory saving — and the keys already
    rotated, so a decoding step neither re-rotates nor concatenates (see :class:`minillm.models.gpt.KVCache`).
    """

    def __init__(self, config: LlamaConfig, batch_size: int, max_len: int, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        batch_size = check_int("batch_size", batch_size, low=1)
        max_len = check_int("max_len", max_len, low=1)
        if max_len > config.max_position_embeddings:
            raise ValueError(f"max_len={max_len} is longer than max_position_embeddings="
                             f"{config.max_position_embeddings}")
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_len,
                 config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.max_len = max_len


class LlamaAttention(nn.Module):
    """Causal self-attention with RoPE and grouped-query heads (HF: ``self_attn``)."""

    explicit_attention = False  # True: the written-out softmax (minillm.attention.set_attention_impl)

    def __init__(self, config: LlamaConfig):
        super().__init__()
        c = config
        self.nh, self.nkv, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        self.q_proj = nn.Linear(c.hidden_size, self.nh * self.hd, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, self.nkv * self.hd, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, self.nkv * self.hd, bias=c.attention_bias)
        self.o_proj = nn.Linear(self.nh * self.hd, c.hidden_size, bias=c.o_proj_bias)
        # Qwen3: normalise each head's query/key vector (over hd) before rotating it
        self.q_norm = RMSNorm(self.hd, c.rms_norm_eps, cast_to_input=True) if c.qk_norm else None
        self.k_norm = RMSNorm(self.hd, c.rms_norm_eps, cast_to_input=True) if c.qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, past=None, layer: int = 0) -> torch.Tensor:
        """x (B, T, C) → (B, T, C). cos/sin (B|1, T, hd); mask: additive (B, 1, 1, S) or None;
        past: a :class:`KVCache` (written in place) or per-layer (k, v) prefixes (read only)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd)  # (B, T, nh, hd)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd)  # (B, T, nkv, hd)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)  # (B, nkv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)  # (B, nh, T, hd)
        k = apply_rope(k.transpose(1, 2), cos, sin)  # (B, nkv, T, hd)
        if isinstance(past, KVCache):
            k, v = past.update(layer, k, v)  # (B, nkv, S, hd): the cache's filled prefix + ours
        elif past is not None:
            pk, pv = past[layer]  # (B, nkv, P, hd) each: keys/values in front (prefix tuning)
            k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
        n_rep = self.nh // self.nkv
        k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (B, nh, S, hd)
        y, _ = attend(q, k, v, mask=mask, causal=True, explicit=self.explicit_attention)  # (B, nh, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))  # (B, T, C)


class LlamaMLP(nn.Module):
    """SwiGLU feed-forward net: down(silu(gate(x)) · up(x)), C → intermediate → C, no biases."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, cast_to_input=True)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps,
                                                cast_to_input=True)
        self.mlp = LlamaMLP(config)

    def forward(self, x, cos, sin, mask=None, past=None, layer: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, past, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """The decoder stack without the head (HF: ``model``): embeddings, layers, final norm."""

    gradient_checkpointing = False  # recompute each layer in backward (HF's attribute of this name)

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, cast_to_input=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, past=None) -> torch.Tensor:
        """Embedded input (B, T, C) → final hidden states (B, T, C); advances a KVCache."""
        # activation checkpointing: keep only each layer's input, recompute its insides in backward
        recompute = (self.gradient_checkpointing and self.training and torch.is_grad_enabled()
                     and not isinstance(past, KVCache))
        for i, layer in enumerate(self.layers):
            if recompute:
                x = checkpoint(layer, x, cos, sin, mask, past, i, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, past, i)
        if isinstance(past, KVCache):
            past.length += x.size(1)
        return self.norm(x)


# ---------------------------------------------------------------------------------------------
# The language model


class LlamaForCausalLM(nn.Module):
    """A Llama-family language model: token ids (B, T) → next-token logits (B, T, V)."""

    config_class = LlamaConfig

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight  # one matrix for input and output
        self.apply(self._init_weights)

    @classmethod
    def _uninitialized(cls, config: LlamaConfig) -> "LlamaForCausalLM":
        """A model whose weights are about to be overwritten: built on the meta device, so the
        random initialisation is skipped (it takes seconds for 135M parameters)."""
        with torch.device("meta"):
            model = cls(config)
        model = model.to_empty(device="cpu")
        if config.tie_word_embeddings:  # re-tie: to_empty gives every module its own storage
            model.lm_head.weight = model.model.embed_tokens.weight
        return model

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)  # HF initializer_range
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameter count (a tied matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether the decoder layers recompute their activations in backward (training only)."""
        return self.model.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.model.gradient_checkpointing = check_bool("gradient_checkpointing", value)

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing (Chen et al., 2016), as Hugging Face's method of this name: in
        training, each layer keeps only its input and recomputes its activations during backward
        (less memory, about one more forward of time). No effect under no_grad or with a KVCache."""
        self.model.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Store every layer's activations again (the default)."""
        self.model.gradient_checkpointing = False

    # ---------------------------------------------------------------- input checks

    def _check_ids(self, ids: torch.Tensor) -> None:
        check_token_ids(IDS, ids, self.config.vocab_size, ndim=2, allow_empty=True)
        if ids.dtype not in (torch.int64, torch.int32):  # what nn.Embedding accepts
            raise TypeError(f"{IDS} must be int64 or int32, got {ids.dtype}")

    def _past_length(self, past_key_values, batch: int) -> int:
        c = self.config
        return past_length(past_key_values, n_layers=c.num_hidden_layers, batch=batch,
                           n_kv_heads=c.num_key_value_heads, head_dim=c.head_dim)

    def _embed(self, input_ids, inputs_embeds) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            self._check_ids(input_ids)
            return self.model.embed_tokens(input_ids)  # (B, T, C)
        check_tensor("inputs_embeds", inputs_embeds, ndim=3)
        C = self.config.hidden_size
        if inputs_embeds.size(-1) != C or not inputs_embeds.is_floating_point():
            raise ValueError(f"inputs_embeds must be float of shape (B, T, hidden_size={C}), got "
                             f"{inputs_embeds.dtype} {tuple(inputs_embeds.shape)}")
        return inputs_embeds

    def _positions(self, position_ids, B: int, T: int, past: int, device) -> torch.Tensor:
        """(B|1, T) integer positions: given, or past .. past+T-1."""
        n = self.config.max_position_embeddings
        if position_ids is None:
            if past + T > n:
                raise ValueError(f"sequence of {past + T} tokens is longer than "
                                 f"max_position_embeddings={n}")
            return torch.arange(past, past + T, device=device)[None]  # (1, T)
        check_token_ids("position_ids", position_ids, n, ndim=(1, 2))
        if position_ids.shape not in ((T,), (1, T), (B, T)):
            raise ValueError(f"position_ids must have shape (B, T) = {(B, T)} or (T,), got "
                             f"{tuple(position_ids.shape)}")
        return position_ids.reshape(-1, T)

    @staticmethod
    def _mask(attention_mask, B: int, T: int, past: int, dtype: torch.dtype):
        """(B, S) 1/0 "is a real token" → additive (B, 1, 1, S) mask, or None."""
        if attention_mask is None:
            return None
        check_tensor("attention_mask", attention_mask, ndim=2)
        if attention_mask.shape not in ((B, past + T),) + (((B, T),) if past == 0 else ()):
            raise ValueError(f"attention_mask must have shape (B, past + T) = {(B, past + T)} (1 = "
                             f"real token, 0 = padding), got {tuple(attention_mask.shape)}")
        return _additive(attention_mask.bool(), dtype)

    # ---------------------------------------------------------------- forward

    def hidden_states(self, input_ids: torch.Tensor | None = None, *,
                      inputs_embeds: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None,
                      past_key_values: KVCache | Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                      ) -> torch.Tensor:
        """The final hidden states (B, T, C); arguments as in :meth:`forward`."""
        given = input_ids if input_ids is not None else inputs_embeds
        past = self._past_length(past_key_values, given.size(0) if given is not None else 0)
        x = self._embed(input_ids, inputs_embeds)  # (B, T, C)
        B, T = x.shape[:2]
        pos = self._positions(position_ids, B, T, past, x.device)  # (B|1, T)
        cos, sin = rope_cos_sin(pos, self.config.head_dim, self.config.rope_theta, dtype=x.dtype)
        mask = self._mask(attention_mask, B, T, past, x.dtype)
        return self.model(x, cos, sin, mask, past_key_values)

    def forward(self, input_ids: torch.Tensor | None = None, *,
                inputs_embeds: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                past_key_values: KVCache | Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                ) -> torch.Tensor:
        """Next-token logits (B, T, V), with Hugging Face's argument meanings.

        input_ids (B, T) token ids, or inputs_embeds (B, T, C).
        attention_mask (B, L+T): 1 = real token, 0 = padding (hidden as a key). Positions are not
            derived from it (as in HF's forward): with left padding pass ``position_ids`` too.
        position_ids (B, T) or (T,): default ``past .. past+T-1``; they set the RoPE angles.
        past_key_values: a :class:`KVCache` (filled in place; ``generate`` uses one) or one
            (key, value) pair per layer, each (B, nkv, P, hd) and already rotated, put in front of
            this call's keys/values and left unchanged (prefix tuning); P counts as past positions.
        """
        return self.lm_head(self.hidden_states(input_ids, inputs_embeds=inputs_embeds,
                                               attention_mask=attention_mask,
                                               position_ids=position_ids,
                                               past_key_values=past_key_values))

    def _decode_hidden(self, ids: torch.Tensor, positions: torch.Tensor, real: torch.Tensor | None,
                       cache: KVCache | None) -> torch.Tensor:
        """:meth:`hidden_states` for ``generate``'s inner loop, which checked its prompt once.
        ids (B, T), positions (B|1, T), real: (B, S) bool "is a real token" or None."""
        x = self.model.embed_tokens(ids)  # (B, T, C)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, self.config.rope_theta, dtype=x.dtype)
        mask = None if real is None else _additive(real, x.dtype)
        return self.model(x, cos, sin, mask, cache)

    # ---------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, *,
                 attention_mask: torch.Tensor | None = None, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 num_beams: int = 1, length_penalty: float = 1.0, eos_token_id: int | None = None,
                 pad_token_id: int | None = None, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue the prompts ``input_ids`` (B, T ≥ 1) by up to ``max_new_tokens`` tokens.

        Arguments mirror Hugging Face ``generate``: greedy by default; ``do_sample=True`` samples
        after ``temperature``, ``top_k`` and ``top_p`` filtering; ``num_beams > 1`` runs beam search
        (:func:`minillm.search.beam_search`). ``attention_mask`` (B, T) marks left padding (0) in a
        batch of prompts of different lengths: positions then count real tokens only, as in HF.
        ``eos_token_id`` (default: the config's) ends a row; finished rows continue with
        ``pad_token_id`` (default: the end token) and generation stops when every row has ended,
        so the result is (B, T + n) with n ≤ max_new_tokens. ``use_cache=False`` recomputes the
        whole sequence every step (the slow twin of the preallocated :class:`KVCache`).
        """
        self._check_ids(input_ids)
        check_generate_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, num_beams=num_beams, length_penalty=length_penalty)
        check_bool("do_sample", do_sample)
        check_bool("use_cache", use_cache)
        V = self.config.vocab_size
        eos = self.config.eos_token_id if eos_token_id is None else eos_token_id
        eos = check_int("eos_token_id", eos, low=0, high=V - 1, allow_none=True)
        pad = check_int("pad_token_id", pad_token_id, low=0, high=V - 1, allow_none=True)
        pad = (eos if eos is not None else 0) if pad is None else pad
        B, T0 = input_ids.shape
        if T0 == 0:
            raise ValueError(f"the prompt must hold at least one token, got shape {tuple(input_ids.shape)}")
        limit = self.config.max_position_embeddings
        if T0 + max_new_tokens > limit:
            raise ValueError(f"prompt of {T0} tokens + max_new_tokens={max_new_tokens} = "
                             f"{T0 + max_new_tokens} is longer than max_position_embeddings={limit}")
        if num_beams > 1 and do_sample:
            raise ValueError("beam search is deterministic: use num_beams > 1 with do_sample=False")
        device, total = input_ids.device, T0 + max_new_tokens
        # positions and "is a real token" for every slot of the output, prompt and new tokens
        real = None
        positions = torch.arange(total, device=device)[None]  # (1, T0 + new)
        if attention_mask is not None:
            check_tensor("attention_mask", attention_mask, ndim=2)
            check_shape("attention_mask", attention_mask, (B, T0), expected="(B, T) like input_ids")
            prompt_real = attention_mask.to(device).bool()  # (B, T0)
            if not bool(prompt_real.any(dim=1).all()):
                raise ValueError("attention_mask hides every token of some prompt: each row needs "
                                 "at least one real token")
            if not bool(prompt_real.all()):
                real = torch.cat([prompt_real, prompt_real.new_ones(B, max_new_tokens)], dim=1)
                # HF: position = number of real tokens before this one; padding gets 1 (ignored)
                positions = (real.long().cumsum(1) - 1).masked_fill(~real, 1)  # (B, T0 + new)
        if max_new_tokens == 0:
            return input_ids
        if num_beams > 1:
            return self._beam_search(input_ids, max_new_tokens, num_beams, length_penalty,
                                     positions, real, eos, pad)
        pick = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=generator)
        out = torch.empty(B, total, dtype=input_ids.dtype, device=device)
        out[:, :T0] = input_ids
        cache = KVCache(self.config, B, total, device=device,
                        dtype=self.model.embed_tokens.weight.dtype) if use_cache else None
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        length = T0
        for _ in range(max_new_tokens):
            start = cache.length if cache is not None else 0  # the prompt first, then one token
            h = self._decode_hidden(out[:, start:length], positions[:, start:length],
                                    None if real is None else real[:, :length], cache)[:, -1]  # (B, C)
            token = sample_next(self.lm_head(h), **pick)[:, 0]  # (B,)
            if eos is not None:
                token = token.masked_fill(finished, pad)  # ended rows continue with padding
                finished |= token == eos
            out[:, length] = token
            length += 1
            if eos is not None and bool(finished.all()):
                break
        return out[:, :length]

    def _beam_search(self, input_ids, max_new_tokens, num_beams, length_penalty, positions, real,
                     eos, pad) -> torch.Tensor:
        """Beam search with a key/value cache whose rows follow their beams; returns the prompts
        followed by the best beam of each (B, T + n)."""
        B, T0 = input_ids.shape
        K = num_beams
        cache = KVCache(self.config, B * K, T0 + max_new_tokens, device=input_ids.device,
                        dtype=self.model.embed_tokens.weight.dtype)
        # beams never leave their sentence, so per-sentence positions and masks need no reordering
        positions = positions.repeat_interleave(K, dim=0) if positions.size(0) > 1 else positions
        real = real.repeat_interleave(K, dim=0) if real is not None else None

        def step(prefix: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
            start, end = cache.length, prefix.size(1)  # the prompt first, then each beam's last token
            h = self._decode_hidden(prefix[:, start:], positions[:, start:end],
                                    None if real is None else real[:, :end], cache)
            return self.lm_head(h[:, -1]), cache  # (B·K, V)

        def reorder(cache: KVCache, rows: torch.Tensor) -> KVCache:
            cache.reorder(rows)  # each surviving beam inherits its parent's keys and values
            return cache

        out = beam_search(step, cache, batch_size=B, bos_id=None, eos_id=eos, pad_id=pad,
                          prompt=input_ids, max_new_tokens=max_new_tokens, num_beams=K,
                          length_penalty=length_penalty, reorder_fn=reorder,
                          expand_fn=lambda cache, index: cache, device=input_ids.device)
        return torch.cat([input_ids, out.sequences.to(input_ids.dtype)], dim=1)

    # ---------------------------------------------------------------- Hugging Face and GGUF weights

    @classmethod
    def config_from_hf(cls, hf_config: Any) -> LlamaConfig:
        """A :class:`LlamaConfig` from a transformers ``LlamaConfig`` / ``Qwen2Config`` /
        ``Qwen3Config`` (or its dict); options this module does not implement are refused."""
        if not isinstance(hf_config, dict) and not hasattr(hf_config, "to_dict"):
            raise TypeError(f"hf_config must be a transformers Llama/Qwen2/Qwen3 config or its dict, "
                            f"got {type(hf_config).__name__}")
        c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        model_type = c.get("model_type", "llama")
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not supported; expected one of {MODEL_TYPES}")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in c]
        if missing:
            raise ValueError(f"the {model_type} config lacks the fields {missing}")
        if c.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act={c['hidden_act']!r} is not supported (only 'silu')")
        if c.get("mlp_bias"):
            raise ValueError("mlp_bias=True is not supported")
        if c.get("use_sliding_window"):
            raise ValueError("use_sliding_window=True is not supported (full attention only)")
        rope = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"RoPE scaling {rope} is not supported (only the default rope_type)")
        theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
        eos = c.get("eos_token_id")
        if isinstance(eos, (list, tuple)):
            eos = eos[0] if eos else None  # Llama 3 lists several end tokens: keep the first
        return LlamaConfig(
            vocab_size=c["vocab_size"], hidden_size=c["hidden_size"],
            intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
            num_attention_heads=c["num_attention_heads"],
            num_key_value_heads=c.get("num_key_value_heads"), head_dim=c.get("head_dim"),
            max_position_embeddings=c.get("max_position_embeddings", 2048),
            rms_norm_eps=c.get("rms_norm_eps", 1e-6), rope_theta=float(theta),
            tie_word_embeddings=c.get("tie_word_embeddings", False),
            attention_bias=True if model_type == "qwen2" else bool(c.get("attention_bias", False)),
            qk_norm=model_type == "qwen3", model_type=model_type,
            bos_token_id=c.get("bos_token_id"), eos_token_id=eos)

    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a Hugging Face Llama/Qwen2/Qwen3 state dict into this model: same keys, same shapes."""
        state = {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
        if "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
            if not self.config.tie_word_embeddings:
                raise ValueError("the weights lack lm_head.weight and the config is untied "
                                 "(tie_word_embeddings=False)")
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        ours = self.state_dict()
        missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
        if missing or unexpected:
            raise ValueError(f"the weights do not fit: missing {missing[:8]}, unexpected {unexpected[:8]}")
        with torch.no_grad():
            for name, target in ours.items():
                if state[name].shape != target.shape:
                    raise ValueError(f"{name}: shape {tuple(state[name].shape)} in the weights vs "
                                     f"{tuple(target.shape)} here")
                target.copy_(state[name])

    @classmethod
    def from_hf(cls, model: nn.Module) -> "LlamaForCausalLM":
        """A copy of a transformers ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM``
        (eval mode)."""
        if not (hasattr(model, "config") and hasattr(model, "state_dict")):
            raise TypeError(f"model must be a transformers Llama/Qwen2/Qwen3 causal LM, got "
                            f"{type(model).__name__}")
        new = cls._uninitialized(cls.config_from_hf(model.config))
        new.load_hf_state_dict(model.state_dict())
        return new.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "LlamaForCausalLM":
        """Load a Hugging Face Llama/Qwen2/Qwen3 directory (``config.json`` + weights; see
        :func:`minillm.models.hf_io.read_hf_directory` for the errors)."""
        model_type = "llama"
        try:
            found = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
            if isinstance(found, dict) and found.get("model_type") is not None:
                if found["model_type"] not in MODEL_TYPES:
                    raise ValueError(f"{directory} holds a {found['model_type']!r} model, expected "
                                     f"one of {MODEL_TYPES}")
                model_type = found["model_type"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass  # read_hf_directory reports a missing or unreadable config.json
        config, state = read_hf_directory(directory, model_type, what=ARCHITECTURES[model_type])
        new = cls._uninitialized(cls.config_from_hf(config))
        new.load_hf_state_dict(state)
        return new.eval()

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a Hugging Face directory that ``AutoModelForCausalLM.from_pretrained`` loads as
        the class of ``config.model_type``."""
        c = self.config
        tensors = {k: v for k, v in self.state_dict().items()
                   if not (k == "lm_head.weight" and c.tie_word_embeddings)}
        hf = dict(model_type=c.model_type, architectures=[ARCHITECTURES[c.model_type]],
                  vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                  intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
                  num_attention_heads=c.num_attention_heads,
                  num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim,
                  hidden_act="silu", max_position_embeddings=c.max_position_embeddings,
                  rms_norm_eps=c.rms_norm_eps, rope_theta=c.rope_theta,
                  rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
                  tie_word_embeddings=c.tie_word_embeddings, attention_dropout=0.0,
                  bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id)
        if c.model_type == "qwen2":
            hf.update(use_sliding_window=False)  # its biases are fixed: no attention_bias field
        else:
            hf.update(attention_bias=c.attention_bias, mlp_bias=False)
            if c.model_type == "qwen3":
                hf.update(use_sliding_window=False)
        return write_hf_directory(directory, hf, tensors)

    @classmethod
    def from_gguf(cls, path: str | os.PathLike) -> "LlamaForCausalLM":
        """Load a llama.cpp GGUF file of a Llama-architecture model (e.g. SmolLM2), de-quantized
        to fp32 (:func:`minillm.gguf.load_llama_gguf`), in eval mode."""
        from ..gguf import load_llama_gguf

        config, state = load_llama_gguf(path)
        new = cls._uninitialized(config)
        new.load_hf_state_dict(state)
        return new.eval()


def _additive(real: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) bool "is a real token" → (B, 1, 1, S) scores to add: 0, or the dtype's minimum (finite,
    like Hugging Face's masks, so a query row that sees only padding stays finite)."""
    hide = ~real[:, None, None, :]  # (B, 1, 1, S)
    return torch.zeros(hide.shape, dtype=dtype, device=hide.device).masked_fill(
        hide, torch.finfo(dtype).min)


__all__ = ["LlamaConfig", "LlamaForCausalLM", "LlamaModel", "LlamaAttention", "LlamaMLP",
           "LlamaDecoderLayer", "KVCache", "rope_cos_sin", "rotate_half", "apply_rope", "repeat_kv",
           "MODEL_TYPES"]
