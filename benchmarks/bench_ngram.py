"""n-gram fit and scoring time on the full Shakespeare text: minillm.ngram (numpy, vectorized) versus
a straightforward Python dict/Counter implementation of the same interpolated Kneser–Ney model.

The two models' validation log-likelihoods are asserted equal (rel. 1e-6) before timing; each row is
timed in alternating pairs, the same number of times on both sides (common.py)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from common import Row, paired_timing
from minillm.data import load_shakespeare
from minillm.ngram import NGramLM

N = 5


class CounterKneserNey:
    """Character n-gram counts in Counters keyed by strings; the textbook formulas per character."""

    def __init__(self, text: str, n: int):
        self.n = n
        padded = "\x02" * (n - 1) + text + "\x03"  # start padding and the end symbol
        self.counts = [None] + [Counter(padded[i:i + m] for i in range(n - m, len(padded) - m + 1))
                                for m in range(1, n + 1)]
        self.V = len(set(text)) + 2
        self.cont = [None] + [Counter(g[1:] for g in self.counts[m + 1]) for m in range(1, n)]
        self.tables = []  # per order: context -> (total, distinct followers)
        for m in range(1, n + 1):
            src = self.counts[m] if m == n else self.cont[m]
            totals, types = defaultdict(int), defaultdict(int)
            for g, c in src.items():
                totals[g[:-1]] += c
                types[g[:-1]] += 1
            cc = Counter(src.values())
            self.tables.append((src, totals, types, min(max(cc[1] / (cc[1] + 2 * cc[2]), 0.05), 1.0)))

    def nll(self, text: str) -> float:
        padded, n, total = "\x02" * (self.n - 1) + text, self.n, 0.0
        for j in range(n - 1, len(padded)):
            w, p = padded[j], 1 / self.V
            for m in range(1, n + 1):
                src, totals, types, d = self.tables[m - 1]
                ctx = padded[j - m + 1:j]
                t = totals.get(ctx, 0)
                if t:
                    p = (max(src.get(ctx + w, 0) - d, 0) + d * types[ctx] * p) / t
            total -= math.log(p)
        return total


def run() -> list[Row]:
    data = load_shakespeare()
    train, held = data.train, data.validation
    model = NGramLM(N).fit(train)
    ref = CounterKneserNey(train, N)
    ours_nll, count = model.score(held, eos=False)
    ref_nll = ref.nll(held)
    if not math.isclose(ours_nll, ref_nll, rel_tol=1e-6):  # same model, so the same number
        raise AssertionError(f"the two implementations disagree: {ours_nll} vs {ref_nll} nats")
    fit = paired_timing(lambda: NGramLM(N).fit(train), lambda: CounterKneserNey(train, N),
                        repeats=2, warmup=0)
    score = paired_timing(lambda: model.score(held, eos=False), lambda: ref.nll(held),
                          repeats=2, warmup=0)
    mb = len(train) / 1e6
    return [
        Row.timed(f"n-gram fit: char {N}-gram KN, Shakespeare train ({mb:.1f}M chars)", fit, unit="s",
                  reference_name="Python Counter, same model"),
        Row.timed(f"n-gram scoring: char {N}-gram KN, validation ({count / 1e3:.0f}k chars)", score,
                  unit="s", reference_name="Python dict lookups, same model"),
        Row(f"n-gram validation bits/char (char {N}-gram KN)", ours_nll / count / math.log(2),
            ref_nll / count / math.log(2), "bits/char", higher_is_better=False,
            reference_name="Python Counter, same model (a check, not a speed)"),
    ]
