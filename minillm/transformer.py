"""The Transformer block: attention and a feed-forward net, each wrapped in a residual and a LayerNorm.

Two arrangements (Vaswani et al. 2017 use post-LN; GPT-2 and most models since use pre-LN,
Xiong et al. 2020 "On Layer Normalization in the Transformer Architecture"):

    post-LN:  x = LN(x + Attn(x));   x = LN(x + FFN(x))
    pre-LN:   x = x + Attn(LN(x));   x = x + FFN(LN(x))

Pre-LN keeps an untouched residual path from input to output, so gradients reach early layers
at the same scale however deep the stack is; post-LN needs learning-rate warmup to train deep.
:meth:`TransformerBlock.from_torch` copies ``torch.nn.TransformerEncoderLayer`` weights (parity is
tested). :class:`TinyTransformerLM` stacks a few blocks into a character model small enough to
train in seconds — chapter 7's toy for looking at attention; chapter 8's GPT is the real model.

Shape letters: B batch, T sequence length, C model width, V vocabulary, nh heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiHeadAttention
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from .sampling import IDS
from .validation import (check_bool, check_choice, check_float, check_int, check_tensor,
                         check_token_ids)

_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh")}


@dataclass
class BlockConfig:
    """Sizes and choices of one Transformer block."""

    d_model: int = 128  # width of the residual stream (C)
    n_heads: int = 4  # attention heads; d_model must be divisible by it
    d_ff: int | None = None  # hidden width of the feed-forward net; None = 4 * d_model
    dropout: float = 0.0  # on attention weights and after each sub-layer
    activation: str = "gelu"  # "gelu" (exact erf), "gelu_tanh" (GPT-2) or "relu" (original)
    norm_first: bool = True  # True = pre-LN (GPT-2), False = post-LN (original Transformer, BERT)
    bias: bool = True  # biases in the linear layers
    layer_norm_eps: float = 1e-5  # LayerNorm epsilon

    def __post_init__(self) -> None:
        self.d_model = check_int("d_model", self.d_model, low=1)
        self.n_heads = check_int("n_heads", self.n_heads, low=1)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a positive multiple of n_heads={self.n_heads}")
        self.d_ff = check_int("d_ff", self.d_ff, low=1, allow_none=True)
        check_choice("activation", self.activation, _ACTIVATIONS)
        self.dropout = check_float("dropout", self.dropout, low=0, high=1, high_inclusive=False)
        check_bool("norm_first", self.norm_first)
        check_bool("bias", self.bias)
        self.layer_norm_eps = check_float("layer_norm_eps", self.layer_norm_eps, low=0,
                                          low_inclusive=False)
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model


class LayerNorm(nn.Module):
    """Normalise each token's vector to mean 0 and variance 1, then scale and shift (Ba et al. 2016).

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` over the last dimension, with the biased
    variance, computed in fp32 and cast back. Same parameter names and result as ``nn.LayerNorm``.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        mean = h.mean(dim=-1, keepdim=True)  # (..., 1)
        var = (h - mean).pow(2).mean(dim=-1, keepdim=True)  # (..., 1), biased like nn.LayerNorm
        h = (h - mean) * torch.rsqrt(var + self.eps)
        h = h * self.weight.float() + (self.bias.float() if self.bias is not None else 0.0)
        return h.to(x.dtype)


class FeedForward(nn.Module):
    """The position-wise feed-forward net: the same two-layer MLP applied to every token."""

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.linear1 = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.linear2 = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.activation = _ACTIVATIONS[config.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))  # (B, T, C)


class TransformerBlock(nn.Module):
    """Multi-head self-attention + feed-forward, each with a residual connection and a LayerNorm.

    Parameter names follow ``torch.nn.TransformerEncoderLayer`` (``norm1``, ``norm2``, ``linear1``,
    ``linear2``) apart from the attention projections (see :class:`MultiHeadAttention`).
    """

    def __init__(self, config: BlockConfig):
        super().__init__()
        self.config = config
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, bias=config.bias,
                                       dropout=config.dropout)
        self.norm1 = LayerNorm(config.d_model, config.layer_norm_eps, bias=config.bias)
        self.norm2 = LayerNorm(config.d_model, config.layer_norm_eps, bias=config.bias)
        self.ff = FeedForward(config)
        self.dropout1 = nn.Dropout(config.dropout)
        self.dropout2 = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, causal: bool = False,
                need_weights: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) → (B, T, C) [, attention weights (B, nh, T, T)]; mask as in MultiHeadAttention."""
        def attend(h):
            out = self.attn(h, mask=mask, causal=causal, need_weights=need_weights)
            return out if need_weights else (out, None)

        if self.config.norm_first:
            a, weights = attend(self.norm1(x))
            x = x + self.dropout1(a)  # residual: the block only adds to the stream
            x = x + self.dropout2(self.ff(self.norm2(x)))
        else:
            a, weights = attend(x)
            x = self.norm1(x + self.dropout1(a))
            x = self.norm2(x + self.dropout2(self.ff(x)))
        return (x, weights) if need_weights else x

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> "TransformerBlock":
        """A block with the same weights as a ``batch_first`` ``nn.TransformerEncoderLayer``."""
        if not layer.self_attn.batch_first:
            raise ValueError("expected nn.TransformerEncoderLayer(..., batch_first=True)")
        act = layer.activation
        if act is F.relu or isinstance(act, nn.ReLU):
            name = "relu"
        elif act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
            name = "gelu"
        elif isinstance(act, nn.GELU) and act.approximate == "tanh":
            name = "gelu_tanh"
        else:
            raise ValueError(f"unsupported activation {act!r}: expected relu or gelu")
        config = BlockConfig(d_model=layer.self_attn.embed_dim, n_heads=layer.self_attn.num_heads,
                             d_ff=layer.linear1.out_features, dropout=layer.dropout.p, activation=name,
                             norm_first=layer.norm_first, bias=layer.linear1.bias is not None,
                             layer_norm_eps=layer.norm1.eps)
        block = cls(config).to(layer.linear1.weight.device, layer.linear1.weight.dtype)
        block.attn.load_state_dict(MultiHeadAttention.from_torch(layer.self_attn).state_dict())
        own = {k: v for k, v in layer.state_dict().items() if not k.startswith("self_attn.")}
        own = {k.replace("linear", "ff.linear"): v for k, v in own.items()}
        missing, unexpected = block.load_state_dict(own, strict=False)
        if unexpected or any(not k.startswith("attn.") for k in missing):
            raise ValueError(f"weights did not line up: missing {missing}, unexpected {unexpected}")
        return block


@dataclass
class TinyLMConfig:
    """A small stack of Transformer blocks over characters (or any ids)."""

    vocab_size: int = 65  # V
    max_len: int = 128  # longest sequence (learned positions need a table this long)
    n_layers: int = 2  # blocks
    positional: str = "learned"  # "learned" or "sinusoidal"
    causal: bool = True  # next-token model (True) or bidirectional encoder (False)
    block: BlockConfig = field(default_factory=BlockConfig)  # every block's sizes

    def __post_init__(self) -> None:
        if isinstance(self.block, dict):  # from a saved checkpoint
            self.block = BlockConfig(**self.block)
        if not isinstance(self.block, BlockConfig):
            raise TypeError(f"block must be a BlockConfig (or its dict), got {type(self.block).__name__}")
        for name in ("vocab_size", "max_len", "n_layers"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        check_choice("positional", self.positional, ("learned", "sinusoidal"))
        check_bool("causal", self.causal)


class TinyTransformerLM(nn.Module):
    """Token embedding + positions → ``n_layers`` Transformer blocks → final LayerNorm → logits."""

    config_class = TinyLMConfig

    def __init__(self, config: TinyLMConfig):
        super().__init__()
        self.config = config
        C = config.block.d_model
        self.tok = nn.Embedding(config.vocab_size, C)
        nn.init.normal_(self.tok.weight, std=0.02)
        if config.positional == "learned":
            self.pos = LearnedPositionalEmbedding(config.max_len, C)
        else:
            self.pos = SinusoidalPositionalEncoding(C, config.max_len)
        self.blocks = nn.ModuleList(TransformerBlock(config.block) for _ in range(config.n_layers))
        self.norm = LayerNorm(C, config.block.layer_norm_eps)
        self.head = nn.Linear(C, config.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None,
                return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """idx (B, T) → logits (B, T, V) [, list of per-layer weights (B, nh, T, T)].

        ``attention_mask`` (B, T): 1/True for real tokens, 0/False for padding (hidden as keys).
        """
        check_token_ids(IDS, idx, self.config.vocab_size, ndim=2)
        if idx.size(1) > self.config.max_len:
            raise ValueError(f"sequence of {idx.size(1)} tokens is longer than max_len="
                             f"{self.config.max_len}")
        mask = None
        if attention_mask is not None:
            check_tensor("attention_mask", attention_mask, ndim=2)
            if attention_mask.shape != idx.shape:
                raise ValueError(f"attention_mask must have the shape of idx {tuple(idx.shape)}, "
                                 f"got {tuple(attention_mask.shape)}")
            mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): hide padded keys
        x = self.pos(self.tok(idx))  # (B, T, C)
        maps = []
        for block in self.blocks:
            if return_attention:
                x, w = block(x, mask=mask, causal=self.config.causal, need_weights=True)
                maps.append(w)
            else:
                x = block(x, mask=mask, causal=self.config.causal)
        logits = self.head(self.norm(x))  # (B, T, V)
        return (logits, maps) if return_attention else logits
