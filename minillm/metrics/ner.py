"""Entity-level scores for BIO-tagged sequences (named-entity recognition).

A tagger labels every token (here: every Chinese character) ``O`` or ``B-TYPE`` / ``I-TYPE``. What
counts is not the tags but the entities they spell: an entity is right only if its type, first and
last token all match. Per type, with TP = predicted entities that are also gold entities:

    precision = TP / predicted entities    recall = TP / gold entities    F1 = 2PR / (P + R)

Decoding follows the CoNLL-2000 ``conlleval`` script and ``seqeval``'s default (non-strict) mode,
and the results equal ``seqeval.metrics`` (tested): an entity starts at ``B-X``, and also at an
``I-X`` that does not continue an entity of type X (after ``O``, after another type, or first in the
sequence); it continues over following ``I-X`` and ends before ``O``, any ``B-``, or a tag of another
type. So ``["I-PER", "I-PER"]`` is one PER entity and ``["B-PER", "I-LOC"]`` is two entities.
A ratio with a zero denominator is 0, as in ``seqeval`` with ``zero_division=0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..validation import check_int, check_same_length

Span = tuple[str, int, int]  # (type, start, end): tokens start .. end inclusive, like seqeval


def _parse(tag: object, where: str) -> tuple[str, str]:
    """(prefix, type) of one BIO tag: ("O", "") or ("B"/"I", type)."""
    if not isinstance(tag, str):
        raise TypeError(f"{where} must be a tag string ('O', 'B-TYPE' or 'I-TYPE'), got {type(tag).__name__} {tag!r}")
    if tag == "O":
        return "O", ""
    if tag[:2] in ("B-", "I-") and len(tag) > 2:
        return tag[0], tag[2:]
    raise ValueError(f"{where} = {tag!r} is not a BIO tag: expected 'O', 'B-TYPE' or 'I-TYPE' "
                     "(other schemes such as IOBES are not supported)")


def _sequence(name: str, tags: object) -> Sequence[str]:
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Sequence):
        raise TypeError(f"{name} must be a list of tag strings, got {type(tags).__name__}")
    return tags


def bio_to_spans(tags: Sequence[str]) -> list[Span]:
    """Entities of one BIO tag sequence as ``(type, start, end)`` with ``end`` inclusive, in order.

    ``bio_to_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]``. An ``I-X``
    that does not continue an X entity starts a new one (conlleval / seqeval default).
    """
    tags = _sequence("tags", tags)
    spans: list[Span] = []
    start, kind = -1, ""  # the open entity, if start >= 0
    for i, tag in enumerate(tags):
        prefix, type_ = _parse(tag, f"tags[{i}]")
        if start >= 0 and (prefix != "I" or type_ != kind):
            spans.append((kind, start, i - 1))
            start = -1
        if prefix == "B" or (prefix == "I" and start < 0):
            start, kind = i, type_
    if start >= 0:
        spans.append((kind, start, len(tags) - 1))
    return spans


@dataclass(frozen=True)
class EntityScore:
    """Precision, recall and F1 of one entity type (or an average), with ``support`` = gold entities
    and ``predicted`` = predicted entities (summed over types for an average)."""

    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


@dataclass(frozen=True)
class EntityScores:
    """Per-type scores (types in sorted order) and their micro, macro and support-weighted averages.

    Micro pools the entity counts of all types (the headline NER number, ``seqeval``'s default);
    macro is the unweighted mean over types, so rare types count as much as frequent ones.
    """

    per_type: dict[str, EntityScore]
    micro: EntityScore
    macro: EntityScore
    weighted: EntityScore


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def _sentences(name: str, value: object) -> Sequence[Sequence[str]]:
    value = _sequence(name, value)
    if value and all(isinstance(t, str) for t in value):
        raise TypeError(f"{name} must be a list of sentences (lists of tags); got one flat list of tags: "
                        f"wrap it as [{name}]")
    return [_sequence(f"{name}[{i}]", s) for i, s in enumerate(value)]


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> EntityScores:
    """Entity-level precision, recall and F1 per type and averaged, for a corpus of tagged sentences.

    Equal to ``seqeval.metrics`` in its default mode (``precision_score``/``recall_score``/``f1_score``
    with ``average="micro"``, ``"macro"``, ``"weighted"`` or ``None``, and ``classification_report``).

    Args:
        true_tags: gold BIO tags, one list per sentence.
        pred_tags: predicted BIO tags, same number of sentences and tokens per sentence.
    """
    true_tags, pred_tags = _sentences("true_tags", true_tags), _sentences("pred_tags", pred_tags)
    check_same_length(("true_tags", "pred_tags"), true_tags, pred_tags)
    gold: dict[str, set[tuple[int, int, int]]] = {}
    pred: dict[str, set[tuple[int, int, int]]] = {}
    for k, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"sentence {k}: true_tags has {len(t)} tags but pred_tags has {len(p)}")
        for kind, a, b in bio_to_spans(t):
            gold.setdefault(kind, set()).add((k, a, b))
        for kind, a, b in bio_to_spans(p):
            pred.setdefault(kind, set()).add((k, a, b))
    per_type = {}
    for kind in sorted(gold.keys() | pred.keys()):
        g, q = gold.get(kind, set()), pred.get(kind, set())
        tp = len(g & q)
        precision, recall = _ratio(tp, len(q)), _ratio(tp, len(g))
        per_type[kind] = EntityScore(precision, recall, _f1(precision, recall), len(g), len(q))
    support = sum(s.support for s in per_type.values())
    predicted = sum(s.predicted for s in per_type.values())
    tp = sum(len(gold.get(k, set()) & pred.get(k, set())) for k in per_type)
    mp, mr = _ratio(tp, predicted), _ratio(tp, support)
    micro = EntityScore(mp, mr, _f1(mp, mr), support, predicted)
    scores = list(per_type.values())
    macro = EntityScore(*(_ratio(sum(getattr(s, f) for s in scores), len(scores))
                          for f in ("precision", "recall", "f1")), support, predicted)
    weighted = EntityScore(*(_ratio(sum(getattr(s, f) * s.support for s in scores), support)
                             for f in ("precision", "recall", "f1")), support, predicted)
    return EntityScores(per_type, micro, macro, weighted)


def entity_report(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]], digits: int = 2) -> str:
    """A per-type precision/recall/F1/support table with micro, macro and weighted averages, laid out
    exactly like ``seqeval.metrics.classification_report`` (same text for the same ``digits``)."""
    digits = check_int("digits", digits, low=0, high=10)
    scores = entity_scores(true_tags, pred_tags)
    width = max([len(name) for name in scores.per_type] + [len("weighted avg"), digits])
    header = f"{'':>{width}s} " + "".join(f" {h:>9}" for h in ("precision", "recall", "f1-score", "support"))

    def row(name: str, s: EntityScore) -> str:
        cells = "".join(f" {v:>9.{digits}f}" for v in (s.precision, s.recall, s.f1))
        return f"{name:>{width}s} {cells} {s.support:>9}"

    lines = [row(name, s) for name, s in scores.per_type.items()] + [""]
    lines += [row("micro avg", scores.micro), row("macro avg", scores.macro), row("weighted avg", scores.weighted), ""]
    return header + "\n\n" + "\n".join(lines)
