"""Fine-tuning a pretrained model on labelled examples (chapters 12–14).

Which parameters train (:func:`set_trainable`, :func:`count_parameters`), layer-wise learning rates
(:func:`layerwise_lr_groups`, Howard & Ruder 2018, "Universal Language Model Fine-tuning"; Sun et al.
2019, "How to Fine-Tune BERT for Text Classification"), and the batches, predictions and scores of a
sentence-classification task for any model with Hugging Face's classification interface
(``model(input_ids=..., attention_mask=..., labels=...)`` returning ``.loss`` and ``.logits``), such as
``minillm.models.bert.BertForSequenceClassification`` with or without LoRA.

Shape letters: B batch, T tokens.
"""

from __future__ import annotations

import copy
import random
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .validation import check_float, check_int, describe

__all__ = ["ParameterCount", "count_parameters", "set_trainable", "layer_of", "layerwise_lr_groups",
           "classification_batches", "classification_eval_batches", "head_loss", "predict_labels",
           "score_classifier", "training_peak_bytes"]

# "encoder.layer.3.", "layers.3.", "transformer.h.3.", "blocks.3." — the layer index of a parameter name
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")


@dataclass(frozen=True)
class ParameterCount:
    """How many parameters a model has and how many of them train."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def __str__(self) -> str:  # PEFT's print_trainable_parameters line
        return (f"trainable params: {self.trainable:,d} || all params: {self.total:,d} || "
                f"trainable%: {100 * self.fraction:.4f}")


def count_parameters(model: nn.Module) -> ParameterCount:
    """Trainable (``requires_grad``) and total parameter counts; tied weights count once."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {describe(model)}")
    params = list(model.parameters())  # parameters() yields a shared (tied) tensor once
    return ParameterCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def _patterns(patterns: str | Sequence[str]) -> list[str]:
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"patterns must be a regex string or a list of them, got {describe(patterns)}")
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            raise ValueError(f"pattern {p!r} is not a valid regular expression: {e}") from None
    return list(patterns)


def set_trainable(model: nn.Module, patterns: str | Sequence[str]) -> list[str]:
    """Freeze every parameter except those whose name matches one of ``patterns``; return their names.

    A pattern is a regular expression matched from the start of the name up to a ``.`` boundary:
    ``"classifier"`` matches ``classifier.weight`` and ``classifier.bias`` (not ``classifier2.weight``),
    ``r"bert\\.encoder\\.layer\\.(4|5)"`` matches everything in layers 4 and 5. An empty list freezes all.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {describe(model)}")
    patterns = _patterns(patterns)
    names = [n for n, _ in model.named_parameters()]
    used = {p: False for p in patterns}
    chosen = []
    for name, param in model.named_parameters():
        hits = [p for p in patterns if re.fullmatch(rf"(?:{p})(?:\..*)?", name)]
        for p in hits:
            used[p] = True
        param.requires_grad_(bool(hits))
        if hits:
            chosen.append(name)
    unused = [p for p, hit in used.items() if not hit]
    if unused:
        raise ValueError(f"pattern(s) {unused} match no parameter of {type(model).__name__}; its parameters "
                         f"are named like {names[:3] + ['...'] + names[-3:] if len(names) > 6 else names}")
    return chosen


def layer_of(name: str) -> int | None:
    """The transformer layer index in a parameter name (``...layer.3...``, ``layers.3``, ``h.3``), or None."""
    m = _LAYER.search(name)
    return int(m.group(1)) if m else None


def layerwise_lr_groups(model: nn.Module, decay: float, *, weight_decay: float = 0.01) -> list[dict]:
    """AdamW parameter groups with layer-wise learning-rate decay, as an ``"lr_scale"`` per group.

    With L layers, layer i trains at ``lr · decay**(L-1-i)`` (the top layer at the full rate), the
    parameters before the first layer (embeddings) at ``lr · decay**L``, and those after the last (pooler,
    head) at the full rate: lower layers hold general features that fine-tuning should move least.
    :func:`minillm.train.train` multiplies its scheduled learning rate by each group's ``lr_scale``.
    Weight decay applies to matrices only (dim ≥ 2), as in :func:`minillm.train.make_optimizer`.
    """
    decay = check_float("decay", decay, low=0, high=1, low_inclusive=False)
    weight_decay = check_float("weight_decay", weight_decay, low=0)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    layers = [layer_of(n) for n, _ in model.named_parameters()]
    if all(i is None for i in layers):
        raise ValueError(f"no parameter name of {type(model).__name__} contains a layer index "
                         "('layer.N', 'layers.N', 'h.N' or 'blocks.N'): layer-wise rates need one")
    num_layers = max(i for i in layers if i is not None) + 1
    seen_layer = False
    groups: dict[tuple[float, bool], dict] = {}
    for name, param in model.named_parameters():  # in definition order: embeddings, layers, head
        i = layer_of(name)
        seen_layer = seen_layer or i is not None
        if not param.requires_grad:
            continue
        depth = num_layers - 1 - i if i is not None else (num_layers if not seen_layer else 0)
        key = (decay ** depth, param.dim() >= 2)
        group = groups.setdefault(key, {"params": [], "names": [], "lr_scale": key[0],
                                        "weight_decay": weight_decay if key[1] else 0.0})
        group["params"].append(param)
        group["names"].append(name)
    return sorted(groups.values(), key=lambda g: -g["lr_scale"])


def classification_batches(tokenizer: Any, examples: Sequence[Any], *, batch_size: int = 32,
                           max_length: int = 64, seed: int = 0) -> Callable[[], dict]:
    """A zero-argument callable returning one shuffled, padded batch (with ``labels``) per call.

    ``examples`` have ``.text`` and ``.label`` (as ``minillm.data`` returns them); every epoch is a
    fresh permutation drawn from ``seed``, so two runs with the same seed see the same batches.
    """
    batch_size = check_int("batch_size", batch_size, low=1)
    max_length = check_int("max_length", max_length, low=2)
    if len(examples) < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than the {len(examples)} examples")
    rng, order = random.Random(check_int("seed", seed, low=0)), []

    def next_batch() -> dict:
        if len(order) < batch_size:
            order[:] = rng.sample(range(len(examples)), len(examples))
        idx = [order.pop() for _ in range(batch_size)]
        batch = tokenizer.batch_encode([examples[i].text for i in idx], max_length=max_length)
        batch["labels"] = torch.tensor([examples[i].label for i in idx])  # (B,)
        return batch

    return next_batch


def classification_eval_batches(tokenizer: Any, examples: Sequence[Any], *, batch_size: int = 64,
                                max_length: int = 64) -> list[dict]:
    """``examples`` in order as a fixed list of padded batches: a validation set for ``train(val_data=)``."""
    batch_size = check_int("batch_size", batch_size, low=1)
    out = []
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        batch = tokenizer.batch_encode([e.text for e in chunk], max_length=max_length)
        batch["labels"] = torch.tensor([e.label for e in chunk])
        out.append(batch)
    return out


def head_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """The loss a classification model computes itself from ``batch["labels"]``."""
    return model(**batch).loss


@torch.no_grad()
def predict_labels(model: nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 64,
                   batch_size: int = 64) -> list[int]:
    """The argmax label of each text, in eval mode (the model's previous mode is restored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[int] = []
    try:
        for i in range(0, len(texts), batch_size):
            batch = tokenizer.batch_encode(list(texts[i:i + batch_size]), max_length=max_length)
            batch = {k: v.to(device) for k, v in batch.items()}
            out += model(**batch).logits.argmax(-1).tolist()
    finally:
        model.train(was_training)
    return out


def score_classifier(model: nn.Module, tokenizer: Any, examples: Sequence[Any], *,
                     max_length: int = 64) -> dict[str, float]:
    """Accuracy and macro-F1 of the model's predictions on ``examples`` (``.text``, ``.label``)."""
    from .metrics.classification import accuracy, precision_recall_f1

    gold = [e.label for e in examples]
    pred = predict_labels(model, tokenizer, [e.text for e in examples], max_length=max_length)
    return {"accuracy": accuracy(gold, pred),
            "macro_f1": precision_recall_f1(gold, pred, average="macro")[2]}


def training_peak_bytes(model: nn.Module, batch: Any, loss_fn: Callable[[nn.Module, Any], torch.Tensor] = head_loss,
                        ) -> int:
    """Memory of training: the bytes of the model's parameters and buffers plus the peak bytes of the
    tensors one AdamW step allocates (activations, gradients of the trainable parameters, AdamW's two
    moments). Measured on a copy of the model, so the model itself is left untouched."""
    from .profiling import peak_memory_bytes

    work = copy.deepcopy(model)
    resident = sum(t.numel() * t.element_size() for t in list(work.parameters()) + list(work.buffers()))
    params = [p for p in work.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all requires_grad=False)")
    opt = torch.optim.AdamW(params, lr=1e-6)
    work.train()

    def step() -> None:
        loss_fn(work, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # the gradients stay allocated, as between training steps

    return resident + peak_memory_bytes(step)
