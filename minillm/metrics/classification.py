"""Classification metrics: the confusion matrix and everything read off it.

For a class c, with TP = predicted c and truly c, FP = predicted c but not c, FN = truly c but
predicted otherwise:

    precision = TP / (TP + FP)   (of what we flagged, how much was right)
    recall    = TP / (TP + FN)   (of what was there, how much we found)
    F1        = 2PR / (P + R)    (their harmonic mean: high only when both are)

Accuracy alone hides a classifier that ignores a rare class; precision and recall per class do not.
Conventions follow scikit-learn: ``cm[true, predicted]``; a ratio with a zero denominator is 0.

The module also holds a tiny multinomial naive Bayes bag-of-words classifier, so the chapter has
real predictions to measure without training a network.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..validation import check_choice, check_float, check_int


def _labels(values, name: str) -> np.ndarray:
    if isinstance(values, (str, bytes)) or values is None or isinstance(values, (set, dict)):
        raise TypeError(f"{name} must be a 1-D sequence of integer labels, got {type(values).__name__}")
    try:
        arr = np.asarray(values)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{name} must be a 1-D sequence of integer labels ({err})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of integer labels, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.bool_):
            return arr.astype(np.int64)
        raise TypeError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} holds a negative label {arr.min()}; labels must be 0..K-1")
    return arr.astype(np.int64)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int],
                     num_classes: int | None = None) -> np.ndarray:
    """(K, K) int array whose ``[t, p]`` entry counts examples of true class t predicted as p."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    check_int("num_classes", num_classes, low=1, allow_none=True)
    k = int(max(t.max(initial=-1), p.max(initial=-1)) + 1)
    if num_classes is None:
        num_classes = max(k, 1)
    elif k > num_classes:
        raise ValueError(f"a label {k - 1} does not fit num_classes={num_classes}")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes,
                                                                                num_classes)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _nonempty_confusion(y_true, y_pred, what: str, **kwargs) -> np.ndarray:
    cm = confusion_matrix(y_true, y_pred, **kwargs)
    if cm.sum() == 0:
        raise ValueError(f"y_true and y_pred are empty: {what} of zero examples is undefined")
    return cm


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Fraction of predictions equal to the true label."""
    cm = _nonempty_confusion(y_true, y_pred, "accuracy")
    return _ratio(np.trace(cm), cm.sum())


def precision_recall_f1_from_confusion(cm: np.ndarray, positive: int = 1
                                       ) -> tuple[float, float, float]:
    """(precision, recall, F1) of class ``positive`` from a confusion matrix ``cm[true, pred]``."""
    try:
        cm = np.asarray(cm)
    except ValueError as err:  # ragged rows
        raise ValueError(f"cm must be a square (K, K) matrix of counts ({err})") from None
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {cm.shape}")
    if cm.dtype.kind not in "iuf":
        raise TypeError(f"cm must hold counts (numbers), got dtype {cm.dtype}")
    if cm.size and (np.isnan(cm).any() or (cm < 0).any()):
        raise ValueError("cm must hold counts >= 0, got a negative or NaN entry")
    check_int("positive", positive)
    if not 0 <= positive < cm.shape[0]:
        raise ValueError(f"positive={positive} is not a class of a {cm.shape[0]}-class matrix")
    tp = cm[positive, positive]
    precision = _ratio(tp, cm[:, positive].sum())  # column: everything predicted positive
    recall = _ratio(tp, cm[positive, :].sum())  # row: everything truly positive
    f1 = _ratio(2 * precision * recall, precision + recall)
    return precision, recall, f1


def precision_recall_f1(y_true: Sequence[int], y_pred: Sequence[int], *,
                        average: str = "binary", positive: int = 1
                        ) -> tuple[float, float, float]:
    """Precision, recall and F1 as scikit-learn's ``precision_recall_fscore_support`` averages them.

    Args:
        y_true, y_pred: integer class labels.
        average: ``"binary"`` (class ``positive`` only), ``"macro"`` (unweighted mean over
            classes: every class counts the same) or ``"micro"`` (pooled counts; equals accuracy
            when every example has exactly one label).
        positive: the class scored by ``"binary"``.
    """
    check_choice("average", average, ("binary", "macro", "micro"))
    check_int("positive", positive, low=0)
    cm = _nonempty_confusion(y_true, y_pred, "precision/recall")
    if average == "binary":
        if cm.shape[0] > 2 or positive > 1:
            raise ValueError(f"average='binary' needs labels 0/1, got {cm.shape[0]} classes; "
                             "use average='macro' or 'micro'")
        cm = confusion_matrix(y_true, y_pred, num_classes=2)
        return precision_recall_f1_from_confusion(cm, positive)
    if average == "macro":
        per_class = [precision_recall_f1_from_confusion(cm, c) for c in range(cm.shape[0])]
        return tuple(float(np.mean([s[i] for s in per_class])) for i in range(3))  # type: ignore
    if average == "micro":
        tp = np.trace(cm)
        p = r = _ratio(tp, cm.sum())
        return p, r, _ratio(2 * p * r, p + r)
    raise ValueError(f"unknown average={average!r}; expected 'binary', 'macro' or 'micro'")


def classification_report(y_true: Sequence[int], y_pred: Sequence[int],
                          names: Sequence[str] | None = None) -> str:
    """A per-class precision/recall/F1/support table plus accuracy and macro averages."""
    cm = _nonempty_confusion(y_true, y_pred, "a classification report")
    names = list(names) if names is not None else [str(c) for c in range(cm.shape[0])]
    if len(names) < cm.shape[0]:
        raise ValueError(f"{len(names)} names given for {cm.shape[0]} classes")
    lines = [f"{'':>12s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'support':>8s}"]
    for c in range(cm.shape[0]):
        p, r, f = precision_recall_f1_from_confusion(cm, c)
        lines.append(f"{names[c]:>12s} {p:9.3f} {r:7.3f} {f:6.3f} {int(cm[c].sum()):8d}")
    p, r, f = precision_recall_f1(y_true, y_pred, average="macro")
    lines.append(f"{'macro avg':>12s} {p:9.3f} {r:7.3f} {f:6.3f} {int(cm.sum()):8d}")
    lines.append(f"{'accuracy':>12s} {accuracy(y_true, y_pred):25.3f} {int(cm.sum()):8d}")
    return "\n".join(lines)


def plot_confusion_matrix(cm: np.ndarray, names: Sequence[str] | None = None, ax=None,
                          normalize: bool = False, title: str | None = None):
    """Heatmap of ``cm[true, predicted]`` with the count (or row fraction) written in each cell."""
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    names = list(names) if names is not None else [str(c) for c in range(cm.shape[0])]
    if ax is None:
        _, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(shown, cmap="Blues", vmin=0)
    for t in range(cm.shape[0]):
        for p in range(cm.shape[1]):
            text = f"{shown[t, p]:.2f}" if normalize else f"{cm[t, p]:d}"
            dark = shown[t, p] > 0.6 * shown.max()
            ax.text(p, t, text, ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    return ax


# --- a tiny classifier to measure -----------------------------------------------------------------
_TOKEN = re.compile(r"[a-z0-9']+")


def bag_of_words(text: str) -> list[str]:
    """Lowercased word tokens (letters, digits and apostrophes)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


def _texts(texts) -> Sequence[str]:
    """A list of strings (a single str is refused: it would be read as one text per character)."""
    if isinstance(texts, str):
        raise TypeError(f"texts must be a list of strings, got a single str {texts[:40]!r}: "
                        f"wrap it as [text]")
    if texts is None or not hasattr(texts, "__len__") or not hasattr(texts, "__getitem__"):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__} ({t!r:.40})")
    return texts


@dataclass
class NaiveBayesClassifier:
    """Multinomial naive Bayes over a bag of words with add-``alpha`` smoothing.

    score(c | text) = log P(c) + Σ_w log P(w | c), with P(w | c) = (count(w, c) + α) / (N_c + α|V|).
    Fitting is counting, so it trains on 10k sentences in a fraction of a second.
    """

    alpha: float = 1.0  # add-alpha smoothing of word counts
    class_log_prior: np.ndarray = field(default=None, repr=False)  # (K,)
    word_log_prob: dict = field(default=None, repr=False)  # word -> (K,) log P(w | c)
    unseen_log_prob: np.ndarray = field(default=None, repr=False)  # (K,) for words never seen

    def fit(self, texts: Sequence[str], labels: Sequence[int]) -> "NaiveBayesClassifier":
        texts = _texts(texts)
        y = _labels(labels, "labels")
        if len(texts) != len(y) or not len(y):
            raise ValueError(f"need as many labels as texts (>0), got {len(texts)} and {len(y)}")
        check_float("alpha", self.alpha, low=0, low_inclusive=False)
        k = int(y.max()) + 1
        counts = [Counter() for _ in range(k)]
        for text, label in zip(texts, y):
            counts[label].update(bag_of_words(text))
        vocab = set().union(*counts)
        totals = np.array([sum(c.values()) for c in counts], dtype=np.float64)
        denom = totals + self.alpha * len(vocab)
        self.class_log_prior = np.log(np.bincount(y, minlength=k) / len(y))
        self.word_log_prob = {w: np.log((np.array([c[w] for c in counts]) + self.alpha) / denom)
                              for w in vocab}
        self.unseen_log_prob = np.log(self.alpha / denom)
        return self

    def log_scores(self, texts: Sequence[str]) -> np.ndarray:
        """(N, K) unnormalised log posteriors; words never seen in training are ignored."""
        if self.word_log_prob is None:
            raise RuntimeError("call fit(...) before predicting")
        texts = _texts(texts)
        out = np.tile(self.class_log_prior, (len(texts), 1))
        for i, text in enumerate(texts):
            for w in bag_of_words(text):
                if w in self.word_log_prob:
                    out[i] += self.word_log_prob[w]
        return out

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) predicted class per text."""
        return self.log_scores(texts).argmax(1)

    def log_odds(self, texts: Sequence[str], positive: int = 1) -> np.ndarray:
        """(N,) log P(positive | text) − log P(other | text) for a two-class model."""
        s = self.log_scores(texts)
        if s.shape[1] != 2:
            raise ValueError(f"log_odds needs a two-class model, this one has {s.shape[1]} classes")
        check_choice("positive", positive, (0, 1))
        return s[:, positive] - s[:, 1 - positive]


def precision_recall_curve(y_true: Sequence[int], scores: Sequence[float]
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall of "positive if score ≥ t" for every distinct threshold t.

    Returns (precision, recall, thresholds), thresholds decreasing (recall rising).
    """
    y = _labels(y_true, "y_true")
    if isinstance(scores, (str, bytes)) or scores is None:
        raise TypeError(f"scores must be a sequence of numbers, got {type(scores).__name__}")
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"scores must be a sequence of numbers ({err})") from None
    if s.shape != y.shape:
        raise ValueError(f"scores shape {s.shape} does not match y_true shape {y.shape}")
    if y.size == 0:
        raise ValueError("y_true and scores are empty: a precision-recall curve needs examples")
    if not np.isfinite(s).all():
        bad = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"scores must be finite numbers, got {s[bad]} at index {bad}")
    if y.max() > 1:
        raise ValueError(f"y_true must be binary labels 0/1 (1 = positive), got label {y.max()}")
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    tp = np.cumsum(y == 1)
    fp = np.cumsum(y != 1)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / max(int((y == 1).sum()), 1)
    return precision, recall, s[last]

