"""BLEU (Papineni et al., 2002) from scratch, equal to sacrebleu's ``corpus_bleu`` with its defaults.

BLEU scores a corpus of machine translations against one or more reference translations:

    BLEU = BP · exp( (1/N) Σₙ log pₙ ),   BP = min(1, exp(1 − r/c))

where pₙ is the *clipped* n-gram precision (a hypothesis n-gram counts as correct at most as often
as it appears in a reference), N = 4, c is the total hypothesis length and r the total length of
the reference closest in length to each hypothesis. Statistics are summed over the whole corpus
*before* dividing, which is why corpus BLEU is not the mean of sentence BLEUs.

Text is first split into tokens by the ``13a`` rules of WMT's ``mteval-v13a.pl`` (the sacrebleu
default), so that scores are comparable between papers. Precisions that are zero are smoothed
with the ``exp`` method (NIST): the k-th order with no match gets precision 1/(2ᵏ · total).
Reference: Post, "A Call for Clarity in Reporting BLEU Scores" (WMT 2018), i.e. sacrebleu 2.x.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from ..validation import check_bool, check_float, check_int, check_str, checked_tokenizer

MAX_ORDER = 4
SMOOTH_METHODS = {"exp": None, "none": None, "floor": 0.1, "add-k": 1}  # method -> default value

# --- the 13a tokenizer --------------------------------------------------------------------------
# mteval-v13a splits off every ASCII symbol except the apostrophe, hyphen, period and comma ...
_SYMBOLS = "".join(chr(c) for c in range(33, 127)
                   if not chr(c).isalnum() and chr(c) not in "'-.,")
_PAD_SYMBOLS = str.maketrans({c: f" {c} " for c in _SYMBOLS})
# ... then periods and commas unless they sit inside a number (3.14, 10,000), and a hyphen that
# follows a digit (1990-91). These run as regex passes, in this order, because a character used up
# by one match cannot start the next: "a.." splits only its first period in the first pass.
_NUMBER_AWARE = (
    (re.compile(r"([^0-9])([.,])"), r"\1 \2 "),  # period/comma after a non-digit
    (re.compile(r"([.,])([^0-9])"), r" \1 \2"),  # period/comma before a non-digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # hyphen after a digit
)
_ENTITIES = (("&quot;", '"'), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"))  # order matters


def tokenize_13a(line: str) -> list[str]:
    """Split one segment into tokens by the ``13a`` rules (mteval-v13a.pl, sacrebleu's default)."""
    check_str("line", line)
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        for entity, char in _ENTITIES:
            line = line.replace(entity, char)
    line = f" {line} ".translate(_PAD_SYMBOLS)
    for pattern, replacement in _NUMBER_AWARE:
        line = pattern.sub(replacement, line)
    return line.split()


def tokenize_char(line: str) -> list[str]:
    """Every non-space character is a token (sacrebleu's ``char``; use it for Chinese)."""
    return [c for c in line if not c.isspace()]


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "13a": tokenize_13a, "none": str.split, "char": tokenize_char}


def _get_tokenizer(tokenize: str | Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    if callable(tokenize):
        return checked_tokenizer("tokenize", tokenize)
    if tokenize not in TOKENIZERS:
        raise ValueError(f"unknown tokenize={tokenize!r}; expected one of {sorted(TOKENIZERS)} "
                         "or a function str -> list[str]")
    return TOKENIZERS[tokenize]


# --- the pieces of BLEU ---------------------------------------------------------------------------
def ngram_counts(tokens: Sequence[str], max_order: int = MAX_ORDER) -> Counter:
    """Counts of every n-gram (as a tuple) of orders 1..max_order in ``tokens``."""
    counts: Counter = Counter()
    for n in range(1, max_order + 1):
        counts.update(zip(*(tokens[i:] for i in range(n))))
    return counts


def clipped_matches(hyp_counts: Counter, ref_counts: Counter, max_order: int = MAX_ORDER
                    ) -> tuple[list[int], list[int]]:
    """(correct, total) per order: hypothesis n-grams, each clipped to its count in the reference."""
    correct, total = [0] * max_order, [0] * max_order
    for ngram, count in hyp_counts.items():
        n = len(ngram) - 1
        total[n] += count
        if ngram in ref_counts:
            correct[n] += min(count, ref_counts[ngram])
    return correct, total


def brevity_penalty(sys_len: int, ref_len: int) -> float:
    """exp(1 − r/c) when the hypotheses are shorter than the references, else 1 (0 if c = 0)."""
    if sys_len >= ref_len:
        return 1.0
    return math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0


def closest_ref_len(hyp_len: int, ref_lens: Sequence[int]) -> int:
    """The reference length nearest to ``hyp_len``; ties go to the shorter reference."""
    return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


@dataclass
class BLEUScore:
    """A BLEU result with sacrebleu's field names: ``score`` is on a 0–100 scale."""

    score: float  # BLEU, 0..100
    counts: list[int]  # clipped n-gram matches per order
    totals: list[int]  # hypothesis n-grams per order
    precisions: list[float]  # (smoothed) n-gram precisions per order, in percent
    bp: float  # brevity penalty
    sys_len: int  # total hypothesis tokens
    ref_len: int  # total length of the closest references

    @property
    def ratio(self) -> float:
        return self.sys_len / self.ref_len if self.ref_len else 0.0

    def __str__(self) -> str:
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU = {self.score:.2f} {precisions} (BP = {self.bp:.3f} ratio = {self.ratio:.3f} "
                f"hyp_len = {self.sys_len:d} ref_len = {self.ref_len:d})")


def bleu_from_stats(correct: Sequence[float], total: Sequence[float], sys_len: int, ref_len: int,
                    *, smooth_method: str = "exp", smooth_value: float | None = None,
                    use_effective_order: bool = False, max_order: int = MAX_ORDER) -> BLEUScore:
    """BLEU from summed corpus statistics: clipped precisions, smoothing, geometric mean, BP."""
    if smooth_method not in SMOOTH_METHODS:
        raise ValueError(f"unknown smooth_method={smooth_method!r}; expected one of "
                         f"{list(SMOOTH_METHODS)}")
    check_int("max_order", max_order, low=1)
    check_bool("use_effective_order", use_effective_order)
    check_float("smooth_value", smooth_value, low=0, allow_none=True)
    if smooth_value is None:
        smooth_value = SMOOTH_METHODS[smooth_method]
    correct, total = list(correct), list(total)
    bp = brevity_penalty(sys_len, ref_len)
    precisions = [0.0] * max_order
    if not any(correct):  # nothing matched at all: BLEU is 0 whatever the smoothing
        return BLEUScore(0.0, correct, total, precisions, bp, sys_len, ref_len)

    order, zeros_seen = max_order, 0
    for n in range(max_order):
        if smooth_method == "add-k" and n > 0:
            correct[n] += smooth_value
            total[n] += smooth_value
        if total[n] == 0:  # hypotheses too short to have n-grams of this order
            break
        if use_effective_order:
            order = n + 1
        if correct[n] > 0:
            precisions[n] = 100.0 * correct[n] / total[n]
        elif smooth_method == "exp":
            zeros_seen += 1
            precisions[n] = 100.0 / (2 ** zeros_seen * total[n])
        elif smooth_method == "floor":
            precisions[n] = 100.0 * smooth_value / total[n]

    if any(p == 0.0 for p in precisions[:order]):  # log 0 = -inf: the geometric mean is 0
        return BLEUScore(0.0, correct, total, precisions, bp, sys_len, ref_len)
    score = bp * math.exp(sum(math.log(p) for p in precisions[:order]) / order)
    return BLEUScore(score, correct, total, precisions, bp, sys_len, ref_len)


# --- public entry points (sacrebleu's argument shapes) --------------------------------------------
def _check_inputs(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]]) -> None:
    if isinstance(hypotheses, str) or not isinstance(hypotheses, Sequence):
        raise TypeError(f"hypotheses must be a list of strings, got {type(hypotheses).__name__}")
    if not hypotheses:
        raise ValueError("hypotheses is empty: BLEU of an empty corpus is undefined")
    for i, h in enumerate(hypotheses):
        if not isinstance(h, str):
            raise TypeError(f"hypotheses[{i}] must be a str, got {type(h).__name__} ({h!r:.40})")
    if isinstance(references, str) or not isinstance(references, Sequence) or not references:
        raise TypeError("references must be a non-empty list of reference streams, each a list of "
                        f"strings (sacrebleu's shape), got {references!r:.80}")
    for k, stream in enumerate(references):
        if isinstance(stream, str) or not isinstance(stream, Sequence):
            raise TypeError(f"references[{k}] must be a list of strings (one per hypothesis), got "
                            f"{type(stream).__name__}: wrap a single stream as [refs]")
        if len(stream) != len(hypotheses):
            raise ValueError(f"references[{k}] has {len(stream)} segments but there are "
                             f"{len(hypotheses)} hypotheses")
        bad = next((r for r in stream if r is not None and not isinstance(r, str)), None)
        if bad is not None:
            raise TypeError(f"references[{k}] holds a {type(bad).__name__} ({bad!r:.40}); "
                            "expected str or None")


def corpus_bleu_stats(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]], *,
                      tokenize: str | Callable[[str], list[str]] = "13a", lowercase: bool = False,
                      max_order: int = MAX_ORDER) -> tuple[list[int], list[int], int, int]:
    """Summed (correct per order, total per order, sys_len, ref_len) over a corpus."""
    _check_inputs(hypotheses, references)
    check_int("max_order", max_order, low=1)
    check_bool("lowercase", lowercase)
    tok = _get_tokenizer(tokenize)

    def prepare(line: str) -> list[str]:
        return tok(line.lower().rstrip() if lowercase else line.rstrip())

    correct, total, sys_len, ref_len = [0] * max_order, [0] * max_order, 0, 0
    for i, hyp in enumerate(hypotheses):
        refs = [prepare(stream[i]) for stream in references if stream[i] is not None]
        if not refs:
            raise ValueError(f"hypothesis {i} has no reference (every stream holds None there)")
        ref_counts = ngram_counts(refs[0], max_order)
        for ref in refs[1:]:  # several references: an n-gram may match as often as in any one
            ref_counts |= ngram_counts(ref, max_order)
        hyp_tokens = prepare(hyp)
        c, t = clipped_matches(ngram_counts(hyp_tokens, max_order), ref_counts, max_order)
        for n in range(max_order):
            correct[n] += c[n]
            total[n] += t[n]
        sys_len += len(hyp_tokens)
        ref_len += closest_ref_len(len(hyp_tokens), [len(r) for r in refs])
    return correct, total, sys_len, ref_len


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]], *,
                smooth_method: str = "exp", smooth_value: float | None = None,
                tokenize: str | Callable[[str], list[str]] = "13a", lowercase: bool = False,
                use_effective_order: bool = False, max_order: int = MAX_ORDER,
                force: bool = False) -> BLEUScore:
    """Corpus BLEU, equal to ``sacrebleu.corpus_bleu`` called with the same arguments.

    Args:
        hypotheses: one system output string per segment.
        references: a list of reference *streams*; stream k holds the k-th reference of every
            segment (so one reference per segment is ``[refs]``). ``None`` marks a missing one.
        smooth_method: ``"exp"`` (default), ``"floor"``, ``"add-k"`` or ``"none"``.
        smooth_value: the constant for ``floor`` (0.1) and ``add-k`` (1).
        tokenize: ``"13a"`` (default), ``"char"``, ``"none"`` or a function str -> list[str].
        lowercase: compare case-insensitively.
        use_effective_order: average only over the orders the hypotheses are long enough to have.
        max_order: the largest n-gram order N.
        force: accepted so sacrebleu calls work unchanged; it only silences a warning there.
    """
    if smooth_method not in SMOOTH_METHODS:  # before the corpus is tokenized
        raise ValueError(f"unknown smooth_method={smooth_method!r}; expected one of "
                         f"{list(SMOOTH_METHODS)}")
    correct, total, sys_len, ref_len = corpus_bleu_stats(
        hypotheses, references, tokenize=tokenize, lowercase=lowercase, max_order=max_order)
    return bleu_from_stats(correct, total, sys_len, ref_len, smooth_method=smooth_method,
                           smooth_value=smooth_value, use_effective_order=use_effective_order,
                           max_order=max_order)


def sentence_bleu(hypothesis: str, references: Sequence[str], *, smooth_method: str = "exp",
                  smooth_value: float | None = None,
                  tokenize: str | Callable[[str], list[str]] = "13a", lowercase: bool = False,
                  use_effective_order: bool = True) -> BLEUScore:
    """BLEU of one sentence against its references (``sacrebleu.sentence_bleu``'s defaults).

    BLEU was designed for corpora; on one sentence it is noisy and mostly decided by smoothing.
    """
    if not isinstance(hypothesis, str):
        raise TypeError(f"hypothesis must be a str, got {type(hypothesis).__name__}")
    if isinstance(references, str):
        raise TypeError("references must be a list of strings, got a single str: use [reference]")
    if references is None or not isinstance(references, Sequence):
        raise TypeError(f"references must be a list of strings, got {type(references).__name__}")
    return corpus_bleu([hypothesis], [[r] for r in references], smooth_method=smooth_method,
                       smooth_value=smooth_value, tokenize=tokenize, lowercase=lowercase,
                       use_effective_order=use_effective_order)
