"""Entity-level NER metrics (minillm.metrics.ner) against seqeval's default (conlleval) mode."""

from __future__ import annotations

import random
import warnings

import pytest

from minillm.metrics import EntityScore, bio_to_spans, entity_report, entity_scores

seqeval_metrics = pytest.importorskip("seqeval.metrics")
from seqeval.metrics.sequence_labeling import get_entities  # noqa: E402

TYPES = ("PER", "LOC", "ORG")


def random_tags(rng: random.Random, n: int, types=TYPES) -> list[str]:
    """Random BIO tags, including I- tags that start nothing (after O, after another type, first)."""
    out = []
    for _ in range(n):
        r = rng.random()
        out.append("O" if r < 0.45 else f"{'B' if r < 0.7 else 'I'}-{rng.choice(types)}")
    return out


def corrupt(rng: random.Random, tags: list[str], p: float) -> list[str]:
    """A prediction: each tag replaced by a random one with probability p."""
    return [random_tags(rng, 1)[0] if rng.random() < p else t for t in tags]


def seqeval_scores(true, pred) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {}
        for average in ("micro", "macro", "weighted"):
            out[average] = tuple(float(f(true, pred, average=average)) for f in
                                 (seqeval_metrics.precision_score, seqeval_metrics.recall_score,
                                  seqeval_metrics.f1_score))
        p, r, f, s = seqeval_metrics.sequence_labeling.precision_recall_fscore_support(true, pred, average=None)
        out["per_type"] = list(zip(p.tolist(), r.tolist(), f.tolist(), s.tolist()))
        return out


def assert_equal_to_seqeval(true, pred) -> None:
    ours = entity_scores(true, pred)
    ref = seqeval_scores(true, pred)
    for average in ("micro", "macro", "weighted"):
        got = getattr(ours, average)
        assert (got.precision, got.recall, got.f1) == pytest.approx(ref[average], abs=1e-12), average
    assert len(ours.per_type) == len(ref["per_type"])
    for (name, got), (p, r, f, s) in zip(ours.per_type.items(), ref["per_type"]):
        assert (got.precision, got.recall, got.f1, got.support) == pytest.approx((p, r, f, s), abs=1e-12), name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for digits in (2, 4):
            assert entity_report(true, pred, digits=digits) == seqeval_metrics.classification_report(
                true, pred, digits=digits)


def test_bio_to_spans_examples():
    assert bio_to_spans(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # I- without a matching open entity starts a new one (conlleval / seqeval default).
    assert bio_to_spans(["I-PER", "I-PER"]) == [("PER", 0, 1)]
    assert bio_to_spans(["O", "I-LOC", "B-LOC", "I-LOC"]) == [("LOC", 1, 1), ("LOC", 2, 3)]
    assert bio_to_spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]
    assert bio_to_spans(["B-PER", "B-PER"]) == [("PER", 0, 0), ("PER", 1, 1)]
    assert bio_to_spans([]) == [] and bio_to_spans(("O", "O")) == []


def test_bio_to_spans_equals_seqeval_get_entities():
    rng = random.Random(0)
    for _ in range(500):
        tags = random_tags(rng, rng.randint(0, 30))
        assert bio_to_spans(tags) == get_entities(tags)


def test_random_corpora_equal_seqeval():
    """Hundreds of random corpora, gold itself full of malformed I- starts, predictions corrupted."""
    rng = random.Random(1)
    for case in range(300):
        sentences = rng.randint(1, 6)
        true = [random_tags(rng, rng.randint(0, 15)) for _ in range(sentences)]
        pred = [corrupt(rng, t, rng.choice((0.0, 0.1, 0.5, 1.0))) for t in true]
        if not any(get_entities(t) for t in true + pred):
            continue  # no entity anywhere: seqeval's report cannot even be printed
        assert_equal_to_seqeval(true, pred)


def test_single_type_and_one_sided_cases_equal_seqeval():
    rng = random.Random(2)
    for _ in range(100):
        true = [random_tags(rng, 12, types=("PER",)) for _ in range(3)]
        pred = [["O"] * 12 for _ in range(3)] if rng.random() < 0.5 else [random_tags(rng, 12, ("LOC",)) for _ in range(3)]
        if any(get_entities(t) for t in true):
            assert_equal_to_seqeval(true, pred)


def test_real_people_daily_with_corrupted_prediction():
    from minillm.data import load_people_daily_ner

    test = load_people_daily_ner().test
    true = [list(ex.tags) for ex in test]
    rng = random.Random(3)
    # Corrupt like a weak tagger: shift some entities' types, drop some, add noise tags.
    pred = []
    for tags in true:
        out = list(tags)
        for kind, a, b in bio_to_spans(tags):
            r = rng.random()
            if r < 0.1:
                out[a:b + 1] = ["O"] * (b + 1 - a)
            elif r < 0.2:
                new = rng.choice([t for t in TYPES if t != kind])
                out[a:b + 1] = [f"B-{new}"] + [f"I-{new}"] * (b - a)
            elif r < 0.3 and b > a:
                out[b] = "O"  # boundary error
        pred.append(corrupt(rng, out, 0.01))
    assert_equal_to_seqeval(true, pred)
    perfect = entity_scores(true, true)
    assert perfect.micro.f1 == 1.0 and perfect.micro.support == sum(len(bio_to_spans(t)) for t in true)
    assert 0.0 < entity_scores(true, pred).micro.f1 < 1.0


def test_scores_by_hand():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "O"]]
    s = entity_scores(true, pred)
    assert s.per_type["PER"] == EntityScore(1.0, 1.0, 1.0, 1, 1)
    assert s.per_type["LOC"] == EntityScore(0.0, 0.0, 0.0, 1, 0)
    assert s.per_type["ORG"] == EntityScore(0.0, 0.0, 0.0, 1, 1)
    assert (s.micro.precision, s.micro.recall) == (0.5, pytest.approx(1 / 3))
    assert s.macro.f1 == pytest.approx(1 / 3)
    # An entity is right only with the same type and both boundaries.
    assert entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]]).micro.f1 == 0.0


def test_no_entities_anywhere_scores_zero():
    s = entity_scores([["O", "O"]], [["O", "O"]])
    assert s.per_type == {} and s.micro == EntityScore(0.0, 0.0, 0.0, 0, 0) and s.macro.f1 == 0.0


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"true_tags and pred_tags must have the same length, got 2 and 1"):
        entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(ValueError, match=r"sentence 1: true_tags has 2 tags but pred_tags has 1"):
        entity_scores([["O"], ["O", "O"]], [["O"], ["O"]])
    with pytest.raises(ValueError, match=r"tags\[1\] = 'E-PER' is not a BIO tag"):
        bio_to_spans(["B-PER", "E-PER"])
    for bad in ("B-", "PER", "b-PER", "S-LOC", ""):
        with pytest.raises(ValueError, match="is not a BIO tag"):
            bio_to_spans([bad])
    with pytest.raises(TypeError, match=r"tags\[0\] must be a tag string"):
        bio_to_spans([1])
    with pytest.raises(TypeError, match="tags must be a list of tag strings, got str"):
        bio_to_spans("B-PER")
    with pytest.raises(TypeError, match="flat list of tags"):
        entity_scores(["B-PER", "O"], ["B-PER", "O"])
    with pytest.raises(ValueError, match="is not a BIO tag"):
        entity_scores([["O", "X-PER"]], [["O", "O"]])
    with pytest.raises(ValueError, match="digits"):
        entity_report([["B-PER"]], [["B-PER"]], digits=-1)
