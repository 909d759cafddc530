"""n-gram models: normalisation, vectorized vs slow paths, a dict-based reference, nltk parity."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest

from minillm.data import load_shakespeare, load_tang_poems
from minillm.ngram import BOS, EOS, UNK, SMOOTHINGS, NGramConfig, NGramLM, words

SMOOTHED = ("add_k", "interpolated", "kneser_ney", "modified_kneser_ney")


@pytest.fixture(scope="module")
def shakespeare():
    return load_shakespeare()


@pytest.fixture(scope="module")
def small(shakespeare):
    """A 5-gram model on the first 200k training characters (every smoothing via ``replace``)."""
    return NGramLM(5).fit(shakespeare.train[:200_000])


CONTEXTS = ["to b", "ROMEO", "qxzj", "", "e", "th€ ", "\n\n"]  # seen, seen, unseen, empty, short, unknown char


@pytest.mark.parametrize("smoothing", SMOOTHED)
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_distribution_sums_to_one_for_seen_and_unseen_contexts(small, smoothing, n):
    lm = small.replace(n=n, smoothing=smoothing, k=0.1)
    for context in CONTEXTS:
        for from_start in (False, True):
            p = lm.next_distribution(context, from_start=from_start)
            assert p.shape == (lm.vocab_size,)
            assert np.all(p >= 0)
            assert p.sum() == pytest.approx(1.0, abs=1e-9), (context, from_start)
            if smoothing != "interpolated":
                assert np.all(p > 0), "a smoothed model never gives probability 0"


def test_mle_sums_to_one_on_seen_contexts_and_is_zero_on_unseen(small):
    lm = small.replace(smoothing="mle")
    assert lm.next_distribution("to b").sum() == pytest.approx(1.0)
    assert lm.count("qxzj") == 0
    assert lm.next_distribution("qxzj").sum() == 0.0
    p = lm.next_distribution("to b")
    assert p[lm.vocab.index("e")] == pytest.approx(lm.count("to be") / sum(
        lm.count("to b" + c) for c in lm.vocab if c not in (UNK, EOS)))


def test_mle_gives_zero_probability_and_infinite_perplexity_on_unseen_ngrams(small, shakespeare):
    lm = small.replace(smoothing="mle")
    lp = lm.token_log_probs(shakespeare.validation[:5000], eos=False)
    assert np.isneginf(lp).any()
    assert math.isinf(lm.perplexity(shakespeare.validation[:5000], eos=False))
    assert math.isfinite(lm.replace(smoothing="kneser_ney").perplexity(shakespeare.validation[:5000]))


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_vectorized_scoring_matches_one_context_at_a_time(small, shakespeare, smoothing):
    """The fast path (all positions at once) against its slow twin (next_distribution per position)."""
    lm = small.replace(smoothing=smoothing, k=0.5)
    text = shakespeare.validation[1000:1300] + "€"  # an unknown character too
    fast = lm.token_log_probs(text)
    slow = [lm.next_distribution(text[:i], from_start=True)[lm._stoi.get(c, lm._stoi[UNK])]
            for i, c in enumerate(text)]
    slow.append(lm.next_distribution(text, from_start=True)[lm._stoi[EOS]])
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(fast, np.log(slow), rtol=1e-10)
    assert lm.log_prob(text) == pytest.approx(fast.sum())


# ----- an independent dict-based reference (the textbook formulas, one n-gram at a time) -----
class DictKneserNey:
    """Interpolated Kneser–Ney with D = n1 / (n1 + 2 n2) per order (or, ``modified``, Chen & Goodman's
    D1, D2, D3+), counted with dicts."""

    def __init__(self, seqs, n, modified=False):
        self.n, self.modified = n, modified
        self.counts = [defaultdict(Counter) for _ in range(n + 1)]  # [m][context][w]
        vocab = set()
        for seq in seqs:
            padded = [BOS] * (n - 1) + list(seq) + [EOS]
            vocab.update(seq)
            for j in range(n - 1, len(padded)):
                for m in range(1, n + 1):
                    self.counts[m][tuple(padded[j - m + 1:j])][padded[j]] += 1
        self.V = len(vocab) + 2  # + UNK, EOS
        self.cont = [defaultdict(Counter) for _ in range(n)]
        for m in range(1, n):
            for ctx, followers in self.counts[m + 1].items():
                for w in followers:
                    self.cont[m][ctx[1:]][w] += 1
        self.d_raw = [self._d(self.counts[m]) if m else None for m in range(n + 1)]
        self.d_cont = [self._d(self.cont[m]) if m else None for m in range(n)]

    @staticmethod
    def _d(table):
        cc = Counter(c for f in table.values() for c in f.values())
        y = min(max(cc[1] / (cc[1] + 2 * cc[2]), 0.05), 1.0)
        return [y] + [min(max(i - (i + 1) * y * cc[i + 1] / cc[i], 0.05), i) if cc[i] else y for i in (1, 2, 3)]

    def prob(self, w, context):
        p = 1 / self.V
        for m in range(1, self.n + 1):
            ctx = tuple(context[len(context) - m + 1:]) if m > 1 else ()
            table, d = (self.counts[m], self.d_raw[m]) if m == self.n else (self.cont[m], self.d_cont[m])
            followers = table.get(ctx)
            if followers and not self.modified:
                total = sum(followers.values())
                p = (max(followers.get(w, 0) - d[0], 0) + d[0] * len(followers) * p) / total
            elif followers:
                total, c = sum(followers.values()), followers.get(w, 0)
                disc = lambda count: d[min(count, 3)] if count else 0.0  # noqa: E731
                freed = sum(disc(f) for f in followers.values())
                p = (c - disc(c) + freed * p) / total
        return p


@pytest.mark.parametrize("smoothing", ["kneser_ney", "modified_kneser_ney"])
def test_kneser_ney_matches_a_dict_reference_on_shakespeare(shakespeare, smoothing):
    train, held = shakespeare.train[:30_000], shakespeare.validation[:600]
    ref = DictKneserNey([train], 4, modified=smoothing == "modified_kneser_ney")
    lm = NGramLM(4, smoothing).fit(train)
    padded = [BOS] * 3 + list(held) + [EOS]
    expected = [math.log(ref.prob(padded[j], padded[j - 3:j])) for j in range(3, len(padded))]
    np.testing.assert_allclose(lm.token_log_probs(held), expected, rtol=1e-10)


def test_counts_match_python_counting(small, shakespeare):
    text = shakespeare.train[:200_000]
    for gram in ["e", "th", "the", "the ", "ROMEO", "zzzz"]:
        expected = sum(text.startswith(gram, i) for i in range(len(text)))
        assert small.count(gram) == expected, gram


def test_add_k_and_mle_match_nltk_on_tang_poems():
    lm_mod = pytest.importorskip("nltk.lm")
    from nltk.lm.preprocessing import padded_everygram_pipeline

    poems = [p.text for p in load_tang_poems().train[:60]]
    n = 3
    train, vocab = padded_everygram_pipeline(n, [list(p) for p in poems])
    ref = lm_mod.MLE(n)
    ref.fit(train, vocab)
    lm = NGramLM(n, "mle").fit(poems)
    contexts = Counter(tuple(p[i:i + 2]) for p in poems for i in range(len(p) - 2))
    for ctx, _ in contexts.most_common(40):
        for w in set(ref.counts[list(ctx)]) - {"</s>"}:
            assert lm.count(ctx + (w,)) == ref.counts[list(ctx)][w]
            assert lm.prob(w, ctx) == pytest.approx(ref.score(w, list(ctx)), rel=1e-12)
    # add-k: nltk's Lidstone divides by (c(context) + k |V|), and its |V| also counts <s> and <UNK>
    ref_k = lm_mod.Lidstone(0.1, n)
    ref_k.fit(*padded_everygram_pipeline(n, [list(p) for p in poems]))
    add_k = lm.replace(smoothing="add_k", k=0.1)
    assert len(ref_k.vocab) == add_k.vocab_size + 1  # nltk's vocabulary holds <s> too
    for ctx, _ in contexts.most_common(20):
        counts = ref_k.counts[list(ctx)]
        for w in list(counts)[:5]:
            if w == "</s>":
                continue
            expected = (counts[w] + 0.1) / (counts.N() + 0.1 * add_k.vocab_size)
            assert add_k.prob(w, ctx) == pytest.approx(expected, rel=1e-12)
            assert ref_k.score(w, list(ctx)) == pytest.approx(
                (counts[w] + 0.1) / (counts.N() + 0.1 * len(ref_k.vocab)), rel=1e-12)


def test_kneser_ney_beats_add_k_on_held_out_perplexity(shakespeare):
    lm = NGramLM(5).fit(shakespeare.train[:1_000_000])
    held = shakespeare.validation[:50_000]
    kn = lm.perplexity(held)
    best_add_k = min(lm.replace(n=n, smoothing="add_k", k=k).perplexity(held)
                     for n in (2, 3, 4, 5) for k in (0.001, 0.01, 0.1, 1.0))
    assert kn < best_add_k


def test_interpolation_beats_mle_and_unsmoothed_lower_orders(shakespeare, small):
    held = shakespeare.validation[:20_000]
    interp = small.replace(smoothing="interpolated", lambdas=0.7).perplexity(held)
    assert math.isfinite(interp)
    assert interp < small.replace(n=2, smoothing="add_k", k=0.1).perplexity(held)


def test_sampling_with_a_fixed_seed_reproduces(small):
    lm = small.replace(smoothing="kneser_ney")
    a = lm.sample(200, seed=3, context="KING")
    assert a == lm.sample(200, seed=3, context="KING")
    assert a != lm.sample(200, seed=4, context="KING")
    assert len(a) <= 200 and all(t in lm.vocab for t in a)


def test_mle_samples_only_continue_seen_ngrams(small):
    lm = small.replace(smoothing="mle", n=4)
    text = "".join(lm.sample(300, seed=0, context="the "))
    full = "the " + text
    for i in range(len(full) - 3):
        assert lm.count(full[i:i + 4]) > 0


def test_word_level_and_chinese_characters(shakespeare):
    lines = [words(line) for line in shakespeare.train[:100_000].split("\n") if line.strip()]
    lm = NGramLM(3).fit(lines)
    assert "the" in lm.vocab and lm.vocab[-2:] == [UNK, EOS]
    assert lm.next_distribution(["I", "am"]).sum() == pytest.approx(1.0)
    assert lm.prob("zyzzyva", ["I", "am"]) == lm.prob(UNK, ["I", "am"]) > 0
    assert words("Don't, Romeo!") == ["Don't", ",", "Romeo", "!"]

    poems = load_tang_poems()
    zh = NGramLM(3).fit([p.text for p in poems.train])
    assert "月" in zh.vocab
    assert zh.next_distribution("明月").sum() == pytest.approx(1.0)
    assert math.isfinite(zh.corpus_perplexity([p.text for p in poems.test]))
    sample = zh.sample(40, seed=0)
    assert sample == zh.sample(40, seed=0) and all(isinstance(t, str) for t in sample)


def test_generic_tokens_are_supported():
    lm = NGramLM(2, "add_k").fit([[1, 2, 3, 2, 1], [3, 3, 2]])
    assert lm.vocab == [1, 2, 3, UNK, EOS]
    assert lm.prob(3, [2]) == pytest.approx((1 + 1) / (3 + 5))  # "2" is followed by 3, 1, EOS


def test_bad_input_raises_clear_errors(small):
    with pytest.raises(ValueError, match="n must be"):
        NGramLM(0)
    with pytest.raises(ValueError, match="smoothing must be one of"):
        NGramLM(3, "good_turing")
    with pytest.raises(ValueError, match="k must be"):
        NGramLM(3, "add_k", k=-1)
    with pytest.raises(ValueError, match="lambdas"):
        NGramConfig(3, "interpolated", lambdas=(0.5, 0.5))
    with pytest.raises(ValueError, match="not fitted"):
        NGramLM(3).prob("a", "bc")
    with pytest.raises(TypeError, match="iterable of token sequences"):
        NGramLM(3).fit(12)
    with pytest.raises(TypeError, match="each sequence"):
        NGramLM(3).fit([1, 2, 3])
    with pytest.raises(ValueError, match="fitted with n=5"):
        small.replace(n=6)
    with pytest.raises(ValueError, match="no tokens"):
        NGramLM(2).fit(["", ""])
    with pytest.raises(ValueError, match="probability 0"):
        small.replace(smoothing="mle").sample(5, context="qxzj", from_start=False)


def test_interpolation_weights_per_order(small, shakespeare):
    held = shakespeare.validation[:5000]
    per_order = small.replace(smoothing="interpolated", lambdas=[0.9, 0.9, 0.8, 0.7, 0.6])
    assert per_order.config.lambdas == (0.9, 0.9, 0.8, 0.7, 0.6)
    assert per_order.next_distribution("to b").sum() == pytest.approx(1.0)
    shared = small.replace(smoothing="interpolated", lambdas=0.7)
    same = small.replace(smoothing="interpolated", lambdas=[0.7] * 5)
    assert same.perplexity(held) == pytest.approx(shared.perplexity(held), rel=1e-12)
    assert abs(per_order.perplexity(held) / shared.perplexity(held) - 1) > 1e-3
    # only the top order's weight differs: P = λ5·MLE5 + (1 − λ5)·P4, with the same lower mixture P4
    top = small.replace(smoothing="interpolated", lambdas=[0.7, 0.7, 0.7, 0.7, 0.9])
    mle = small.replace(smoothing="mle").next_distribution("to b")
    lower = (shared.next_distribution("to b") - 0.7 * mle) / 0.3  # P4 recovered from the shared mix
    np.testing.assert_allclose(top.next_distribution("to b"), 0.9 * mle + 0.1 * lower, atol=1e-12)


def test_leaderboard_rows_name_existing_scorers():
    from minillm import ngram
    from minillm.leaderboard import ROWS

    rows = [r for r in ROWS if r.chapter == 1]
    assert len(rows) >= 3
    for row in rows:
        assert callable(row.scorer), row.name
        assert getattr(ngram, row.scorer.__name__) is row.scorer, row.name
