"""Bad inputs to the text entry points (tokenizers, metrics, n-gram models) get clear errors.

One table: each row calls a public entry point with one bad input and names the error it must
raise — a ``TypeError``/``ValueError`` (``FileNotFoundError`` for a missing file) whose message
matches a pattern naming the argument or the value. ``PROBES`` is also what the reliability
counts in the report are computed from (clear / unclear / silent / hang).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest
import torch

from minillm.data import gpt2_vocab_files
from minillm.metrics import (LMScore, NaiveBayesClassifier, accuracy, bits_per_char, classification_report,
                             confusion_matrix, corpus_bleu, cross_entropy, cross_entropy_from_logits,
                             lcs_length, nats_to_bits, perplexity, precision_recall_curve, precision_recall_f1,
                             precision_recall_f1_from_confusion, rouge, sentence_bleu, tokenize_13a)
from minillm.ngram import NGramLM
from minillm.tokenizers import ByteLevelBPE, WordPiece, WordTokenizer, gpt2_tokenizer, train_merges
from _shared import tiktoken_gpt2  # noqa: F401  (a pytest fixture)


@dataclass
class Probe:
    name: str
    call: Callable[[Any], Any]  # receives the fixtures namespace
    error: type | tuple[type, ...] = (TypeError, ValueError)
    match: str = ""


class Env:
    """Small fitted objects shared by the probes (built once)."""

    def __init__(self, tmp):
        self.bpe = ByteLevelBPE.train("hello world, hello there. " * 20, vocab_size=300)
        self.encoder_json, self.vocab_bpe = gpt2_vocab_files()
        self.words = WordTokenizer.train("the cat sat on the mat")
        self.wp = WordPiece.train(["the cat sat on the mat"], vocab_size=60)
        self.nb = NaiveBayesClassifier().fit(["great fun", "dull and boring", "great cast", "boring"],
                                             [1, 0, 1, 0])
        self.lm = NGramLM(3).fit("to be or not to be, that is the question")
        self.tmp = tmp
        (tmp / "list.json").write_text("[1, 2, 3]", encoding="utf-8")
        (tmp / "latin1.bpe").write_bytes("caf\xe9 x\n".encode("latin-1"))


P = Probe
PROBES = [
    # ---- byte-level BPE
    P("bpe.encode(None)", lambda e: e.bpe.encode(None), TypeError, "text must be a str"),
    P("bpe.encode(bytes)", lambda e: e.bpe.encode(b"abc"), TypeError, "text must be a str"),
    P("bpe.encode(list)", lambda e: e.bpe.encode(["a"]), TypeError, "text must be a str"),
    P("bpe.encode(lone surrogate)", lambda e: e.bpe.encode("a\ud800"), ValueError, "not valid Unicode"),
    P("bpe.encode(allowed_special='some')", lambda e: e.bpe.encode("x", allowed_special="some"), ValueError, "allowed_special"),
    P("bpe.encode(allowed_special=5)", lambda e: e.bpe.encode("x", allowed_special=5), TypeError, "allowed_special"),
    P("bpe.encode(unknown special)", lambda e: e.bpe.encode("x", allowed_special={"<|nope|>"}), ValueError, "not special tokens"),
    P("bpe.decode([1.7])", lambda e: e.bpe.decode([1.7]), TypeError, "ids must be ints, got 1.7"),
    P("bpe.decode([True])", lambda e: e.bpe.decode([True]), TypeError, "ids must be ints"),
    P("bpe.decode([-1])", lambda e: e.bpe.decode([-1]), ValueError, r"outside the vocabulary"),
    P("bpe.decode([10**9])", lambda e: e.bpe.decode([10 ** 9]), ValueError, r"outside the vocabulary"),
    P("bpe.decode('abc')", lambda e: e.bpe.decode("abc"), TypeError, "sequence of ints"),
    P("bpe.decode(None)", lambda e: e.bpe.decode(None), TypeError, "sequence of ints"),
    P("bpe.decode(2-D tensor)", lambda e: e.bpe.decode(torch.tensor([[1, 2]])), TypeError, r"ids must be ints, got \[1, 2\]"),
    P("bpe.id_to_token('a')", lambda e: e.bpe.id_to_token("a"), TypeError, "ids must be ints"),
    P("bpe.token_to_id(missing)", lambda e: e.bpe.token_to_id("zzzz"), ValueError, "not in the vocabulary"),
    P("bpe.truncate(-1)", lambda e: e.bpe.truncate(-1), ValueError, "num_merges"),
    P("bpe.truncate(1.5)", lambda e: e.bpe.truncate(1.5), ValueError, "num_merges"),
    P("BPE.train(vocab_size=100)", lambda e: ByteLevelBPE.train("abc", 100), ValueError, "vocab_size"),
    P("BPE.train(vocab_size='300')", lambda e: ByteLevelBPE.train("abc", "300"), ValueError, "vocab_size"),
    P("BPE.train(None)", lambda e: ByteLevelBPE.train(None, 300), TypeError, "text must be a str or an iterable"),
    P("BPE.train(['a', 3])", lambda e: ByteLevelBPE.train(["a", 3], 300), TypeError, "text must be a str"),
    P("from_gpt2_files swapped", lambda e: ByteLevelBPE.from_gpt2_files(e.vocab_bpe, e.encoder_json), ValueError,
      "wrong order"),
    P("from_gpt2_files(encoder twice)", lambda e: ByteLevelBPE.from_gpt2_files(e.encoder_json, e.encoder_json),
      ValueError, "wrong order"),
    P("from_gpt2_files(JSON list)", lambda e: ByteLevelBPE.from_gpt2_files(e.tmp / "list.json", e.vocab_bpe),
      ValueError, "JSON object token -> integer id"),
    P("from_gpt2_files(missing file)", lambda e: ByteLevelBPE.from_gpt2_files(e.tmp / "nope.json", e.vocab_bpe),
      FileNotFoundError, "nope.json"),
    P("from_gpt2_files(not UTF-8)", lambda e: ByteLevelBPE.from_gpt2_files(e.encoder_json, e.tmp / "latin1.bpe"),
      ValueError, "not UTF-8"),
    P("from_gpt2_files(directory)", lambda e: ByteLevelBPE.from_gpt2_files(e.tmp, e.vocab_bpe), ValueError,
      "is a directory"),
    P("from_gpt2_files(None)", lambda e: ByteLevelBPE.from_gpt2_files(None, e.vocab_bpe), TypeError,
      "encoder_json must be a path"),
    P("ByteLevelBPE(vocab=list)", lambda e: ByteLevelBPE(["a"], []), TypeError, "vocab must be a dict"),
    P("train_merges(vocab_size=-1)", lambda e: train_merges({(0, 1): 1}, ["a", "b"], -1), ValueError, "vocab_size"),
    # ---- word and WordPiece tokenizers
    P("WordTokenizer(vocab='abc')", lambda e: WordTokenizer("abc"), TypeError, "vocab must be a list"),
    P("WordTokenizer.train(max_vocab=0)", lambda e: WordTokenizer.train("a b", max_vocab=0), ValueError, "max_vocab"),
    P("WordTokenizer.train(None)", lambda e: WordTokenizer.train(None), TypeError, "text must be a str or an iterable"),
    P("words.encode(None)", lambda e: e.words.encode(None), TypeError, "text must be a str"),
    P("words.decode([99])", lambda e: e.words.decode([99]), ValueError, "outside the vocabulary"),
    P("words.decode([0.5])", lambda e: e.words.decode([0.5]), TypeError, "ids must be ints"),
    P("WordPiece(no [UNK])", lambda e: WordPiece(["a"]), ValueError, "unk_token"),
    P("WordPiece.train(vocab_size=0)", lambda e: WordPiece.train(["a"], vocab_size=0), ValueError, "vocab_size"),
    P("WordPiece.train(None)", lambda e: WordPiece.train(None, vocab_size=50), TypeError, "texts must be a str or an iterable"),
    P("wp.encode(None)", lambda e: e.wp.encode(None), TypeError, "text must be a str"),
    P("wp.decode([10**6])", lambda e: e.wp.decode([10 ** 6]), ValueError, "outside the vocabulary"),
    P("WordPiece.from_file(encoder.json)", lambda e: WordPiece.from_file(e.encoder_json), ValueError, "unk_token"),
    # ---- LM metrics
    P("cross_entropy([])", lambda e: cross_entropy([]), ValueError, "empty"),
    P("cross_entropy('0.5')", lambda e: cross_entropy("0.5"), TypeError, "target_probs must be a sequence"),
    P("cross_entropy([0.5, None])", lambda e: cross_entropy([0.5, None]), TypeError, "target_probs"),
    P("cross_entropy([1.5])", lambda e: cross_entropy([1.5]), ValueError, r"in \[0, 1\], got 1.5"),
    P("cross_entropy([nan])", lambda e: cross_entropy([math.nan]), ValueError, r"in \[0, 1\], got nan"),
    P("ce_from_logits(zero tokens)", lambda e: cross_entropy_from_logits(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
      ValueError, "zero tokens"),
    P("ce_from_logits(target out of range)", lambda e: cross_entropy_from_logits(torch.zeros(2, 5), torch.tensor([0, 5])),
      ValueError, r"targets must be ids in \[0, 5\).*got 5"),
    P("ce_from_logits(negative target)", lambda e: cross_entropy_from_logits(torch.zeros(2, 5), torch.tensor([0, -1])),
      ValueError, "got -1"),
    P("ce_from_logits(float targets)", lambda e: cross_entropy_from_logits(torch.zeros(2, 5), torch.tensor([0.0, 1.7])),
      TypeError, "targets must be integer"),
    P("ce_from_logits(int logits)", lambda e: cross_entropy_from_logits(torch.zeros(2, 5, dtype=torch.long), torch.tensor([0, 1])),
      TypeError, "logits must be floating"),
    P("ce_from_logits(str)", lambda e: cross_entropy_from_logits("a", [1]), TypeError, "logits must be a tensor"),
    P("ce_from_logits(NaN logits)", lambda e: cross_entropy_from_logits(torch.full((2, 3), math.nan), torch.tensor([0, 1])),
      ValueError, "NaN"),
    P("ce_from_logits(shape)", lambda e: cross_entropy_from_logits(torch.zeros(2, 5), torch.tensor([0])), ValueError,
      "expected logits"),
    P("perplexity('2')", lambda e: perplexity("2"), TypeError, "nats_per_token must be a number"),
    P("perplexity(-1)", lambda e: perplexity(-1.0), ValueError, "nats_per_token must be >= 0"),
    P("perplexity(nan)", lambda e: perplexity(math.nan), ValueError, "nats_per_token must be a finite"),
    P("nats_to_bits('1')", lambda e: nats_to_bits("1"), TypeError, "nats must be a number"),
    P("nats_to_bits(nan)", lambda e: nats_to_bits(math.nan), ValueError, "nats must be a finite"),
    P("bits_per_char(n_chars=0)", lambda e: bits_per_char(10.0, 0), ValueError, "n_chars must be >= 1"),
    P("bits_per_char(n_chars=2.5)", lambda e: bits_per_char(10.0, 2.5), TypeError, "n_chars must be an int"),
    P("bits_per_char('10')", lambda e: bits_per_char("10", 5), TypeError, "total_nats must be a number"),
    P("bits_per_char(-1 nats)", lambda e: bits_per_char(-1.0, 5), ValueError, "total_nats must be >= 0"),
    P("LMScore(n_tokens=0)", lambda e: LMScore(1.0, 0, 10), ValueError, "n_tokens must be >= 1"),
    P("LMScore(nan)", lambda e: LMScore(math.nan, 3, 10), ValueError, "total_nats"),
    P("LMScore.from_probs([])", lambda e: LMScore.from_probs([], 10), ValueError, "empty"),
    # ---- classification metrics
    P("accuracy([], [])", lambda e: accuracy([], []), ValueError, "zero examples"),
    P("accuracy(length mismatch)", lambda e: accuracy([1, 0], [1]), ValueError, "y_true has 2 labels but y_pred has 1"),
    P("accuracy('10', '10')", lambda e: accuracy("10", "10"), TypeError, "y_true must be a 1-D sequence"),
    P("accuracy([0.5])", lambda e: accuracy([0.5], [1]), TypeError, "integer class labels"),
    P("accuracy([None])", lambda e: accuracy([None], [1]), TypeError, "integer class labels"),
    P("accuracy(ragged)", lambda e: accuracy([[1], [1, 2]], [0, 1]), ValueError, "1-D sequence"),
    P("accuracy(negative label)", lambda e: accuracy([-1], [0]), ValueError, "negative label"),
    P("confusion_matrix(num_classes='3')", lambda e: confusion_matrix([0], [1], num_classes="3"), TypeError, "num_classes"),
    P("confusion_matrix(num_classes=1)", lambda e: confusion_matrix([0], [1], num_classes=1), ValueError, "num_classes"),
    P("precision_recall_f1([], [])", lambda e: precision_recall_f1([], []), ValueError, "zero examples"),
    P("precision_recall_f1(average='weighted')", lambda e: precision_recall_f1([0], [1], average="weighted"),
      ValueError, "average"),
    P("precision_recall_f1(positive=1.5)", lambda e: precision_recall_f1([0], [1], positive=1.5), TypeError, "positive"),
    P("classification_report([], [])", lambda e: classification_report([], []), ValueError, "zero examples"),
    P("prf_from_confusion(positive=1.5)", lambda e: precision_recall_f1_from_confusion(np.eye(2), 1.5), TypeError, "positive"),
    P("prf_from_confusion(ragged)", lambda e: precision_recall_f1_from_confusion([[1, 2], [3]]), ValueError, "cm must be a square"),
    P("prf_from_confusion(negative counts)", lambda e: precision_recall_f1_from_confusion(np.array([[1, -2], [0, 3]])),
      ValueError, "counts >= 0"),
    P("prf_from_confusion(strings)", lambda e: precision_recall_f1_from_confusion(np.array([["a", "b"], ["c", "d"]])),
      TypeError, "cm must hold counts"),
    P("pr_curve(NaN score)", lambda e: precision_recall_curve([1, 0], [0.5, math.nan]), ValueError, "finite"),
    P("pr_curve([], [])", lambda e: precision_recall_curve([], []), ValueError, "empty"),
    P("pr_curve(str scores)", lambda e: precision_recall_curve([1, 0], ["a", "b"]), TypeError, "scores must be a sequence of numbers"),
    P("pr_curve(label 2)", lambda e: precision_recall_curve([2, 0], [0.1, 0.2]), ValueError, "binary labels"),
    P("pr_curve(shape)", lambda e: precision_recall_curve([1, 0], [0.1]), ValueError, "does not match"),
    P("nb.predict('great fun')", lambda e: e.nb.predict("great fun"), TypeError, "got a single str"),
    P("nb.predict(['ok', None])", lambda e: e.nb.predict(["ok", None]), TypeError, r"texts\[1\] must be a str"),
    P("nb.predict(5)", lambda e: e.nb.predict(5), TypeError, "texts must be a list"),
    P("nb.fit(str)", lambda e: NaiveBayesClassifier().fit("abcd", [0, 1, 0, 1]), TypeError, "single str"),
    P("nb.fit(alpha='1')", lambda e: NaiveBayesClassifier(alpha="1").fit(["a"], [0]), TypeError, "alpha must be a number"),
    P("nb.fit(alpha=0)", lambda e: NaiveBayesClassifier(alpha=0).fit(["a"], [0]), ValueError, "alpha must be > 0"),
    P("nb.fit(length mismatch)", lambda e: NaiveBayesClassifier().fit(["a", "b"], [0]), ValueError, "as many labels"),
    P("nb.log_odds(positive=2)", lambda e: e.nb.log_odds(["fun"], positive=2), ValueError, "positive"),
    # ---- BLEU, ROUGE
    P("corpus_bleu(max_order=0)", lambda e: corpus_bleu(["a b"], [["a b"]], max_order=0), ValueError, "max_order must be >= 1"),
    P("corpus_bleu(max_order=-1)", lambda e: corpus_bleu(["a b"], [["a b"]], max_order=-1), ValueError, "max_order"),
    P("corpus_bleu(max_order=2.5)", lambda e: corpus_bleu(["a b"], [["a b"]], max_order=2.5), TypeError, "max_order must be an int"),
    P("corpus_bleu(str hypotheses)", lambda e: corpus_bleu("a", ["a"]), TypeError, "hypotheses must be a list"),
    P("corpus_bleu(empty)", lambda e: corpus_bleu([], [[]]), ValueError, "empty"),
    P("corpus_bleu(stream length)", lambda e: corpus_bleu(["a"], [["a", "b"]]), ValueError, "segments"),
    P("corpus_bleu(flat references)", lambda e: corpus_bleu(["a"], ["a"]), TypeError, r"references\[0\] must be a list"),
    P("corpus_bleu(int hypothesis)", lambda e: corpus_bleu([3], [["a"]]), TypeError, r"hypotheses\[0\] must be a str"),
    P("corpus_bleu(smooth_method='x')", lambda e: corpus_bleu(["a"], [["a"]], smooth_method="x"), ValueError, "smooth_method"),
    P("corpus_bleu(smooth_value=-1)", lambda e: corpus_bleu(["a"], [["a"]], smooth_method="floor", smooth_value=-1),
      ValueError, "smooth_value must be >= 0"),
    P("corpus_bleu(smooth_value=nan)", lambda e: corpus_bleu(["a"], [["a"]], smooth_method="floor", smooth_value=math.nan),
      ValueError, "smooth_value"),
    P("corpus_bleu(tokenize=5)", lambda e: corpus_bleu(["a"], [["a"]], tokenize=5), ValueError, "tokenize"),
    P("corpus_bleu(tokenize returns int)", lambda e: corpus_bleu(["a"], [["a"]], tokenize=lambda s: 5), TypeError,
      "tokenize must return a list of strings"),
    P("corpus_bleu(lowercase='yes')", lambda e: corpus_bleu(["a"], [["a"]], lowercase="yes"), TypeError, "lowercase"),
    P("sentence_bleu(None)", lambda e: sentence_bleu(None, ["a"]), TypeError, "hypothesis must be a str"),
    P("sentence_bleu(str refs)", lambda e: sentence_bleu("a", "a"), TypeError, "single str"),
    P("sentence_bleu(refs=None)", lambda e: sentence_bleu("a", None), TypeError, "references must be a list"),
    P("sentence_bleu(no reference)", lambda e: sentence_bleu("a", [None]), ValueError, "no reference"),
    P("tokenize_13a(None)", lambda e: tokenize_13a(None), TypeError, "line must be a str"),
    P("rouge(None)", lambda e: rouge(None, "a"), TypeError, "target and prediction must be str"),
    P("rouge(rouge0)", lambda e: rouge("a", "b", rouge_types=["rouge0"]), ValueError, "unknown rouge type 'rouge0'"),
    P("rouge(rouge_types=[5])", lambda e: rouge("a", "b", rouge_types=[5]), ValueError, "unknown rouge type 5"),
    P("rouge(rouge_types=None)", lambda e: rouge("a", "b", rouge_types=None), TypeError, "rouge_types"),
    P("rouge(tokenizer=5)", lambda e: rouge("a", "b", tokenizer=5), TypeError, "tokenizer must be"),
    P("rouge(tokenizer returns None)", lambda e: rouge("a", "b", tokenizer=lambda s: None), TypeError,
      "tokenizer must return a list of strings"),
    P("lcs_length(None)", lambda e: lcs_length("abc", None), TypeError, "b must be a sequence"),
    # ---- n-gram models
    P("NGramLM(n=0)", lambda e: NGramLM(0), ValueError, "n must be an integer >= 1"),
    P("NGramLM(n=2.5)", lambda e: NGramLM(2.5), ValueError, "n must be"),
    P("NGramLM(smoothing='kn')", lambda e: NGramLM(3, "kn"), ValueError, "smoothing must be one of"),
    P("NGramLM(k=inf)", lambda e: NGramLM(3, "add_k", k=math.inf), ValueError, "k must be a finite number"),
    P("NGramLM(k=nan)", lambda e: NGramLM(3, "add_k", k=math.nan), ValueError, "k must be"),
    P("NGramLM(k=True)", lambda e: NGramLM(3, "add_k", k=True), ValueError, "k must be"),
    P("NGramLM(discount=nan)", lambda e: NGramLM(3, discount=math.nan), ValueError, "discount"),
    P("NGramLM(lambdas=(0.5,))", lambda e: NGramLM(3, "interpolated", lambdas=(0.5,)), ValueError, "lambdas"),
    P("lm.fit(None)", lambda e: NGramLM(3).fit(None), TypeError, "expected a str or an iterable"),
    P("lm.fit([])", lambda e: NGramLM(3).fit([]), ValueError, "no tokens"),
    P("lm.fit(['ab', 5])", lambda e: NGramLM(3).fit(["ab", 5]), TypeError, "each sequence must be"),
    P("unfitted.prob", lambda e: NGramLM(3).prob("a"), ValueError, "not fitted"),
    P("lm.sample(-1)", lambda e: e.lm.sample(-1), ValueError, "n_tokens"),
    P("lm.sample(seed='x')", lambda e: e.lm.sample(5, seed="x"), TypeError, "seed must be an int"),
    P("lm.top_next(k=-1)", lambda e: e.lm.top_next("t", k=-1), ValueError, "k must be >= 1"),
    P("lm.next_distribution(context=5)", lambda e: e.lm.next_distribution(5), TypeError, "context must be a str"),
    P("lm.perplexity(None)", lambda e: e.lm.perplexity(None), TypeError, "each sequence must be"),
    P("lm.corpus_perplexity([], eos=False)", lambda e: e.lm.corpus_perplexity([], eos=False), ValueError, "zero tokens"),
    P("lm.count([])", lambda e: e.lm.count([]), ValueError, "ngram must have"),
    P("lm.count(too long)", lambda e: e.lm.count("abcdefgh"), ValueError, "ngram must have"),
    P("lm.replace(n=10)", lambda e: e.lm.replace(n=10), ValueError, "needs counts of order"),
    P("lm.distinct_ngrams(0)", lambda e: e.lm.distinct_ngrams(0), ValueError, "m must be in"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("probes"))


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_bad_input_gets_a_clear_error(probe, env):
    with pytest.raises(probe.error, match=probe.match):
        probe.call(env)


def test_probe_names_are_unique():
    names = [p.name for p in PROBES]
    assert len(names) == len(set(names))


# --------------------------------------------------------------------------- long pre-tokens
@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


def _long_inputs():
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return {
        "100k random letters, no space": "".join(rng.choice(letters) for _ in range(100_000)),
        "50k repeated 'a'": "a" * 50_000,
        "40k 'ab' pattern": "ab" * 20_000,
        "30k digits": "".join(rng.choice("0123456789") for _ in range(30_000)),
        "20k symbols": "".join(rng.choice("!?.,;:-_*#@$%^&") for _ in range(20_000)),
        "10k emoji and CJK": "".join(rng.choice("東京🤖👍é漢字") for _ in range(10_000)),
        "a long real word repeated": "antidisestablishmentarianism" * 2_000,
    }


@pytest.mark.parametrize("name", list(_long_inputs()))
def test_long_pretokens_match_tiktoken(name, gpt2, tiktoken_gpt2):
    text = _long_inputs()[name]
    assert gpt2.encode(text) == tiktoken_gpt2.encode(text, allowed_special="all")


def test_short_and_long_merge_loops_agree(gpt2):
    """The O(n log n) heap loop and the rescanning loop give identical ids on pieces of any length."""
    rng = random.Random(1)
    alphabet = "abcdefghij eeettthhh aaa 0123 .,!é東"
    for _ in range(1_000):
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120)))
        ids = [gpt2._byte_ids[b] for b in piece.encode("utf-8")]
        assert gpt2._merge_long(list(ids)) == gpt2._merge_short(list(ids)), piece
