"""Checks for chapter 2's exercises: clipped n-gram precision, brevity penalty, LCS, F1."""

from __future__ import annotations

import random

import numpy as np

from ..metrics.bleu import brevity_penalty as _ref_brevity_penalty
from ..metrics.bleu import ngram_counts, tokenize_13a
from ..metrics.classification import precision_recall_f1_from_confusion
from ..metrics.rouge import lcs_length_table
from . import Case, CheckResult, run_check


def _ref_clipped_precision(hypothesis: list[str], references: list[list[str]], n: int
                           ) -> tuple[int, int]:
    def grams(tokens):
        return {g: c for g, c in ngram_counts(tokens, n).items() if len(g) == n}

    hyp = grams(hypothesis)
    best: dict = {}
    for ref in references:
        for g, c in grams(ref).items():
            best[g] = max(best.get(g, 0), c)
    return sum(min(c, best.get(g, 0)) for g, c in hyp.items()), sum(hyp.values())


def _spanish_pairs() -> list[tuple[list[str], list[str]]]:
    """A few real (hypothesis, reference) pairs: two verses' Spanish, one slightly altered."""
    from ..data import load_en_es

    pairs = load_en_es().validation[:3]
    out = []
    for p in pairs:
        ref = tokenize_13a(p.es)
        hyp = ref[1:] + ref[:2]  # rotated and with two repeated words
        out.append((hyp, ref))
    return out


def check_clipped_precision(fn) -> CheckResult:
    """``fn(hypothesis, references, n)`` → (clipped matches, total hypothesis n-grams)."""
    the = ["the"] * 7
    cases = [
        Case((the, [["the", "cat", "is", "on", "the", "mat"]], 1),
             description="Papineni's example: 'the' ×7 is clipped to 2"),
        Case((["the", "cat", "sat"], [["the", "cat", "sat"]], 2), description="perfect bigrams"),
        Case((["a", "b", "a", "b"], [["a", "b"], ["b", "a", "b", "a"]], 2),
             description="two references: clip to the max count in any one reference"),
        Case((["short"], [["a", "b"]], 2), description="too short for bigrams: (0, 0)"),
        Case(([], [["a"]], 1), description="empty hypothesis"),
    ]
    for hyp, ref in _spanish_pairs():
        cases.append(Case((hyp, [ref], 3), description=f"Spanish verse, trigrams ({len(ref)} tokens)"))
    return run_check("clipped_precision", fn, _ref_clipped_precision, cases,
                     hint="count the hypothesis n-grams (tuples of n tokens); for each, the most it "
                          "may match is its largest count in any single reference")


def check_brevity_penalty(fn) -> CheckResult:
    """``fn(sys_len, ref_len)`` → BLEU's brevity penalty."""
    cases = [Case((10, 10), description="same length: 1"),
             Case((12, 10), description="longer than the reference: no penalty"),
             Case((5, 10), description="half as long: exp(1 - 2)"),
             Case((1, 30), description="very short"),
             Case((0, 7), description="empty output: 0, not a ZeroDivisionError")]
    return run_check("brevity_penalty", fn, _ref_brevity_penalty, cases,
                     hint="1 if sys_len >= ref_len, else exp(1 - ref_len / sys_len); "
                          "an empty output (sys_len = 0) scores 0")


def check_lcs_length(fn) -> CheckResult:
    """``fn(a, b)`` → length of the longest common subsequence of two token lists."""
    rng = random.Random(2)
    words = "the cat sat on a mat dog ran".split()
    cases = [
        Case((list("ABCBDAB"), list("BDCABA")), description="CLRS example: 4"),
        Case((["police", "killed", "the", "gunman"], ["the", "gunman", "police", "killed"]),
             description="same words, other order"),
        Case(([], ["a", "b"]), description="empty: 0"),
        Case((["x", "y"], ["x", "y"]), description="identical"),
        Case((list("abc"), list("def")), description="nothing in common"),
    ]
    for _ in range(3):
        a = [rng.choice(words) for _ in range(rng.randint(5, 25))]
        b = [rng.choice(words) for _ in range(rng.randint(5, 25))]
        cases.append(Case((a, b), description=f"random sentences of {len(a)} and {len(b)} words"))
    return run_check("lcs_length", fn, lcs_length_table, cases,
                     hint="table[i][j] = table[i-1][j-1] + 1 if a[i-1] == b[j-1] else "
                          "max(table[i-1][j], table[i][j-1]); the answer is table[len(a)][len(b)]")


def check_precision_recall_f1(fn) -> CheckResult:
    """``fn(cm, positive)`` → (precision, recall, F1) of one class from ``cm[true, predicted]``."""
    g = np.random.default_rng(3)
    cases = [
        Case((np.array([[50, 10], [5, 35]]), 1), description="binary, positive class 1"),
        Case((np.array([[50, 10], [5, 35]]), 0), description="binary, class 0"),
        Case((np.array([[9, 0], [3, 0]]), 1), description="never predicts class 1: all 0, no NaN"),
        Case((g.integers(0, 30, (4, 4)), 2), description="4 classes, class 2"),
    ]
    return run_check("precision_recall_f1", fn, precision_recall_f1_from_confusion, cases,
                     hint="rows are true classes, columns predictions: precision = TP / column "
                          "sum, recall = TP / row sum, F1 = 2PR/(P+R); return 0.0 for 0/0")


# ----- the larger exercise: corpus BLEU with several references per segment -----
def _ref_corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    from ..metrics.bleu import corpus_bleu

    return corpus_bleu(hypotheses, references).score  # equal to sacrebleu.corpus_bleu(...).score


def check_corpus_bleu(fn) -> CheckResult:
    """``fn(hypotheses, references)`` → corpus BLEU (0-100) with sacrebleu's defaults (13a tokens,
    4-grams, exponential smoothing); ``references`` is a list of streams, one reference per segment
    in each."""
    cat = ["the cat is on the mat", "there is a cat on the mat"]
    cases = [
        Case((["the the the the the the the"], [[cat[0]], [cat[1]]]),
             description="Papineni's example: clipped by the larger count over the two references"),
        Case((["the cat sat on the mat today", "a dog"],
              [["the cat is on the mat", "a dog barks loudly"], ["a cat sat on a mat today or so", "the dog"]]),
             description="two references of different lengths: r takes the closest one per segment"),
        Case((["a cat on mat", "it is raining"], [["the cat is on the mat", "it rains"]]),
             description="one reference; no 3- or 4-gram matches: exponential smoothing"),
        Case((["In the beginning God created the heaven.", ""],
              [["In the beginning God created the heavens and the earth.", "And God said."],
               ["At first God made the sky and the earth.", "God spoke."]]),
             description="13a tokenization (the period is a token), and an empty output"),
        Case((["hello there general kenobi", "nice to meet you"],
              [["hello there general kenobi", "nice to meet you"], ["hi", "pleased to meet you"]]),
             description="a perfect match with a second, shorter reference: ties of length go to the shorter"),
    ]
    return run_check("corpus_bleu", fn, _ref_corpus_bleu, cases, atol=1e-9, rtol=1e-9,
                     hint="per segment: clip each hypothesis n-gram by its max count over that segment's "
                          "references, add the closest reference length (ties: shorter) to r; then "
                          "BP * exp(mean log p_n), the k-th zero-match order using 1 / (2^k total_n)")
