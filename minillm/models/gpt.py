"""GPT: a decoder-only Transformer language model (GPT-1 post-LN or GPT-2 pre-LN), built for speed.

The model predicts every next token of a sequence at once; a causal mask stops position t from
seeing positions after t (Radford et al., 2018 and 2019). Parameter names follow Hugging Face's
``GPT2LMHeadModel`` (``transformer.wte``, ``transformer.h.{i}.attn.c_attn``, ``lm_head`` ...), so
importing GPT-2 weights is a key-for-key copy plus one transpose list (HF stores its four projection
matrices as ``Conv1D`` with shape (in, out); we use ``nn.Linear``, shape (out, in)).

The forward interface is Hugging Face's — ``input_ids`` or ``inputs_embeds``, ``attention_mask``,
``position_ids``, ``past_key_values`` — so the adaptation methods of later chapters (LoRA, prompt
and prefix tuning) hook in without patching the model. Attention goes through the course's one core,
:func:`minillm.attention.attend` (SDPA fast path, explicit softmax as its twin).

Fast paths: one fused q/k/v projection, SDPA with ``is_causal`` when nothing else is masked, a fused
tanh-GELU, and a preallocated key/value cache for generation (no per-step concatenation).

Shape letters: B batch, T time (tokens in this call), L tokens already in the cache, C channels
(n_embd), nh heads, hs head size (C // nh), V vocabulary.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..attention import attend
from ..sampling import check_generate_args, sample_next
from ..search import beam_search
from .hf_io import read_hf_directory, write_hf_directory
from ..validation import check_bool, check_choice, check_float, check_int, check_tensor, check_token_ids

IDS = "idx (int64/int32 token ids, shape (B, T))"  # how errors name the model's input
ACTIVATIONS = ("gelu_tanh", "gelu_new", "gelu")
# HF GPT-2 Conv1D weights, stored (in, out): transposed when copied into our nn.Linear (out, in)
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


@dataclass
class GPTConfig:
    """Sizes and switches of a :class:`GPT`. Named sizes are the classmethods below."""

    vocab_size: int = 82  # tokens (82 = the characters of the shipped Shakespeare corpus)
    block_size: int = 256  # context window: the most positions the model can see
    n_layer: int = 6  # Transformer blocks
    n_head: int = 6  # attention heads per block
    n_embd: int = 384  # channels; must be divisible by n_head
    dropout: float = 0.0  # on embeddings, attention weights and residual branches
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2 has them)
    pre_ln: bool = True  # True: GPT-2 (LayerNorm before each sublayer + final ln_f); False: GPT-1
    tie_weights: bool = True  # lm_head shares its matrix with the token embedding wte
    activation: str = "gelu_tanh"  # "gelu_tanh" (fused, fast), "gelu_new" (HF's op-by-op), "gelu"
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon (GPT-2: 1e-5)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}")
        self.dropout = check_float("dropout", self.dropout, low=0, high=1, high_inclusive=False)
        for name in ("bias", "pre_ln", "tie_weights"):
            check_bool(name, getattr(self, name))
        check_choice("activation", self.activation, ACTIVATIONS)
        self.layer_norm_eps = check_float("layer_norm_eps", self.layer_norm_eps, low=0,
                                          low_inclusive=False)

    @classmethod
    def tiny(cls, **overrides) -> "GPTConfig":
        """A model small enough for unit tests: 2 layers, width 32, context 32 (65 tokens)."""
        return cls(**{**dict(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=32),
                      **overrides})

    @classmethod
    def shakespeare_small(cls, **overrides) -> "GPTConfig":
        """The shipped chapter-8 checkpoint: 4 layers, 4 heads, width 128, context 128 (~0.8M
        parameters, ~3.3 MB in fp32; sized to train in minutes on a shared 2-core CPU)."""
        return cls(**{**dict(vocab_size=82, block_size=128, n_layer=4, n_head=4, n_embd=128),
                      **overrides})

    @classmethod
    def shakespeare_char(cls, **overrides) -> "GPTConfig":
        """nanoGPT's Shakespeare-character size: 6 layers, 6 heads, width 384, context 256 (10.7M);
        82 tokens, the characters of the course's Shakespeare corpus (nanoGPT's has 65)."""
        return cls(**{**dict(vocab_size=82, block_size=256, n_layer=6, n_head=6, n_embd=384),
                      **overrides})

    @classmethod
    def gpt2(cls, **overrides) -> "GPTConfig":
        """OpenAI GPT-2 small: 12 layers, 12 heads, width 768, context 1024, 50257 tokens (124M)."""
        return cls(**{**dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
                      **overrides})


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, the tanh approximation written op by op (HF ``gelu_new``)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √hs + causal mask) v, written out: the slow twin of SDPA with is_causal.

    q: (..., T, hs), k and v: (..., S, hs) with S >= T; query i sits at position S - T + i, so it sees
    keys 0 .. S - T + i (this also covers a query block that follows a cache).
    """
    T, S = q.size(-2), k.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (..., T, S)
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v  # (..., T, hs)


class KVCache:
    """Preallocated keys and values of every layer, for decoding one token at a time.

    ``k`` and ``v`` have shape (n_layer, B, nh, max_len, hs); ``length`` counts the positions filled.
    Each layer writes its new keys/values into place and reads the filled prefix, so a decoding step
    costs no allocation and no concatenation.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int | None = None, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        batch_size = check_int("batch_size", batch_size, low=1)
        max_len = check_int("max_len", max_len, low=1, allow_none=True) or config.block_size
        if max_len > config.block_size:
            raise ValueError(f"max_len={max_len} is longer than the model's context window "
                             f"block_size={config.block_size} (there are no positions beyond it)")
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, max_len, hs)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, nh, T, hs) keys/values after the filled prefix; return all of them (B, nh, L+T, hs)."""
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(f"the cache holds max_len={self.max_len} positions and {start} are "
                             f"filled: cannot add {k.size(2)} more")
        if k.shape != v.shape or k.shape[:2] != self.k.shape[1:3] or k.size(3) != self.k.size(4):
            raise ValueError(f"keys/values must have shape (B={self.k.size(1)}, nh={self.k.size(2)}, "
                             f"T, hs={self.k.size(4)}), got {tuple(k.shape)} and {tuple(v.shape)}")
        self.k[layer, :, :, start:end] = k
        self.v[layer, :, :, start:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (beam search: each surviving beam inherits its parent's cache)."""
        index = index.to(self.k.device)
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)


PastKeyValues = "KVCache | Sequence[tuple[torch.Tensor, torch.Tensor]]"


def past_length(past_key_values, *, n_layers: int, batch: int, n_kv_heads: int, head_dim: int) -> int:
    """How many positions come before this call's tokens: 0 (no past), a :class:`KVCache`'s filled
    length, or the length P of per-layer (key, value) prefixes, each (batch, n_kv_heads, P, head_dim),
    whose shapes are checked (prefix tuning hands them in)."""
    if past_key_values is None:
        return 0
    if isinstance(past_key_values, KVCache):
        return past_key_values.length
    if not isinstance(past_key_values, (list, tuple)) or len(past_key_values) != n_layers:
        raise ValueError(f"past_key_values must be a KVCache or one (key, value) pair per layer "
                         f"({n_layers}), got {type(past_key_values).__name__}")
    k0 = past_key_values[0][0]
    want = (batch, n_kv_heads, k0.size(2) if k0.dim() == 4 else -1, head_dim)
    for layer, (k, v) in enumerate(past_key_values):
        if k.shape != want or v.shape != want:
            raise ValueError(f"past_key_values[{layer}] must hold keys and values of shape "
                             f"(B, key/value heads, P, head size) = {want}, got {tuple(k.shape)} and "
                             f"{tuple(v.shape)}")
    return k0.size(2)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with one fused q/k/v projection (HF: ``attn.c_attn``)."""

    explicit_attention = False  # True: the written-out softmax (minillm.attention.set_attention_impl)

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                past: KVCache | Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                layer: int = 0) -> torch.Tensor:
        """x (B, T, C) → (B, T, C). mask: bool/additive over the keys (B, 1, T|1, L+T) or None;
        past: a :class:`KVCache` (written in place) or per-layer (k, v) prefixes (read only)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 × (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        prefix = None
        if isinstance(past, KVCache):
            k, v = past.update(layer, k, v)  # (B, nh, L+T, hs): the cache's filled prefix + ours
        elif past is not None:
            prefix = past[layer]  # (B, nh, P, hs) each: keys/values in front (prefix tuning)
        dropout = self.dropout if self.training else 0.0
        y, _ = attend(q, k, v, mask=mask, causal=True, dropout_p=dropout, prefix=prefix,
                      explicit=self.explicit_attention)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C) heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward net: C → 4C → GELU → C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.activation = config.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)  # (B, T, 4C)
        if self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")  # one fused kernel; within ~3e-6 of gelu_new
        elif self.activation == "gelu_new":
            h = gelu_new(h)
        else:
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """One Transformer block. Pre-LN (GPT-2): x + f(LN(x)). Post-LN (GPT-1): LN(x + f(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.pre_ln = config.pre_ln
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, past=None,
                layer: int = 0) -> torch.Tensor:
        if self.pre_ln:
            x = x + self.attn(self.ln_1(x), mask, past, layer)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, mask, past, layer))
        return self.ln_2(x + self.mlp(x))


class GPT(nn.Module):
    """A GPT language model: token ids (B, T) → next-token logits (B, T, V)."""

    config_class = GPTConfig
    gradient_checkpointing = False  # recompute each block in backward (gradient_checkpointing_enable)

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            # GPT-1 (post-LN) ends with a normalised block already; GPT-2 adds a final LayerNorm
            ln_f=(nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
                  if config.pre_ln else nn.Identity()),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight  # one matrix for input and output
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/√(2·n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def gradient_checkpointing_enable(self) -> None:
        """Activation checkpointing (Chen et al., 2016), as Hugging Face's method of this name: in
        training, each block keeps only its input and recomputes its activations during backward
        (less memory, about one more forward of time). No effect under no_grad or with a KVCache."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Store every block's activations again (the default)."""
        self.gradient_checkpointing = False

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (a tied matrix counted once); optionally without the position table."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def _check_ids(self, idx: torch.Tensor, past: int = 0) -> None:
        check_token_ids(IDS, idx, self.config.vocab_size, ndim=2, allow_empty=True)
        if idx.dtype not in (torch.int64, torch.int32):  # what nn.Embedding accepts
            raise TypeError(f"{IDS} must be int64 or int32, got {idx.dtype}")
        if past + idx.size(1) > self.config.block_size:
            raise ValueError(f"sequence of {past + idx.size(1)} tokens is longer than the context "
                             f"window block_size={self.config.block_size}")

    def _past_length(self, past_key_values, batch: int) -> int:
        c = self.config
        return past_length(past_key_values, n_layers=c.n_layer, batch=batch, n_kv_heads=c.n_head,
                           head_dim=c.n_embd // c.n_head)

    def _embed(self, input_ids, inputs_embeds, position_ids, past: int) -> torch.Tensor:
        """Token (or given) embeddings plus learned positions: (B, T, C)."""
        c = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            self._check_ids(input_ids, past if position_ids is None else 0)
            x = self.transformer.wte(input_ids)  # (B, T, C)
        else:
            check_tensor("inputs_embeds", inputs_embeds, ndim=3)
            if inputs_embeds.size(-1) != c.n_embd or not inputs_embeds.is_floating_point():
                raise ValueError(f"inputs_embeds must be float of shape (B, T, n_embd={c.n_embd}), "
                                 f"got {inputs_embeds.dtype} {tuple(inputs_embeds.shape)}")
            x = inputs_embeds
        B, T = x.shape[:2]
        if position_ids is None:
            if past + T > c.block_size:
                raise ValueError(f"sequence of {past + T} tokens is longer than the context window "
                                 f"block_size={c.block_size}")
            pos = self.transformer.wpe.weight[past:past + T]  # (T, C) positions past .. past+T-1
        else:
            check_token_ids("position_ids", position_ids, c.block_size, ndim=(1, 2))
            if position_ids.shape not in ((T,), (1, T), (B, T)):
                raise ValueError(f"position_ids must have shape (B, T) = {(B, T)} or (T,), got "
                                 f"{tuple(position_ids.shape)}")
            pos = self.transformer.wpe(position_ids)  # (B|1, T, C) or (T, C)
        return self.transformer.drop(x + pos)

    def _mask(self, attention_mask, B: int, T: int, past: int, dtype: torch.dtype):
        """(B, L+T) 1/0 "is a real token" → additive (B, 1, 1, L+T) mask; (B, T, L+T) 1/0 "query i
        may see key j" (packed sequences: a block-diagonal mask) → (B, 1, T, L+T); or None."""
        if attention_mask is None:
            return None
        check_tensor("attention_mask", attention_mask, ndim=(2, 3))
        if attention_mask.dim() == 3:
            if attention_mask.shape != (B, T, past + T):
                raise ValueError(f"a 3-D attention_mask must have shape (B, T, past + T) = "
                                 f"{(B, T, past + T)} (1 = query i may see key j), got "
                                 f"{tuple(attention_mask.shape)}")
            hide = ~attention_mask.bool()[:, None]  # (B, 1, T, L+T); causality is added on top
        elif attention_mask.shape not in ((B, past + T),) + (((B, T),) if past == 0 else ()):
            raise ValueError(f"attention_mask must have shape (B, past + T) = {(B, past + T)} (1 = "
                             f"real token, 0 = padding), got {tuple(attention_mask.shape)}")
        else:
            hide = ~attention_mask.bool()[:, None, None, :]  # (B, 1, 1, L+T)
        # additive like Hugging Face: a fully hidden query row (left padding) stays finite
        return torch.zeros(hide.shape, dtype=dtype, device=hide.device).masked_fill(
            hide, torch.finfo(dtype).min)

    def hidden_states(self, input_ids: torch.Tensor | None = None, *,
                      inputs_embeds: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None,
                      position_ids: torch.Tensor | None = None,
                      past_key_values: KVCache | Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                      ) -> torch.Tensor:
        """The final hidden states (B, T, C); arguments as in :meth:`forward`."""
        given = input_ids if input_ids is not None else inputs_embeds
        past = self._past_length(past_key_values, given.size(0) if given is not None else 0)
        x = self._embed(input_ids, inputs_embeds, position_ids, past)  # (B, T, C)
        B, T = x.shape[:2]
        mask = self._mask(attention_mask, B, T, past, x.dtype)
        return self._blocks(x, mask, past_key_values)

    def _blocks(self, x: torch.Tensor, mask: torch.Tensor | None, past) -> torch.Tensor:
        """Embedded input (B, T, C) → final hidden states (B, T, C); advances a KVCache."""
        # activation checkpointing: keep only each block's input, recompute its insides in backward
        recompute = (self.gradient_checkpointing and self.training and torch.is_grad_enabled()
                     and not isinstance(past, KVCache))
        for i, block in enumerate(self.transformer.h):
            if recompute:
                x = checkpoint(block, x, mask, past, i, use_reentrant=False)
            else:
                x = block(x, mask, past, i)
        if isinstance(past, KVCache):
            past.length += x.size(1)
        return self.transformer.ln_f(x)

    def _decode_hidden(self, ids: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """:meth:`hidden_states` for ``generate``'s inner loop, which checked its prompt once: no
        per-step validation (it would cost as much as a small layer's attention)."""
        past = cache.length if cache is not None else 0
        pos = self.transformer.wpe.weight[past:past + ids.size(1)]  # (T, C)
        return self._blocks(self.transformer.drop(self.transformer.wte(ids) + pos), None, cache)

    def forward(self, input_ids: torch.Tensor | None = None, *,
                inputs_embeds: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None,
                past_key_values: KVCache | Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                ) -> torch.Tensor:
        """Next-token logits (B, T, V), with Hugging Face's argument meanings.

        input_ids (B, T) token ids in [0, vocab_size), or inputs_embeds (B, T, C) (prompt tuning
            feeds its virtual tokens this way).
        attention_mask (B, L+T): 1 = real token, 0 = padding (hidden as a key). Positions are not
            derived from it: with left padding pass ``position_ids`` too, as in HF GPT-2. A 3-D
            mask (B, T, L+T) says which keys each query may see (on top of causality): packed
            sequences use a block-diagonal one (:func:`minillm.sft.pack_examples`).
        position_ids (B, T) or (T,): default ``past .. past+T-1``.
        past_key_values: a :class:`KVCache` (filled in place; ``generate`` uses one) or one
            (key, value) pair per layer, each (B, n_head, L, head size), put in front of this call's
            keys/values and left unchanged (prefix tuning); L counts as past positions.
        """
        return self.lm_head(self.hidden_states(input_ids, inputs_embeds=inputs_embeds,
                                               attention_mask=attention_mask,
                                               position_ids=position_ids,
                                               past_key_values=past_key_values))

    # ---------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, *, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 num_beams: int = 1, length_penalty: float = 1.0, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Continue the prompts ``idx`` (B, T ≥ 1) by ``max_new_tokens`` tokens; returns (B, T + new).

        Arguments mirror Hugging Face ``generate``: greedy by default; ``do_sample=True`` samples
        after ``temperature``, ``top_k`` and ``top_p`` filtering; ``num_beams > 1`` runs beam search
        (:func:`minillm.search.beam_search`, highest total log-probability; there is no
        end-of-text token, so all beams have the same length and ``length_penalty`` cannot change
        the winner). ``use_cache=False`` recomputes the whole sequence every step (the slow twin
        of the cache). Past the context window the model sees the last ``block_size`` tokens; with
        learned absolute positions the cache cannot slide, so those steps recompute the window.
        """
        self._check_ids(idx)
        check_generate_args(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, num_beams=num_beams, length_penalty=length_penalty)
        check_bool("do_sample", do_sample)
        check_bool("use_cache", use_cache)
        if idx.size(1) == 0:
            raise ValueError(f"the prompt must hold at least one token, got shape {tuple(idx.shape)}")
        if num_beams > 1:
            if do_sample:
                raise ValueError("beam search is deterministic: use num_beams > 1 with do_sample=False")
            return self._beam_search(idx, max_new_tokens, num_beams, length_penalty)
        if max_new_tokens == 0:
            return idx
        pick = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                    generator=generator)
        B, T0 = idx.shape
        out = torch.empty(B, T0 + max_new_tokens, dtype=idx.dtype, device=idx.device)
        out[:, :T0] = idx
        block = self.config.block_size
        cache = KVCache(self.config, B, device=idx.device,
                        dtype=self.transformer.wte.weight.dtype) if use_cache else None
        length = T0
        for _ in range(max_new_tokens):
            if cache is not None and length <= block:
                new = out[:, cache.length:length]  # the prompt first, then one token per step
                h = self._decode_hidden(new, cache)[:, -1]  # (B, C) the last position only
            else:  # no cache, or the window slid past it (learned positions cannot shift)
                h = self._decode_hidden(out[:, max(0, length - block):length], None)[:, -1]
            logits = self.lm_head(h)  # (B, V)
            out[:, length:length + 1] = sample_next(logits, **pick)
            length += 1
        return out

    def _beam_search(self, idx: torch.Tensor, max_new_tokens: int, num_beams: int,
                     length_penalty: float = 1.0) -> torch.Tensor:
        """Beam search (:func:`minillm.search.beam_search`) with a key/value cache whose rows
        follow their beams; returns the prompts followed by the best beam of each (B, T + new)."""
        B, T0 = idx.shape
        if T0 + max_new_tokens - 1 > self.config.block_size:
            raise ValueError(f"beam search needs prompt + max_new_tokens - 1 <= block_size "
                             f"({T0} + {max_new_tokens} - 1 > {self.config.block_size})")
        if max_new_tokens == 0:
            return idx
        cache = KVCache(self.config, B * num_beams, device=idx.device,
                        dtype=self.transformer.wte.weight.dtype)

        def step(prefix: torch.Tensor, cache: KVCache) -> tuple[torch.Tensor, KVCache]:
            new = prefix[:, cache.length:]  # the prompt first, then each beam's last token
            return self.lm_head(self._decode_hidden(new, cache)[:, -1]), cache  # (B·k, V)

        def reorder(cache: KVCache, rows: torch.Tensor) -> KVCache:
            cache.reorder(rows)  # each surviving beam inherits its parent's keys and values
            return cache

        out = beam_search(step, cache, batch_size=B, bos_id=None, eos_id=None, prompt=idx,
                          max_new_tokens=max_new_tokens, num_beams=num_beams,
                          length_penalty=length_penalty, reorder_fn=reorder,
                          expand_fn=lambda cache, index: cache, device=idx.device)
        return torch.cat([idx, out.sequences.to(idx.dtype)], dim=1)

    # ---------------------------------------------------------------- Hugging Face GPT-2 weights

    @classmethod
    def config_from_hf(cls, hf_config: Any) -> GPTConfig:
        """A :class:`GPTConfig` from a ``transformers.GPT2Config`` (or its dict)."""
        if not isinstance(hf_config, dict) and not hasattr(hf_config, "to_dict"):
            raise TypeError(f"hf_config must be a transformers GPT2Config or its dict, got "
                            f"{type(hf_config).__name__}")
        c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
        missing = [k for k in ("vocab_size", "n_positions", "n_layer", "n_head", "n_embd") if k not in c]
        if missing:
            raise ValueError(f"the GPT-2 config lacks the fields {missing}")
        n_embd = c["n_embd"]
        if c.get("n_inner") not in (None, 4 * n_embd):
            raise ValueError(f"n_inner={c['n_inner']} is not supported (only 4 * n_embd)")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
            if c.get(flag):
                raise ValueError(f"GPT-2 option {flag}=True is not supported")
        if not c.get("scale_attn_weights", True):
            raise ValueError("scale_attn_weights=False is not supported")
        act = {"gelu_new": "gelu_new", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
        if c.get("activation_function", "gelu_new") not in act:
            raise ValueError(f"activation_function {c['activation_function']!r} is not supported; "
                             f"expected one of {sorted(act)}")
        return GPTConfig(vocab_size=c["vocab_size"], block_size=c["n_positions"],
                         n_layer=c["n_layer"], n_head=c["n_head"], n_embd=n_embd, dropout=0.0,
                         bias=True, pre_ln=True, tie_weights=c.get("tie_word_embeddings", True),
                         activation=act[c.get("activation_function", "gelu_new")],
                         layer_norm_eps=c.get("layer_norm_epsilon", 1e-5))

    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a GPT-2 state dict (with or without the ``transformer.`` prefix) into this model."""
        state = {(k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v
                 for k, v in state.items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
        if "lm_head.weight" not in state:
            if not self.config.tie_weights:
                raise ValueError("the GPT-2 weights lack lm_head.weight and the config is untied")
            state["lm_head.weight"] = state["transformer.wte.weight"]
        ours = self.state_dict()
        missing, unexpected = sorted(set(ours) - set(state)), sorted(set(state) - set(ours))
        if missing or unexpected:
            raise ValueError(f"GPT-2 weights do not fit: missing {missing[:8]}, unexpected {unexpected[:8]}")
        with torch.no_grad():
            for name, target in ours.items():
                src = state[name]
                if name.endswith(CONV1D_WEIGHTS):
                    src = src.t()  # Conv1D (in, out) → Linear (out, in)
                if src.shape != target.shape:
                    raise ValueError(f"{name}: GPT-2 shape {tuple(src.shape)} vs ours {tuple(target.shape)}")
                target.copy_(src)

    @classmethod
    def from_hf(cls, model: nn.Module) -> "GPT":
        """A :class:`GPT` holding the weights of a ``transformers.GPT2LMHeadModel`` (eval mode)."""
        if not (hasattr(model, "config") and hasattr(model, "state_dict")):
            raise TypeError(f"model must be a transformers GPT2LMHeadModel, got {type(model).__name__}")
        gpt = cls(cls.config_from_hf(model.config))
        gpt.load_hf_state_dict(model.state_dict())
        return gpt.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "GPT":
        """Load a Hugging Face GPT-2 directory (``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``; :func:`minillm.models.hf_io.read_hf_directory`).

        Raises ``FileNotFoundError`` for a missing directory or file, ``ValueError`` naming the
        problem for anything else that is not a GPT-2 directory (a minillm checkpoint, a corrupt
        or mismatched file, a tensor of the wrong shape).
        """
        config, state = read_hf_directory(directory, "gpt2", what="GPT-2")
        gpt = cls(cls.config_from_hf(config))
        gpt.load_hf_state_dict(state)
        return gpt.eval()

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a Hugging Face GPT-2 directory that ``GPT2LMHeadModel.from_pretrained`` can load."""
        c = self.config
        if not (c.pre_ln and c.bias):
            raise ValueError(f"only GPT-2-style models (pre_ln=True, bias=True) can be saved for HF, "
                             f"got pre_ln={c.pre_ln}, bias={c.bias}")
        act = {"gelu_new": "gelu_new", "gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}[c.activation]
        tensors = {}
        for name, t in self.state_dict().items():
            if name == "lm_head.weight" and c.tie_weights:
                continue
            tensors[name] = t.t() if name.endswith(CONV1D_WEIGHTS) else t
        hf = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=c.vocab_size,
                  n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
                  n_inner=None, activation_function=act, layer_norm_epsilon=c.layer_norm_eps,
                  resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout,
                  tie_word_embeddings=c.tie_weights, bos_token_id=None, eos_token_id=None)
        return write_hf_directory(directory, hf, tensors)
