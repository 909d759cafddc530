"""Parity of minillm.metrics with sacrebleu, rouge-score and torch on the shipped corpora."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from minillm import leaderboard
from minillm.data import load_en_es, load_rotten_tomatoes, load_shakespeare, load_tang_poems
from minillm.metrics import (CharTokenizer, LMScore, NaiveBayesClassifier, accuracy,
                             bits_per_char, char_tokenize, confusion_matrix, corpus_bleu,
                             cross_entropy, cross_entropy_from_logits, lcs_length, perplexity,
                             precision_recall_curve, precision_recall_f1,
                             precision_recall_f1_from_confusion, rouge, sentence_bleu,
                             tokenize_13a)
from minillm.metrics.bleu import brevity_penalty, closest_ref_len
from minillm.metrics.rouge import lcs_length_table

TYPES = ("rouge1", "rouge2", "rougeL")
EDGE_STRINGS = [
    "", "   ", "a..b", "1,000.5 and 3.14.", "1990-91 - x", "&amp;lt; &quot;hi&quot; &gt;",
    "it's -- fine...", "<skipped> broken-\nline", "¿Qué? ¡Sí! «comillas»", ".start", "a ,b,c",
    "x\u3000y\xa0z", "e.g., U.S.A. 5.", "tab\there\n", "naïve café — ok", "床前明月光，疑是地上霜。",
    "emoji 🙂 ok!", "$5.00/hour (approx.) {x} [y] ~z^ `q` |p| @me #tag",
]


# --- data ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def en_es():
    return load_en_es()


@pytest.fixture(scope="module")
def shakespeare_lines():
    return [line for line in load_shakespeare().validation.split("\n") if line.strip()]


@pytest.fixture(scope="module")
def poems():
    return load_tang_poems().train


def _perturb(rng: random.Random, sentence: str) -> str:
    """A plausible 'system output': the sentence dropped, shuffled, cut, padded or left alone."""
    words, r = sentence.split(), rng.random()
    if r < 0.1:
        return ""
    if r < 0.3:
        rng.shuffle(words)
    elif r < 0.5:
        words = words[: rng.randint(0, len(words))]
    elif r < 0.7:
        words = words + words[: rng.randint(1, max(1, len(words)))]
    elif r < 0.85:
        words = [w for w in words if rng.random() < 0.7]
    return " ".join(words)


def _assert_bleu_equal(ours, ref):
    assert ours.score == pytest.approx(ref.score, abs=1e-6)
    assert ours.precisions == pytest.approx(ref.precisions, abs=1e-9)
    assert ours.bp == pytest.approx(ref.bp, abs=1e-12)
    assert (ours.sys_len, ours.ref_len) == (ref.sys_len, ref.ref_len)
    assert list(ours.counts) == list(ref.counts) and list(ours.totals) == list(ref.totals)


# --- the 13a tokenizer --------------------------------------------------------------------------
def test_tokenize_13a_matches_sacrebleu(en_es, shakespeare_lines):
    ref = Tokenizer13a()
    texts = [p.en for p in en_es.test] + [p.es for p in en_es.test] + shakespeare_lines[:3000]
    texts += EDGE_STRINGS
    mismatches = [t for t in texts if tokenize_13a(t) != ref(t).split()]
    assert not mismatches, mismatches[:5]


def test_tokenize_13a_rules():
    assert tokenize_13a("Hello, world.") == ["Hello", ",", "world", "."]
    assert tokenize_13a("3.14 and 1,000") == ["3.14", "and", "1,000"]  # numbers stay whole
    assert tokenize_13a("don't") == ["don't"]  # the apostrophe is not split off
    assert tokenize_13a("1990-91") == ["1990", "-", "91"]
    assert tokenize_13a("well-known") == ["well-known"]


# --- BLEU ---------------------------------------------------------------------------------------
def test_corpus_bleu_spanish_single_reference(en_es):
    refs = [p.es for p in en_es.test]
    rng = random.Random(0)
    hyps = [_perturb(rng, r) for r in refs]
    _assert_bleu_equal(corpus_bleu(hyps, [refs]), sacrebleu.corpus_bleu(hyps, [refs]))


def test_corpus_bleu_copy_source_baseline(en_es):
    """English copied through as a 'translation' of Spanish: low but nonzero, exactly equal."""
    hyps, refs = [p.en for p in en_es.validation], [p.es for p in en_es.validation]
    ours, ref = corpus_bleu(hyps, [refs]), sacrebleu.corpus_bleu(hyps, [refs])
    _assert_bleu_equal(ours, ref)
    assert 0 < ours.score < 10


def test_corpus_bleu_multiple_references(en_es, shakespeare_lines):
    rng = random.Random(1)
    refs = [p.es for p in en_es.validation[:200]]
    streams = [refs, [_perturb(rng, r) for r in refs], [_perturb(rng, r) for r in refs]]
    hyps = [_perturb(rng, r) for r in refs]
    _assert_bleu_equal(corpus_bleu(hyps, streams), sacrebleu.corpus_bleu(hyps, streams))
    # More references can only help: each n-gram may match as often as in any one of them.
    assert corpus_bleu(hyps, streams).score >= corpus_bleu(hyps, streams[:1]).score


def test_corpus_bleu_missing_reference_marked_none(en_es):
    refs = [p.es for p in en_es.validation[:50]]
    second = [None if i % 3 else _perturb(random.Random(i), r) for i, r in enumerate(refs)]
    hyps = [_perturb(random.Random(100 + i), r) for i, r in enumerate(refs)]
    _assert_bleu_equal(corpus_bleu(hyps, [refs, second]),
                       sacrebleu.corpus_bleu(hyps, [refs, second]))


@pytest.mark.parametrize("hyps,refs", [
    ([""], ["a reference sentence ."]),
    (["", "", ""], ["one", "two words", "three little words"]),
    (["the cat"], ["the cat sat on the mat"]),  # too short for 3- and 4-grams
    (["the the the the the the the"], ["the cat is on the mat"]),
    (["x"], [""]),  # empty reference
    (["", "a b c d e"], ["", "a b c d e"]),
    (EDGE_STRINGS, EDGE_STRINGS[::-1]),
    (EDGE_STRINGS, EDGE_STRINGS),
])
def test_corpus_bleu_edge_cases(hyps, refs):
    _assert_bleu_equal(corpus_bleu(hyps, [refs]), sacrebleu.corpus_bleu(hyps, [refs]))


def test_corpus_bleu_unicode_chinese_with_char_tokenizer(poems):
    hyps = [p.text for p in poems[:40]]
    refs = [p.text for p in poems[1:41]]
    for tok in ("13a", "char"):
        _assert_bleu_equal(corpus_bleu(hyps, [refs], tokenize=tok),
                           sacrebleu.corpus_bleu(hyps, [refs], tokenize=tok))


@pytest.mark.parametrize("smooth_method", ["exp", "none", "floor", "add-k"])
@pytest.mark.parametrize("effective", [False, True])
def test_corpus_bleu_smoothing_and_options(en_es, smooth_method, effective):
    rng = random.Random(2)
    refs = [p.es for p in en_es.test[:60]]
    hyps = [" ".join(r.split()[: rng.randint(0, 4)]) for r in refs]  # very short outputs
    kw = dict(smooth_method=smooth_method, use_effective_order=effective, lowercase=True)
    _assert_bleu_equal(corpus_bleu(hyps, [refs], **kw), sacrebleu.corpus_bleu(hyps, [refs], **kw))


def test_sentence_bleu_matches_sacrebleu(en_es):
    rng = random.Random(3)
    for p in en_es.test[:150]:
        hyp = _perturb(rng, p.es)
        refs = [p.es, _perturb(rng, p.es)]
        _assert_bleu_equal(sentence_bleu(hyp, refs), sacrebleu.sentence_bleu(hyp, refs))


def test_corpus_bleu_property_many_random_samples(en_es, shakespeare_lines):
    """Random corpora of 1-30 segments, 1-3 references, mixed sources: always equal."""
    rng = random.Random(4)
    pool = [p.es for p in en_es.train[:3000]] + shakespeare_lines[:3000] + EDGE_STRINGS
    for _ in range(200):
        k = rng.randint(1, 30)
        refs = [rng.choice(pool) for _ in range(k)]
        streams = [refs] + [[_perturb(rng, r) for r in refs] for _ in range(rng.randint(0, 2))]
        hyps = [_perturb(rng, r) if rng.random() < 0.8 else rng.choice(pool) for r in refs]
        _assert_bleu_equal(corpus_bleu(hyps, streams), sacrebleu.corpus_bleu(hyps, streams))


def test_corpus_bleu_accepts_sacrebleu_keywords(en_es):
    refs = [p.es for p in en_es.test[:30]]
    hyps = [r.lower() for r in refs]
    kw = dict(force=True, lowercase=False, smooth_method="exp", tokenize="13a")
    _assert_bleu_equal(corpus_bleu(hyps, [refs], **kw), sacrebleu.corpus_bleu(hyps, [refs], **kw))


def test_bleu_pieces():
    assert brevity_penalty(5, 10) == pytest.approx(math.exp(-1))
    assert brevity_penalty(11, 10) == 1.0 and brevity_penalty(0, 3) == 0.0
    assert closest_ref_len(5, [3, 7]) == 3  # a tie goes to the shorter reference
    assert corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]).score == \
        pytest.approx(100.0)


def test_bleu_bad_input_raises():
    with pytest.raises(TypeError, match="list of strings"):
        corpus_bleu("a string", [["a"]])
    with pytest.raises(ValueError, match="2 segments but there are 1"):
        corpus_bleu(["a"], [["a", "b"]])
    with pytest.raises(TypeError, match=r"references\[0\]"):
        corpus_bleu(["a"], ["a"])  # forgot to wrap the stream
    with pytest.raises(ValueError, match="empty"):
        corpus_bleu([], [[]])
    with pytest.raises(ValueError, match="smooth_method"):
        corpus_bleu(["a"], [["a"]], smooth_method="laplace")
    with pytest.raises(ValueError, match="tokenize"):
        corpus_bleu(["a"], [["a"]], tokenize="moses")
    with pytest.raises(TypeError, match="single str"):
        sentence_bleu("a", "a")


# --- ROUGE --------------------------------------------------------------------------------------
def _assert_rouge_equal(ours, ref):
    assert set(ours) == set(ref)
    for k in ref:
        assert tuple(ours[k]) == pytest.approx(tuple(ref[k]), abs=1e-9), k


def test_rouge_matches_rouge_score_on_shakespeare(shakespeare_lines):
    scorer = rouge_scorer.RougeScorer(list(TYPES))
    rng = random.Random(5)
    for _ in range(300):
        target = " ".join(rng.sample(shakespeare_lines, rng.randint(1, 4)))
        prediction = _perturb(rng, target) if rng.random() < 0.7 else rng.choice(shakespeare_lines)
        _assert_rouge_equal(rouge(target, prediction), scorer.score(target, prediction))


def test_rouge_matches_on_spanish_and_edge_cases(en_es):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rouge3", "rougeL"])
    pairs = [(p.es, p.en) for p in en_es.test[:100]] + [(p.es, _perturb(random.Random(6), p.es))
                                                        for p in en_es.test[:100]]
    pairs += [(a, b) for a in EDGE_STRINGS for b in EDGE_STRINGS[:6]]
    for target, prediction in pairs:
        _assert_rouge_equal(rouge(target, prediction, ("rouge1", "rouge2", "rouge3", "rougeL")),
                            scorer.score(target, prediction))


def test_rouge_chinese_needs_a_char_tokenizer(poems):
    default = rouge_scorer.RougeScorer(list(TYPES))
    chars = rouge_scorer.RougeScorer(list(TYPES), tokenizer=CharTokenizer())
    for a, b in zip(poems[:60], poems[1:61]):
        _assert_rouge_equal(rouge(a.text, b.text), default.score(a.text, b.text))
        _assert_rouge_equal(rouge(a.text, b.text, tokenizer=CharTokenizer()),
                            chars.score(a.text, b.text))
        # the plain-function hook gives the same answer as the rouge-score-style object
        assert rouge(a.text, b.text, tokenizer=char_tokenize) == \
            rouge(a.text, b.text, tokenizer=CharTokenizer())
    assert rouge(poems[0].text, poems[0].text)["rouge1"].fmeasure == 0  # default drops Chinese
    assert rouge(poems[0].text, poems[0].text, tokenizer=char_tokenize)["rougeL"].fmeasure == 1


def test_rouge_lsum_matches_rouge_score_on_multiline_text(shakespeare_lines, poems):
    """Summary-level LCS over lines: several target and prediction sentences, English and Chinese."""
    scorer = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"])
    rng = random.Random(8)
    for _ in range(150):
        i = rng.randrange(len(shakespeare_lines) - 8)
        target = "\n".join(shakespeare_lines[i:i + rng.randint(1, 6)])
        sents = target.split("\n")
        prediction = "\n".join(rng.sample(sents, len(sents))) if rng.random() < 0.5 else \
            "\n".join(_perturb(rng, s) for s in sents[: rng.randint(0, len(sents))])
        _assert_rouge_equal(rouge(target, prediction, ("rougeL", "rougeLsum")),
                            scorer.score(target, prediction))
    chars = rouge_scorer.RougeScorer(["rougeLsum"], tokenizer=CharTokenizer())
    for a, b in zip(poems[:40], poems[1:41]):
        _assert_rouge_equal(rouge(a.text, b.text, ["rougeLsum"], tokenizer=char_tokenize),
                            chars.score(a.text, b.text))


def test_rouge_l_is_order_sensitive_rouge_1_is_not():
    s = rouge("police killed the gunman", "the gunman killed police")
    assert s["rouge1"].fmeasure == 1.0 and s["rougeL"].fmeasure < 1.0


def test_lcs_bit_parallel_equals_table():
    rng = random.Random(7)
    for _ in range(500):
        a = [rng.randrange(6) for _ in range(rng.randint(0, 80))]
        b = [rng.randrange(6) for _ in range(rng.randint(0, 80))]
        assert lcs_length(a, b) == lcs_length_table(a, b)
    long_a = [rng.randrange(50) for _ in range(700)]  # more bits than one machine word
    long_b = [rng.randrange(50) for _ in range(500)]
    assert lcs_length(long_a, long_b) == lcs_length_table(long_a, long_b)


def test_rouge_bad_input_raises():
    with pytest.raises(ValueError, match="rougeX"):
        rouge("a", "a", ("rougeX",))
    with pytest.raises(TypeError, match="str"):
        rouge(["a"], "a")
    with pytest.raises(TypeError, match="tokenizer"):
        rouge("a", "a", tokenizer=3)


# --- language-model metrics ---------------------------------------------------------------------
def test_cross_entropy_from_logits_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 65, generator=g) * 3
    targets = torch.randint(0, 65, (200,), generator=g)
    ref = float(torch.nn.functional.cross_entropy(logits.double(), targets))
    assert cross_entropy_from_logits(logits, targets) == pytest.approx(ref, abs=1e-12)
    probs = torch.softmax(logits.double(), -1)[torch.arange(200), targets]
    assert cross_entropy(probs.numpy()) == pytest.approx(ref, abs=1e-12)


def test_lm_identities_on_a_unigram_model_of_shakespeare():
    """A character unigram model: bits/char = bits/token, perplexity = 2^bits, uniform = log2 V."""
    text = load_shakespeare()
    vocab = sorted(set(text.train) | set(text.test))
    counts = np.array([text.train.count(c) for c in vocab], dtype=np.float64) + 1
    probs = dict(zip(vocab, counts / counts.sum()))
    target = np.array([probs[c] for c in text.test[:20000]])
    score = LMScore.from_probs(target, n_chars=20000)
    assert score.bits_per_char == pytest.approx(score.bits_per_token)
    assert score.perplexity == pytest.approx(2 ** score.bits_per_token)
    assert score.char_perplexity == pytest.approx(score.perplexity)
    assert 3 < score.bits_per_char < math.log2(len(vocab))  # better than uniform, worse than good
    uniform = LMScore.from_probs(np.full(100, 1 / len(vocab)), 100)
    assert uniform.perplexity == pytest.approx(len(vocab))
    assert bits_per_char(1234.5, 678) == leaderboard.bits_per_char(1234.5, 678)
    assert perplexity(0.0) == 1.0


def test_lm_bad_input():
    assert cross_entropy([0.5, 0.0]) == math.inf  # an impossible event: infinite surprise
    with pytest.raises(ValueError, match="probabilities"):
        cross_entropy([0.5, 1.5])
    with pytest.raises(ValueError, match="empty"):
        cross_entropy([])
    with pytest.raises(ValueError, match="n_chars"):
        bits_per_char(1.0, 0)
    with pytest.raises(ValueError, match="logits"):
        cross_entropy_from_logits(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


# --- classification -----------------------------------------------------------------------------
def _brute_force_cm(y_true, y_pred, k):
    cm = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        cm[t, p] += 1
    return cm


def test_classification_metrics_against_definitions():
    rng = np.random.default_rng(0)
    for k in (2, 3, 5):
        y = rng.integers(0, k, 300)
        p = np.where(rng.random(300) < 0.6, y, rng.integers(0, k, 300))
        cm = confusion_matrix(y, p, num_classes=k)
        assert np.array_equal(cm, _brute_force_cm(y, p, k))
        assert accuracy(y, p) == pytest.approx(np.mean(y == p))
        per = []
        for c in range(k):
            tp = np.sum((p == c) & (y == c))
            prec, rec = tp / np.sum(p == c), tp / np.sum(y == c)
            f1 = 2 * prec * rec / (prec + rec)
            assert precision_recall_f1_from_confusion(cm, c) == pytest.approx((prec, rec, f1))
            per.append((prec, rec, f1))
        assert precision_recall_f1(y, p, average="macro") == pytest.approx(np.mean(per, 0))
        micro = precision_recall_f1(y, p, average="micro")
        assert micro == pytest.approx((accuracy(y, p),) * 3)


def test_zero_division_and_bad_input():
    assert precision_recall_f1([0, 0, 1], [0, 0, 0]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="binary"):
        precision_recall_f1([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        confusion_matrix([0, 1, 1], [0, 1])
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix([0.5], [1.0])
    with pytest.raises(ValueError, match="num_classes=2"):
        confusion_matrix([0, 3], [0, 1], num_classes=2)


def test_naive_bayes_on_rotten_tomatoes_and_pr_curve():
    rt = load_rotten_tomatoes()
    nb = NaiveBayesClassifier().fit([e.text for e in rt.train], [e.label for e in rt.train])
    texts, y = [e.text for e in rt.validation], np.array([e.label for e in rt.validation])
    pred = nb.predict(texts)
    assert accuracy(y, pred) > 0.7  # well above the ~0.5 of guessing
    assert np.array_equal(pred, (nb.log_odds(texts) > 0).astype(int))
    precision, recall, thresholds = precision_recall_curve(y, nb.log_odds(texts))
    assert np.all(np.diff(thresholds) < 0) and np.all(np.diff(recall) >= 0)
    assert recall[-1] == 1.0 and precision[-1] == pytest.approx(y.mean())
    # at threshold 0 the curve agrees with the binary precision/recall of the predictions
    i = np.searchsorted(-thresholds, 0.0, side="right") - 1
    p0, r0, _ = precision_recall_f1(y, (nb.log_odds(texts) >= thresholds[i]).astype(int))
    assert (precision[i], recall[i]) == pytest.approx((p0, r0))
