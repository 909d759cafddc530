"""BLEU and ROUGE speed: minillm.metrics against sacrebleu and rouge-score on 10k sentence pairs.

Hypotheses are the shipped English-Spanish references, perturbed (words dropped, shuffled,
repeated) so that scores are neither 0 nor 100. Both sides get identical inputs in one process,
and the results are asserted equal before timing, so the ratio compares equal work.
"""

from __future__ import annotations

import random

import sacrebleu
from rouge_score import rouge_scorer

from common import Row, best_of
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
    t_ours = best_of(lambda: corpus_bleu(hyps, [refs]))
    t_ref = best_of(lambda: sacrebleu.corpus_bleu(hyps, [refs]))

    scorer = rouge_scorer.RougeScorer(list(TYPES))
    for h, r in zip(hyps[:200], refs[:200]):
        assert tuple(rouge(r, h)["rougeL"]) == tuple(scorer.score(r, h)["rougeL"])
    r_ours = best_of(lambda: [rouge(r, h, TYPES) for h, r in zip(hyps, refs)], repeats=2)
    r_ref = best_of(lambda: [scorer.score(r, h) for h, r in zip(hyps, refs)], repeats=2)

    # Long texts are where ROUGE-L's LCS dominates: 500 pairs of 10 joined verses (~250 words).
    long_refs = [" ".join(refs[i:i + 10]) for i in range(0, 5000, 10)]
    long_hyps = [" ".join(hyps[i:i + 10]) for i in range(0, 5000, 10)]
    l_ours = best_of(lambda: [rouge(r, h, ("rougeL",)) for h, r in zip(long_hyps, long_refs)],
                     repeats=1)
    scorer_l = rouge_scorer.RougeScorer(["rougeL"])
    l_ref = best_of(lambda: [scorer_l.score(r, h) for h, r in zip(long_hyps, long_refs)],
                    repeats=1)
    return [
        Row(f"corpus BLEU, {n:,} es sentence pairs", n / t_ours, n / t_ref, "pairs/s",
            reference_name="sacrebleu.corpus_bleu"),
        Row(f"ROUGE-1/2/L, {n:,} es sentence pairs", n / r_ours, n / r_ref, "pairs/s",
            reference_name="rouge_score RougeScorer.score"),
        Row(f"ROUGE-L, {len(long_refs)} pairs of ~10 verses", len(long_refs) / l_ours,
            len(long_refs) / l_ref, "pairs/s", reference_name="rouge_score RougeScorer.score"),
    ]
