"""Checks for chapter 1's exercises: n-gram probabilities from counts, smoothing, perplexity."""

from __future__ import annotations

import math

import numpy as np

from . import Case, CheckResult, run_check


def _ref_mle_probs(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(axis=1, keepdims=True)  # (C, 1) c(context)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=np.float64), where=totals > 0)


def _ref_add_k_probs(counts: np.ndarray, k: float) -> np.ndarray:
    return (counts + k) / (counts.sum(axis=1, keepdims=True) + k * counts.shape[1])


def _ref_perplexity(probs: np.ndarray) -> float:
    if np.any(probs == 0):
        return math.inf
    return float(np.exp(-np.log(probs).mean()))


def _ref_continuation_counts(text: str) -> dict[str, int]:
    left: dict[str, set[str]] = {}
    for a, b in zip(text, text[1:]):
        left.setdefault(b, set()).add(a)
    return {w: len(s) for w, s in left.items()}


def _count_tables() -> list[Case]:
    rng = np.random.default_rng(0)
    return [
        Case((np.array([[2, 1, 1], [0, 3, 0]]),), description="two contexts, three tokens"),
        Case((np.array([[1, 0, 0], [0, 0, 0]]),), description="an unseen context (row of zeros) gets all zeros"),
        Case((rng.integers(0, 5, size=(6, 10)),), description="random 6 × 10 count table"),
    ]


def check_mle_probs(fn) -> CheckResult:
    """``fn(counts)`` → (C, V) float array P(w | context) = c(context, w) / c(context); zero rows stay zero."""
    return run_check("mle_probs", fn, _ref_mle_probs, _count_tables(),
                     hint="divide each row by its sum (counts.sum(axis=1, keepdims=True)); where the sum "
                          "is 0 the probability is undefined — return 0 there instead of NaN")


def check_add_k_probs(fn) -> CheckResult:
    """``fn(counts, k)`` → (C, V) add-k probabilities (c + k) / (c(context) + k V)."""
    cases = [Case((c.args[0], k), description=f"{c.description}, k={k}")
             for c, k in zip(_count_tables(), (1.0, 0.5, 0.01))]
    cases.append(Case((np.array([[0, 0, 0, 0]]), 2.0), description="unseen context: uniform"))
    return run_check("add_k_probs", fn, _ref_add_k_probs, cases,
                     hint="add k to every count, and k·V to every row total, so each row still sums to 1")


def check_perplexity(fn) -> CheckResult:
    """``fn(probs)`` → perplexity exp(-mean log p) of the probabilities a model gave each real token."""
    rng = np.random.default_rng(1)
    cases = [
        Case((np.array([0.25, 0.25, 0.25, 0.25]),), description="always 1/4: perplexity 4"),
        Case((np.array([0.5, 0.1, 0.9]),), description="three tokens"),
        Case((rng.uniform(0.01, 1.0, size=1000),), description="1000 random probabilities"),
        Case((np.array([0.5, 0.0, 0.9]),), description="a zero probability makes the perplexity infinite"),
    ]
    return run_check("perplexity", fn, _ref_perplexity, cases,
                     hint="exp of the mean of -log(p); a token with p = 0 gives math.inf (avoid NaN warnings)")


def check_continuation_counts(fn) -> CheckResult:
    """``fn(text)`` → dict char → number of distinct characters that precede it (Kneser–Ney's N1+(• w))."""
    cases = [
        Case(("abab",), description="'b' follows only 'a'; 'a' follows only 'b'"),
        Case(("xay bay cay xay",), description="repeats count once"),
        Case(("to be or not to be, that is the question",), description="a sentence"),
        Case(("a",), description="one character: nothing precedes anything"),
    ]
    return run_check("continuation_counts", fn, _ref_continuation_counts, cases,
                     hint="collect the set of left neighbours of every character over all pairs "
                          "(text[i], text[i+1]), then return the size of each set")


# ----- the larger exercise: Witten–Bell smoothing as a whole model -----
def _ref_witten_bell(train: list[str], n: int, queries: list[tuple[str, str]]) -> list[float]:
    """Interpolated Witten–Bell (Witten & Bell 1991; Chen & Goodman 1998, sec. 2.6), with the
    conventions of ``minillm.ngram.NGramLM``: n-1 start symbols and one end symbol per sequence,
    V = distinct characters + <unk> + </s>, uniform order 0, an unseen context backs off."""
    from collections import Counter

    bos, eos = "<s>", "</s>"
    counts: Counter = Counter()  # (context tuple, w) -> count, every order
    for seq in train:
        tokens = [bos] * (n - 1) + list(seq) + [eos]
        for t in range(n - 1, len(tokens)):
            for m in range(1, n + 1):
                counts[(tuple(tokens[t - m + 1:t]), tokens[t])] += 1
    total: Counter = Counter()
    followers: Counter = Counter()
    for (h, _), c in counts.items():
        total[h] += c
        followers[h] += 1
    V = len({ch for seq in train for ch in seq}) + 2
    out = []
    for context, w in queries:
        ctx = tuple(context)[len(context) - (n - 1):] if n > 1 else ()
        p = 1.0 / V
        for m in range(1, n + 1):
            h = ctx[len(ctx) - (m - 1):] if m > 1 else ()
            if total[h] > 0:
                p = (counts[(h, w)] + followers[h] * p) / (total[h] + followers[h])
        out.append(p)
    return out


def check_witten_bell(fn) -> CheckResult:
    """``fn(train, n, queries)`` → list of interpolated Witten–Bell probabilities P(w | context),
    one per ``(context, w)`` query, for a character model of order ``n`` fitted on ``train``."""
    poem = ["to be or not to be", "that is the question", "to sleep perchance to dream"]
    cases = [
        Case((["abab", "abba"], 2, [("a", "b"), ("b", "a"), ("b", "b"), ("a", "a")]),
             description="bigram on two tiny sequences"),
        Case((["abab", "abba"], 1, [("", "a"), ("", "b"), ("", "z")]),
             description="n = 1: counts mixed with the uniform 1/V; an unseen token gets only the uniform share"),
        Case((poem, 3, [("to", " "), ("o ", "b"), (" t", "h"), ("ea", "m"), ("zz", "a"), ("qu", "e"), ("to", "x")]),
             description="trigram: seen, unseen context ('zz' backs off), unseen token ('x')"),
        Case((poem, 4, [("to ", c) for c in "bspdx "] + [("dre", "a")]),
             description="4-gram: a whole row of next characters after 'to '"),
    ]
    return run_check("witten_bell", fn, _ref_witten_bell, cases, atol=1e-12, rtol=1e-9,
                     hint="count every m-gram (m = 1..n) of each sequence padded with n-1 '<s>' and one "
                          "'</s>'; then from order 1 up: p = (c(h w) + N1+(h .) p) / (c(h) + N1+(h .)) "
                          "where h was seen, starting from p = 1/V with V = distinct characters + 2")
