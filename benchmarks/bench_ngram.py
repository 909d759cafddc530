"""n-gram fit and scoring time on the full Shakespeare text: minillm.ngram (numpy, vectorized) versus
a straightforward Python dict/Counter implementation of the same interpolated Kneser–Ney model."""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict

from common import Row
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


def _time(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run() -> list[Row]:
    data = load_shakespeare()
    train, held = data.train, data.validation
    ours_fit = min(_time(lambda: NGramLM(N).fit(train))[0] for _ in range(2))
    model = NGramLM(N).fit(train)
    ours_score, (ours_nll, count) = _time(lambda: model.score(held, eos=False))
    ours_score = min(ours_score, _time(lambda: model.score(held, eos=False))[0])
    ref_fit, ref = _time(lambda: CounterKneserNey(train, N))
    ref_score, ref_nll = _time(lambda: ref.nll(held))
    if not math.isclose(ours_nll, ref_nll, rel_tol=1e-6):  # same model, so the same number
        raise AssertionError(f"the two implementations disagree: {ours_nll} vs {ref_nll} nats")
    mb = len(train) / 1e6
    return [
        Row(f"n-gram fit: char {N}-gram KN, Shakespeare train ({mb:.1f}M chars)", ours_fit, ref_fit, "s",
            higher_is_better=False, reference_name="Python Counter"),
        Row(f"n-gram perplexity: char {N}-gram KN, validation ({count / 1e3:.0f}k chars)", ours_score,
            ref_score, "s", higher_is_better=False, reference_name="Python dict lookups"),
        Row(f"n-gram validation bits/char (char {N}-gram KN)", ours_nll / count / math.log(2),
            ref_nll / count / math.log(2), "bits/char", higher_is_better=False,
            reference_name="Python Counter, same model"),
    ]
