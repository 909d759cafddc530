"""n-gram language models: counting, smoothing, scoring and sampling (chapter 1).

An order-``n`` model predicts each token from the ``n - 1`` tokens before it (the Markov assumption)
using counts of the n-grams seen in training. :class:`NGramLM` works for any hashable token
(characters, words, Chinese characters): tokens are mapped to integer ids and every count comes from
``np.unique`` over integer keys, so fitting a character 5-gram model on all of Shakespeare takes
seconds and no Python loop runs per token.

Smoothing methods (Chen & Goodman, 1998, "An empirical study of smoothing techniques for language
modeling"): ``"mle"`` (relative frequencies), ``"add_k"`` (Lidstone), ``"interpolated"`` (Jelinek &
Mercer, 1980: recursive mixing with the next lower order) and ``"kneser_ney"`` (interpolated
Kneser & Ney, 1995, with absolute discount ``D = n1 / (n1 + 2 n2)`` per order; lower orders use
continuation counts) and ``"modified_kneser_ney"`` (Chen & Goodman's three discounts D1, D2, D3+ for
n-grams seen once, twice, and three or more times).

Each sequence is padded with ``n - 1`` start symbols :data:`BOS` (context only, never predicted) and
one end symbol :data:`EOS` (predicted). Unknown tokens map to :data:`UNK`, which is in the vocabulary
with a count of zero. Shape letters: N scored positions, V vocabulary size (tokens + UNK + EOS).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace as dc_replace
from typing import Hashable, Iterable, Sequence

import numpy as np

from ..validation import check_int

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SMOOTHINGS = ("mle", "add_k", "interpolated", "kneser_ney", "modified_kneser_ney")


@dataclass(frozen=True)
class NGramConfig:
    n: int = 3  # order: each token is predicted from the n - 1 tokens before it
    smoothing: str = "kneser_ney"  # one of SMOOTHINGS
    k: float = 1.0  # add-k pseudo-count added to every n-gram ("add_k")
    lambdas: float | tuple[float, ...] = 0.8  # "interpolated": weight of order m vs orders < m (one per order, or shared)
    discount: float | None = None  # Kneser-Ney: one absolute discount for all; None = estimated per order

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n must be an integer >= 1, got {self.n!r}")
        if self.smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {self.smoothing!r}")
        if not (isinstance(self.k, (int, float)) and not isinstance(self.k, bool) and 0 < self.k < math.inf):
            raise ValueError(f"k must be a finite number > 0, got {self.k!r}")
        if isinstance(self.lambdas, list):
            object.__setattr__(self, "lambdas", tuple(self.lambdas))
        lams = self.lambdas if isinstance(self.lambdas, tuple) else (self.lambdas,)
        if isinstance(self.lambdas, tuple) and len(lams) != self.n:
            raise ValueError(f"lambdas must be one float or a tuple of n={self.n} floats, got {self.lambdas!r}")
        if not all(isinstance(x, (int, float)) and 0 < x <= 1 for x in lams):
            raise ValueError(f"lambdas must lie in (0, 1], got {self.lambdas!r}")
        if self.discount is not None and not (isinstance(self.discount, (int, float)) and 0 < self.discount <= 1):
            raise ValueError(f"discount must be in (0, 1] or None, got {self.discount!r}")


@dataclass
class _Order:
    """Counts of the m-grams of one order m (context length m - 1)."""

    ctx_keys: np.ndarray  # (C,) sorted: parent context id * (V + 1) + leftmost context token; id = index
    ev_keys: np.ndarray  # (E,) sorted: context id * V + next token
    count: np.ndarray  # (E,) raw counts c(context, w)
    cont: np.ndarray | None  # (E,) continuation counts N1+(• context w); None at the top order
    ctx_total: np.ndarray  # (C,) c(context) = sum_w c(context, w)
    cont_total: np.ndarray | None  # (C,) sum_w N1+(• context w)
    ctx_nk: np.ndarray  # (C, 3) distinct followers with raw count 1, 2, >= 3 (their sum is N1+(context •))
    cont_nk: np.ndarray | None  # (C, 3) the same for the continuation counts
    disc_raw: np.ndarray  # (4,) discounts [D, D1, D2, D3+] estimated from the raw counts
    disc_cont: np.ndarray | None  # (4,) the same from the continuation counts


def _discounts(counts: np.ndarray) -> np.ndarray:
    """[D, D1, D2, D3+]: Ney's D = n1 / (n1 + 2 n2) and Chen & Goodman's D_i = i - (i+1) D n_{i+1} / n_i,
    where n_i is the number of n-grams with count i."""
    n = [int((counts == i).sum()) for i in range(1, 5)]
    y = min(max(n[0] / (n[0] + 2 * n[1]), 0.05), 1.0) if n[0] + n[1] else 0.5
    mod = [min(max(i - (i + 1) * y * n[i] / n[i - 1], 0.05), i) if n[i - 1] else y for i in (1, 2, 3)]
    return np.array([y, *mod])


def _followers(ev_ctx: np.ndarray, counts: np.ndarray, n_ctx: int) -> np.ndarray:
    """(C, 3) per context: how many distinct followers have count 1, 2 and >= 3."""
    return np.stack([np.bincount(ev_ctx[sel], minlength=n_ctx) for sel in
                     (counts == 1, counts == 2, counts >= 3)], axis=1).astype(np.float64)


def _unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(keys, return_inverse=True)`` for keys >= 0, several times faster: sorting each key
    packed with its position into one int64 avoids the cache-unfriendly ``argsort``."""
    n = len(keys)
    bits = max(n.bit_length(), 1)
    if n == 0 or int(keys.max()) >= 1 << (62 - bits):  # would overflow: the plain way
        uniq, inv = np.unique(keys, return_inverse=True)
        return uniq, inv.reshape(-1)
    packed = np.sort((keys << bits) | np.arange(n))
    sorted_keys, order = packed >> bits, packed & ((1 << bits) - 1)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new[1:])
    inv = np.empty(n, dtype=np.int64)
    inv[order] = np.cumsum(new) - 1
    return sorted_keys[new], inv


def words(text: str, lower: bool = False) -> list[str]:
    """Split text into words and punctuation marks (``"Don't, Romeo!"`` → ``["Don't", ",", "Romeo", "!"]``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return re.findall(r"[A-Za-z]+(?:'[A-Za-z]+)*|[^\sA-Za-z]", text.lower() if lower else text)


def _as_sequences(sequences) -> list:
    if isinstance(sequences, str):
        return [sequences]
    if isinstance(sequences, np.ndarray) or not isinstance(sequences, Iterable):
        raise TypeError(f"expected a str or an iterable of token sequences, got {type(sequences).__name__}")
    seqs = list(sequences)
    for s in seqs:
        if not isinstance(s, (str, list, tuple)):
            raise TypeError(f"each sequence must be a str, list or tuple of tokens, got {type(s).__name__}: {s!r:.60}")
    return seqs


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


class NGramLM:
    """A count-based n-gram language model over any hashable tokens.

    Args:
        n: the order (``n = 3``: a token is predicted from the two before it).
        smoothing: ``"mle"``, ``"add_k"``, ``"interpolated"``, ``"kneser_ney"`` or ``"modified_kneser_ney"``.
        k, lambdas, discount: the smoothing's parameter (see :class:`NGramConfig`).

    ``fit`` counts every order up to ``n``, so :meth:`replace` gives a model of any order ``<= n``
    or any smoothing without counting again.
    """

    config_class = NGramConfig

    def __init__(self, n: int = 3, smoothing: str = "kneser_ney", *, k: float = 1.0,
                 lambdas: float | tuple[float, ...] = 0.8, discount: float | None = None):
        self.config = NGramConfig(n, smoothing, k, lambdas, discount)
        self._orders: list[_Order] | None = None
        self.vocab: list[Hashable] = []  # id -> token; the last two are UNK and EOS

    # ----- vocabulary and encoding -----
    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def fitted(self) -> bool:
        return self._orders is not None

    def _require_fit(self) -> None:
        if self._orders is None:
            raise ValueError("this NGramLM is not fitted yet; call .fit(sequences) first")

    def _build_vocab(self, seqs: list) -> None:
        if all(isinstance(s, str) for s in seqs):
            cps = np.unique(np.concatenate([_codepoints(s) for s in seqs] or [np.zeros(0, np.int64)]))
            tokens: list = [chr(c) for c in cps]
        else:
            seen = dict.fromkeys(t for s in seqs for t in s)
            try:
                tokens = sorted(seen)
            except TypeError:  # tokens of types that do not compare: keep first-appearance order
                tokens = list(seen)
        tokens = [t for t in tokens if t not in (BOS, EOS, UNK)]
        if not tokens:
            raise ValueError("cannot fit an n-gram model on data with no tokens")
        self.vocab = tokens + [UNK, EOS]
        self._stoi = {t: i for i, t in enumerate(self.vocab)}
        chars = [(ord(t), i) for i, t in enumerate(tokens) if isinstance(t, str) and len(t) == 1]
        cp = np.array(sorted(chars), dtype=np.int64).reshape(-1, 2)
        self._cp, self._cp_ids = cp[:, 0], cp[:, 1]  # fast path for str sequences

    def encode(self, sequence) -> np.ndarray:
        """Token ids (int64) of one sequence; unknown tokens become the id of :data:`UNK`."""
        if not self.vocab:
            raise ValueError("this NGramLM is not fitted yet; call .fit(sequences) first")
        unk = self._stoi[UNK]
        if isinstance(sequence, str):
            cp = _codepoints(sequence)
            idx = np.clip(np.searchsorted(self._cp, cp), 0, max(len(self._cp) - 1, 0))
            hit = (self._cp[idx] == cp) if len(self._cp) else np.zeros(len(cp), bool)
            return np.where(hit, self._cp_ids[idx] if len(self._cp) else unk, unk).astype(np.int64)
        return np.array([self._stoi.get(t, unk) if t != BOS else self.vocab_size for t in sequence], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> list:
        return [self.vocab[int(i)] if int(i) < self.vocab_size else BOS for i in ids]

    def _padded(self, seqs: list, eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All sequences as one id array, each preceded by n-1 BOS and followed by EOS; and the
        positions to predict (every real token, plus each EOS if ``eos``)."""
        n, bos, eos_id = self.config.n, self.vocab_size, self._stoi[EOS]
        enc = [self.encode(s) for s in seqs]
        lens = np.array([len(e) for e in enc], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens + n)[:-1]]) + n - 1  # first real token of each
        ids = np.full(int((lens + n).sum()), bos, dtype=np.int64)
        flat = np.concatenate(enc) if enc else np.zeros(0, np.int64)
        real = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(len(flat))
        ids[real] = flat
        ids[starts + lens] = eos_id
        pos = np.sort(np.concatenate([real, starts + lens])) if eos else real
        return ids, pos

    # ----- counting -----
    def fit(self, sequences, *, progress: bool = False) -> "NGramLM":
        """Count every m-gram (m = 1..n) of the sequences; a str counts as one sequence of characters.

        ``sequences`` is a str or an iterable of token sequences (str, list or tuple), e.g. a list of
        lines, or a list of word lists. ``progress=True`` shows a progress bar over the orders.
        """
        seqs = _as_sequences(sequences)
        self._build_vocab(seqs)
        V, n = self.vocab_size, self.config.n
        ids, pos = self._padded(seqs)
        ctx = np.zeros(len(pos), dtype=np.int64)  # (N,) id of each position's context of length L
        orders = []
        steps = range(1, n + 1)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"counting 1..{n}-grams", unit="order")
        for m in steps:
            if m == 1:
                ctx_keys = np.zeros(1, dtype=np.int64)
            else:  # extend every context one token to the left
                ctx_keys, ctx = _unique_inverse(ctx * (V + 1) + ids[pos - (m - 1)])
            ev_keys, count = np.unique(ctx * V + ids[pos], return_counts=True)
            ev_ctx = ev_keys // V
            orders.append(_Order(ctx_keys, ev_keys, count, None,
                                 np.bincount(ev_ctx, weights=count, minlength=len(ctx_keys)), None,
                                 _followers(ev_ctx, count, len(ctx_keys)), None, _discounts(count), None))
        for m in range(1, n):  # continuation counts of order m from the distinct (m+1)-grams
            up, low = orders[m], orders[m - 1]
            suffix = (up.ctx_keys[up.ev_keys // V] // (V + 1)) * V + up.ev_keys % V
            low.cont = np.bincount(np.searchsorted(low.ev_keys, suffix), minlength=len(low.ev_keys))
            low.cont_total = np.bincount(low.ev_keys // V, weights=low.cont, minlength=len(low.ctx_keys))
            low.cont_nk = _followers(low.ev_keys // V, low.cont, len(low.ctx_keys))
            low.disc_cont = _discounts(low.cont)
        self._orders = orders
        self._fit_n = n
        return self

    def replace(self, **changes) -> "NGramLM":
        """A model sharing these counts with other settings, e.g. ``lm.replace(n=3, smoothing="add_k", k=0.1)``."""
        self._require_fit()
        config = dc_replace(self.config, **changes)
        if config.n > self._fit_n:
            raise ValueError(f"n={config.n} needs counts of order {config.n}, but this model was fitted with n={self._fit_n}")
        other = object.__new__(NGramLM)
        other.__dict__.update(self.__dict__)
        other.config = config
        return other

    # ----- probabilities -----
    def _lambda(self, m: int) -> float:
        lams = self.config.lambdas
        return float(lams[m - 1]) if isinstance(lams, tuple) else float(lams)

    def _mix(self, lookup, top: int) -> np.ndarray:
        """P(w | context) from per-order counts. ``lookup(m, cont)`` → (c(ctx, w), c(ctx), followers
        with count 1/2/3+): (V,), () and (3,) for one context, or (N,), (N,), (N, 3) per position."""
        cfg, V = self.config, self.vocab_size
        if cfg.smoothing in ("mle", "add_k"):
            c, total, _ = lookup(top, False)
            if cfg.smoothing == "mle":  # an unseen context gets probability 0 everywhere
                return np.where(total > 0, c / np.maximum(total, 1), 0.0)
            return (c + cfg.k) / (total + cfg.k * V)
        p = np.full(1, 1.0 / V)  # order 0: uniform over the vocabulary
        for m in range(1, top + 1):
            use_cont = cfg.smoothing != "interpolated" and m < top
            c, total, nk = lookup(m, use_cont)
            safe = np.maximum(total, 1)
            if cfg.smoothing == "interpolated":
                lam = self._lambda(m)
                q = lam * c / safe + (1 - lam) * p
            else:
                o = self._orders[m - 1]
                disc = np.full(4, cfg.discount) if cfg.discount else (o.disc_cont if use_cont else o.disc_raw)
                if cfg.smoothing == "kneser_ney":  # one D: the freed mass is D * N1+(ctx •)
                    q = (np.maximum(c - disc[0], 0) + disc[0] * nk.sum(-1) * p) / safe
                else:  # D1, D2 or D3+ by count; the freed mass is D1 N1(ctx •) + D2 N2(ctx •) + D3+ N3+(ctx •)
                    d = np.select([c >= 3, c == 2, c == 1], [disc[3], disc[2], disc[1]], 0.0)
                    q = (c - d + (nk @ disc[1:]) * p) / safe
            p = np.where(total > 0, q, p)  # an unseen context leaves everything to the lower orders
        return p

    def _context_chain(self, ctx_ids: np.ndarray) -> list[int]:
        """Context id at each length 0..len(ctx_ids) (-1 once unseen); ``ctx_ids`` is oldest first."""
        V, chain, ctx = self.vocab_size, [0], 0
        for L in range(1, len(ctx_ids) + 1):
            keys = self._orders[L].ctx_keys
            key = ctx * (V + 1) + int(ctx_ids[-L])
            i = int(np.searchsorted(keys, key))
            ctx = i if ctx >= 0 and i < len(keys) and keys[i] == key else -1
            chain.append(ctx)
        return chain

    def _dense(self, ctx_ids: np.ndarray) -> np.ndarray:
        ctx_ids = ctx_ids[max(0, len(ctx_ids) - (self.config.n - 1)):] if self.config.n > 1 else ctx_ids[:0]
        chain, V = self._context_chain(ctx_ids), self.vocab_size

        def lookup(m: int, cont: bool):
            o, ctx = self._orders[m - 1], chain[m - 1]
            vec = np.zeros(V)
            if ctx < 0:
                return vec, np.zeros(()), np.zeros(3)
            lo, hi = np.searchsorted(o.ev_keys, [ctx * V, (ctx + 1) * V])
            vec[o.ev_keys[lo:hi] - ctx * V] = (o.cont if cont else o.count)[lo:hi]
            total = (o.cont_total if cont else o.ctx_total)[ctx]
            return vec, np.asarray(total, float), (o.cont_nk if cont else o.ctx_nk)[ctx]

        return np.broadcast_to(self._mix(lookup, len(ctx_ids) + 1), (V,)).copy()

    def _context_ids(self, context, from_start: bool) -> np.ndarray:
        if isinstance(context, (str, list, tuple, np.ndarray)):
            pass
        elif isinstance(context, Iterable) and not isinstance(context, (dict, set, bytes)):
            context = list(context)
        else:
            raise TypeError(f"context must be a str or a sequence of tokens, got {type(context).__name__}")
        ids = self.encode(context) if len(context) else np.zeros(0, np.int64)
        if from_start:
            ids = np.concatenate([np.full(self.config.n - 1, self.vocab_size, np.int64), ids])
        return ids

    def next_distribution(self, context: Sequence = (), *, from_start: bool = False) -> np.ndarray:
        """P(next token | context) over the vocabulary, a (V,) float64 array (order: ``self.vocab``).

        Only the last ``n - 1`` tokens of ``context`` matter. A shorter context uses the lower
        orders, as if the earlier tokens were unknown; with ``from_start=True`` the context is
        instead the beginning of a sequence (padded with BOS).
        """
        self._require_fit()
        return self._dense(self._context_ids(context, from_start))

    def prob(self, next_token: Hashable, context: Sequence = (), *, from_start: bool = False) -> float:
        """P(next_token | context); see :meth:`next_distribution`."""
        self._require_fit()
        token_id = self._stoi.get(next_token, self._stoi[UNK])
        return float(self.next_distribution(context, from_start=from_start)[token_id])

    def token_log_probs(self, sequence, *, eos: bool = True) -> np.ndarray:
        """Natural log-probability of each token of one sequence (and of the final EOS if ``eos``)."""
        self._require_fit()
        return self._log_probs([sequence], eos)

    def _log_probs(self, seqs: list, eos: bool) -> np.ndarray:
        V, n = self.vocab_size, self.config.n
        ids, pos = self._padded(seqs, eos)
        chain, ctx = [np.zeros(len(pos), np.int64)], np.zeros(len(pos), np.int64)
        for L in range(1, n):  # (N,) context id of every position at every length; -1 = unseen
            keys = self._orders[L].ctx_keys
            key = ctx * (V + 1) + ids[pos - L]
            i = np.minimum(np.searchsorted(keys, key), len(keys) - 1)
            ctx = np.where((ctx >= 0) & (keys[i] == key), i, -1)
            chain.append(ctx)
        target = ids[pos]

        def lookup(m: int, cont: bool):
            o, c = self._orders[m - 1], chain[m - 1]
            key = c * V + target
            i = np.minimum(np.searchsorted(o.ev_keys, key), len(o.ev_keys) - 1)
            found = (c >= 0) & (o.ev_keys[i] == key)
            counts = np.where(found, (o.cont if cont else o.count)[i], 0)
            cc = np.maximum(c, 0)
            total = np.where(c >= 0, (o.cont_total if cont else o.ctx_total)[cc], 0.0)
            return counts, total, np.where((c >= 0)[:, None], (o.cont_nk if cont else o.ctx_nk)[cc], 0.0)

        with np.errstate(divide="ignore"):
            return np.log(np.broadcast_to(self._mix(lookup, n), (len(pos),)))

    def log_prob(self, sequence, *, eos: bool = True) -> float:
        """Natural log-probability of one whole sequence (chain rule over its tokens)."""
        return float(self.token_log_probs(sequence, eos=eos).sum())

    def score(self, sequences, *, eos: bool = True) -> tuple[float, int]:
        """(total negative log-likelihood in nats, number of tokens scored) over many sequences."""
        self._require_fit()
        seqs = _as_sequences(sequences)
        if not seqs:
            raise ValueError("sequences is empty: there are zero tokens to score")
        lp = self._log_probs(seqs, eos)
        return float(-lp.sum()), int(lp.size)

    def perplexity(self, sequence, *, eos: bool = True) -> float:
        """exp(mean negative log-likelihood per token) of one sequence; ``inf`` if any token has P = 0."""
        return self.corpus_perplexity([sequence], eos=eos)

    def corpus_perplexity(self, sequences, *, eos: bool = True) -> float:
        """Perplexity over many sequences (all their tokens pooled)."""
        nll, count = self.score(sequences, eos=eos)
        if count == 0:
            raise ValueError("sequences hold no tokens to score (and eos=False): perplexity over zero "
                             "tokens is undefined")
        return math.exp(nll / count) if count and nll < 700 * count else math.inf

    # ----- inspecting and sampling -----
    def _event(self, ngram: Sequence, max_len: int) -> tuple[_Order, int]:
        """The order holding ``ngram`` and the ngram's index in it (-1 if it never occurred)."""
        self._require_fit()
        if not 1 <= len(ngram) <= max_len:
            raise ValueError(f"ngram must have 1..{max_len} tokens, got {len(ngram)}")
        ids = self._context_ids(ngram, False)
        o, ctx = self._orders[len(ngram) - 1], self._context_chain(ids[:-1])[-1]
        key = ctx * self.vocab_size + ids[-1]
        i = int(np.searchsorted(o.ev_keys, key))
        return o, (i if ctx >= 0 and i < len(o.ev_keys) and o.ev_keys[i] == key else -1)

    def count(self, ngram: Sequence) -> int:
        """How often the m-gram (m <= n) occurred in training (contexts include BOS padding)."""
        o, i = self._event(ngram, self._fit_n if self.fitted else 0)
        return int(o.count[i]) if i >= 0 else 0

    def continuation_count(self, ngram: Sequence) -> int:
        """Kneser–Ney's N1+(• ngram): how many distinct tokens precede the m-gram (m < n) in training."""
        o, i = self._event(ngram, self._fit_n - 1 if self.fitted else 0)
        return int(o.cont[i]) if i >= 0 else 0

    def distinct_ngrams(self, m: int) -> int:
        """How many different m-grams (m <= n, ending in a real token or EOS) training contained."""
        self._require_fit()
        if not 1 <= m <= self._fit_n:
            raise ValueError(f"m must be in 1..{self._fit_n}, got {m}")
        return len(self._orders[m - 1].ev_keys)

    def top_next(self, context: Sequence = (), k: int = 10, *, from_start: bool = False) -> list[tuple]:
        """The ``k`` most likely next tokens and their probabilities."""
        check_int("k", k, low=1)
        p = self.next_distribution(context, from_start=from_start)
        best = np.argsort(-p, kind="stable")[:k]
        return [(self.vocab[i], float(p[i])) for i in best]

    def sample(self, n_tokens: int, seed: int = 0, context: Sequence = (), *, from_start: bool = True) -> list:
        """Sample up to ``n_tokens`` tokens after ``context`` (stops early at EOS); returns the new
        tokens. The same seed gives the same sample."""
        self._require_fit()
        if isinstance(n_tokens, bool) or not isinstance(n_tokens, int) or n_tokens < 0:
            raise ValueError(f"n_tokens must be an integer >= 0, got {n_tokens!r}")
        check_int("seed", seed, low=0)
        rng = np.random.default_rng(seed)
        hist, out, eos = list(self._context_ids(context, from_start)), [], self._stoi[EOS]
        for _ in range(n_tokens):
            p = self._dense(np.array(hist[-(self.config.n - 1):] if self.config.n > 1 else [], np.int64))
            if p.sum() <= 0:
                raise ValueError(f"the {self.config.smoothing} model gives every token probability 0 after "
                                 f"context {self.decode(hist[-(self.config.n - 1):])}; use a smoothed model")
            t = int(rng.choice(self.vocab_size, p=p / p.sum()))
            if t == eos:
                break
            out.append(self.vocab[t])
            hist.append(t)
        return out

    def __repr__(self) -> str:
        c = self.config
        extra = {"add_k": f", k={c.k}", "interpolated": f", lambdas={c.lambdas}",
                 "kneser_ney": f", discount={c.discount or 'auto'}",
                 "modified_kneser_ney": f", discount={c.discount or 'auto'}"}.get(c.smoothing, "")
        state = f"{self.vocab_size} tokens" if self.fitted else "not fitted"
        return f"NGramLM(n={c.n}, smoothing={c.smoothing!r}{extra}; {state})"
