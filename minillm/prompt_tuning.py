"""Prompt tuning, prefix tuning and P-tuning: learn a few virtual tokens, keep the model frozen.

Three ways to adapt a frozen model by training only what it sees in front of the real input:

* Prompt tuning (Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"):
  N trainable vectors, ``Embedding(N, C)``, are put in front of the input embeddings.
* P-tuning (Liu et al., 2021, "GPT Understands, Too"): the same, but the N vectors come out of a
  small network (an MLP, or a bidirectional LSTM + MLP) over N embeddings: ``h = f(E)``.
* Prefix tuning (Li & Liang, 2021, "Prefix-Tuning"): every attention layer gets N trainable keys
  and values in front of its own, ``Embedding(N, layers · 2 · C)`` (optionally through
  Linear → tanh → Linear); chunk 2l is layer l's keys, 2l+1 its values. They are handed to the model
  as ``past_key_values``, so the real tokens then sit at positions N .. N+T-1.

API and numbers follow Hugging Face PEFT 0.21.2: the same config classes and field names, the same
random stream (the prompt starts equal to PEFT's under the same seed), the same forward (attention
mask prefixed with ones, labels with -100, logits over N+T positions for prompt tuning), and the same
adapter directory (``adapter_config.json`` + ``adapter_model.safetensors`` holding one tensor
``prompt_embeddings``: the encoder's *output*, so a P-tuning or projected-prefix adapter loads as a
plain table). Works on the course's GPT and Llama (``CAUSAL_LM``), BERT for sequence classification
(``SEQ_CLS``) and token classification (``TOKEN_CLS``: prefix tuning without the projection is
P-tuning v2's deep prompts for NER — the logits keep one row per real token) and T5 (``SEQ_2_SEQ_LM``: prompts in front of the encoder input only, prefixes in the
decoder self-attention only, laid out as PEFT lays them out).
Simplifications: one adapter per model, no multitask prompt tuning, ``generate`` is greedy and
recomputes the whole sequence at every step, ``modules_to_save`` (SEQ_CLS, TOKEN_CLS: the classifier) trains in
place instead of a copy (so "all params" counts it once, PEFT twice), and a loaded adapter stays the
table it was saved as (PEFT's ``is_trainable=True`` would put a fresh, random MLP on top of the
saved P-tuning output). One deliberate difference: with prompt tuning or P-tuning on TOKEN_CLS
the logits cover N+T positions (as in PEFT) and the labels (B, T) are prefixed with -100 here,
where PEFT hands them to the model unchanged and the loss fails on the length mismatch.

Shape letters: B batch, T tokens, N virtual tokens, C token width, L layers, nh (key/value) heads,
hs head size, V vocabulary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from .peft import CONFIG_NAME, WEIGHTS_NAME, _atomic_write
from .sft import shifted_cross_entropy
from .validation import check_bool, check_choice, check_float, check_int, check_shape, describe

TASK_TYPES = ("CAUSAL_LM", "SEQ_CLS", "TOKEN_CLS", "SEQ_2_SEQ_LM")
_CLASSIFIERS = ("SEQ_CLS", "TOKEN_CLS")  # a new head trained in full next to the prompt
KEY = "prompt_embeddings"  # PEFT's one tensor for every prompt-learning method
PREFIX = "base_model."  # modules_to_save keys: the module's name in the base model behind this
IGNORE_INDEX = -100
# adapter_config.json keys that describe the adapter's origin and change nothing we compute
_INFO_KEYS = {"peft_version", "auto_mapping", "revision", "tokenizer_kwargs", "tokenizer_name_or_path"}


# ---------------------------------------------------------------------------------------------
# Configs


@dataclass
class PromptLearningConfig:
    """Fields every prompt-learning method shares (PEFT's ``PromptLearningConfig``). The model's sizes
    (``token_dim``, ``num_layers``, ...) are filled in from the model by :func:`get_prompt_model`."""

    peft_type: ClassVar[str] = ""
    num_virtual_tokens: int | None = None  # N: trainable positions in front of every input
    task_type: str | None = None  # "CAUSAL_LM", "SEQ_CLS", "TOKEN_CLS", "SEQ_2_SEQ_LM"; None: the model's own
    token_dim: int | None = None  # width of a virtual token (prefix tuning: key/value width)
    num_transformer_submodules: int | None = None  # 2 for encoder–decoder models, else 1
    num_attention_heads: int | None = None  # heads of the prefix keys/values (key/value heads)
    num_layers: int | None = None  # layers that get a prefix
    modules_to_save: list[str] | None = None  # trained in full and saved (SEQ_CLS, TOKEN_CLS: the classifier)
    inference_mode: bool = False  # True: the encoder is the saved prompt itself (after loading)
    base_model_name_or_path: str | None = None  # only recorded

    def __post_init__(self) -> None:
        check_int("num_virtual_tokens", self.num_virtual_tokens, low=1)
        if self.task_type is not None:
            check_choice("task_type", self.task_type, TASK_TYPES)
        for name in ("token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers"):
            check_int(name, getattr(self, name), low=1, allow_none=True)
        if self.modules_to_save is not None and (
                not isinstance(self.modules_to_save, (list, tuple))
                or not all(isinstance(m, str) for m in self.modules_to_save)):
            raise ValueError(f"modules_to_save must be a list of module names or None, got "
                             f"{describe(self.modules_to_save)}")
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)
        check_bool("inference_mode", self.inference_mode)

    def to_dict(self) -> dict[str, Any]:
        """The fields as PEFT writes them in ``adapter_config.json``."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d = {k: list(v) if isinstance(v, list) else v for k, v in d.items()}
        return dict(d, peft_type=self.peft_type)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "PromptLearningConfig":
        """Read a PEFT ``adapter_config.json`` dict of any of the three methods."""
        if not isinstance(d, dict):
            raise TypeError(f"an adapter config must be a dict, got {describe(d)}")
        classes = {c.peft_type: c for c in (PromptTuningConfig, PrefixTuningConfig, PromptEncoderConfig)}
        kind = d.get("peft_type")
        if kind not in classes:
            raise ValueError(f"peft_type must be one of {sorted(classes)}, got {kind!r}")
        cls = classes[kind]
        known = {f.name for f in dataclasses.fields(cls)}
        used = {k: v for k, v in d.items() if k not in known | _INFO_KEYS | {"peft_type"}
                and v not in (None, False, {}, [])}
        if used:
            raise ValueError(f"the adapter config uses PEFT features not implemented here: "
                             f"{describe(used, 200)}")
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Prompt tuning: N trainable input embeddings (PEFT's ``PromptTuningConfig``)."""

    peft_type: ClassVar[str] = "PROMPT_TUNING"
    prompt_tuning_init: str = "RANDOM"  # "RANDOM" N(0, 1); "TEXT"/"SAMPLE_VOCAB": copies of word vectors
    prompt_tuning_init_text: str | None = None  # TEXT: its tokens, cut or repeated to N
    tokenizer_name_or_path: str | None = None  # only recorded: pass the tokenizer to get_prompt_model

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("prompt_tuning_init", self.prompt_tuning_init, ("RANDOM", "TEXT", "SAMPLE_VOCAB"))
        if self.prompt_tuning_init == "TEXT" and not isinstance(self.prompt_tuning_init_text, str):
            raise ValueError("prompt_tuning_init='TEXT' needs prompt_tuning_init_text (a str), got "
                             f"{describe(self.prompt_tuning_init_text)}")


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning: N trainable keys and values in every layer (PEFT's ``PrefixTuningConfig``)."""

    peft_type: ClassVar[str] = "PREFIX_TUNING"
    encoder_hidden_size: int | None = None  # hidden width of the projection; None: token_dim
    prefix_projection: bool = False  # Embedding → Linear → tanh → Linear instead of one table
    init_weights: str | None = None  # None: random; "zero": the prefix starts at zero

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("encoder_hidden_size", self.encoder_hidden_size, low=1, allow_none=True)
        check_bool("prefix_projection", self.prefix_projection)
        check_choice("init_weights", self.init_weights, (None, "zero"))


@dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning: the virtual tokens come out of an MLP or LSTM (PEFT's ``PromptEncoderConfig``)."""

    peft_type: ClassVar[str] = "P_TUNING"
    encoder_reparameterization_type: str = "MLP"  # "MLP" (3 linear layers) or "LSTM" (+ 2-layer MLP)
    encoder_hidden_size: int | None = None  # hidden width; None: token_dim
    encoder_num_layers: int = 2  # LSTM layers (the MLP always has 3 linear layers, as in PEFT)
    encoder_dropout: float = 0.0  # dropout between LSTM layers

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("encoder_reparameterization_type", self.encoder_reparameterization_type,
                     ("MLP", "LSTM"))
        check_int("encoder_hidden_size", self.encoder_hidden_size, low=1, allow_none=True)
        check_int("encoder_num_layers", self.encoder_num_layers, low=1)
        self.encoder_dropout = check_float("encoder_dropout", self.encoder_dropout, low=0, high=1,
                                           high_inclusive=False)


# ---------------------------------------------------------------------------------------------
# Prompt encoders: forward() returns every virtual token at once


class PromptEmbedding(nn.Module):
    """Prompt tuning's table: (N, C), initialised N(0, 1) or from word vectors of ``init_ids``."""

    def __init__(self, config: PromptTuningConfig, word_embeddings: nn.Embedding,
                 init_ids: list[int] | None = None):
        super().__init__()
        total = config.num_virtual_tokens * config.num_transformer_submodules
        self.embedding = nn.Embedding(total, config.token_dim)  # PEFT draws this first in every case
        if config.inference_mode or config.prompt_tuning_init == "RANDOM":
            return
        if config.prompt_tuning_init == "SAMPLE_VOCAB":
            ids = torch.randint(0, word_embeddings.num_embeddings, (total,), dtype=torch.long)
        else:  # TEXT: the text's tokens, cut to N or repeated until there are N
            ids = torch.tensor((init_ids * math.ceil(total / len(init_ids)))[:total], dtype=torch.long)
        with torch.no_grad():
            weight = word_embeddings(ids.to(word_embeddings.weight.device)).detach().clone().float()
        self.embedding.weight = nn.Parameter(weight)

    def forward(self) -> torch.Tensor:
        return self.embedding.weight  # (N, C)


class PrefixEncoder(nn.Module):
    """Prefix tuning's keys and values of every layer: (N, L·2·C) from a table, or from a table of
    width C through Linear → tanh → Linear (``prefix_projection``)."""

    def __init__(self, config: PrefixTuningConfig):
        super().__init__()
        C, N, L = config.token_dim, config.num_virtual_tokens, config.num_layers
        self.prefix_projection = config.prefix_projection and not config.inference_mode
        if self.prefix_projection:
            self.embedding = nn.Embedding(N, C)
            self.transform = nn.Sequential(nn.Linear(C, config.encoder_hidden_size), nn.Tanh(),
                                           nn.Linear(config.encoder_hidden_size, L * 2 * C))
            if config.init_weights == "zero":
                nn.init.zeros_(self.transform[-1].weight)
                nn.init.zeros_(self.transform[-1].bias)
        else:
            self.embedding = nn.Embedding(N, L * 2 * C)
            if config.init_weights == "zero" and not config.inference_mode:
                nn.init.zeros_(self.embedding.weight)

    def forward(self) -> torch.Tensor:
        if self.prefix_projection:
            return self.transform(self.embedding.weight)  # (N, C) → (N, L·2·C)
        return self.embedding.weight  # (N, L·2·C)


class PromptEncoder(nn.Module):
    """P-tuning's reparameterised prompt: (N, C) embeddings through an MLP (Linear → ReLU → Linear →
    ReLU → Linear) or through a bidirectional LSTM and a 2-layer MLP."""

    def __init__(self, config: PromptEncoderConfig):
        super().__init__()
        C, H = config.token_dim, config.encoder_hidden_size
        self.encoder_type = config.encoder_reparameterization_type
        self.embedding = nn.Embedding(config.num_virtual_tokens * config.num_transformer_submodules, C)
        self.reparameterized = not config.inference_mode
        if not self.reparameterized:
            return
        if self.encoder_type == "LSTM":
            self.lstm_head = nn.LSTM(input_size=C, hidden_size=H, num_layers=config.encoder_num_layers,
                                     dropout=config.encoder_dropout, bidirectional=True, batch_first=True)
            self.mlp_head = nn.Sequential(nn.Linear(2 * H, 2 * H), nn.ReLU(), nn.Linear(2 * H, C))
        else:
            if config.encoder_num_layers != 2:
                warnings.warn("for MLP, encoder_num_layers is ignored: the MLP has 3 linear layers "
                              "(as in PEFT)")
            self.mlp_head = nn.Sequential(nn.Linear(C, H), nn.ReLU(), nn.Linear(H, H), nn.ReLU(),
                                          nn.Linear(H, C))

    def forward(self) -> torch.Tensor:
        e = self.embedding.weight  # (N, C)
        if not self.reparameterized:
            return e
        if self.encoder_type == "LSTM":
            return self.mlp_head(self.lstm_head(e[None])[0])[0]  # (1, N, 2H) → (N, C)
        return self.mlp_head(e)  # (N, C)


# ---------------------------------------------------------------------------------------------
# What each model family needs


@dataclass
class _Family:
    """How prompt learning reaches one model: its sizes, word embeddings, and limits."""

    name: str
    task_type: str
    word_embeddings: nn.Embedding
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    context: int | None  # most positions of the stream the virtual tokens join (None: unbounded)
    context_name: str
    past_owner: nn.Module  # the module whose forward takes past_key_values
    decoder_layers: int | None = None  # T5: layers that receive a prefix


def _family(model: nn.Module) -> _Family:
    from .models.bert import BertForSequenceClassification, BertForTokenClassification
    from .models.gpt import GPT
    from .models.llama import LlamaForCausalLM
    from .models.t5 import T5ForConditionalGeneration

    if isinstance(model, GPT):
        c = model.config
        return _Family("gpt2", "CAUSAL_LM", model.transformer.wte, c.n_layer, c.n_embd, c.n_head,
                       c.n_head, c.n_embd // c.n_head, c.block_size, "block_size", model)
    if isinstance(model, LlamaForCausalLM):
        c = model.config
        return _Family("llama", "CAUSAL_LM", model.model.embed_tokens, c.num_hidden_layers,
                       c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim,
                       c.max_position_embeddings, "max_position_embeddings", model)
    if isinstance(model, (BertForSequenceClassification, BertForTokenClassification)):
        c = model.config
        task = "SEQ_CLS" if isinstance(model, BertForSequenceClassification) else "TOKEN_CLS"
        return _Family("bert", task, model.bert.embeddings.word_embeddings, c.num_hidden_layers,
                       c.hidden_size, c.num_attention_heads, c.num_attention_heads,
                       c.hidden_size // c.num_attention_heads, c.max_position_embeddings,
                       "max_position_embeddings", model.bert)
    if isinstance(model, T5ForConditionalGeneration):
        c = model.config
        return _Family("t5", "SEQ_2_SEQ_LM", model.shared, c.num_layers, c.d_model, c.num_heads,
                       c.num_heads, c.d_kv, None, "", model, decoder_layers=c.num_decoder_layers)
    raise TypeError(f"prompt learning here supports minillm's GPT and LlamaForCausalLM (CAUSAL_LM), "
                    f"BertForSequenceClassification (SEQ_CLS), BertForTokenClassification (TOKEN_CLS) "
                    f"and T5ForConditionalGeneration "
                    f"(SEQ_2_SEQ_LM), got {type(model).__name__}")


def _complete(config: PromptLearningConfig, fam: _Family) -> PromptLearningConfig:
    """A copy of ``config`` with the model's sizes filled in as PEFT derives them, checked."""
    config = dataclasses.replace(config)
    if config.task_type is None:
        config.task_type = fam.task_type
    elif config.task_type != fam.task_type:
        raise ValueError(f"task_type={config.task_type!r} does not fit {fam.name}: prompt learning "
                         f"on this model is {fam.task_type!r}")
    prefix = isinstance(config, PrefixTuningConfig)
    derived = dict(num_layers=fam.num_layers, token_dim=fam.hidden_size, num_attention_heads=fam.num_heads,
                   num_transformer_submodules=2 if fam.task_type == "SEQ_2_SEQ_LM" else 1)
    if prefix:  # keys/values have the key/value heads' width (grouped-query attention: fewer heads)
        derived.update(token_dim=fam.head_dim * fam.num_kv_heads, num_attention_heads=fam.num_kv_heads)
    for name, value in derived.items():
        given = getattr(config, name)
        if given is not None and given != value:
            raise ValueError(f"{name}={given} does not fit this {fam.name} model, which needs "
                             f"{name}={value} (leave it None to have it filled in)")
        setattr(config, name, value)
    if hasattr(config, "encoder_hidden_size") and config.encoder_hidden_size is None:
        config.encoder_hidden_size = config.token_dim
    if config.task_type in _CLASSIFIERS:
        saved = list(config.modules_to_save or [])
        config.modules_to_save = saved + [m for m in ("classifier", "score") if m not in saved]
    N = config.num_virtual_tokens
    if prefix:
        if "past_key_values" not in inspect.signature(fam.past_owner.forward).parameters:
            raise ValueError(f"prefix tuning needs a model whose forward takes per-layer keys/values "
                             f"as past_key_values; {type(fam.past_owner).__name__}.forward does not")
        if fam.head_dim * fam.num_heads != fam.hidden_size and fam.name == "t5":
            raise ValueError(f"prefix tuning (as PEFT) needs d_kv * num_heads == d_model, got "
                             f"{fam.head_dim} * {fam.num_heads} != {fam.hidden_size}")
        if fam.decoder_layers is not None and fam.decoder_layers != fam.num_layers:
            raise ValueError(f"prefix tuning (as PEFT) sizes the decoder's prefixes by num_layers="
                             f"{fam.num_layers}, but the decoder has {fam.decoder_layers} layers")
    limit, what = _limit(fam, prefix)
    if limit is not None and N >= limit:
        raise ValueError(f"num_virtual_tokens={N} leaves no room for a real token: the model sees at "
                         f"most {what}={limit} positions")
    return config


def _limit(fam: _Family, prefix: bool) -> tuple[int | None, str]:
    if fam.name == "t5":  # prompts join the (unbounded) encoder input, prefixes the decoder
        return (fam.past_owner.config.n_positions, "n_positions") if prefix else (None, "")
    return fam.context, fam.context_name


def _token_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` from a Hugging Face tokenizer (``tok(text)["input_ids"]``, as PEFT
    calls it), an object with ``encode``, or a plain function ``str -> list[int]``."""
    if tokenizer is None:
        raise ValueError("prompt_tuning_init='TEXT' needs the tokenizer: get_prompt_model(model, "
                         "config, tokenizer=...)")
    if callable(tokenizer):
        out = tokenizer(text)
        if hasattr(out, "keys"):  # a Hugging Face BatchEncoding
            out = out["input_ids"]
    elif hasattr(tokenizer, "encode"):
        out = tokenizer.encode(text)
    else:
        raise TypeError(f"tokenizer must be callable or have encode(), got {type(tokenizer).__name__}")
    if isinstance(out, torch.Tensor):
        out = out.tolist()
    if not isinstance(out, (list, tuple)) or not all(isinstance(i, int) for i in out):
        raise TypeError(f"the tokenizer must return a list of token ids, got {describe(out)}")
    if not out:
        raise ValueError(f"prompt_tuning_init_text={text!r} has no tokens")
    return list(out)


# ---------------------------------------------------------------------------------------------
# The wrapped model


@dataclass
class CausalLMOutput:
    """What a causal LM with a prompt returns (Hugging Face's field names)."""

    loss: torch.Tensor | None = None  # scalar, when labels were given
    logits: torch.Tensor | None = None  # (B, N+T, V) prompt tuning / P-tuning; (B, T, V) prefix


class PromptModel(nn.Module):
    """A frozen model with a trained prompt in front: PEFT's ``PeftModel`` for prompt learning.

    ``base_model`` is the model itself (frozen, except ``modules_to_save``); ``prompt_encoder`` makes
    the virtual tokens (:class:`PromptEmbedding`, :class:`PromptEncoder`) or the prefixes
    (:class:`PrefixEncoder`). Attributes the wrapper lacks are read from the model.
    """

    def __init__(self, model: nn.Module, config: PromptLearningConfig, *, tokenizer: Any = None):
        super().__init__()
        fam = _family(model)
        config = _complete(config, fam)
        init_ids = None
        if isinstance(config, PromptTuningConfig) and config.prompt_tuning_init == "TEXT" \
                and not config.inference_mode:
            init_ids = _token_ids(tokenizer, config.prompt_tuning_init_text)
            V = fam.word_embeddings.num_embeddings
            if not all(0 <= i < V for i in init_ids):
                raise ValueError(f"the tokenizer gave ids outside the model's vocabulary [0, {V}): "
                                 f"{init_ids[:8]}")
        saved = _match_modules(model, config.modules_to_save, required=config.task_type not in _CLASSIFIERS)
        self.base_model = model
        self.peft_config = {"default": config}
        self._family = fam  # holds module references without registering them twice
        self.modules_to_save = saved
        model.requires_grad_(False)
        for name in saved:
            model.get_submodule(name).requires_grad_(True)
        if isinstance(config, PromptTuningConfig):
            encoder = PromptEmbedding(config, fam.word_embeddings, init_ids)
        elif isinstance(config, PromptEncoderConfig):
            encoder = PromptEncoder(config)
        else:
            encoder = PrefixEncoder(config)
        self.prompt_encoder = encoder.to(fam.word_embeddings.weight.device)
        self.disabled = False  # True inside disable_adapter(): the plain model runs

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self._family.word_embeddings

    def get_base_model(self) -> nn.Module:
        return self.base_model

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the model without its prompt inside a ``with`` block (same outputs as the model)."""
        self.disabled = True
        try:
            yield
        finally:
            self.disabled = False

    # ---- the prompt

    def get_prompt(self, batch_size: int) -> torch.Tensor | list[tuple[torch.Tensor, torch.Tensor]]:
        """Prompt/P-tuning: the virtual tokens (B, N_total, C). Prefix tuning: one (key, value) pair
        per layer, each (B, nh, N, hs), as ``past_key_values``."""
        config = self.peft_config["default"]
        out = self.prompt_encoder()  # (N, C) or (N, L·2·C)
        if not isinstance(config, PrefixTuningConfig):
            return out[None].repeat(batch_size, 1, 1)  # (B, N, C)
        B, N, L, nh = batch_size, config.num_virtual_tokens, config.num_layers, config.num_attention_heads
        dtype = self._family.word_embeddings.weight.dtype
        kv = out.to(dtype)[None].expand(B, -1, -1).reshape(B, N, 2 * L, nh, config.token_dim // nh)
        kv = kv.permute(2, 0, 3, 1, 4)  # (2L, B, nh, N, hs): chunk 2l is layer l's keys, 2l+1 its values
        if config.num_transformer_submodules == 1:
            return [(kv[2 * i], kv[2 * i + 1]) for i in range(L)]
        # PEFT's seq2seq layout: the 2L chunks are repeated and cut into groups of 4 per decoder layer
        # (self keys, self values, cross keys, cross values); the cross pair is dropped, so decoder
        # layer l reads chunks 4l and 4l+1 of the repeated list.
        return [(kv[(4 * i) % (2 * L)], kv[(4 * i) % (2 * L) + 1]) for i in range(L)]

    def get_prompt_embedding_to_save(self) -> torch.Tensor:
        """The tensor PEFT saves as ``prompt_embeddings``: the encoder's output (N_total, width)."""
        return self.prompt_encoder().detach().cpu()

    # ---- forward

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs) -> Any:
        """PEFT's forward for the task: prepend the prompt (or pass the prefixes), extend the masks.

        Causal LM returns :class:`CausalLMOutput` (``loss`` when ``labels`` (B, T) are given, with
        -100 for the virtual tokens); SEQ_CLS, TOKEN_CLS and SEQ_2_SEQ_LM return what the model
        returns (TOKEN_CLS with a prompt: logits (B, N+T, L), labels (B, T) prefixed with -100).
        """
        config = self.peft_config["default"]
        if self.disabled:  # the plain model (a causal LM's loss computed here, as with the prompt)
            if config.task_type != "CAUSAL_LM":
                return self.base_model(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                       labels=labels, **kwargs)
            logits = self.base_model(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                     **kwargs)
            logits = getattr(logits, "logits", logits)
            return CausalLMOutput(None if labels is None else causal_lm_loss(logits, labels), logits)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids (B, T) and inputs_embeds (B, T, C)")
        given = input_ids if input_ids is not None else inputs_embeds
        if given.dim() < 2:
            raise ValueError(f"input_ids must have shape (B, T) (inputs_embeds (B, T, C)), got "
                             f"{tuple(given.shape)}")
        B, T, N = given.size(0), given.size(1), config.num_virtual_tokens
        prefix = isinstance(config, PrefixTuningConfig)
        limit, what = _limit(self._family, prefix)
        if limit is not None and (config.task_type != "SEQ_2_SEQ_LM") and N + T > limit:
            raise ValueError(f"{N} virtual tokens + {T} tokens = {N + T} positions: more than the "
                             f"model sees ({what}={limit})")
        if kwargs.get("position_ids") is not None:  # as PEFT: shifted past the prefix, else ignored
            if prefix:
                kwargs["position_ids"] = kwargs["position_ids"] + N
            else:
                warnings.warn("position_ids are not supported with prompt tuning: ignored (as in PEFT)")
                kwargs.pop("position_ids")
        if config.task_type == "SEQ_2_SEQ_LM":
            return self._seq2seq(input_ids, attention_mask, inputs_embeds, labels, kwargs)
        if attention_mask is not None:
            check_shape("attention_mask", attention_mask, (B, T), expected="(B, T) like the input")
            attention_mask = torch.cat([attention_mask.new_ones(B, N), attention_mask], dim=1)
        if config.task_type in _CLASSIFIERS:
            if prefix:
                return self.base_model(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                       labels=labels, past_key_values=self.get_prompt(B), **kwargs)
            if kwargs.get("token_type_ids") is not None:
                tt = kwargs["token_type_ids"]
                kwargs["token_type_ids"] = torch.cat([tt.new_zeros(B, N), tt], dim=1)
            if labels is not None and config.task_type == "TOKEN_CLS":  # one label per position
                check_shape("labels", labels, (B, T), expected="(B, T) like the input")
                labels = torch.cat([labels.new_full((B, N), IGNORE_INDEX), labels], dim=1)
            return self.base_model(inputs_embeds=self._with_prompt(input_ids, inputs_embeds, B),
                                   attention_mask=attention_mask, labels=labels, **kwargs)
        # CAUSAL_LM
        if labels is not None:
            check_shape("labels", labels, (B, T), expected="(B, T) like the input")
        if prefix:
            logits = self.base_model(input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                     past_key_values=self.get_prompt(B), **kwargs)
        else:
            logits = self.base_model(inputs_embeds=self._with_prompt(input_ids, inputs_embeds, B),
                                     attention_mask=attention_mask, **kwargs)
            if labels is not None:  # the virtual tokens predict nothing
                labels = torch.cat([labels.new_full((B, N), IGNORE_INDEX), labels], dim=1)
        logits = getattr(logits, "logits", logits)
        loss = None if labels is None else causal_lm_loss(logits, labels)
        return CausalLMOutput(loss=loss, logits=logits)

    def _with_prompt(self, input_ids, inputs_embeds, B: int) -> torch.Tensor:
        """(B, N + T, C): the virtual tokens, then the input's embeddings."""
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, C)
        N = self.peft_config["default"].num_virtual_tokens
        prompts = self.get_prompt(B)[:, :N].to(inputs_embeds.dtype)  # (B, N, C)
        return torch.cat([prompts, inputs_embeds], dim=1)

    def _seq2seq(self, input_ids, attention_mask, inputs_embeds, labels, kwargs):
        config = self.peft_config["default"]
        B, N = (input_ids if input_ids is not None else inputs_embeds).size(0), config.num_virtual_tokens
        if isinstance(config, PrefixTuningConfig):  # the decoder's self-attention gets the prefixes
            mask = kwargs.get("decoder_attention_mask")
            if mask is not None:
                kwargs["decoder_attention_mask"] = torch.cat([mask.new_ones(B, N), mask], dim=1)
            return self.base_model(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                   labels=labels, past_key_values=self.get_prompt(B), **kwargs)
        if attention_mask is not None:  # the encoder input gets the prompt; the decoder is untouched
            attention_mask = torch.cat([attention_mask.new_ones(B, N), attention_mask], dim=1)
        return self.base_model(inputs_embeds=self._with_prompt(input_ids, inputs_embeds, B),
                               attention_mask=attention_mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy continuation (B, T + new) of a causal LM with its prompt; each step reruns the
        whole sequence (no cache: a prompt or prefix sits in front of every step)."""
        if self.peft_config["default"].task_type != "CAUSAL_LM":
            raise ValueError("generate here is for CAUSAL_LM; call the base model's generate")
        check_int("max_new_tokens", max_new_tokens, low=0)
        out = input_ids
        for _ in range(max_new_tokens):
            logits = self(out, attention_mask=attention_mask).logits[:, -1]  # (B, V)
            out = torch.cat([out, logits.argmax(-1, keepdim=True).to(out.dtype)], dim=1)
            if attention_mask is not None:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones(out.size(0), 1)], dim=1)
        return out

    # ---- counts, saving, loading

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable parameters, all parameters), shared tensors counted once."""
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors PEFT saves: ``prompt_embeddings`` and every module in ``modules_to_save``."""
        state = {KEY: self.get_prompt_embedding_to_save()}
        for name in self.modules_to_save:
            for k, v in self.base_model.get_submodule(name).state_dict().items():
                state[f"{PREFIX}{name}.{k}"] = v.detach().cpu()
        return state

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (each crash-safe) as PEFT."""
        from safetensors.torch import save_file

        directory = Path(save_directory)
        if directory.exists() and not directory.is_dir():
            raise FileExistsError(f"{directory} is a file: save_pretrained needs a directory")
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.clone().contiguous() for k, v in self.adapter_state_dict().items()}
        config = dict(self.peft_config["default"].to_dict(), inference_mode=True)
        _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
        _atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"))
        return directory

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | os.PathLike,
                        is_trainable: bool = False) -> "PromptModel":
        """Wrap ``model`` with the prompt saved in the directory ``model_id`` (by us or by PEFT).

        The prompt loads as the table it was saved as (the encoder's output). Raises
        FileNotFoundError naming a missing file, ValueError when the adapter was made for a model of
        another width, depth or head count (the model is then left as it was). Without
        ``is_trainable`` everything is frozen and the model in eval mode, as in PEFT.
        """
        from safetensors.torch import load_file

        directory = Path(model_id)
        for file in (directory / CONFIG_NAME, directory / WEIGHTS_NAME):
            if not file.is_file():
                raise FileNotFoundError(f"{file} does not exist: an adapter directory holds "
                                        f"{CONFIG_NAME} and {WEIGHTS_NAME}")
        try:
            record = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{directory / CONFIG_NAME} is not valid JSON: {e}") from e
        config = PromptLearningConfig.from_dict(record)
        config.inference_mode = True
        if config.task_type in _CLASSIFIERS and config.modules_to_save:  # added again on wrapping
            config.modules_to_save = [m for m in config.modules_to_save if m not in ("classifier", "score")]
        config.modules_to_save = config.modules_to_save or None
        state = load_file(str(directory / WEIGHTS_NAME))
        trainable = [(p, p.requires_grad) for p in model.parameters()]
        try:
            try:
                wrapped = cls(model, config)
            except ValueError as e:
                raise ValueError(f"the adapter in {directory} does not fit this model: {e}") from e
            wrapped._load_adapter(state)
        except BaseException:  # leave the model as it came
            for p, flag in trainable:
                p.requires_grad_(flag)
            raise
        wrapped.requires_grad_(False)
        if is_trainable:
            wrapped.prompt_encoder.requires_grad_(True)
            for name in wrapped.modules_to_save:
                model.get_submodule(name).requires_grad_(True)
        else:
            wrapped.eval()
        return wrapped

    def _load_adapter(self, state: dict[str, torch.Tensor]) -> None:
        if KEY not in state:
            raise ValueError(f"the adapter lacks the tensor {KEY!r}; it holds {sorted(state)[:4]}")
        table = self.prompt_encoder.embedding.weight
        if state[KEY].shape != table.shape:
            raise ValueError(f"adapter tensor {KEY} has shape {tuple(state[KEY].shape)}, but this model "
                             f"expects {tuple(table.shape)}: the adapter was trained on a model of "
                             f"another width or depth")
        extra = {k[len(PREFIX):]: v for k, v in state.items() if k != KEY}
        ours = {f"{m}.{k}": v for m in self.modules_to_save
                for k, v in self.base_model.get_submodule(m).state_dict().items()}
        bad = sorted(k for k in extra if k not in ours or extra[k].shape != ours[k].shape)
        if bad:
            raise ValueError(f"the adapter holds tensors this model has no place for: "
                             f"{[PREFIX + k for k in bad[:4]]}")
        with torch.no_grad():
            table.copy_(state[KEY])
            for k, v in extra.items():
                ours[k].copy_(v)


def _match_modules(model: nn.Module, names: list[str] | None, *, required: bool) -> list[str]:
    """Names of the modules ``names`` picks out (PEFT's rule: the module's name ends with one)."""
    if not names:
        return []
    found = [n for n, _ in model.named_modules() if n and any(n.endswith(m) for m in names)]
    found = [n for n in found if not any(n.startswith(f + ".") for f in found)]  # outermost only
    if required and not found:
        raise ValueError(f"modules_to_save={names} matches none of the modules of "
                         f"{type(model).__name__}, e.g. {[n for n, _ in model.named_modules()][-6:]}")
    return found


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Hugging Face's causal-LM loss: position t predicts labels[t+1]; -100 is ignored; fp32."""
    return shifted_cross_entropy(logits, labels)


def get_prompt_model(model: nn.Module, config: PromptLearningConfig, *,
                     tokenizer: Any | Callable[[str], list[int]] = None) -> PromptModel:
    """Freeze ``model`` and put a trainable prompt in front of it (PEFT's ``get_peft_model``).

    Args:
        model: minillm's GPT or LlamaForCausalLM, BertForSequenceClassification, or
            T5ForConditionalGeneration.
        config: a :class:`PromptTuningConfig`, :class:`PrefixTuningConfig` or
            :class:`PromptEncoderConfig`; sizes left None are filled in from the model.
        tokenizer: only for ``prompt_tuning_init="TEXT"``: a Hugging Face tokenizer, an object with
            ``encode``, or a function ``str -> list[int]``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, (PromptTuningConfig, PrefixTuningConfig, PromptEncoderConfig)):
        raise TypeError(f"config must be a PromptTuningConfig, PrefixTuningConfig or "
                        f"PromptEncoderConfig, got {type(config).__name__}")
    return PromptModel(model, config, tokenizer=tokenizer)
