"""T5's span corruption: drop random spans of a token sequence, ask the model to write them back.

Raffel et al. (2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", §3.1.4 and §3.3.4) pretrain T5 by replacing about 15% of the tokens, in spans of 3
on average, with *sentinel* tokens; the input keeps the rest, the target lists the dropped spans,
each behind the sentinel that marks its place::

    original  Thank you for inviting me to your party last week .
    inputs    Thank you <X0> me to your party <X1> week .
    targets   <X0> for inviting <X1> last

:func:`random_spans_noise_mask` is T5's ``random_spans_noise_mask`` (``t5.data.preprocessors``):
``round(length · noise_density)`` noise tokens, ``round(noise / mean_noise_span_length)`` spans, the
noise and the non-noise tokens each cut into that many non-empty runs at random and interleaved,
a non-noise run first. Sentinels count down from the top of the vocabulary like T5's
``<extra_id_0>`` = ``vocab_size - 1``, ``<extra_id_1>`` = ``vocab_size - 2``, ...; the i-th dropped
span gets ``<extra_id_i>``. Unlike T5 (TensorFlow stateless seeds) the randomness comes from a
``torch.Generator``, so the masks are reproducible but not the same bits as T5's. End-of-sequence
tokens are not added here; the training code appends them to both sides (T5 does the same after
corrupting).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .validation import check_float, check_int, check_tensor, describe

NUM_SENTINELS = 100  # T5's <extra_id_0> ... <extra_id_99>


def sentinel_id(i: int, vocab_size: int) -> int:
    """The id of ``<extra_id_i>``: ``vocab_size - 1 - i`` (T5's convention)."""
    return vocab_size - 1 - i


def _check_sentinels(vocab_size: int, num_sentinels: int) -> None:
    check_int("vocab_size", vocab_size, low=1)
    check_int("num_sentinels", num_sentinels, low=1)
    if num_sentinels >= vocab_size:
        raise ValueError(f"num_sentinels={num_sentinels} sentinel ids (counting down from vocab_size-1="
                         f"{vocab_size - 1}) would leave no room for ordinary tokens in a vocabulary of "
                         f"vocab_size={vocab_size}: sentinel ids would fall outside the vocabulary")


def _check_spans(length: int, noise_density: float, mean_noise_span_length: float) -> None:
    check_int("length", length, low=0)
    check_float("noise_density", noise_density, low=0, high=1, low_inclusive=False, high_inclusive=False)
    check_float("mean_noise_span_length", mean_noise_span_length, low=1)
    if length < 2:
        raise ValueError(f"span corruption needs a sequence of at least 2 tokens (one noise and one "
                         f"kept), got length={length}")


def _random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None
                         ) -> torch.Tensor:
    """Cut ``num_items`` items into ``num_segments`` non-empty runs at random: the lengths (k,).

    T5 shuffles the indicator ``[i < num_segments - 1 for i in range(num_items - 1)]`` and starts a
    new run after each marked gap: every choice of ``num_segments - 1`` of the ``num_items - 1``
    gaps is equally likely. Here the gaps are picked by a random permutation, the same distribution.
    """
    gaps = torch.randperm(num_items - 1, generator=generator)[:num_segments - 1] + 1  # run starts
    bounds = torch.cat([torch.zeros(1, dtype=torch.long), gaps.sort().values,
                        torch.tensor([num_items])])
    return bounds.diff()  # (num_segments,)


def random_spans_noise_mask(length: int, noise_density: float = 0.15,
                            mean_noise_span_length: float = 3.0,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """A bool mask (length,) of the tokens to drop, by T5's algorithm (module docstring).

    ``round(length · noise_density)`` noise tokens (at least 1, at most length − 1) in
    ``round(min(noise, non-noise) / mean_noise_span_length)`` spans (at least 1); the sequence
    always starts with a kept token. Rounding is Python's (half to even), like ``np.round``.
    """
    _check_spans(length, noise_density, mean_noise_span_length)
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_nonnoise = length - num_noise
    num_spans = max(round(min(num_noise, num_nonnoise) / mean_noise_span_length), 1)
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)  # (k,)
    nonnoise_lengths = _random_segmentation(num_nonnoise, num_spans, generator)  # (k,)
    interleaved = torch.stack([nonnoise_lengths, noise_lengths], dim=1).reshape(-1)  # (2k,)
    # run r covers [start_r, start_r+1); odd runs are noise
    run = torch.repeat_interleave(torch.arange(2 * num_spans), interleaved)  # (length,)
    return run % 2 == 1


def _as_ids(name: str, ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    if isinstance(ids, torch.Tensor):
        check_tensor(name, ids, ndim=1, dtype_kind="int")
        return ids.long()
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise TypeError(f"{name} must be a 1-D tensor or a list of token ids, got {describe(ids)}")
    for i in ids:
        check_int(f"{name} entries", i)
    return torch.tensor(list(ids), dtype=torch.long)


def span_corrupt(ids: Sequence[int] | torch.Tensor, *, vocab_size: int, noise_density: float = 0.15,
                 mean_noise_span_length: float = 3.0, num_sentinels: int = NUM_SENTINELS,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt one sequence: returns (inputs, targets), two 1-D int64 tensors (module docstring).

    Args:
        ids: the token ids (1-D tensor or list), all below the sentinels
            (``< vocab_size - num_sentinels``) so that a sentinel in the output is unambiguous.
        vocab_size: the model's vocabulary; the sentinels are its top ``num_sentinels`` ids.
        noise_density: fraction of tokens dropped, in (0, 1).
        mean_noise_span_length: average length of a dropped span (>= 1).
        num_sentinels: how many sentinel ids exist; more spans than this is an error.
        generator: the source of randomness (reproducible runs pass a seeded one).
    """
    _check_sentinels(vocab_size, num_sentinels)
    ids = _as_ids("ids", ids)
    first_sentinel = vocab_size - num_sentinels
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= first_sentinel):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise ValueError(f"ids must be ordinary token ids in [0, {first_sentinel}) (below the "
                         f"{num_sentinels} sentinels at the top of vocab_size={vocab_size}), got {bad}")
    noise = random_spans_noise_mask(ids.numel(), noise_density, mean_noise_span_length, generator)
    starts = noise & ~torch.cat([torch.zeros(1, dtype=torch.bool), noise[:-1]])  # first token of a span
    num_spans = int(starts.sum())
    if num_spans > num_sentinels:
        raise ValueError(f"a sequence of {ids.numel()} tokens gets {num_spans} noise spans, more than "
                         f"the {num_sentinels} sentinels; corrupt shorter pieces")
    span = starts.long().cumsum(0) - 1  # (T,) index of the span a noise token belongs to
    sentinels = vocab_size - 1 - span  # (T,) <extra_id_span>
    # inputs: kept tokens, each span's first token replaced by its sentinel, the rest of it dropped
    inputs = torch.where(starts, sentinels, ids)[~noise | starts]
    # targets: each span behind its sentinel (targets are the same trick with the roles swapped)
    starts_kept = ~noise & torch.cat([torch.ones(1, dtype=torch.bool), noise[:-1]])  # kept run starts
    kept_run = starts_kept.long().cumsum(0) - 1  # (T,) the kept run before span i has index i
    targets = torch.where(starts_kept, vocab_size - 1 - kept_run, ids)[noise | starts_kept]
    return inputs, targets


def reconstruct(inputs: Sequence[int] | torch.Tensor, targets: Sequence[int] | torch.Tensor, *,
                vocab_size: int, num_sentinels: int = NUM_SENTINELS) -> torch.Tensor:
    """Undo :func:`span_corrupt`: put each target span back where its sentinel sits in ``inputs``.

    Raises ValueError when the two do not fit together (sentinels missing, repeated or out of order).
    """
    _check_sentinels(vocab_size, num_sentinels)
    inputs, targets = _as_ids("inputs", inputs), _as_ids("targets", targets)
    first_sentinel = vocab_size - num_sentinels

    def sentinel_index(t: int) -> int | None:
        return vocab_size - 1 - t if first_sentinel <= t < vocab_size else None

    spans: list[list[int]] = []
    for t in targets.tolist():
        i = sentinel_index(t)
        if i is not None:
            if i != len(spans):
                raise ValueError(f"targets must list the sentinels in order <extra_id_0>, <extra_id_1>, "
                                 f"...: found <extra_id_{i}> (id {t}) where <extra_id_{len(spans)}> "
                                 "was expected")
            spans.append([])
        elif not spans:
            raise ValueError(f"targets must start with <extra_id_0> (id {vocab_size - 1}), got id {t}")
        else:
            spans[-1].append(t)
    out: list[int] = []
    used = 0
    for t in inputs.tolist():
        i = sentinel_index(t)
        if i is None:
            out.append(t)
            continue
        if i != used or i >= len(spans):
            raise ValueError(f"inputs hold <extra_id_{i}> (id {t}) but the next span in targets is "
                             f"<extra_id_{used}> of {len(spans)}")
        out.extend(spans[i])
        used += 1
    if used != len(spans):
        raise ValueError(f"targets hold {len(spans)} spans but inputs only {used} sentinels")
    return torch.tensor(out, dtype=torch.long)


__all__ = ["NUM_SENTINELS", "sentinel_id", "random_spans_noise_mask", "span_corrupt", "reconstruct"]
