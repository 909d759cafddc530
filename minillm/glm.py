"""GLM's autoregressive blank infilling (自回归空白填充; Du et al. 2022, "GLM: General Language Model
Pretraining with Autoregressive Blank Infilling"), small enough to train in a notebook.

GLM unifies BERT's and GPT's objectives in one decoder stack by splitting each example in two:

* **Part A** — the text with some spans each replaced by one ``[MASK]``; its tokens see each other
  in both directions (like BERT).
* **Part B** — the removed spans, in a random order, each written as ``[START] span`` and
  predicted left to right, ending with ``[END]`` (like GPT); a Part B token sees all of Part A and
  the Part B tokens before it, never the text after it.

Positions are two-dimensional: the first id is the position in Part A (for a span token, the
position of its ``[MASK]``), the second counts tokens inside a span (0 throughout Part A). So the
model knows *where* a span goes without knowing its length in advance.

:func:`blank_infilling_example` builds one example from token ids and spans (shapes below);
:func:`sample_spans` draws spans (Poisson lengths, λ = 3, ~15% of the tokens, as GLM pretrains);
:class:`TinyGLM` is a pre-LN Transformer (chapter 7's :class:`~minillm.transformer.TransformerBlock`)
with GLM's two position embeddings, and :func:`fill_blanks` lets a trained one write each span.

Shape letters: L example length (A + B), A Part A length, V vocabulary, C width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import BlockConfig, LayerNorm, TransformerBlock
from .validation import check_int

IGNORE_INDEX = -100
__all__ = ["GLMExample", "glm_attention_mask", "blank_infilling_example", "sample_spans", "collate",
           "TinyGLMConfig", "TinyGLM", "fill_blanks"]


@dataclass
class GLMExample:
    input_ids: torch.Tensor  # (L,): Part A then Part B
    position_ids: torch.Tensor  # (2, L): position in Part A, position inside the span
    attention_mask: torch.Tensor  # (L, L) bool: True = the row's query may attend to the column's key
    labels: torch.Tensor  # (L,): -100 on Part A, the next span token (or [END]) on Part B
    part_a_length: int
    spans: list[tuple[int, int]]  # (start, length) in the original ids, in Part B's order


def glm_attention_mask(part_a: int, part_b: int) -> torch.Tensor:
    """(A + B, A + B) bool: every token sees all of Part A; Part B also sees its own past."""
    L = part_a + part_b
    mask = torch.zeros(L, L, dtype=torch.bool)
    mask[:, :part_a] = True  # Part A is visible to everyone, in both directions
    mask[part_a:, part_a:] = torch.ones(part_b, part_b, dtype=torch.bool).tril()  # causal inside B
    return mask


def _check_spans(spans: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    spans = sorted((int(s), int(k)) for s, k in spans)
    end = 0
    for s, k in spans:
        if k < 1 or s < end or s + k > n:
            raise ValueError(f"spans must be non-empty, non-overlapping and inside the {n} ids; got {spans}")
        end = s + k
    return spans


def blank_infilling_example(ids: torch.Tensor | list[int], spans: list[tuple[int, int]], *, mask_id: int,
                            start_id: int, end_id: int,
                            generator: torch.Generator | None = None) -> GLMExample:
    """One GLM training example: ``spans`` [(start, length), ...] of ``ids`` blanked in Part A and
    written, shuffled with ``generator`` (None: in text order), in Part B."""
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    spans = _check_spans(spans, len(ids))
    if not spans:
        raise ValueError("spans is empty: blank at least one span")
    part_a, mask_pos, cursor = [], [], 0
    for s, k in spans:
        part_a += ids[cursor:s].tolist()
        mask_pos.append(len(part_a))
        part_a.append(mask_id)
        cursor = s + k
    part_a += ids[cursor:].tolist()
    order = (torch.randperm(len(spans), generator=generator).tolist() if generator is not None
             else list(range(len(spans))))
    tokens, pos1, pos2, labels = list(part_a), list(range(len(part_a))), [0] * len(part_a), [IGNORE_INDEX] * len(part_a)
    for j in order:
        s, k = spans[j]
        span = ids[s:s + k].tolist()
        tokens += [start_id] + span  # the inputs of this span: [START] x1 ... xk
        labels += span + [end_id]  # the targets: x1 ... xk [END]
        pos1 += [mask_pos[j]] * (k + 1)  # all at the position of its [MASK]
        pos2 += list(range(1, k + 2))  # 1 .. k+1 inside the span
    A, B = len(part_a), len(tokens) - len(part_a)
    return GLMExample(torch.tensor(tokens), torch.tensor([pos1, pos2]), glm_attention_mask(A, B),
                      torch.tensor(labels), A, [spans[j] for j in order])


def sample_spans(n: int, *, ratio: float = 0.15, mean_length: float = 3.0,
                 generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """Non-overlapping spans covering about ``ratio`` of n tokens, lengths ~ Poisson(mean_length)
    (at least 1), placed at random with at least one token between spans."""
    check_int("n", n, low=2)
    budget = max(1, round(ratio * n))
    lengths = []
    while sum(lengths) < budget:
        k = int(torch.poisson(torch.tensor([mean_length]), generator=generator).item())
        lengths.append(max(1, min(k, budget - sum(lengths))))
    free = n - sum(lengths) - (len(lengths) - 1)  # tokens left once each gap has its one token
    if free < 0:
        raise ValueError(f"{len(lengths)} spans of {sum(lengths)} tokens do not fit {n} ids")
    # distribute the free tokens over len(lengths) + 1 gaps: sorted uniform cut points
    cuts = torch.randint(free + 1, (len(lengths),), generator=generator).sort().values.tolist()
    spans, pos, prev = [], 0, 0
    for i, (k, c) in enumerate(zip(lengths, cuts)):
        pos += c - prev + (1 if i else 0)
        spans.append((pos, k))
        pos, prev = pos + k, c
    return spans


def collate(examples: list[GLMExample], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad examples to one batch: input_ids (N, L), position_ids (N, 2, L),
    attention_mask (N, L, L) (padding keys hidden; a padding query sees itself), labels (N, L)."""
    L = max(len(e.input_ids) for e in examples)
    N = len(examples)
    out = {"input_ids": torch.full((N, L), pad_id), "position_ids": torch.zeros(N, 2, L, dtype=torch.long),
           "attention_mask": torch.eye(L, dtype=torch.bool).repeat(N, 1, 1),
           "labels": torch.full((N, L), IGNORE_INDEX)}
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        out["input_ids"][i, :n] = e.input_ids
        out["position_ids"][i, :, :n] = e.position_ids
        out["attention_mask"][i, :n, :n] = e.attention_mask
        out["labels"][i, :n] = e.labels
    return out


@dataclass
class TinyGLMConfig:
    vocab_size: int = 64
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    max_positions: int = 128

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "n_layers", "max_positions"):
            check_int(name, getattr(self, name), low=1)


class TinyGLM(nn.Module):
    """Token embedding + two learned position embeddings (GLM's 2-D positions), pre-LN blocks, a
    tied output head. forward(input_ids (N, L), position_ids (N, 2, L), attention_mask (N, L, L),
    labels=None) → logits (N, L, V), or (logits, loss) with labels."""

    def __init__(self, config: TinyGLMConfig):
        super().__init__()
        self.config = c = config
        self.tok = nn.Embedding(c.vocab_size, c.d_model)
        self.pos_a = nn.Embedding(c.max_positions, c.d_model)  # where in Part A (the [MASK]'s place)
        self.pos_b = nn.Embedding(c.max_positions, c.d_model)  # how far into the span
        block = BlockConfig(d_model=c.d_model, n_heads=c.n_heads, d_ff=4 * c.d_model, norm_first=True)
        self.blocks = nn.ModuleList(TransformerBlock(block) for _ in range(c.n_layers))
        self.ln_f = LayerNorm(c.d_model)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None):
        if int(position_ids.max()) >= self.config.max_positions:
            raise ValueError(f"a position id reaches {int(position_ids.max())}; max_positions is "
                             f"{self.config.max_positions}")
        x = self.tok(input_ids) + self.pos_a(position_ids[:, 0]) + self.pos_b(position_ids[:, 1])  # (N, L, C)
        mask = attention_mask[:, None]  # (N, 1, L, L): the same for every head
        for block in self.blocks:
            x = block(x, mask=mask)
        logits = self.ln_f(x) @ self.tok.weight.T  # (N, L, V)
        if labels is None:
            return logits
        return logits, F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


@torch.no_grad()
def fill_blanks(model: TinyGLM, part_a: torch.Tensor | list[int], *, mask_id: int, start_id: int, end_id: int,
                max_span: int = 16) -> list[list[int]]:
    """Greedy GLM inference: for each ``[MASK]`` of ``part_a`` in turn, write ``[START]`` at its
    position and generate until ``[END]``; earlier answers stay in Part B for later blanks."""
    part_a = torch.as_tensor(part_a, dtype=torch.long).flatten()
    masks = (part_a == mask_id).nonzero().flatten().tolist()
    if not masks:
        raise ValueError(f"part_a has no [MASK] (id {mask_id}) to fill")
    A = len(part_a)
    tokens, pos1, pos2, answers = part_a.tolist(), list(range(A)), [0] * A, []
    for m in masks:
        span = []
        tokens.append(start_id), pos1.append(m), pos2.append(1)
        for step in range(max_span + 1):
            L = len(tokens)
            logits = model(torch.tensor([tokens]), torch.tensor([[pos1, pos2]]),
                           glm_attention_mask(A, L - A)[None])
            nxt = int(logits[0, -1].argmax())
            if nxt == end_id or step == max_span:
                break
            span.append(nxt)
            tokens.append(nxt), pos1.append(m), pos2.append(step + 2)
        answers.append(span)
    return answers
