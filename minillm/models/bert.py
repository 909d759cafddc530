"""BERT: a bidirectional Transformer encoder and its pretraining and fine-tuning heads.

Every token sees every other token (no causal mask); the model learns by filling in masked tokens
(MLM) and by telling whether sentence B followed sentence A (NSP) (Devlin et al., 2019, "BERT:
Pre-training of Deep Bidirectional Transformers for Language Understanding"). Post-LN blocks:
``LayerNorm(x + dropout(sublayer(x)))`` after attention and after the feed-forward net.

Parameter and class names follow Hugging Face ``transformers.models.bert`` (``bert.embeddings.
word_embeddings``, ``bert.encoder.layer.{i}.attention.self.query``, ``cls.predictions.decoder`` ...),
so a Hugging Face state dict loads key for key with no transposes; ``from_pretrained`` reads a Hugging
Face directory (e.g. all-MiniLM-L6-v2, see :mod:`minillm.pretrained`) and ``save_pretrained`` writes
one that ``transformers`` loads. Attention goes through :func:`minillm.attention.attend` (SDPA, or the
explicit softmax when ``explicit_attention`` is set or the weights are asked for).

Shape letters: B batch, T tokens in this call, P prefix positions (``past_key_values``), S = P + T
keys, C hidden size, nh heads, hs head size (C // nh), V vocabulary, L labels.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import attend, merge_heads, split_heads
from ..validation import (check_bool, check_choice, check_float, check_index_range, check_int,
                          check_shape, check_tensor, check_token_ids)
from .gpt import gelu_new
from .hf_io import read_hf_directory, write_hf_directory

ACTIVATIONS = {"gelu": F.gelu, "gelu_new": gelu_new, "relu": F.relu,
               "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}
IGNORE_INDEX = -100  # label of positions the loss skips (HF and torch's cross_entropy default)


@dataclass
class BertConfig:
    """Sizes and switches of a BERT model; field names and defaults are Hugging Face's (BERT-base)."""

    vocab_size: int = 30522  # WordPiece tokens (bert-base-uncased)
    hidden_size: int = 768  # C: width of every token's vector
    num_hidden_layers: int = 12  # Transformer blocks
    num_attention_heads: int = 12  # heads per block; must divide hidden_size
    intermediate_size: int = 3072  # feed-forward width (4C)
    hidden_act: str = "gelu"  # "gelu" (exact erf, BERT's), "gelu_new", "gelu_pytorch_tanh", "relu"
    hidden_dropout_prob: float = 0.1  # on embeddings and on each sublayer's output
    attention_probs_dropout_prob: float = 0.1  # on the attention weights
    max_position_embeddings: int = 512  # learned positions: the longest input
    type_vocab_size: int = 2  # segments (sentence A / B)
    initializer_range: float = 0.02  # std of the normal initialisation
    layer_norm_eps: float = 1e-12  # LayerNorm epsilon
    pad_token_id: int = 0  # [PAD]: its embedding row starts at zero and gets no gradient
    num_labels: int = 2  # classes of the classification heads (1 = regression with MSE)
    classifier_dropout: float | None = None  # before the classifier; None = hidden_dropout_prob

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            setattr(self, name, check_int(name, getattr(self, name), low=1))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        check_choice("hidden_act", self.hidden_act, ACTIVATIONS)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            setattr(self, name, check_float(name, getattr(self, name), low=0, high=1,
                                            high_inclusive=False))
        self.classifier_dropout = check_float("classifier_dropout", self.classifier_dropout, low=0,
                                              high=1, high_inclusive=False, allow_none=True)
        self.initializer_range = check_float("initializer_range", self.initializer_range, low=0)
        self.layer_norm_eps = check_float("layer_norm_eps", self.layer_norm_eps, low=0,
                                          low_inclusive=False)
        self.pad_token_id = check_int("pad_token_id", self.pad_token_id, low=0,
                                      high=self.vocab_size - 1)

    @classmethod
    def tiny(cls, **overrides) -> "BertConfig":
        """A model small enough for unit tests: 2 layers, 4 heads, width 32, 64 positions, 100 tokens."""
        return cls(**{**dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, max_position_embeddings=64), **overrides})


# ---------------------------------------------------------------------------------------------
# Outputs


@dataclass
class BertModelOutput:
    """What :class:`BertModel` returns (Hugging Face's field names)."""

    last_hidden_state: torch.Tensor  # (B, T, C)
    pooler_output: torch.Tensor | None = None  # (B, C): tanh(dense(h[:, 0])), None without a pooler
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + every layer, each (B, T, C)
    attentions: tuple[torch.Tensor, ...] | None = None  # every layer's weights (B, nh, T, S)


@dataclass
class BertHeadOutput:
    """What a head model returns: ``logits`` and, when labels were given, the ``loss``."""

    loss: torch.Tensor | None = None  # scalar
    logits: torch.Tensor | None = None  # (B, T, V), (B, T, L), (B, L) or (B, 2)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class BertPreTrainingOutput:
    """What :class:`BertForPreTraining` returns; ``loss`` = MLM loss + NSP loss."""

    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor | None = None  # (B, T, V)
    seq_relationship_logits: torch.Tensor | None = None  # (B, 2): 0 = B follows A, 1 = random
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------------------------------------
# The encoder


class BertEmbeddings(nn.Module):
    """Token + segment + position embeddings, then LayerNorm and dropout: (B, T) → (B, T, C)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, C, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, C)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, C)
        self.LayerNorm = nn.LayerNorm(C, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, inputs_embeds: torch.Tensor, token_type_ids: torch.Tensor | None,
                position_ids: torch.Tensor) -> torch.Tensor:
        """inputs_embeds (B, T, C) (the word embeddings, or the caller's), token_type_ids (B, T) or
        None (all segment 0), position_ids (B or 1, T) → (B, T, C)."""
        if token_type_ids is None:  # all segment 0
            x = inputs_embeds + self.token_type_embeddings.weight[0]  # (B, T, C)
        else:
            x = inputs_embeds + self.token_type_embeddings(token_type_ids)  # (B, T, C)
        x = x + self.position_embeddings(position_ids)  # Hugging Face's order of the two sums
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with separate query/key/value projections (HF ``attention.self``)."""

    explicit_attention: bool = False  # True: the written-out softmax (minillm.attention.attend)

    def __init__(self, config: BertConfig):
        super().__init__()
        C = config.hidden_size
        self.num_attention_heads = config.num_attention_heads
        self.query = nn.Linear(C, C)
        self.key = nn.Linear(C, C)
        self.value = nn.Linear(C, C)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                prefix: tuple[torch.Tensor, torch.Tensor] | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C), additive mask (B, 1, 1, S or T), prefix keys/values (B, nh, P, hs) each
        → (B, T, C) and the weights (B, nh, T, S) when ``need_weights``."""
        nh = self.num_attention_heads
        q = split_heads(self.query(x), nh)  # (B, nh, T, hs)
        k = split_heads(self.key(x), nh)  # (B, nh, T, hs)
        v = split_heads(self.value(x), nh)  # (B, nh, T, hs)
        out, weights = attend(q, k, v, mask=mask, prefix=prefix,
                              dropout_p=self.dropout_p if self.training else 0.0,
                              explicit=self.explicit_attention, need_weights=need_weights)
        return merge_heads(out), weights  # (B, T, C)


class BertOutput(nn.Module):
    """A sublayer's output projection and the post-LN residual: LayerNorm(x + dropout(dense(h))).

    HF's name for the feed-forward net's second half (``layer.{i}.output``: ``in_features`` =
    intermediate_size); :class:`BertSelfOutput` is the same after attention (``in_features`` = C).
    """

    def __init__(self, config: BertConfig, in_features: int | None = None):
        super().__init__()
        in_features = config.intermediate_size if in_features is None else in_features
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + x)  # (B, T, C)


class BertSelfOutput(BertOutput):
    """Attention's output projection and its residual (HF ``layer.{i}.attention.output``)."""

    def __init__(self, config: BertConfig):
        super().__init__(config, in_features=config.hidden_size)


class BertAttention(nn.Module):
    """Self-attention followed by its output sublayer (HF ``layer.{i}.attention``)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, mask=None, prefix=None, need_weights=False):
        h, weights = self.self(x, mask, prefix, need_weights)
        return self.output(h, x), weights


class BertIntermediate(nn.Module):
    """The feed-forward net's first half: C → intermediate_size, then the activation."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))  # (B, T, intermediate_size)


class BertLayer(nn.Module):
    """One post-LN Transformer block: attention sublayer, then feed-forward sublayer."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, mask=None, prefix=None, need_weights=False):
        x, weights = self.attention(x, mask, prefix, need_weights)
        return self.output(self.intermediate(x), x), weights


class BertEncoder(nn.Module):
    """The stack of :class:`BertLayer` (HF ``encoder.layer``)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    """The sentence vector for NSP and classification: tanh(dense(h[:, 0])), h[:, 0] being [CLS]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))  # (B, C)


class BertPreTrainedModel(nn.Module):
    """What every BERT class shares: initialisation and Hugging Face import/export."""

    config_class = BertConfig
    base_prefix = "bert."  # where the encoder's parameters sit ("" in BertModel itself)

    def _init_weights(self, module: nn.Module) -> None:
        """Hugging Face's initialisation: normal(0, initializer_range) weights, zero biases, the
        padding row of the word embeddings zero, LayerNorm 1/0."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameter count (a tied matrix counted once)."""
        return sum(p.numel() for p in self.parameters())

    # ---- loading and saving: see the functions at the end of the module

    @classmethod
    def config_from_hf(cls, hf_config: Any) -> BertConfig:
        """A :class:`BertConfig` from a ``transformers.BertConfig`` (or its dict / config.json)."""
        return config_from_hf(hf_config)

    @classmethod
    def from_hf(cls, hf_model: nn.Module):
        """This class holding the weights of a ``transformers`` BERT model (any head; eval mode)."""
        if not (hasattr(hf_model, "config") and hasattr(hf_model, "state_dict")):
            raise TypeError(f"hf_model must be a transformers BERT model, got {type(hf_model).__name__}")
        model = cls(config_from_hf(hf_model.config))
        model.load_hf_state_dict(hf_model.state_dict())
        return model.eval()

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike):
        """Load a Hugging Face BERT directory (``config.json`` + ``model.safetensors`` or
        ``pytorch_model.bin``), in eval mode. Head weights the directory lacks (all-MiniLM-L6-v2 has
        none) are freshly initialised, with a warning naming them."""
        return _from_pretrained(cls, directory)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a Hugging Face directory (config.json + model.safetensors) that
        ``transformers.<this class>.from_pretrained`` loads."""
        return _save_pretrained(self, directory)

    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Copy a Hugging Face BERT state dict (encoder keys with or without ``bert.``) into this
        model; returns the names of the weights it lacked, which keep their fresh initialisation."""
        return _load_hf_state_dict(self, state)


class BertModel(BertPreTrainedModel):
    """The BERT encoder: token ids (B, T) → contextual vectors (B, T, C) and the pooled [CLS] (B, C).

    Forward arguments mean what they mean in Hugging Face's ``BertModel``: ``attention_mask`` (B, S)
    1 = real token, 0 = padding (S = T, or P + T with a prefix); ``token_type_ids`` (B, T) segments;
    ``position_ids`` (B or 1, T), default P .. P+T-1; ``inputs_embeds`` (B, T, C) instead of ids;
    ``past_key_values`` one (key, value) pair per layer, each (B, nh, P, hs), put in front of that
    layer's keys and values (prefix tuning).
    """

    base_prefix = ""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if check_bool("add_pooling_layer", add_pooling_layer) else None
        self.apply(self._init_weights)

    def forward(self, input_ids: torch.Tensor | None = None, *, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None,
                past_key_values: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False
                ) -> BertModelOutput:
        c = self.config
        check_bool("output_attentions", output_attentions)
        check_bool("output_hidden_states", output_hidden_states)
        x = self._input_embeds(input_ids, inputs_embeds)  # (B, T, C)
        B, T, _ = x.shape
        prefixes = self._check_prefixes(past_key_values, B)
        P = prefixes[0][0].size(2) if prefixes else 0
        if position_ids is None:
            if P + T > c.max_position_embeddings:
                raise ValueError(f"sequence of {P + T} positions ({P} prefix + {T} tokens) is longer "
                                 f"than max_position_embeddings={c.max_position_embeddings}")
            position_ids = torch.arange(P, P + T, device=x.device)[None]  # (1, T)
        else:
            check_index_range("position_ids", position_ids, c.max_position_embeddings,
                              what="max_position_embeddings")
            if position_ids.dim() == 1:
                position_ids = position_ids[None]
            check_shape("position_ids", position_ids, (None, T), expected=f"(B, T={T})")
            if position_ids.size(0) not in (1, B):
                raise ValueError(f"position_ids must have batch size 1 or {B}, got {position_ids.size(0)}")
        if token_type_ids is not None:
            check_index_range("token_type_ids", token_type_ids, c.type_vocab_size, what="type_vocab_size")
            check_shape("token_type_ids", token_type_ids, (B, T), expected="(B, T) like the input")
        mask = self._additive_mask(attention_mask, B, T, P, x.dtype)
        # A row with no real key at all gives uniform weights (HF's convention); PyTorch's fused
        # SDPA gets the *gradient* of such a row wrong (its log-sum-exp loses log S next to the
        # huge mask value), so backward passes through such rows take the explicit softmax.
        no_keys = (mask is not None and attention_mask.size(1) == P + T
                   and bool((attention_mask == 0).all(dim=1).any()))  # (a (B, T) mask shows the prefix)
        explicit = output_attentions or (no_keys and torch.is_grad_enabled())
        h = self.embeddings(x, token_type_ids, position_ids)  # (B, T, C)
        hidden, attentions = [h], []
        for i, layer in enumerate(self.encoder.layer):
            h, weights = layer(h, mask, prefixes[i] if prefixes else None, explicit)
            hidden.append(h)
            attentions.append(weights if output_attentions else None)
        return BertModelOutput(
            last_hidden_state=h, pooler_output=self.pooler(h) if self.pooler is not None else None,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None)

    def _input_embeds(self, input_ids, inputs_embeds) -> torch.Tensor:
        """Exactly one of ids (B, T) and embeddings (B, T, C) → the word vectors (B, T, C)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, T) and inputs_embeds (B, T, C), got "
                             f"{'both' if input_ids is not None else 'neither'}")
        if input_ids is not None:
            check_token_ids("input_ids", input_ids, self.config.vocab_size, ndim=2)
            return self.embeddings.word_embeddings(input_ids)
        check_tensor("inputs_embeds", inputs_embeds, ndim=3, dtype_kind="float")
        check_shape("inputs_embeds", inputs_embeds, (None, None, self.config.hidden_size),
                    expected="(B, T, hidden_size)")
        if inputs_embeds.size(1) == 0:
            raise ValueError("inputs_embeds must hold at least one position, got shape "
                             f"{tuple(inputs_embeds.shape)}")
        return inputs_embeds

    def _check_prefixes(self, past_key_values, B: int):
        if past_key_values is None:
            return None
        c = self.config
        nh, hs = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        if len(past_key_values) != c.num_hidden_layers:
            raise ValueError(f"past_key_values must hold one (key, value) pair per layer "
                             f"({c.num_hidden_layers}), got {len(past_key_values)}")
        pairs = [tuple(kv) for kv in past_key_values]
        P = pairs[0][0].size(2) if pairs[0][0].dim() == 4 else -1
        for i, kv in enumerate(pairs):
            if len(kv) != 2:
                raise ValueError(f"past_key_values[{i}] must be a (key, value) pair, got {len(kv)} items")
            for name, t in zip(("key", "value"), kv):
                check_tensor(f"past_key_values[{i}] {name}", t, ndim=4, dtype_kind="float")
                check_shape(f"past_key_values[{i}] {name}", t, (B, nh, P, hs),
                            expected="(B, num_attention_heads, P, head size)")
        return pairs

    @staticmethod
    def _additive_mask(attention_mask, B: int, T: int, P: int, dtype) -> torch.Tensor | None:
        """(B, T) or (B, P+T) 1/0 mask → (B, 1, 1, S) scores to add: 0 to attend, the dtype's most
        negative number to hide (as Hugging Face does, so a fully padded row averages all keys
        instead of giving NaN). None when every key is real (the fast path)."""
        if attention_mask is None:
            return None
        check_tensor("attention_mask", attention_mask, ndim=2)
        if attention_mask.size(0) != B or attention_mask.size(1) not in (T, P + T):
            want = f"(B={B}, T={T})" + (f" or (B={B}, P+T={P + T})" if P else "")
            raise ValueError(f"attention_mask must have shape {want} like the input, got "
                             f"{tuple(attention_mask.shape)}")
        if bool(attention_mask.bool().all()):
            return None
        keep = attention_mask.to(dtype)[:, None, None, :]  # (B, 1, 1, S)
        return (1.0 - keep) * torch.finfo(dtype).min


# ---------------------------------------------------------------------------------------------
# Heads


class BertPredictionHeadTransform(nn.Module):
    """The MLM head's first step: dense → activation → LayerNorm, (B, T, C) → (B, T, C)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(h)))


class BertLMPredictionHead(nn.Module):
    """Masked-token logits: transform, then a decoder whose weight is the word-embedding matrix
    (tied by the model) plus its own bias ``cls.predictions.bias`` (the decoder's bias, tied)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias  # one parameter, two names (as in Hugging Face)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(h))  # (B, T, V)


class BertOnlyMLMHead(nn.Module):
    """``cls`` of :class:`BertForMaskedLM`."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


class BertOnlyNSPHead(nn.Module):
    """``cls`` of :class:`BertForNextSentencePrediction`: pooled (B, C) → (B, 2)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertPreTrainingHeads(nn.Module):
    """``cls`` of :class:`BertForPreTraining`: the MLM head and the NSP head."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


def _check_labels(name: str, labels: torch.Tensor, shape: tuple[int, ...], high: int, what: str,
                  ignore: bool) -> torch.Tensor:
    check_tensor(name, labels, dtype_kind="int")
    if labels.numel() != math.prod(shape):
        raise ValueError(f"{name} must hold one label per {'token' if len(shape) > 1 else 'sequence'}"
                         f": shape {shape}, got {tuple(labels.shape)}")
    check_index_range(name, labels, high, what=what, allow=(IGNORE_INDEX,) if ignore else ())
    return labels.reshape(-1)


class _WithEncoder(BertPreTrainedModel):
    """A head on top of ``self.bert``: runs the encoder with the forward arguments of BertModel."""

    has_pooler = True  # whether ``bert`` has its pooler (Hugging Face drops it for MLM and tokens)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=self.has_pooler)

    def _tie_and_init(self) -> None:
        self.apply(self._init_weights)
        cls = getattr(self, "cls", None)
        if cls is not None and hasattr(cls, "predictions"):
            cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
            nn.init.zeros_(cls.predictions.bias)

    def _encode(self, input_ids, kwargs) -> BertModelOutput:
        return self.bert(input_ids, **kwargs)


class BertForMaskedLM(_WithEncoder):
    """BERT with the masked-language-model head: (B, T) → logits (B, T, V); ``labels`` (B, T) hold
    the original token at masked positions and -100 elsewhere."""

    has_pooler = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.cls = BertOnlyMLMHead(config)
        self._tie_and_init()

    def forward(self, input_ids=None, *, labels: torch.Tensor | None = None, **kwargs) -> BertHeadOutput:
        out = self._encode(input_ids, kwargs)
        logits = self.cls.predictions(out.last_hidden_state)  # (B, T, V)
        loss = None
        if labels is not None:
            y = _check_labels("labels", labels, tuple(logits.shape[:2]), self.config.vocab_size,
                              "vocab_size", ignore=True)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y, ignore_index=IGNORE_INDEX)
        return BertHeadOutput(loss, logits, out.hidden_states, out.attentions)


class BertForNextSentencePrediction(_WithEncoder):
    """BERT with the NSP head: pooled [CLS] → (B, 2) logits; ``labels`` (B,) 0 = B follows A."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.cls = BertOnlyNSPHead(config)
        self._tie_and_init()

    def forward(self, input_ids=None, *, labels: torch.Tensor | None = None, **kwargs) -> BertHeadOutput:
        out = self._encode(input_ids, kwargs)
        logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        loss = None
        if labels is not None:
            y = _check_labels("labels", labels, (logits.size(0),), 2, "NSP classes", ignore=True)
            loss = F.cross_entropy(logits, y)
        return BertHeadOutput(loss, logits, out.hidden_states, out.attentions)


class BertForPreTraining(_WithEncoder):
    """BERT's pretraining model: MLM logits (B, T, V) and NSP logits (B, 2); the loss is the sum of
    both and needs ``labels`` (B, T) and ``next_sentence_label`` (B,) together."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.cls = BertPreTrainingHeads(config)
        self._tie_and_init()

    def forward(self, input_ids=None, *, labels: torch.Tensor | None = None,
                next_sentence_label: torch.Tensor | None = None, **kwargs) -> BertPreTrainingOutput:
        out = self._encode(input_ids, kwargs)
        mlm = self.cls.predictions(out.last_hidden_state)  # (B, T, V)
        nsp = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        loss = None
        if (labels is None) != (next_sentence_label is None):
            raise ValueError("BertForPreTraining's loss needs both labels (B, T) and "
                             "next_sentence_label (B,); got only "
                             f"{'labels' if labels is not None else 'next_sentence_label'}")
        if labels is not None:
            y = _check_labels("labels", labels, tuple(mlm.shape[:2]), self.config.vocab_size,
                              "vocab_size", ignore=True)
            y_nsp = _check_labels("next_sentence_label", next_sentence_label, (nsp.size(0),), 2,
                                  "NSP classes", ignore=True)
            loss = (F.cross_entropy(mlm.reshape(-1, mlm.size(-1)), y, ignore_index=IGNORE_INDEX)
                    + F.cross_entropy(nsp, y_nsp))
        return BertPreTrainingOutput(loss, mlm, nsp, out.hidden_states, out.attentions)


class BertForSequenceClassification(_WithEncoder):
    """BERT with a classifier on the pooled [CLS]: (B, T) → (B, num_labels). Loss as Hugging Face:
    cross-entropy for integer labels (B,), MSE when num_labels == 1 (regression), BCE for float
    multi-label targets (B, num_labels)."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._tie_and_init()

    def forward(self, input_ids=None, *, labels: torch.Tensor | None = None, **kwargs) -> BertHeadOutput:
        out = self._encode(input_ids, kwargs)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, L)
        loss = None
        if labels is not None:
            B, L = logits.shape
            if L == 1:
                check_tensor("labels", labels, dtype_kind="float")
                check_shape("labels", labels.reshape(-1), (B,), expected="(B,): one target per sequence")
                loss = F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
            elif labels.is_floating_point():
                check_shape("labels", labels, (B, L), expected="(B, num_labels) multi-label targets")
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                y = _check_labels("labels", labels, (B,), L, "num_labels", ignore=True)
                loss = F.cross_entropy(logits, y)
        return BertHeadOutput(loss, logits, out.hidden_states, out.attentions)


class BertForTokenClassification(_WithEncoder):
    """BERT with a classifier on every token (NER, POS): (B, T) → (B, T, num_labels); ``labels``
    (B, T) with -100 at positions to skip (padding, [CLS], [SEP], word continuations)."""

    has_pooler = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self._tie_and_init()

    def forward(self, input_ids=None, *, labels: torch.Tensor | None = None, **kwargs) -> BertHeadOutput:
        out = self._encode(input_ids, kwargs)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, L)
        loss = None
        if labels is not None:
            y = _check_labels("labels", labels, tuple(logits.shape[:2]), logits.size(-1),
                              "num_labels", ignore=True)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y, ignore_index=IGNORE_INDEX)
        return BertHeadOutput(loss, logits, out.hidden_states, out.attentions)


# ---------------------------------------------------------------------------------------------
# Hugging Face configs, state dicts and directories

_HF_ACTS = {"gelu", "gelu_new", "gelu_pytorch_tanh", "relu"}


def config_from_hf(hf_config: Any) -> BertConfig:
    """A :class:`BertConfig` from a ``transformers.BertConfig``, its dict, or a config.json dict."""
    if not isinstance(hf_config, dict) and not hasattr(hf_config, "to_dict"):
        raise TypeError(f"hf_config must be a transformers BertConfig or its dict, got "
                        f"{type(hf_config).__name__}")
    c = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")
    missing = [k for k in required if k not in c]
    if missing:
        raise ValueError(f"the BERT config lacks the fields {missing}")
    if c.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"position_embedding_type={c['position_embedding_type']!r} is not supported "
                         "(only 'absolute')")
    for flag in ("is_decoder", "add_cross_attention"):
        if c.get(flag):
            raise ValueError(f"BERT option {flag}=True is not supported (this is an encoder)")
    if not c.get("tie_word_embeddings", True):
        raise ValueError("tie_word_embeddings=False is not supported: the MLM decoder is the "
                         "word-embedding matrix")
    if c.get("hidden_act", "gelu") not in _HF_ACTS:
        raise ValueError(f"hidden_act {c['hidden_act']!r} is not supported; expected one of "
                         f"{sorted(_HF_ACTS)}")
    names = {f.name for f in fields(BertConfig)} - {"num_labels"}
    kwargs = {k: c[k] for k in names if c.get(k) is not None}
    kwargs["num_labels"] = len(c["id2label"]) if c.get("id2label") else c.get("num_labels", 2)
    return BertConfig(**kwargs)


def _hf_config_dict(model: BertPreTrainedModel) -> dict:
    c = model.config
    d = {f.name: getattr(c, f.name) for f in fields(c) if f.name != "num_labels"}
    d.update(model_type="bert", architectures=[type(model).__name__], position_embedding_type="absolute",
             id2label={str(i): f"LABEL_{i}" for i in range(c.num_labels)},
             label2id={f"LABEL_{i}": i for i in range(c.num_labels)}, tie_word_embeddings=True)
    return d


_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")


def _load_hf_state_dict(model: BertPreTrainedModel, state: dict[str, torch.Tensor]) -> list[str]:
    """Key-for-key copy of a Hugging Face BERT state dict. Encoder weights must all be there;
    missing head or pooler weights keep their initialisation (returned and warned about); weights
    of another head are ignored (warned about); anything else that does not fit is an error."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict of tensors, got {type(state).__name__}")
    ours_prefix = model.base_prefix
    renamed = {}
    for k, v in state.items():
        k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        if k.endswith(("embeddings.position_ids", "embeddings.token_type_ids")):
            continue  # buffers, not weights
        if k.startswith(_HEAD_PREFIXES):
            renamed[k] = v
            continue
        base = k.removeprefix("bert.")
        renamed[ours_prefix + base] = v
    ours = model.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}  # tied names (one Parameter, several keys) share one entry
    for name, p in ours.items():
        groups.setdefault(id(p), []).append(name)
    missing, used = [], set()
    with torch.no_grad():
        for names in groups.values():
            src_name = next((n for n in names if n in renamed), None)
            if src_name is None:
                missing.append(names[0])
                continue
            used.update(n for n in names if n in renamed)
            src, target = renamed[src_name], ours[names[0]]
            if src.shape != target.shape:
                raise ValueError(f"{src_name}: checkpoint shape {tuple(src.shape)} vs ours "
                                 f"{tuple(target.shape)} (does config.json match the weights?)")
            target.copy_(src)
    backbone = [n for n in missing if not n.startswith(_HEAD_PREFIXES)
                and not n.startswith(f"{ours_prefix}pooler.")]
    if backbone:
        raise ValueError(f"the BERT weights lack {len(backbone)} encoder tensors, e.g. {backbone[:4]}")
    unexpected = sorted(set(renamed) - used)
    foreign = [n for n in unexpected if not n.startswith(_HEAD_PREFIXES) and ".pooler." not in f".{n}"]
    if foreign:
        raise ValueError(f"the BERT weights hold tensors this model does not have: {foreign[:6]}")
    name = type(model).__name__
    if missing:
        warnings.warn(f"{name}: the checkpoint has no weights for {missing}; they are freshly "
                      "initialised (train them before trusting the outputs)", stacklevel=3)
    unexpected = [n for n in unexpected if ".pooler." not in f".{n}"]  # MLM/token heads have none
    if unexpected:
        warnings.warn(f"{name}: checkpoint weights not used by this model: {unexpected[:8]}"
                      f"{' ...' if len(unexpected) > 8 else ''}", stacklevel=3)
    return missing


def _from_pretrained(cls, directory: str | os.PathLike):
    config, state = read_hf_directory(directory, "bert", what="BERT")
    model = cls(config_from_hf(config))
    _load_hf_state_dict(model, state)
    return model.eval()


def _save_pretrained(model: BertPreTrainedModel, directory: str | os.PathLike) -> Path:
    tensors, seen = {}, set()
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:  # a tied alias (the MLM decoder): Hugging Face re-ties it on loading
            continue
        seen.add(id(t))
        tensors[name] = t
    return write_hf_directory(directory, _hf_config_dict(model), tensors)


__all__ = ["BertConfig", "BertModel", "BertForMaskedLM", "BertForNextSentencePrediction",
           "BertForPreTraining", "BertForSequenceClassification", "BertForTokenClassification",
           "BertModelOutput", "BertHeadOutput", "BertPreTrainingOutput", "config_from_hf"]
