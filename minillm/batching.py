"""Batched generation with one key/value cache, served one step at a time.

A decoding step of a small model on a CPU or GPU is limited by reading the weights, not by
arithmetic: multiplying the weights by 8 token vectors costs little more than by one. So a server
that decodes the prompts of several users *together* makes more tokens per second — the idea
behind every inference server (Yu et al. 2022, "Orca"; Kwon et al. 2023, vLLM). This module does the
simplest version, *static batching*: the prompts of one batch start together and each leaves the
batch when it is done.

:class:`BatchedGenerator` left-pads the prompts to one length, runs them through the model in one
forward pass (the *prefill*) that fills one shared :class:`~minillm.models.llama.KVCache`, then
decodes one token per row per step. Iterating over it yields, after every step, the new token of
each row still running (``{row: token}``), so a server can stream tokens as they are made. The
padding follows Hugging Face's convention, as :meth:`LlamaForCausalLM.generate
<minillm.models.llama.LlamaForCausalLM.generate>` does: padded keys are hidden by the attention
mask and the positions count real tokens only, so a padded row computes what it would alone. Each
row has its own ``max_new_tokens``, end token, temperature (0 = greedy) and seeded random generator;
a row that ends is dropped from the batch (its cache rows too), so it costs nothing afterwards.

:func:`throughput_vs_batch_size` measures what batching buys: generated tokens per second for
several batch sizes on the same prompts.

Shape letters: B rows still running, T longest prompt, N most new tokens of any row,
S = T + N cache slots, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .models.llama import KVCache, LlamaForCausalLM
from .sampling import sample_next
from .validation import check_float, check_int, describe


def _per_row(name: str, value: Any, n: int) -> list[Any]:
    """One value per row: a scalar repeated, or a sequence of exactly ``n`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must be one value or one per prompt ({n}), got {len(value)} values")
        return list(value)
    return [value] * n


def _check_prompt(i: int, prompt: Any, vocab_size: int) -> list[int]:
    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence):
        raise TypeError(f"prompts[{i}] must be a list of token ids, got {describe(prompt)}")
    if len(prompt) == 0:
        raise ValueError(f"prompts[{i}] is empty: every prompt needs at least one token")
    for t in prompt:
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"prompts[{i}] must hold ints, got {describe(t)} of type {type(t).__name__}")
        if not 0 <= t < vocab_size:
            raise ValueError(f"prompts[{i}] holds token id {t}, outside the vocabulary [0, {vocab_size})")
    return list(prompt)


class BatchedGenerator:
    """Decode several prompts together with one KV cache; iterate to get each step's new tokens.

    Args:
        model: a :class:`~minillm.models.llama.LlamaForCausalLM` (any Llama-family model).
        prompts: lists of token ids, of any lengths (each at least one token).
        max_new_tokens: the most tokens to generate, one value for all rows or one per row (>= 0).
        eos_token_id: the end token, which ends a row (and is reported, as ``generate`` keeps it).
            None (default): the model config's, as ``generate``; a list gives one per row, where
            None means that row has no end token.
        temperature: 0 (default) = greedy; > 0 samples from softmax(logits / temperature). One value
            or one per row.
        seed: seeds the row's own ``torch.Generator`` when it samples (one value or one per row), so
            a sampled row gives the same tokens whatever else is in the batch. None: a random seed.

    After iteration, ``tokens[i]`` holds row i's new tokens and ``finish_reasons[i]`` is ``"stop"``
    (it made its end token), ``"length"`` (it reached its max_new_tokens) or ``"cancelled"``.
    """

    def __init__(self, model: LlamaForCausalLM, prompts: Sequence[Sequence[int]],
                 max_new_tokens: int | Sequence[int], *,
                 eos_token_id: int | Sequence[int | None] | None = None,
                 temperature: float | Sequence[float] = 0.0,
                 seed: int | Sequence[int | None] | None = None):
        if not isinstance(model, LlamaForCausalLM):
            raise TypeError(f"model must be a minillm LlamaForCausalLM, got {type(model).__name__}")
        if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence) or not prompts:
            raise ValueError(f"prompts must be a non-empty list of token-id lists, got {describe(prompts)}")
        config, n = model.config, len(prompts)
        V, limit = config.vocab_size, config.max_position_embeddings
        self.model = model
        self.prompts = [_check_prompt(i, p, V) for i, p in enumerate(prompts)]
        self.max_new_tokens = [check_int(f"max_new_tokens[{i}]", m, low=0)
                               for i, m in enumerate(_per_row("max_new_tokens", max_new_tokens, n))]
        eos = [config.eos_token_id] * n if eos_token_id is None else _per_row("eos_token_id", eos_token_id, n)
        self.eos_token_id = [check_int(f"eos_token_id[{i}]", e, low=0, high=V - 1, allow_none=True)
                             for i, e in enumerate(eos)]
        self.temperature = [check_float(f"temperature[{i}]", t, low=0)
                            for i, t in enumerate(_per_row("temperature", temperature, n))]
        seeds = _per_row("seed", seed, n)
        self.generators: list[torch.Generator | None] = []
        for i, (t, s) in enumerate(zip(self.temperature, seeds)):
            s = check_int(f"seed[{i}]", s, low=0, allow_none=True)
            g = None
            if t > 0:
                g = torch.Generator(device=model.model.embed_tokens.weight.device)
                g.manual_seed(s) if s is not None else g.seed()
            self.generators.append(g)
        for i, (p, m) in enumerate(zip(self.prompts, self.max_new_tokens)):
            if len(p) + m > limit:
                raise ValueError(f"prompts[{i}] has {len(p)} tokens + max_new_tokens={m} = {len(p) + m}, "
                                 f"longer than the model's context (max_position_embeddings={limit})")
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.finish_reasons: list[str | None] = [None if m > 0 else "length" for m in self.max_new_tokens]
        self._rows = [i for i in range(n) if self.max_new_tokens[i] > 0]  # rows still in the batch
        self._cache: KVCache | None = None  # built at the first step (the prefill)
        self._real: torch.Tensor | None = None  # (B, S) bool: real token (True) or left padding
        self._next_position: torch.Tensor | None = None  # (B,) each running row's next position
        self._last: torch.Tensor | None = None  # (B,) each running row's last token

    # ------------------------------------------------------------------ the steps

    @property
    def done(self) -> bool:
        """True when every row has finished."""
        return all(self.finish_reasons[r] is not None for r in self._rows)

    def cancel(self, row: int) -> None:
        """Stop row ``row`` now (its client went away): it leaves the batch at the next step."""
        row = check_int("row", row, low=0, high=len(self.prompts) - 1)
        if self.finish_reasons[row] is None:
            self.finish_reasons[row] = "cancelled"

    def __iter__(self) -> Iterator[dict[int, int]]:
        while not self.done:
            yield self.step()

    def step(self) -> dict[int, int]:
        """Run one forward pass and return the new token of every row still running, ``{row: token}``."""
        if self.done:
            raise RuntimeError("every row has finished: there is no next step")
        with torch.inference_mode():
            self._drop_finished()
            if not self._rows:
                return {}
            logits = self._prefill() if self._cache is None else self._decode()  # (B, V)
            new = self._pick(logits)  # (B,)
        out = {}
        for row, token in zip(self._rows, new.tolist()):
            self.tokens[row].append(token)
            out[row] = token
            if token == self.eos_token_id[row]:
                self.finish_reasons[row] = "stop"
            elif len(self.tokens[row]) == self.max_new_tokens[row]:
                self.finish_reasons[row] = "length"
        self._last = new
        self._drop_finished()
        return out

    def _prefill(self) -> torch.Tensor:
        """All prompts, left-padded to the longest, in one forward pass; returns (B, V) logits."""
        weight = self.model.model.embed_tokens.weight  # devices and dtypes come from the model
        device = weight.device
        prompts = [self.prompts[r] for r in self._rows]
        T = max(len(p) for p in prompts)
        N = max(self.max_new_tokens[r] for r in self._rows)
        ids = torch.zeros(len(prompts), T, dtype=torch.long, device=device)  # (B, T) 0 = padding
        real = torch.zeros(len(prompts), T + N, dtype=torch.bool, device=device)  # (B, S)
        for b, p in enumerate(prompts):
            ids[b, T - len(p):] = torch.tensor(p, device=device)
            real[b, T - len(p):] = True  # the prompt and every slot after it are real tokens
        # Hugging Face's positions: the number of real tokens before this one; padding gets 1 (hidden)
        positions = (real[:, :T].long().cumsum(1) - 1).masked_fill(~real[:, :T], 1)  # (B, T)
        # The cache has T + N slots; a row's positions stay within the context (checked above), but
        # the padded slots may not, so the cache is sized by a config that allows T + N slots.
        config = self.model.config
        cache_config = dataclasses.replace(config, max_position_embeddings=max(
            config.max_position_embeddings, T + N))
        self._cache = KVCache(cache_config, len(prompts), T + N, device=device,
                              dtype=weight.dtype)
        self._real = real
        self._next_position = torch.tensor([len(p) for p in prompts], device=device)  # (B,)
        return self._forward(ids, positions)

    def _decode(self) -> torch.Tensor:
        """Each running row's last token, at its own position, against the cache; (B, V) logits."""
        logits = self._forward(self._last[:, None], self._next_position[:, None])  # (B, 1) each
        self._next_position = self._next_position + 1
        return logits

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        S = self._cache.length + ids.size(1)
        real = self._real[:, :S]  # (B, S)
        padded = not bool(real.all())
        h = self.model.hidden_states(ids, attention_mask=real.long() if padded else None,
                                     position_ids=positions, past_key_values=self._cache)  # (B, T, C)
        return self.model.lm_head(h[:, -1])  # (B, V): only the last position picks a token

    def _pick(self, logits: torch.Tensor) -> torch.Tensor:
        """Greedy rows by one argmax; each sampling row with its own generator (as ``generate``)."""
        new = torch.empty(logits.size(0), dtype=torch.long, device=logits.device)  # (B,)
        greedy = [b for b, r in enumerate(self._rows) if self.temperature[r] == 0]
        if greedy:
            idx = torch.tensor(greedy, device=logits.device)
            new[idx] = sample_next(logits[idx], do_sample=False)[:, 0]
        for b, r in enumerate(self._rows):
            if self.temperature[r] > 0:
                new[b] = sample_next(logits[b:b + 1], do_sample=True, temperature=self.temperature[r],
                                     generator=self.generators[r])[0, 0]
        return new

    def _drop_finished(self) -> None:
        """Remove finished rows from the batch: their cache rows, masks and positions go too."""
        keep = [b for b, r in enumerate(self._rows) if self.finish_reasons[r] is None]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[b] for b in keep]
        if self._cache is None or not keep:
            return
        index = torch.tensor(keep, device=self._real.device)
        self._cache.reorder(index)
        self._real = self._real[index]
        self._next_position = self._next_position[index]
        self._last = self._last[index]

    def run(self) -> list[list[int]]:
        """Run every remaining step; return the new tokens of each row."""
        for _ in self:
            pass
        return self.tokens


def batched_generate(model: LlamaForCausalLM, prompts: Sequence[Sequence[int]],
                     max_new_tokens: int | Sequence[int], **kwargs: Any) -> list[list[int]]:
    """The new tokens of each prompt, decoded together (:class:`BatchedGenerator` arguments)."""
    return BatchedGenerator(model, prompts, max_new_tokens, **kwargs).run()


def throughput_vs_batch_size(model: LlamaForCausalLM, prompts: Sequence[Sequence[int]],
                             batch_sizes: Sequence[int], max_new_tokens: int) -> dict[int, float]:
    """Generated tokens per second for each batch size: all ``prompts``, in consecutive batches.

    Every row decodes exactly ``max_new_tokens`` tokens greedily (no end token), so each batch size
    does the same work; one small warm-up run comes first. Timed with ``time.perf_counter``.
    """
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    if not prompts:
        raise ValueError("prompts must hold at least one prompt")
    sizes = [check_int(f"batch_sizes[{i}]", b, low=1) for i, b in enumerate(batch_sizes)]
    if not sizes:
        raise ValueError("batch_sizes must hold at least one batch size")

    def run(b: int) -> int:
        made = 0
        for start in range(0, len(prompts), b):
            chunk = list(prompts[start:start + b])
            out = batched_generate(model, chunk, max_new_tokens, eos_token_id=[None] * len(chunk))
            made += sum(len(t) for t in out)
        return made

    batched_generate(model, list(prompts[:2]), 2, eos_token_id=[None] * min(2, len(prompts)))  # warm-up
    result = {}
    for b in sizes:
        start = time.perf_counter()
        made = run(b)
        result[b] = made / (time.perf_counter() - start)
    return result


__all__ = ["BatchedGenerator", "batched_generate", "throughput_vs_batch_size"]
