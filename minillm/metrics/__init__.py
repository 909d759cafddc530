"""Metrics for language: LM surprise, classification, BLEU and ROUGE, all built from scratch.

| module | what | checked against |
|---|---|---|
| ``lm`` | cross-entropy, perplexity, bits per token / character | ``torch.nn.functional.cross_entropy`` |
| ``classification`` | confusion matrix, accuracy, precision, recall, F1, a naive Bayes toy | definitions |
| ``bleu`` | ``corpus_bleu``, ``sentence_bleu``, the 13a tokenizer | ``sacrebleu`` (to 1e-6) |
| ``rouge`` | ``rouge`` (ROUGE-N, ROUGE-L, ROUGE-Lsum), tokenizer hook for Chinese | ``rouge_score`` (to 1e-9) |
| ``ner`` | BIO decoding, entity-level precision/recall/F1 per type, micro/macro/weighted | ``seqeval`` (default mode) |

Importing this package reads no data and does not import matplotlib.
"""

from .bleu import BLEUScore, corpus_bleu, sentence_bleu, tokenize_13a
from .classification import (NaiveBayesClassifier, accuracy, classification_report,
                             confusion_matrix, plot_confusion_matrix, precision_recall_curve,
                             precision_recall_f1, precision_recall_f1_from_confusion)
from .lm import (LMScore, bits_per_char, cross_entropy, cross_entropy_from_logits, nats_to_bits,
                 perplexity)
from .ner import EntityScore, EntityScores, bio_to_spans, entity_report, entity_scores
from .rouge import CharTokenizer, Score, char_tokenize, lcs_length, rouge, rouge_tokenize

__all__ = [
    "BLEUScore", "CharTokenizer", "EntityScore", "EntityScores", "LMScore", "NaiveBayesClassifier", "Score", "accuracy",
    "bio_to_spans", "bits_per_char", "char_tokenize", "classification_report", "confusion_matrix", "corpus_bleu",
    "cross_entropy", "cross_entropy_from_logits", "entity_report", "entity_scores", "lcs_length", "nats_to_bits", "perplexity",
    "plot_confusion_matrix", "precision_recall_curve", "precision_recall_f1",
    "precision_recall_f1_from_confusion", "rouge", "rouge_tokenize", "sentence_bleu",
    "tokenize_13a",
]
