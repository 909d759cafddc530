"""T5: an encoder–decoder Transformer that casts every task as text to text (Raffel et al., 2020,
"Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer").

The encoder reads the input with bidirectional self-attention; the decoder writes the output one
token at a time with causal self-attention plus cross-attention over the encoder's vectors. T5 has
no position embeddings: each self-attention adds a learned *relative position bias* to its scores,
one scalar per head and per distance bucket (:func:`relative_position_bucket`: exact for small
distances, log-spaced up to ``relative_attention_max_distance``). The bias table lives in block 0
of each stack and is reused by all its layers; cross-attention has none. Pre-norm blocks with
:class:`~minillm.norms.RMSNorm`, no biases anywhere, no 1/√d score scaling.

Two variants: T5 v1.0 (``feed_forward_proj="relu"``, output head tied to the embeddings and the
decoder output scaled by d_model**-0.5) and T5 v1.1 (``"gated-gelu"``, untied head, no scaling).

Parameter names follow Hugging Face ``transformers.models.t5`` (``shared``, ``encoder.block.{i}.
layer.0.SelfAttention.q`` ...), so its state dicts load key for key with no transposes;
``save_pretrained`` writes a directory ``transformers`` loads. Attention goes through
:func:`minillm.attention.attend` (position bias + masks as one additive bias, ``scale=1``).

Decoder length limit: relative positions impose none, but the preallocated generation cache needs
one, so ``T5Config.n_positions`` (HF's legacy field, default 512) bounds the *decoder* sequence
(cache/prefix + target tokens) in ``forward`` and ``generate``; the encoder input is unbounded.

Shape letters: B batch, T tokens in this call, S encoder length (or keys), L decoder positions
already in the cache (or P prefix positions), C d_model, nh heads, hs d_kv, F d_ff, V vocabulary,
K beams.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attend, merge_heads
from ..norms import RMSNorm
from ..sampling import check_generate_args, sample_next
from ..search import hf_beam_search
from .hf_io import read_hf_directory, write_hf_directory
from ..validation import (check_bool, check_choice, check_float, check_index_range, check_int,
                          check_shape, check_tensor)
from .gpt import gelu_new

IGNORE_INDEX = -100  # label of positions the loss skips
FEED_FORWARD = {"relu": F.relu, "gelu": F.gelu, "gated-gelu": gelu_new, "gated-relu": F.relu,
                "gated-silu": F.silu}  # HF's "gated-gelu" is gelu_new (the tanh form, op by op)


@dataclass
class T5Config:
    """Sizes and switches of a T5 model; field names and defaults are Hugging Face's (t5-small)."""

    vocab_size: int = 32128  # SentencePiece tokens, sentinels <extra_id_i> at the top
    d_model: int = 512  # C: width of every token's vector
    d_kv: int = 64  # hs: head size (independent of d_model / num_heads)
    d_ff: int = 2048  # F: feed-forward width
    num_layers: int = 6  # encoder blocks
    num_decoder_layers: int | None = None  # decoder blocks; None = num_layers
    num_heads: int = 8  # nh: attention heads
    relative_attention_num_buckets: int = 32  # distance buckets of the position bias
    relative_attention_max_distance: int = 128  # distances beyond this share the last bucket
    dropout_rate: float = 0.1  # on embeddings, attention weights, sublayer outputs, FF hidden
    layer_norm_epsilon: float = 1e-6  # RMSNorm epsilon
    initializer_factor: float = 1.0  # scales every initial std (HF's test knob)
    feed_forward_proj: str = "relu"  # "relu" (v1.0), "gated-gelu" (v1.1), "gelu", "gated-relu", "gated-silu"
    tie_word_embeddings: bool = True  # lm_head = shared embeddings and output × d_model**-0.5 (v1.0)
    pad_token_id: int = 0  # padding; also what -100 labels become in the decoder input
    eos_token_id: int | None = 1  # </s>: generation stops a row here
    decoder_start_token_id: int | None = 0  # first decoder input (T5: = pad)
    n_positions: int = 512  # longest decoder sequence (cache/prefix + target); see module docstring

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                     "relative_attention_num_buckets", "relative_attention_max_distance", "n_positions"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        self.num_decoder_layers = check_int("num_decoder_layers", self.num_decoder_layers, low=1,
                                            allow_none=True) or self.num_layers
        if self.relative_attention_num_buckets < 4:
            raise ValueError("relative_attention_num_buckets must be >= 4 (half exact, half log-spaced, "
                             f"both directions), got {self.relative_attention_num_buckets}")
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets // 2:
            raise ValueError(f"relative_attention_max_distance={self.relative_attention_max_distance} "
                             "must be larger than the decoder's exact buckets "
                             f"(relative_attention_num_buckets // 2 = "
                             f"{self.relative_attention_num_buckets // 2})")
        self.dropout_rate = check_float("dropout_rate", self.dropout_rate, low=0, high=1,
                                        high_inclusive=False)
        self.layer_norm_epsilon = check_float("layer_norm_epsilon", self.layer_norm_epsilon, low=0,
                                              low_inclusive=False)
        self.initializer_factor = check_float("initializer_factor", self.initializer_factor, low=0)
        check_choice("feed_forward_proj", self.feed_forward_proj, FEED_FORWARD)
        check_bool("tie_word_embeddings", self.tie_word_embeddings)
        V = self.vocab_size
        self.pad_token_id = check_int("pad_token_id", self.pad_token_id, low=0, high=V - 1)
        self.eos_token_id = check_int("eos_token_id", self.eos_token_id, low=0, high=V - 1,
                                      allow_none=True)
        self.decoder_start_token_id = check_int("decoder_start_token_id", self.decoder_start_token_id,
                                                low=0, high=V - 1, allow_none=True)

    @property
    def is_gated_act(self) -> bool:
        """Whether the feed-forward net is gated (``wi_0``/``wi_1``, T5 v1.1) or plain (``wi``)."""
        return self.feed_forward_proj.startswith("gated-")

    @classmethod
    def tiny(cls, **overrides) -> "T5Config":
        """A model small enough for unit tests: 2+2 layers, 4 heads of 8, width 32, 100 tokens."""
        return cls(**{**dict(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                             relative_attention_num_buckets=8, relative_attention_max_distance=20,
                             n_positions=64), **overrides})


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True,
                             num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """Map key − query distances to T5's position-bias buckets (Mesh TensorFlow's scheme).

    Bidirectional (encoder): half the buckets for keys before the query, half for keys after.
    One-sided (decoder): only keys at or before the query count (later ones share bucket 0). Within
    a direction, half the buckets are exact distances 0, 1, ..., the rest log-spaced up to
    ``max_distance``; anything farther shares the last bucket. Returns int64 buckets in
    ``[0, num_buckets)``, same shape as ``relative_position`` (int tensor, ``key_pos - query_pos``).
    """
    check_tensor("relative_position", relative_position, dtype_kind="int")
    check_bool("bidirectional", bidirectional)
    num_buckets = check_int("num_buckets", num_buckets, low=4 if bidirectional else 2)
    max_distance = check_int("max_distance", max_distance, low=1)
    half = num_buckets // 2 if bidirectional else num_buckets
    if max_distance <= half // 2:
        raise ValueError(f"max_distance={max_distance} must be larger than the {half // 2} exact "
                         f"buckets (num_buckets={num_buckets}, bidirectional={bidirectional})")
    rel = relative_position.long()
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets  # keys after the query: upper half
        distance = rel.abs()
    else:
        distance = (-rel).clamp(min=0)  # how far back the key is; later keys → 0
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    # log-spaced: max_exact at distance max_exact, num_buckets at max_distance (clipped below it)
    large = max_exact + (torch.log(distance.float() / max_exact) / torch.log(torch.tensor(
        max_distance / max_exact)) * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, large)


def shift_right(labels: torch.Tensor, decoder_start_token_id: int | None, pad_token_id: int
                ) -> torch.Tensor:
    """Teacher forcing's decoder input: ``[start, y_0, ..., y_{T-2}]`` from labels (B, T); ignored
    labels (-100) become ``pad_token_id``."""
    check_tensor("labels", labels, ndim=2, dtype_kind="int")
    if decoder_start_token_id is None:
        raise ValueError("decoder_start_token_id is None: T5 needs a start token to shift the labels "
                         "right (set T5Config.decoder_start_token_id, usually = pad_token_id = 0)")
    shifted = labels.new_full(labels.shape, decoder_start_token_id)  # (B, T)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad_token_id)


# ---------------------------------------------------------------------------------------------
# Outputs and the generation cache


@dataclass
class T5EncoderOutput:
    """What the encoder returns (HF ``BaseModelOutput``'s field)."""

    last_hidden_state: torch.Tensor  # (B, S, C)


@dataclass
class Seq2SeqOutput:
    """What :class:`T5Model` / :class:`T5ForConditionalGeneration` return (HF field names)."""

    loss: torch.Tensor | None = None  # scalar, when labels were given
    logits: torch.Tensor | None = None  # (B, T, V); None for T5Model
    last_hidden_state: torch.Tensor | None = None  # (B, T, C) decoder output (after the final norm)
    encoder_last_hidden_state: torch.Tensor | None = None  # (B, S, C)
    past_key_values: Any = None  # the T5Cache or prefixes passed in


class T5Cache:
    """Decoder state for generation: a preallocated self-attention key/value cache per layer,
    plus the cross-attention keys/values, computed once from the encoder output.

    ``k``, ``v``: (num_decoder_layers, B, nh, max_len, hs); ``length`` counts filled positions.
    ``cross``: per layer (k, v), each (B, nh, S, hs), or None until the first decoder call.
    """

    def __init__(self, config: T5Config, batch_size: int, max_len: int | None = None, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        batch_size = check_int("batch_size", batch_size, low=1)
        max_len = check_int("max_len", max_len, low=1, allow_none=True) or config.n_positions
        if max_len > config.n_positions:
            raise ValueError(f"max_len={max_len} is longer than the decoder limit "
                             f"n_positions={config.n_positions}")
        shape = (config.num_decoder_layers, batch_size, config.num_heads, max_len, config.d_kv)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.max_len = max_len
        self.cross: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, nh, T, hs) keys/values after the filled prefix; return all (B, nh, L+T, hs)."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"the cache holds max_len={self.max_len} positions and {start} are "
                             f"filled: cannot add {k.size(2)} more")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` of the self-attention cache (beam search). The cross-attention
        keys/values stay: beams never move between sentences, and a sentence's rows are equal."""
        index = index.to(self.k.device)
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)


# ---------------------------------------------------------------------------------------------
# Blocks


class T5Attention(nn.Module):
    """Multi-head attention without biases or score scaling; block 0's self-attention also owns
    the relative position bias table ``relative_attention_bias`` (num_buckets × nh)."""

    explicit_attention: bool = False  # True: the written-out softmax (minillm.attention.attend)

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False):
        super().__init__()
        inner = config.num_heads * config.d_kv
        self.n_heads, self.d_kv = config.num_heads, config.d_kv
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        self.dropout_p = config.dropout_rate
        self.has_relative_attention_bias = has_relative_attention_bias
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets,
                                                        config.num_heads)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_kv).transpose(1, 2)  # (B, nh, T, hs)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``context`` (B, S, C): each (B, nh, S, hs)."""
        return self._split(self.k(context)), self._split(self.v(context))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, *,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None, cache: T5Cache | None = None,
                layer: int = 0, prefix: tuple[torch.Tensor, torch.Tensor] | None = None,
                explicit: bool = False) -> torch.Tensor:
        """x (B, T, C) → (B, T, C). bias: additive (B|1, nh|1, T, keys) = position bias + masks;
        kv: precomputed keys/values (cross-attention); cache: written in place (self-attention);
        prefix: (B, nh, P, hs) keys/values in front (prefix tuning)."""
        q = self._split(self.q(x))  # (B, nh, T, hs)
        if kv is not None:
            k, v = kv  # (B, nh, S, hs)
        else:
            k, v = self.project_kv(x)  # (B, nh, T, hs)
            if cache is not None:
                k, v = cache.update(layer, k, v)  # (B, nh, L+T, hs)
        y, _ = attend(q, k, v, bias=bias, scale=1.0, prefix=prefix,
                      dropout_p=self.dropout_p if self.training else 0.0,
                      explicit=self.explicit_attention or explicit)  # (B, nh, T, hs)
        return self.o(merge_heads(y))  # (B, T, C)


class T5LayerSelfAttention(nn.Module):
    """Pre-norm self-attention sublayer: x + dropout(attn(norm(x)))."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias)
        self.layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, bias, cache=None, layer=0, prefix=None, explicit=False):
        h = self.SelfAttention(self.layer_norm(x), bias, cache=cache, layer=layer, prefix=prefix,
                               explicit=explicit)
        return x + self.dropout(h)


class T5LayerCrossAttention(nn.Module):
    """Pre-norm cross-attention sublayer over the encoder's keys/values (no position bias)."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.EncDecAttention = T5Attention(config)
        self.layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x, kv, bias, explicit=False):
        return x + self.dropout(self.EncDecAttention(self.layer_norm(x), bias, kv=kv, explicit=explicit))


class T5DenseActDense(nn.Module):
    """T5 v1.0 feed-forward net: wo(dropout(act(wi x))), C → F → C."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = FEED_FORWARD[config.feed_forward_proj]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(self.dropout(self.act(self.wi(x))))  # (B, T, C)


class T5DenseGatedActDense(nn.Module):
    """T5 v1.1 gated feed-forward net: wo(dropout(act(wi_0 x) * wi_1 x))."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.act = FEED_FORWARD[config.feed_forward_proj]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.wi_0(x)) * self.wi_1(x)  # (B, T, F)
        return self.wo(self.dropout(h))


class T5LayerFF(nn.Module):
    """Pre-norm feed-forward sublayer: x + dropout(ff(norm(x)))."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.DenseReluDense = (T5DenseGatedActDense if config.is_gated_act else T5DenseActDense)(config)
        self.layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class T5Block(nn.Module):
    """Encoder block: self-attention, FF. Decoder block: self-attention, cross-attention, FF."""

    def __init__(self, config: T5Config, has_relative_attention_bias: bool, is_decoder: bool):
        super().__init__()
        self.is_decoder = is_decoder
        self.layer = nn.ModuleList([T5LayerSelfAttention(config, has_relative_attention_bias)])
        if is_decoder:
            self.layer.append(T5LayerCrossAttention(config))
        self.layer.append(T5LayerFF(config))

    def forward(self, x, bias, cross_kv=None, cross_bias=None, cache=None, layer=0, prefix=None,
                explicit=False):
        x = self.layer[0](x, bias, cache, layer, prefix, explicit)
        if self.is_decoder:
            x = self.layer[1](x, cross_kv, cross_bias, explicit)
        return self.layer[-1](x)


class T5Stack(nn.Module):
    """The encoder or the decoder: embedded input (B, T, C) → normalised states (B, T, C)."""

    def __init__(self, config: T5Config, embed_tokens: nn.Embedding, is_decoder: bool):
        super().__init__()
        self.config, self.is_decoder = config, is_decoder
        self.embed_tokens = embed_tokens  # the shared table (HF keeps this alias in its state dict)
        n = config.num_decoder_layers if is_decoder else config.num_layers
        self.block = nn.ModuleList(T5Block(config, i == 0, is_decoder) for i in range(n))
        self.final_layer_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)
        self.dropout = nn.Dropout(config.dropout_rate)

    def position_bias(self, T: int, S: int, past: int, device) -> torch.Tensor:
        """(1, nh, T, S) relative position bias; the T queries sit at positions past .. past+T-1."""
        c = self.config
        query = torch.arange(past, past + T, device=device)[:, None]  # (T, 1)
        key = torch.arange(S, device=device)[None, :]  # (1, S)
        buckets = relative_position_bucket(key - query, bidirectional=not self.is_decoder,
                                           num_buckets=c.relative_attention_num_buckets,
                                           max_distance=c.relative_attention_max_distance)  # (T, S)
        table = self.block[0].layer[0].SelfAttention.relative_attention_bias
        return table(buckets).permute(2, 0, 1)[None]  # (1, nh, T, S)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, *, cross: torch.Tensor | None = None,
                cross_bias: torch.Tensor | None = None, cache: T5Cache | None = None,
                prefixes: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                explicit: bool = False) -> torch.Tensor:
        """x (B, T, C) embedded input; bias (B|1, nh, T, keys) self-attention bias with masks;
        cross (B, S, C) encoder states (decoder only; unused when the cache holds its keys/values),
        cross_bias (B, 1, 1, S) or None; cache advanced by T."""
        h = self.dropout(x)
        if torch.is_autocast_enabled(x.device.type):  # cast the biases once, not in every layer
            low = torch.get_autocast_dtype(x.device.type)
            bias = bias.clamp(min=torch.finfo(low).min).to(low)
            if cross_bias is not None:
                cross_bias = cross_bias.clamp(min=torch.finfo(low).min).to(low)
        cross_kv = None
        if self.is_decoder:
            if cache is not None and cache.cross is None:
                cache.cross = [b.layer[1].EncDecAttention.project_kv(cross) for b in self.block]
            cross_kv = cache.cross if cache is not None else [
                b.layer[1].EncDecAttention.project_kv(cross) for b in self.block]
        for i, block in enumerate(self.block):
            h = block(h, bias, cross_kv[i] if cross_kv else None, cross_bias, cache, i,
                      prefixes[i] if prefixes else None, explicit)
        if cache is not None:
            cache.length += x.size(1)
        return self.dropout(self.final_layer_norm(h))


# ---------------------------------------------------------------------------------------------
# Models


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) 1/0 → (B, 1, 1, S): 0 to attend, the dtype's minimum to hide (HF's convention: a row
    with no real key averages all keys instead of giving NaN)."""
    return (1.0 - mask.to(dtype))[:, None, None, :] * torch.finfo(dtype).min


class T5PreTrainedModel(nn.Module):
    """What every T5 class shares: input checks, stacks, initialisation, HF import/export."""

    config_class = T5Config
    has_decoder = True

    def _init_weights(self, module: nn.Module) -> None:
        """Hugging Face's initialisation (std scaled by ``initializer_factor``)."""
        c, f = self.config, self.config.initializer_factor
        if isinstance(module, RMSNorm):
            nn.init.constant_(module.weight, f)
        elif isinstance(module, T5DenseActDense):
            nn.init.normal_(module.wi.weight, std=f * c.d_model ** -0.5)
            nn.init.normal_(module.wo.weight, std=f * c.d_ff ** -0.5)
        elif isinstance(module, T5DenseGatedActDense):
            nn.init.normal_(module.wi_0.weight, std=f * c.d_model ** -0.5)
            nn.init.normal_(module.wi_1.weight, std=f * c.d_model ** -0.5)
            nn.init.normal_(module.wo.weight, std=f * c.d_ff ** -0.5)
        elif isinstance(module, T5Attention):
            nn.init.normal_(module.q.weight, std=f * (c.d_model * c.d_kv) ** -0.5)
            nn.init.normal_(module.k.weight, std=f * c.d_model ** -0.5)
            nn.init.normal_(module.v.weight, std=f * c.d_model ** -0.5)
            nn.init.normal_(module.o.weight, std=f * (c.num_heads * c.d_kv) ** -0.5)
            if module.has_relative_attention_bias:
                nn.init.normal_(module.relative_attention_bias.weight, std=f * c.d_model ** -0.5)

    def _build(self, config: T5Config) -> None:
        if not isinstance(config, T5Config):
            raise TypeError(f"config must be a T5Config, got {type(config).__name__}")
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config, self.shared, is_decoder=False)
        if self.has_decoder:
            self.decoder = T5Stack(config, self.shared, is_decoder=True)

    def _finish_init(self) -> None:
        self.apply(self._init_weights)
        nn.init.normal_(self.shared.weight, std=self.config.initializer_factor)
        lm_head = getattr(self, "lm_head", None)
        if lm_head is not None:
            if self.config.tie_word_embeddings:
                lm_head.weight = self.shared.weight  # one matrix in and out (v1.0)
            else:
                nn.init.normal_(lm_head.weight, std=self.config.initializer_factor)

    def num_params(self) -> int:
        """Parameter count (a tied matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    # ---- input checks

    def _check_ids(self, name: str, ids: torch.Tensor) -> torch.Tensor:
        check_tensor(name, ids, ndim=2, dtype_kind="int")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name} must be int64 or int32 token ids, got {ids.dtype}")
        if ids.size(1) == 0:
            raise ValueError(f"{name} must hold at least one token, got shape {tuple(ids.shape)}")
        V = self.config.vocab_size
        bad = (ids < 0) | (ids >= V)
        if bool(bad.any()):
            raise ValueError(f"{name} must be token ids in [0, vocab_size={V}), got {int(ids[bad][0])} "
                             "(a sentinel <extra_id_i> at or above vocab_size means the tokenizer "
                             "has more sentinels than the model's vocabulary)")
        return ids

    def _embed(self, ids, embeds, names: tuple[str, str]) -> torch.Tensor:
        """Exactly one of ids (B, T) and embeddings (B, T, C) → (B, T, C)."""
        if (ids is None) == (embeds is None):
            raise ValueError(f"pass exactly one of {names[0]} (B, T) and {names[1]} (B, T, C), got "
                             f"{'both' if ids is not None else 'neither'}")
        if ids is not None:
            return self.shared(self._check_ids(names[0], ids))
        check_tensor(names[1], embeds, ndim=3, dtype_kind="float")
        check_shape(names[1], embeds, (None, None, self.config.d_model), expected="(B, T, d_model)")
        if embeds.size(1) == 0:
            raise ValueError(f"{names[1]} must hold at least one position, got {tuple(embeds.shape)}")
        return embeds

    @staticmethod
    def _check_mask(name: str, mask, B: int, lengths: tuple[int, ...]) -> None:
        check_tensor(name, mask, ndim=2)
        if mask.size(0) != B or mask.size(1) not in lengths:
            want = " or ".join(f"(B={B}, {n})" for n in lengths)
            raise ValueError(f"{name} must have shape {want} like its input, got {tuple(mask.shape)}")

    def _encode(self, input_ids, attention_mask, inputs_embeds) -> torch.Tensor:
        x = self._embed(input_ids, inputs_embeds, ("input_ids", "inputs_embeds"))  # (B, S, C)
        B, S, _ = x.shape
        bias = self.encoder.position_bias(S, S, 0, x.device)  # (1, nh, S, S)
        explicit = False
        if attention_mask is not None:
            self._check_mask("attention_mask", attention_mask, B, (S,))
            bias = bias + _additive(attention_mask, bias.dtype)  # (B, nh, S, S)
            # a sequence with no real token: PyTorch's fused SDPA gets that row's gradient wrong
            explicit = torch.is_grad_enabled() and bool((attention_mask == 0).all(dim=1).any())
        return self.encoder(x, bias, explicit=explicit)  # (B, S, C)

    def _encoder_states(self, encoder_outputs) -> torch.Tensor:
        h = getattr(encoder_outputs, "last_hidden_state", encoder_outputs)
        if isinstance(h, (tuple, list)):
            h = h[0] if h else None
        check_tensor("encoder_outputs", h, ndim=3, dtype_kind="float")
        check_shape("encoder_outputs", h, (None, None, self.config.d_model), expected="(B, S, d_model)")
        return h

    def _check_prefixes(self, past_key_values, B: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        if isinstance(past_key_values, (str, bytes)) or not isinstance(past_key_values, Sequence):
            raise TypeError("past_key_values must be a T5Cache or one (key, value) pair per decoder "
                            f"layer, got {type(past_key_values).__name__}")
        if len(past_key_values) != c.num_decoder_layers:
            raise ValueError(f"past_key_values must hold one (key, value) pair per decoder layer "
                             f"({c.num_decoder_layers}), got {len(past_key_values)}")
        pairs = [tuple(kv) for kv in past_key_values]
        P = pairs[0][0].size(2) if len(pairs[0]) == 2 and pairs[0][0].dim() == 4 else -1
        for i, kv in enumerate(pairs):
            if len(kv) != 2:
                raise ValueError(f"past_key_values[{i}] must be a (key, value) pair, got {len(kv)} items")
            for name, t in zip(("key", "value"), kv):
                check_tensor(f"past_key_values[{i}] {name}", t, ndim=4, dtype_kind="float")
                check_shape(f"past_key_values[{i}] {name}", t, (B, c.num_heads, P, c.d_kv),
                            expected="(B, num_heads, P, d_kv)")
        return pairs

    def _decode(self, ids, embeds, mask, enc: torch.Tensor, enc_mask, past) -> torch.Tensor:
        """Decoder states (B, T, C) for decoder inputs after ``past`` (a T5Cache, prefixes or None)."""
        c = self.config
        x = self._embed(ids, embeds, ("decoder_input_ids", "decoder_inputs_embeds"))  # (B, T, C)
        B, T, _ = x.shape
        if enc.size(0) != B:
            raise ValueError(f"the encoder output has batch size {enc.size(0)}, the decoder input {B}")
        cache, prefixes, L = None, None, 0
        if isinstance(past, T5Cache):
            cache, L = past, past.length
        elif past is not None:
            prefixes = self._check_prefixes(past, B)
            L = prefixes[0][0].size(2)
        if L + T > c.n_positions:
            raise ValueError(f"decoder sequence of {L + T} positions ({L} cached/prefix + {T} target "
                             f"tokens) is longer than the decoder limit n_positions={c.n_positions}")
        bias = self.decoder.position_bias(T, L + T, L, x.device)  # (1, nh, T, L+T)
        key = torch.arange(L + T, device=x.device)[None, :]  # (1, L+T)
        hidden = key > torch.arange(L, L + T, device=x.device)[:, None]  # (T, L+T) future keys
        if mask is not None:
            self._check_mask("decoder_attention_mask", mask, B, (T, L + T) if L else (T,))
            if mask.size(1) == T and L:
                mask = torch.cat([mask.new_ones(B, L), mask], dim=1)  # the past is visible
            hidden = hidden | (mask == 0)[:, None, None, :]  # (B, 1, T, L+T) future or padding
        # one minimum added where hidden, as HF does (two summed minima would overflow to -inf and
        # break HF's average-everything convention for a query that sees no real key)
        zero = torch.zeros((), dtype=bias.dtype, device=x.device)
        bias = bias + zero.masked_fill(hidden, torch.finfo(bias.dtype).min)  # (B|1, nh, T, L+T)
        cross_bias = None
        if enc_mask is not None:
            self._check_mask("attention_mask", enc_mask, B, (enc.size(1),))
            cross_bias = _additive(enc_mask, enc.dtype)  # (B, 1, 1, S)
        # a query with no visible key at all (an empty input, or a decoder row whose first query
        # sees only padding): PyTorch's fused SDPA gets that row's gradient wrong, take the explicit path
        explicit = torch.is_grad_enabled() and (
            (enc_mask is not None and bool((enc_mask == 0).all(dim=1).any()))
            or (mask is not None and bool((mask.cumsum(dim=1)[:, L] == 0).any())))
        return self.decoder(x, bias, cross=enc, cross_bias=cross_bias, cache=cache, prefixes=prefixes,
                            explicit=explicit)

    # ---- loading and saving

    @classmethod
    def config_from_hf(cls, hf_config: Any) -> T5Config:
        """A :class:`T5Config` from a ``transformers.T5Config`` (or its dict / config.json)."""
        return config_from_hf(hf_config)

    @classmethod
    def from_hf(cls, hf_model: nn.Module):
        """This class holding the weights of a ``transformers`` T5 model (eval mode)."""
        if not (hasattr(hf_model, "config") and hasattr(hf_model, "state_dict")):
            raise TypeError(f"hf_model must be a transformers T5 model, got {type(hf_model).__name__}")
        model = cls(config_from_hf(hf_model.config))
        model.load_hf_state_dict(hf_model.state_dict())
        return model.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike):
        """Load a Hugging Face T5 directory (``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``), in eval mode."""
        config, state = read_hf_directory(directory, "t5", what="T5")
        model = cls(config_from_hf(config))
        model.load_hf_state_dict(state)
        return model.eval()

    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a Hugging Face T5 state dict into this model, key for key (tied aliases may be
        missing; an encoder-only model ignores decoder and head weights)."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of tensors, got {type(state).__name__}")
        skip = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)  # legacy
        state = {k: v for k, v in state.items() if k not in skip}
        if not self.has_decoder:
            state = {k: v for k, v in state.items() if not k.startswith(("decoder.", "lm_head."))}
        if "shared.weight" not in state:
            for alias in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
                if alias in state:
                    state["shared.weight"] = state[alias]
                    break
        ours = self.state_dict(keep_vars=True)
        groups: dict[int, list[str]] = {}  # tied names (one Parameter, several keys)
        for name, p in ours.items():
            groups.setdefault(id(p), []).append(name)
        unexpected = sorted(set(state) - set(ours))
        if unexpected:
            raise ValueError(f"the T5 weights hold tensors this model does not have: {unexpected[:6]}")
        with torch.no_grad():
            for names in groups.values():
                present = [n for n in names if n in state]
                if not present:
                    raise ValueError(f"the T5 weights lack {names[0]}")
                src, target = state[present[0]], ours[names[0]]
                if src.shape != target.shape:
                    raise ValueError(f"{present[0]}: checkpoint shape {tuple(src.shape)} vs ours "
                                     f"{tuple(target.shape)} (does config.json match the weights?)")
                for other in present[1:]:
                    if not torch.equal(state[other], src):
                        raise ValueError(f"{other} differs from {present[0]}, but this model ties "
                                         "them (tie_word_embeddings=True); load it with "
                                         "tie_word_embeddings=False")
                target.copy_(src)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a Hugging Face directory (config.json + model.safetensors) that
        ``transformers.<this class>.from_pretrained`` loads."""
        tensors, seen = {}, set()
        for name, t in self.state_dict(keep_vars=True).items():
            if id(t) in seen:  # a tied alias: transformers re-ties it on loading
                continue
            seen.add(id(t))
            tensors[name] = t
        c = self.config
        d = {f.name: getattr(c, f.name) for f in fields(c)}
        act = c.feed_forward_proj.split("-")[-1]
        d.update(model_type="t5", architectures=[type(self).__name__], is_encoder_decoder=True,
                 dense_act_fn="gelu_new" if c.feed_forward_proj == "gated-gelu" else act,
                 is_gated_act=c.is_gated_act, use_cache=True)
        return write_hf_directory(directory, d, tensors)


class T5EncoderModel(T5PreTrainedModel):
    """The T5 encoder alone: token ids (B, S) → contextual vectors (B, S, C)."""

    has_decoder = False

    def __init__(self, config: T5Config):
        super().__init__()
        self._build(config)
        self._finish_init()

    def forward(self, input_ids: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> T5EncoderOutput:
        """input_ids (B, S) or inputs_embeds (B, S, C); attention_mask (B, S) 1 = real token."""
        return T5EncoderOutput(self._encode(input_ids, attention_mask, inputs_embeds))


class T5Model(T5PreTrainedModel):
    """The bare encoder–decoder: returns the decoder's last hidden states (no LM head).

    Forward arguments mean what they mean in Hugging Face's ``T5Model`` / ``T5ForConditionalGeneration``:
    ``input_ids`` (B, S) or ``inputs_embeds``; ``attention_mask`` (B, S) 1 = real token;
    ``decoder_input_ids`` (B, T) or ``decoder_inputs_embeds``; ``decoder_attention_mask`` (B, T)
    (or (B, L+T) with a past) added to the causal mask; ``encoder_outputs`` (B, S, C) (or an output
    with ``last_hidden_state``) skips the encoder; ``past_key_values``: a :class:`T5Cache` (filled
    in place) or one (key, value) pair per decoder layer, each (B, nh, P, d_kv), put in front of
    the decoder *self*-attention keys/values (prefix tuning, as PEFT does for seq2seq); the target
    tokens then sit at positions P.. in the relative position bias.
    """

    def __init__(self, config: T5Config):
        super().__init__()
        self._build(config)
        self._finish_init()

    def _run(self, input_ids, attention_mask, inputs_embeds, decoder_input_ids, decoder_attention_mask,
             decoder_inputs_embeds, encoder_outputs, past_key_values, labels=None):
        if encoder_outputs is None:
            enc = self._encode(input_ids, attention_mask, inputs_embeds)  # (B, S, C)
        else:
            if input_ids is not None or inputs_embeds is not None:
                raise ValueError("pass either encoder_outputs or input_ids/inputs_embeds, not both")
            enc = self._encoder_states(encoder_outputs)
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = shift_right(labels, self.config.decoder_start_token_id,
                                            self.config.pad_token_id)  # (B, T)
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            raise ValueError(f"{type(self).__name__} needs decoder_input_ids (B, T), "
                             "decoder_inputs_embeds (B, T, C) or labels (B, T)")
        dec = self._decode(decoder_input_ids, decoder_inputs_embeds, decoder_attention_mask, enc,
                           attention_mask, past_key_values)  # (B, T, C)
        return enc, dec

    def forward(self, input_ids: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None,
                decoder_inputs_embeds: torch.Tensor | None = None,
                encoder_outputs: Any = None, past_key_values: Any = None) -> Seq2SeqOutput:
        enc, dec = self._run(input_ids, attention_mask, inputs_embeds, decoder_input_ids,
                             decoder_attention_mask, decoder_inputs_embeds, encoder_outputs,
                             past_key_values)
        return Seq2SeqOutput(last_hidden_state=dec, encoder_last_hidden_state=enc,
                             past_key_values=past_key_values)


class T5ForConditionalGeneration(T5Model):
    """T5 with its language-model head: (input ids, target ids) → next-target-token logits (B, T, V).

    ``labels`` (B, T): the target; the decoder input is the labels shifted right behind
    ``decoder_start_token_id`` (unless given) and the loss is the mean cross-entropy over labels
    that are not -100. Other arguments: :class:`T5Model`.
    """

    def __init__(self, config: T5Config):
        nn.Module.__init__(self)
        self._build(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._finish_init()

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.config.tie_word_embeddings:
            h = h * self.config.d_model ** -0.5  # v1.0 rescales before the tied head
        return self.lm_head(h)

    def forward(self, input_ids: torch.Tensor | None = None, *,
                attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None,
                decoder_inputs_embeds: torch.Tensor | None = None,
                encoder_outputs: Any = None, past_key_values: Any = None,
                labels: torch.Tensor | None = None) -> Seq2SeqOutput:
        if labels is not None:
            check_tensor("labels", labels, ndim=2, dtype_kind="int")
            check_index_range("labels", labels, self.config.vocab_size, what="vocab_size",
                              allow=(IGNORE_INDEX,))
        enc, dec = self._run(input_ids, attention_mask, inputs_embeds, decoder_input_ids,
                             decoder_attention_mask, decoder_inputs_embeds, encoder_outputs,
                             past_key_values, labels)
        logits = self._logits(dec)  # (B, T, V)
        loss = None
        if labels is not None:
            check_shape("labels", labels, tuple(logits.shape[:2]), expected="(B, T) like the decoder input")
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
        return Seq2SeqOutput(loss=loss, logits=logits, last_hidden_state=dec,
                             encoder_last_hidden_state=enc, past_key_values=past_key_values)

    # ---------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 *, inputs_embeds: torch.Tensor | None = None, max_new_tokens: int = 20,
                 num_beams: int = 1, do_sample: bool = False, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, length_penalty: float = 1.0,
                 use_cache: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
        """Write the target of each input: (B, 1 + new) ids, starting with ``decoder_start_token_id``
        as Hugging Face's ``generate`` returns them.

        Greedy by default; ``do_sample`` samples after ``temperature``/``top_k``/``top_p``;
        ``num_beams > 1`` runs :func:`hf_beam_search`, Hugging Face's beam search (finished
        hypotheses ranked by score / length**length_penalty), so the tokens equal HF's.
        A row stops at ``eos_token_id`` and is padded with ``pad_token_id`` afterwards; decoding
        stops when all rows have ended or after ``max_new_tokens`` (at most ``n_positions``). The
        encoder runs once; ``use_cache=True`` keeps the decoder's keys/values in a preallocated
        :class:`T5Cache` and the cross-attention keys/values computed once, ``use_cache=False``
        recomputes the decoder over the whole target every step (the slow twin).
        """
        c = self.config
        check_generate_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, num_beams=num_beams, length_penalty=length_penalty)
        check_bool("do_sample", do_sample)
        check_bool("use_cache", use_cache)
        if c.decoder_start_token_id is None:
            raise ValueError("decoder_start_token_id is None: generation needs a start token for the "
                             "decoder (set T5Config.decoder_start_token_id, usually = pad_token_id = 0)")
        if max_new_tokens > c.n_positions:
            raise ValueError(f"max_new_tokens={max_new_tokens} is more than the decoder can hold "
                             f"(n_positions={c.n_positions})")
        if num_beams > 1 and do_sample:
            raise ValueError("beam search is deterministic: use num_beams > 1 with do_sample=False")
        enc = self._encode(input_ids, attention_mask, inputs_embeds)  # (B, S, C) once
        B, device = enc.size(0), enc.device
        start = torch.full((B, 1), c.decoder_start_token_id, dtype=torch.long, device=device)
        if max_new_tokens == 0:
            return start
        if num_beams > 1:
            return self._beam_search(enc, attention_mask, max_new_tokens, num_beams, length_penalty)
        dtype = self.shared.weight.dtype
        cache = T5Cache(c, B, max_new_tokens, device=device, dtype=dtype) if use_cache else None
        if cache is not None:
            cross_bias, table = self._step_setup(enc, attention_mask, cache)
        out = torch.full((B, 1 + max_new_tokens), c.pad_token_id, dtype=torch.long, device=device)
        out[:, 0] = c.decoder_start_token_id
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        n = 1
        for _ in range(max_new_tokens):
            if cache is not None:
                h = self._step(out[:, n - 1:n], cache, cross_bias, table)[:, -1]  # (B, C)
            else:
                h = self._decode(out[:, :n], None, None, enc, attention_mask, None)[:, -1]  # (B, C)
            token = sample_next(self._logits(h), do_sample=do_sample, temperature=temperature,
                                top_k=top_k, top_p=top_p, generator=generator)[:, 0]  # (B,)
            token = token.masked_fill(finished, c.pad_token_id)
            out[:, n] = token
            n += 1
            if c.eos_token_id is not None:
                finished |= token == c.eos_token_id
                if bool(finished.all()):
                    break
        return out[:, :n]

    def _step_setup(self, enc: torch.Tensor, attention_mask, cache: T5Cache):
        """What every cached decoding step shares, computed once per ``generate``: the cross-attention
        keys/values (in the cache), their padding bias, and the decoder's position bias with the
        causal mask for every (query, key) pair up to the cache's length."""
        c = self.config
        cache.cross = [b.layer[1].EncDecAttention.project_kv(enc) for b in self.decoder.block]
        cross_bias = _additive(attention_mask, enc.dtype) if attention_mask is not None else None
        n = cache.max_len
        table = self.decoder.position_bias(n, n, 0, enc.device)  # (1, nh, n, n)
        causal = torch.ones(n, n, dtype=torch.bool, device=enc.device).triu(1)
        return cross_bias, table.masked_fill(causal, torch.finfo(table.dtype).min)

    def _step(self, ids: torch.Tensor, cache: T5Cache, cross_bias, table) -> torch.Tensor:
        """Decoder states (B, T, C) of ``ids`` (B, T) after the cache, without the per-call checks
        of ``forward`` (``generate`` checked its inputs once): the fast path of decoding."""
        L, T = cache.length, ids.size(1)
        return self.decoder(self.shared(ids), table[:, :, L:L + T, :L + T], cross_bias=cross_bias,
                            cache=cache)

    def _beam_search(self, enc, attention_mask, max_new_tokens, num_beams, length_penalty):
        """Beam search with a cache whose self-attention rows follow their beams; the encoder
        output is repeated per beam once."""
        c = self.config
        B, K = enc.size(0), num_beams
        enc = enc.repeat_interleave(K, dim=0)  # (B·K, S, C) rows b*K .. b*K+K-1
        mask = attention_mask.repeat_interleave(K, dim=0) if attention_mask is not None else None
        cache = T5Cache(c, B * K, max_new_tokens, device=enc.device, dtype=self.shared.weight.dtype)
        cross_bias, table = self._step_setup(enc, mask, cache)

        def step(prefix: torch.Tensor, cache: T5Cache):
            h = self._step(prefix[:, cache.length:], cache, cross_bias, table)[:, -1]
            return self._logits(h), cache  # (B·K, V)

        def reorder(cache: T5Cache, rows: torch.Tensor) -> T5Cache:
            cache.reorder(rows)
            return cache

        return hf_beam_search(step, cache, batch_size=B, bos_id=c.decoder_start_token_id,
                              eos_id=c.eos_token_id, pad_id=c.pad_token_id,
                              max_new_tokens=max_new_tokens, num_beams=K,
                              length_penalty=length_penalty, reorder_fn=reorder, device=enc.device)


_HF_FIELDS = {f.name for f in fields(T5Config)} - {"tie_word_embeddings"}


def config_from_hf(hf_config: Any) -> T5Config:
    """A :class:`T5Config` from a ``transformers.T5Config``, its dict, or a config.json dict.

    transformers 5 always ties the head in its config (``tie_word_embeddings=True``) and keeps the
    v1.0/v1.1 difference in ``scale_decoder_outputs``; older config.json files say
    ``tie_word_embeddings=False`` for v1.1. Both map to our ``tie_word_embeddings``.
    """
    if not isinstance(hf_config, dict) and not hasattr(hf_config, "to_dict"):
        raise TypeError(f"hf_config must be a transformers T5Config or its dict, got "
                        f"{type(hf_config).__name__}")
    c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    missing = [k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads") if k not in c]
    if missing:
        raise ValueError(f"the T5 config lacks the fields {missing}")
    kwargs = {k: c[k] for k in _HF_FIELDS if k in c and (c[k] is not None or k in (
        "eos_token_id", "decoder_start_token_id"))}
    if isinstance(kwargs.get("eos_token_id"), list):
        raise ValueError(f"eos_token_id={c['eos_token_id']} (several end tokens) is not supported")
    kwargs["tie_word_embeddings"] = bool(c.get("scale_decoder_outputs", c.get("tie_word_embeddings", True)))
    kwargs["dropout_rate"] = float(kwargs.get("dropout_rate", 0.1))
    return T5Config(**kwargs)


__all__ = ["T5Config", "T5Model", "T5ForConditionalGeneration", "T5EncoderModel", "T5Cache",
           "T5EncoderOutput", "Seq2SeqOutput", "relative_position_bucket", "shift_right",
           "config_from_hf"]
