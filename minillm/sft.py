"""Supervised fine-tuning (instruction tuning) of a causal LM: chat templates, response-only loss,
padding vs packing (chapter 15).

An instruction example is a conversation; a *chat template* renders it as one string with role
markers (the ChatML format SmolLM2, Qwen and many others use)::

    <|im_start|>user
    Translate to French: cheese<|im_end|>
    <|im_start|>assistant
    fromage<|im_end|>

SFT trains the model to write the assistant's turn, not to predict the user's words: the labels of
every prompt token are ``-100`` (ignored by cross-entropy, as in Hugging Face and TRL's
``assistant_only_loss``), so prompt tokens add nothing to the loss or its gradient.

Two ways to batch examples of different lengths:

* :func:`pad_batch` — one example per row, padded to the longest (compute is spent on padding);
* :func:`pack_examples` — examples laid end to end in rows of ``block_size`` tokens (no padding), with
  positions restarting at 0 for each example and a block-diagonal attention mask, so an example never
  sees its neighbours: the same losses as padding, fewer wasted tokens.

Shape letters: B batch (rows), T tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .validation import check_int, check_str, check_tensor, describe

__all__ = ["IGNORE_INDEX", "ChatTemplate", "CHATML", "SMOLLM2_CHAT", "Example", "build_example", "pad_batch",
           "Packed", "pack_examples", "sft_loss", "shifted_cross_entropy", "response_mask"]

IGNORE_INDEX = -100  # cross-entropy's ignore_index, as in Hugging Face and TRL
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatTemplate:
    """How a conversation becomes text: each turn is ``start + role + "\\n" + content + end``."""
    start: str = "<|im_start|>"  # opens a turn, followed by the role name and a newline
    end: str = "<|im_end|>\n"  # closes a turn
    default_system: str | None = None  # a system turn put first when the conversation has none

    def turn_prefix(self, role: str) -> str:
        """The text before a turn's content: ``"<|im_start|>assistant\\n"``."""
        return f"{self.start}{role}\n"

    def render(self, messages: Sequence[dict], *, add_generation_prompt: bool = False) -> str:
        """The conversation as one string; ``add_generation_prompt`` appends the opening of an
        assistant turn (what the model continues at inference), like HF ``apply_chat_template``."""
        messages = _check_messages(messages)
        if self.default_system is not None and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.default_system}, *messages]
        text = "".join(self.turn_prefix(m["role"]) + m["content"] + self.end for m in messages)
        return text + (self.turn_prefix("assistant") if add_generation_prompt else "")


CHATML = ChatTemplate()
# SmolLM2-Instruct's template (its GGUF's tokenizer.chat_template): ChatML with a default system turn
SMOLLM2_CHAT = ChatTemplate(
    default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face")


def _check_messages(messages: Sequence[dict]) -> list[dict]:
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError(f"messages must be a non-empty list of {{'role', 'content'}} dicts, got "
                         f"{describe(messages)}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ValueError(f"messages[{i}] must be a dict with keys 'role' and 'content', got "
                             f"{describe(m)}")
        if m["role"] not in ROLES:
            raise ValueError(f"messages[{i}]['role'] must be one of {ROLES}, got {m['role']!r}")
        check_str(f"messages[{i}]['content']", m["content"])
    return list(messages)


@dataclass
class Example:
    """One tokenized SFT example: ``input_ids`` and ``labels`` (-100 where there is no loss)."""
    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def build_example(messages: Sequence[dict], encode: Callable[[str], list[int]], *,
                  template: ChatTemplate = CHATML, train_on_prompt: bool = False) -> Example:
    """Tokenize a conversation for SFT; only the assistant turns' content and closing marker are
    learned (their labels are the tokens, every other label is -100) unless ``train_on_prompt``.

    Each piece (turn prefix, content, end marker) is encoded on its own and the ids concatenated, so
    the boundary between prompt and response never falls inside a token. ``encode`` maps text to token
    ids (e.g. ``tokenizer.encode``). Raises on an empty assistant response (nothing to learn).
    """
    messages = _check_messages(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn: SFT learns the assistant's replies")
    if template.default_system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": template.default_system}, *messages]
    ids: list[int] = []
    labels: list[int] = []

    def add(text: str, learn: bool) -> None:
        piece = list(encode(text)) if text else []
        if not all(isinstance(t, int) and t >= 0 for t in piece):
            raise TypeError(f"encode must return a list of non-negative int token ids, got "
                            f"{describe(piece)} for {text!r:.40}")
        ids.extend(piece)
        labels.extend(piece if learn or train_on_prompt else [IGNORE_INDEX] * len(piece))

    for i, m in enumerate(messages):
        is_reply = m["role"] == "assistant"
        if is_reply and not m["content"].strip():
            raise ValueError(f"messages[{i}] is an empty assistant response: there is nothing to learn")
        add(template.turn_prefix(m["role"]), False)
        add(m["content"], is_reply)
        add(template.end, is_reply)  # learning the end marker teaches the model to stop
    return Example(ids, labels)


def _check_examples(examples: Sequence[Example]) -> list[Example]:
    if not isinstance(examples, Sequence) or not examples:
        raise ValueError(f"examples must be a non-empty list of Example, got {describe(examples)}")
    for i, ex in enumerate(examples):
        if not isinstance(ex, Example) or len(ex.input_ids) != len(ex.labels) or not ex.input_ids:
            raise ValueError(f"examples[{i}] must be a non-empty Example with as many labels as "
                             f"input_ids, got {describe(ex)}")
    return list(examples)


def pad_batch(examples: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One example per row, right-padded to the longest: ``input_ids`` (B, T), ``labels`` (B, T)
    (-100 on padding) and ``attention_mask`` (B, T) (1 = real token)."""
    examples = _check_examples(examples)
    pad_id = check_int("pad_id", pad_id, low=0)
    T = max(len(ex) for ex in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros(len(examples), T, dtype=torch.long)
    for b, ex in enumerate(examples):
        n = len(ex)
        ids[b, :n] = torch.tensor(ex.input_ids)
        labels[b, :n] = torch.tensor(ex.labels)
        mask[b, :n] = 1
    return ids, labels, mask


@dataclass
class Packed:
    """Rows of packed examples: ``input_ids``, ``labels``, ``position_ids`` (restarting at 0 for each
    example) and ``segment_ids`` (which example of the row each token belongs to; -1 = padding at the
    end of a row), all (B, T); :meth:`attention_mask` is the block-diagonal (B, T, T) mask."""
    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor

    def attention_mask(self) -> torch.Tensor:
        """(B, T, T) 1 where query i and key j belong to the same example (causality comes on top)."""
        same = self.segment_ids[:, :, None] == self.segment_ids[:, None, :]  # (B, T, T)
        return (same & (self.segment_ids >= 0)[:, None, :]).long()

    @property
    def fill(self) -> float:
        """The fraction of token slots that hold real tokens."""
        return float((self.segment_ids >= 0).float().mean())


def pack_examples(examples: Sequence[Example], block_size: int, pad_id: int) -> Packed:
    """Lay examples end to end in rows of ``block_size`` tokens (first fit, in order: an example
    goes to the first row with room, so rows stay nearly full). An example longer than
    ``block_size`` is an error (truncating a response silently would teach the model to stop
    mid-sentence)."""
    examples = _check_examples(examples)
    block_size = check_int("block_size", block_size, low=1)
    pad_id = check_int("pad_id", pad_id, low=0)
    rows: list[list[Example]] = []
    room: list[int] = []
    for i, ex in enumerate(examples):
        if len(ex) > block_size:
            raise ValueError(f"examples[{i}] has {len(ex)} tokens, more than block_size={block_size}")
        for r, free in enumerate(room):
            if len(ex) <= free:
                rows[r].append(ex)
                room[r] -= len(ex)
                break
        else:
            rows.append([ex])
            room.append(block_size - len(ex))
    B = len(rows)
    ids = torch.full((B, block_size), pad_id, dtype=torch.long)
    labels = torch.full((B, block_size), IGNORE_INDEX, dtype=torch.long)
    pos = torch.zeros(B, block_size, dtype=torch.long)
    seg = torch.full((B, block_size), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for s, ex in enumerate(row):
            n = len(ex)
            ids[b, t:t + n] = torch.tensor(ex.input_ids)
            labels[b, t:t + n] = torch.tensor(ex.labels)
            pos[b, t:t + n] = torch.arange(n)
            seg[b, t:t + n] = s
            t += n
    return Packed(ids, labels, pos, seg)


def response_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) labels → (B, T-1) float mask of the positions whose *next* token is learned: the
    positions :func:`sft_loss` averages over."""
    check_tensor("labels", labels, ndim=2, dtype_kind="int")
    return (labels[:, 1:] != IGNORE_INDEX).float()


def sft_loss(logits: torch.Tensor, labels: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Next-token cross-entropy of logits (B, T, V) against labels (B, T), shifted by one (the
    logits at t predict token t+1) and ignoring -100: Hugging Face's causal-LM loss. ``reduction``:
    ``"mean"`` over learned tokens, ``"sum"``, or ``"none"`` (B, T-1)."""
    check_tensor("logits", logits, ndim=3, dtype_kind="float")
    check_tensor("labels", labels, ndim=2, dtype_kind="int")
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape (B, T) = {tuple(logits.shape[:2])} like the logits, "
                         f"got {tuple(labels.shape)}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if reduction == "mean" and not bool((labels[:, 1:] != IGNORE_INDEX).any()):
        raise ValueError("every label is -100: there is no response token to learn in this batch")
    return shifted_cross_entropy(logits, labels, reduction=reduction)


def shifted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *,
                          reduction: str = "mean") -> torch.Tensor:
    """Hugging Face's causal-LM loss without checks: the logits (B, T, V) at t against labels
    (B, T) at t+1, -100 ignored, in float32 (the prompt-learning models' loss shares it)."""
    target = labels[:, 1:].to(logits.device)  # (B, T-1)
    out = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(),
                          ignore_index=IGNORE_INDEX, reduction=reduction)
    return out.view(target.shape) if reduction == "none" else out
