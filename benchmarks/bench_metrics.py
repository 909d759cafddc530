"""BLEU and ROUGE speed: minillm.metrics against sacrebleu and rouge-score on 10k sentence pairs.

Hypotheses are the shipped English-Spanish references, perturbed (words dropped, shuffled,
repeated) so that scores are neither 0 nor 100. Both sides get identical inputs in one process,
and the results are asserted equal before timing, so the ratio compares equal work; timings are
paired and alternating (common.py).
"""

from __future__ import annotations

import random

import sacrebleu
from rouge_score import rouge_scorer

from common import Row, paired_timing
from minillm.data import load_en_es
from minillm.metrics import corpus_bleu, rouge

N_PAIRS = 10_000
TYPES = ("rouge1", "rouge2", "rougeL")


def _pairs() -> tuple[list[str], list[str]]:
    rng = random.Random(0)
    refs = [p.es for p in load_en_es().train[:N_PAIRS]]
    hyps = []
    for r in refs:
        words = r.split()
        if rng.random() < 0.5:
            rng.shuffle(words)
        hyps.append(" ".join(w for w in words if rng.random() < 0.8) + " " + rng.choice(words))
    return hyps, refs


def run() -> list[Row]:
    hyps, refs = _pairs()
    n = len(refs)
    ours, ref = corpus_bleu(hyps, [refs]), sacrebleu.corpus_bleu(hyps, [refs])
    assert abs(ours.score - ref.score) < 1e-6, (ours, ref)
    bleu = paired_timing(lambda: corpus_bleu(hyps, [refs]), lambda: sacrebleu.corpus_bleu(hyps, [refs]),
                         repeats=3)

    scorer = rouge_scorer.RougeScorer(list(TYPES))
    for h, r in zip(hyps[:200], refs[:200]):
        assert tuple(rouge(r, h)["rougeL"]) == tuple(scorer.score(r, h)["rougeL"])
    short = paired_timing(lambda: [rouge(r, h, TYPES) for h, r in zip(hyps, refs)],
                          lambda: [scorer.score(r, h) for h, r in zip(hyps, refs)], repeats=2)

    # Long texts are where ROUGE-L's LCS dominates: 500 pairs of 10 joined verses (~250 words).
    long_refs = [" ".join(refs[i:i + 10]) for i in range(0, 5000, 10)]
    long_hyps = [" ".join(hyps[i:i + 10]) for i in range(0, 5000, 10)]
    scorer_l = rouge_scorer.RougeScorer(["rougeL"])
    for h, r in zip(long_hyps[:20], long_refs[:20]):
        assert tuple(rouge(r, h, ("rougeL",))["rougeL"]) == tuple(scorer_l.score(r, h)["rougeL"])
    long = paired_timing(lambda: [rouge(r, h, ("rougeL",)) for h, r in zip(long_hyps, long_refs)],
                         lambda: [scorer_l.score(r, h) for h, r in zip(long_hyps, long_refs)],
                         repeats=2, warmup=0)
    return [
        Row.timed(f"corpus BLEU, {n:,} es sentence pairs", bleu, work=n, unit="pairs/s",
                  reference_name="sacrebleu.corpus_bleu, same score"),
        Row.timed(f"ROUGE-1/2/L, {n:,} es sentence pairs", short, work=n, unit="pairs/s",
                  reference_name="rouge_score RougeScorer.score, same scores"),
        Row.timed(f"ROUGE-L, {len(long_refs)} pairs of ~10 verses", long, work=len(long_refs),
                  unit="pairs/s", reference_name="rouge_score RougeScorer.score, same scores"),
    ]
