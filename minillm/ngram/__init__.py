"""n-gram language models (chapter 1): :class:`NGramLM` and the chapter's leaderboard rows.

See :mod:`minillm.ngram.model` for the model: counting with numpy, MLE, add-k, Jelinek–Mercer
interpolation and (modified) interpolated Kneser–Ney, scoring and sampling, for any hashable tokens.
"""

from __future__ import annotations

import functools

from .model import BOS, EOS, SMOOTHINGS, UNK, NGramConfig, NGramLM, words

__all__ = ["BOS", "EOS", "SMOOTHINGS", "UNK", "NGramConfig", "NGramLM", "words", "shakespeare_char_model"]


# ----- leaderboard rows: character models fit on the Shakespeare train split -----
@functools.lru_cache(maxsize=1)
def _shakespeare_counts() -> NGramLM:
    from ..data import load_shakespeare

    return NGramLM(7, "kneser_ney").fit(load_shakespeare().train)


def shakespeare_char_model(n: int = 7, smoothing: str = "kneser_ney", **options) -> NGramLM:
    """A character model of order ``n <= 7`` on the Shakespeare train split (counted once per process)."""
    return _shakespeare_counts().replace(n=n, smoothing=smoothing, **options)


def _leaderboard_score(model: NGramLM, notes: str):
    from ..leaderboard import Score, bits_per_char, test_text

    text = test_text()
    nll, count = model.score(text, eos=False)  # every test character, the first one after BOS
    return Score(bits_per_char(nll, count), count, None, notes)


def leaderboard_mkn7():
    return _leaderboard_score(shakespeare_char_model(7, "modified_kneser_ney"),
                              "fit on train; D1, D2, D3+ from count-of-counts per order")


def leaderboard_kn7():
    return _leaderboard_score(shakespeare_char_model(7), "fit on train; D = n1/(n1+2 n2) per order")


def leaderboard_kn5():
    return _leaderboard_score(shakespeare_char_model(5), "fit on train; D = n1/(n1+2 n2) per order")


def leaderboard_kn3():
    return _leaderboard_score(shakespeare_char_model(3), "fit on train; D = n1/(n1+2 n2) per order")


def leaderboard_add_k3():
    from ..data import load_shakespeare

    base, val = shakespeare_char_model(3, "add_k"), load_shakespeare().validation
    k = min((0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0), key=lambda k: base.replace(k=k).score(val, eos=False)[0])
    return _leaderboard_score(base.replace(k=k), f"fit on train; k={k} picked on validation")
