"""T5 span corruption: exact reconstruction, T5's counts, the noise statistics on 100k tokens,
sentinel order, and clear errors for bad input."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.span_corruption import (NUM_SENTINELS, random_spans_noise_mask, reconstruct, sentinel_id,
                                     span_corrupt)


def _spans(mask: torch.Tensor) -> list[int]:
    """Lengths of the maximal runs of True in a 1-D bool mask."""
    out, run = [], 0
    for m in mask.tolist() + [False]:
        if m:
            run += 1
        elif run:
            out.append(run)
            run = 0
    return out


def _t5_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
    """(noise tokens, spans) by T5's formulas (HF's numpy port of random_spans_noise_mask)."""
    noise = min(max(round(length * density), 1), length - 1)
    return noise, max(round(min(noise, length - noise) / mean_span), 1)


def test_reconstruction_is_exact_on_many_random_sequences():
    g = torch.Generator().manual_seed(0)
    for trial in range(300):
        vocab = int(torch.randint(150, 5000, (1,), generator=g))
        length = int(torch.randint(2, 200, (1,), generator=g))  # at most 100 spans
        density = float(torch.empty(1).uniform_(0.05, 0.5, generator=g))
        mean_span = float(torch.empty(1).uniform_(1.0, 6.0, generator=g))
        ids = torch.randint(0, vocab - NUM_SENTINELS, (length,), generator=g)
        inputs, targets = span_corrupt(ids, vocab_size=vocab, noise_density=density,
                                       mean_noise_span_length=mean_span, generator=g)
        assert torch.equal(reconstruct(inputs, targets, vocab_size=vocab), ids), trial
        # every token is in exactly one side, plus one sentinel per span on each side
        n_sentinels = int((inputs >= vocab - NUM_SENTINELS).sum())
        assert len(inputs) + len(targets) == length + 2 * n_sentinels


def test_counts_follow_t5_formulas_and_mask_shape():
    g = torch.Generator().manual_seed(1)
    for length in [2, 3, 5, 10, 17, 100, 128, 511, 512, 1000]:
        for density, mean_span in [(0.15, 3.0), (0.5, 1.0), (0.3, 8.0), (0.01, 3.0)]:
            mask = random_spans_noise_mask(length, density, mean_span, generator=g)
            assert mask.shape == (length,) and mask.dtype == torch.bool
            noise, spans = _t5_counts(length, density, mean_span)
            assert int(mask.sum()) == noise
            assert len(_spans(mask)) == spans  # spans never touch: a kept run separates them
            assert not bool(mask[0]) and bool(mask[-1])  # T5: kept run first, noise span last


def test_noise_statistics_on_100k_tokens():
    # 200 sequences of 512 tokens = 102,400 tokens, T5's defaults.
    g = torch.Generator().manual_seed(2)
    L, n_seq, density, mean_span = 512, 200, 0.15, 3.0
    masks = torch.stack([random_spans_noise_mask(L, density, mean_span, generator=g) for _ in range(n_seq)])
    noise, spans = _t5_counts(L, density, mean_span)  # 77 noise tokens in 26 spans per sequence
    # density: fixed per sequence by the rounding, within 0.5 / L of 0.15
    measured = float(masks.float().mean())
    assert measured == noise / L and abs(measured - density) <= 0.5 / L
    lengths = [n for m in masks for n in _spans(m)]
    assert len(lengths) == n_seq * spans
    assert abs(sum(lengths) / len(lengths) - mean_span) < 0.05  # 77 / 26 = 2.96
    # the cut points are uniform: a random composition of N into k parts has a part of length 1
    # with probability (k - 1) / (N - 1); 5200 spans, binomial standard error, 5 sigma
    p1 = (spans - 1) / (noise - 1)
    frac1 = sum(n == 1 for n in lengths) / len(lengths)
    assert abs(frac1 - p1) < 5 * math.sqrt(p1 * (1 - p1) / len(lengths))
    # the noise falls evenly along the sequence: away from the forced ends (first token kept, last
    # noise), each eighth of the positions is noise at the overall rate. Standard error: binomial
    # over n = 200·(L/8) tokens, inflated by √3 because a token's neighbours share its span.
    inner = masks[:, 16:L - 16].float()  # (200, 480)
    n = inner.size(0) * inner.size(1) // 8
    tol = 5 * math.sqrt(3) * math.sqrt(density * (1 - density) / n)
    for part in inner.chunk(8, dim=1):
        assert abs(float(part.mean()) - measured) < tol


def test_sentinels_count_down_from_the_top_in_order():
    g = torch.Generator().manual_seed(3)
    V = 1000
    ids = torch.randint(0, V - NUM_SENTINELS, (300,), generator=g)
    inputs, targets = span_corrupt(ids, vocab_size=V, generator=g)
    sentinels_in = [t for t in inputs.tolist() if t >= V - NUM_SENTINELS]
    sentinels_out = [t for t in targets.tolist() if t >= V - NUM_SENTINELS]
    k = _t5_counts(300, 0.15, 3.0)[1]
    assert sentinels_in == sentinels_out == [V - 1 - i for i in range(k)]
    assert sentinel_id(0, V) == V - 1 and sentinel_id(2, V) == V - 3
    assert targets[0] == V - 1  # the target opens with <extra_id_0>


def test_same_seed_same_corruption_and_list_input():
    ids = list(range(50))
    a = span_corrupt(ids, vocab_size=200, generator=torch.Generator().manual_seed(7))
    b = span_corrupt(torch.tensor(ids), vocab_size=200, generator=torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = span_corrupt(ids, vocab_size=200, generator=torch.Generator().manual_seed(8))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(vocab_size=100), ValueError, "num_sentinels=100"),  # sentinels would leave no tokens
    (dict(vocab_size=150, num_sentinels=0), ValueError, "num_sentinels must be >= 1"),
    (dict(vocab_size=200, noise_density=0.0), ValueError, "noise_density must be > 0"),
    (dict(vocab_size=200, noise_density=1.0), ValueError, "noise_density must be < 1"),
    (dict(vocab_size=200, noise_density=1.5), ValueError, "noise_density"),
    (dict(vocab_size=200, mean_noise_span_length=0.5), ValueError, "mean_noise_span_length must be >= 1"),
    (dict(vocab_size=200, noise_density="0.15"), TypeError, "noise_density must be a number"),
    (dict(vocab_size=2.5), TypeError, "vocab_size must be an int"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        span_corrupt(list(range(20)), **kwargs)


def test_bad_sequences_are_refused():
    with pytest.raises(ValueError, match="at least 2 tokens"):
        span_corrupt([5], vocab_size=200)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        random_spans_noise_mask(0)
    with pytest.raises(ValueError, match=r"ordinary token ids in \[0, 100\).*got 150"):
        span_corrupt([1, 2, 150, 3], vocab_size=200)  # 150 is a sentinel id
    with pytest.raises(ValueError, match="got -1"):
        span_corrupt([1, -1, 3], vocab_size=200)
    with pytest.raises(TypeError, match="ids must be a 1-D tensor or a list"):
        span_corrupt("hello", vocab_size=200)
    with pytest.raises(ValueError, match="ids must have 1 dimensions"):
        span_corrupt(torch.zeros(2, 5, dtype=torch.long), vocab_size=200)
    with pytest.raises(ValueError, match="more than the 3 sentinels"):
        span_corrupt(list(range(100)), vocab_size=200, num_sentinels=3)


def test_reconstruct_refuses_mismatched_pairs():
    V = 200
    inputs, targets = span_corrupt(list(range(60)), vocab_size=V, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="targets must start with <extra_id_0>"):
        reconstruct(inputs, targets[1:], vocab_size=V)
    swapped = targets.clone()
    swapped[targets == V - 1], swapped[targets == V - 2] = V - 2, V - 1  # <extra_id_1> first
    with pytest.raises(ValueError, match="in order"):
        reconstruct(inputs, swapped, vocab_size=V)
    with pytest.raises(ValueError, match="spans but inputs only"):
        reconstruct(inputs[: int((inputs == V - 2).nonzero()[0])], targets, vocab_size=V)
