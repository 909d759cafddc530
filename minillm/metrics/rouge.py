"""ROUGE-N and ROUGE-L (Lin, 2004) from scratch, equal to Google's ``rouge-score`` package.

ROUGE compares a prediction with a target (reference) text by overlap, and its headline number was
designed as *recall*: how much of the reference the prediction covers, which suits summaries
(a good summary contains the reference's content; length is limited by the task instead).

* ROUGE-N counts shared n-grams: recall = overlap / target n-grams, precision = overlap /
  prediction n-grams, where an n-gram is shared as often as the smaller of its two counts.
* ROUGE-L uses the longest common subsequence (LCS): in-order words, not necessarily adjacent, so
  it rewards the right order without demanding contiguous phrases. ROUGE-Lsum applies it per
  sentence (one per line) and pools the matches over the summary.

Both report (precision, recall, F1). Like ``rouge_score.rouge_scorer.RougeScorer`` without a
stemmer, text is lowercased and split into runs of ``[a-z0-9]``: anything else, accents and
Chinese included, is dropped. Pass ``tokenizer=char_tokenize`` to score Chinese per character.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, NamedTuple, Sequence

from ..validation import checked_tokenizer

_WORD = re.compile(r"[a-z0-9]+")
_ROUGE_N = re.compile(r"rouge([1-9])")


class Score(NamedTuple):
    """(precision, recall, fmeasure), the shape of ``rouge_score.scoring.Score``."""

    precision: float
    recall: float
    fmeasure: float


def rouge_tokenize(text: str) -> list[str]:
    """rouge-score's default tokens: lowercase, keep runs of ASCII letters and digits only."""
    return _WORD.findall(text.lower())


def char_tokenize(text: str) -> list[str]:
    """Every non-space character is a token: the right unit for Chinese text."""
    return [c for c in text if not c.isspace()]


class CharTokenizer:
    """``char_tokenize`` as an object with ``.tokenize``, the interface rouge-score accepts."""

    def tokenize(self, text: str) -> list[str]:
        return char_tokenize(text)


def fmeasure(precision: float, recall: float) -> float:
    """Harmonic mean 2PR/(P+R), 0 when both are 0."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def ngrams(tokens: Sequence[str], n: int) -> Counter:
    """Counts of the n-grams (tuples) of ``tokens``."""
    return Counter(zip(*(tokens[i:] for i in range(n))))


def rouge_n(target_tokens: Sequence[str], prediction_tokens: Sequence[str], n: int) -> Score:
    """ROUGE-N from token lists: clipped n-gram overlap over prediction (P) and target (R)."""
    target, prediction = ngrams(target_tokens, n), ngrams(prediction_tokens, n)
    overlap = sum(min(count, prediction[g]) for g, count in target.items() if g in prediction)
    precision = overlap / max(sum(prediction.values()), 1)
    recall = overlap / max(sum(target.values()), 1)
    return Score(precision, recall, fmeasure(precision, recall))


def lcs_length_table(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence by the textbook O(len(a)·len(b)) table.

    ``row[j]`` holds the LCS of the prefix of ``a`` read so far and ``b[:j]``; one row suffices.
    """
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0  # table[i-1][j-1]
        for j, y in enumerate(b, start=1):
            up = row[j]  # table[i-1][j]
            row[j] = diagonal + 1 if x == y else max(up, row[j - 1])
            diagonal = up
    return row[-1]


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence, bit-parallel (Allison & Dix 1986; Hyyrö 2004).

    Same answer as :func:`lcs_length_table` but one big-integer update per token of ``b``: bit i
    of ``v`` is 0 where the LCS grows at ``a[i]``; adding ``u`` propagates carries along a row of
    the table at machine-word speed. The number of zero bits at the end is the LCS length.
    """
    for name, seq in (("a", a), ("b", b)):
        if seq is None or not hasattr(seq, "__len__") or not hasattr(seq, "__iter__"):
            raise TypeError(f"{name} must be a sequence of tokens, got {type(seq).__name__}")
    if not len(a) or not len(b):
        return 0
    match: dict = {}
    for i, x in enumerate(a):  # match[x] has bit i set where a[i] == x
        match[x] = match.get(x, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for y in b:
        u = v & match.get(y, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l(target_tokens: Sequence[str], prediction_tokens: Sequence[str]) -> Score:
    """ROUGE-L from token lists: LCS length over prediction (P) and target (R) lengths."""
    if not target_tokens or not prediction_tokens:
        return Score(0.0, 0.0, 0.0)
    lcs = lcs_length(target_tokens, prediction_tokens)
    precision, recall = lcs / len(prediction_tokens), lcs / len(target_tokens)
    return Score(precision, recall, fmeasure(precision, recall))


def lcs_indices(a: Sequence, b: Sequence) -> list[int]:
    """Positions in ``a`` of one longest common subsequence with ``b``, read back from the table.

    Walking back from the bottom-right corner, a match steps diagonally; otherwise the walk moves
    left only when that cell is strictly larger, else up (rouge-score's choice among equal LCSs).
    """
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = (table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1]
                           else max(table[i - 1][j], table[i][j - 1]))
    i, j, picked = len(a), len(b), []
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1]:
            picked.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return picked[::-1]


def rouge_lsum(target_sentences: Sequence[Sequence[str]],
               prediction_sentences: Sequence[Sequence[str]]) -> Score:
    """Summary-level ROUGE-L (Lin 2004, section 3.2) from tokenized sentences.

    For each target sentence, take the union of its LCS positions with every prediction sentence;
    a token of that union is a hit while unused copies of it remain on both sides (so a word is
    never credited more often than it occurs), as ROUGE-1.5.5 and rouge-score count it.
    """
    m = sum(len(s) for s in target_sentences)
    n = sum(len(s) for s in prediction_sentences)
    if not m or not n:
        return Score(0.0, 0.0, 0.0)
    left_target = Counter(t for s in target_sentences for t in s)
    left_prediction = Counter(t for s in prediction_sentences for t in s)
    hits = 0
    for sentence in target_sentences:
        union = sorted(set().union(*(lcs_indices(sentence, p) for p in prediction_sentences)))
        for token in (sentence[i] for i in union):
            if left_target[token] > 0 and left_prediction[token] > 0:
                hits += 1
                left_target[token] -= 1
                left_prediction[token] -= 1
    precision, recall = hits / n, hits / m
    return Score(precision, recall, fmeasure(precision, recall))


def _get_tokenizer(tokenizer) -> Callable[[str], list[str]]:
    if tokenizer is None:
        return rouge_tokenize
    fn = tokenizer.tokenize if hasattr(tokenizer, "tokenize") else tokenizer if callable(tokenizer) else None
    if fn is not None:
        return checked_tokenizer("tokenizer", fn)
    raise TypeError(f"tokenizer must be a function str -> list[str] or have .tokenize, got "
                    f"{type(tokenizer).__name__}")


def rouge(target: str, prediction: str,
          rouge_types: Sequence[str] = ("rouge1", "rouge2", "rougeL"), *,
          tokenizer: Callable[[str], list[str]] | object | None = None) -> dict[str, Score]:
    """ROUGE scores of ``prediction`` against ``target``, as ``RougeScorer(types).score(target,
    prediction)`` computes them (no stemmer).

    Args:
        target: the reference text.
        prediction: the system output.
        rouge_types: any of ``"rouge1"`` … ``"rouge9"``, ``"rougeL"`` and ``"rougeLsum"``
            (summary-level LCS over the lines of the texts).
        tokenizer: a function str -> list[str] or an object with ``.tokenize`` (rouge-score's
            interface); default :func:`rouge_tokenize`. Use :func:`char_tokenize` for Chinese.

    Returns:
        ``{rouge_type: Score(precision, recall, fmeasure)}``.
    """
    if not isinstance(target, str) or not isinstance(prediction, str):
        raise TypeError(f"target and prediction must be str, got {type(target).__name__} and "
                        f"{type(prediction).__name__}")
    if isinstance(rouge_types, str):
        rouge_types = (rouge_types,)
    if not isinstance(rouge_types, (list, tuple)) or not rouge_types:
        raise TypeError(f"rouge_types must be a non-empty list of names like 'rouge1', 'rougeL', got "
                        f"{rouge_types!r:.60}")
    bad = [t for t in rouge_types if not isinstance(t, str) or not (
        t in ("rougeL", "rougeLsum") or _ROUGE_N.fullmatch(t))]
    if bad:
        raise ValueError(f"unknown rouge type {bad[0]!r}; expected 'rouge1'..'rouge9', 'rougeL' or "
                         f"'rougeLsum'")
    tok = _get_tokenizer(tokenizer)
    target_tokens, prediction_tokens = tok(target), tok(prediction)
    result = {}
    for rouge_type in rouge_types:
        if rouge_type == "rougeL":
            result[rouge_type] = rouge_l(target_tokens, prediction_tokens)
        elif rouge_type == "rougeLsum":  # sentences are the text's lines
            result[rouge_type] = rouge_lsum([tok(s) for s in target.split("\n") if s],
                                            [tok(s) for s in prediction.split("\n") if s])
        elif m := _ROUGE_N.fullmatch(rouge_type):
            result[rouge_type] = rouge_n(target_tokens, prediction_tokens, int(m.group(1)))
        else:
            raise ValueError(f"unknown rouge type {rouge_type!r}; expected 'rouge1'..'rouge9', "
                             "'rougeL' or 'rougeLsum'")
    return result
