"""Checks for chapter 9's exercises (BERT): MLM masking, the embeddings, classification heads on
[CLS] and by mean pooling, BIO decoding, entity-level F1, and a whole MLM training step.

Each check compares the learner's function with the package's reference (``minillm.mlm``, ``BertModel``,
``BertForSequenceClassification``, ``minillm.pretrained.mean_pool``, ``minillm.metrics.ner``) and,
where the answer is wrong, tries the usual mistakes on the same inputs (no LayerNorm, positions off
by one, padding in the average, end-exclusive spans...) to say which one it is.

The masking check cannot compare values (the masks are random): it measures, over ~100k tokens,
the fraction of positions chosen and the split of the chosen ones into [MASK] / random / unchanged,
with binomial tolerances of 5 standard deviations (a correct function fails one of these tests by
chance with probability about 6e-7), and checks the rules that hold at every position.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .. import checks as _checks
from . import Case, CheckResult, compare, run_check

IGNORE_INDEX = -100  # label of the positions the MLM loss skips


def _time_limit(factor: float) -> float:
    """``factor`` times the checks' default limit per case, read at call time (these cases do
    more work than a single small call: ~100k tokens three times, several training steps)."""
    return factor * _checks.DEFAULT_TIME_LIMIT


# ----------------------------------------------------------------------------- helpers

def _matches(expected: Any, got: Any, atol: float) -> bool:
    try:
        return compare(expected, got, atol=atol, rtol=1e-5) is None
    except Exception:  # noqa: BLE001 — a variant that cannot be compared does not match
        return False


def _diagnose(got: Any, variants: dict[str, Callable[[], Any]], atol: float) -> str | None:
    """The first known mistake whose result equals ``got`` (its sentence), or None."""
    for sentence, make in variants.items():
        try:
            wrong = make()
        except Exception:  # noqa: BLE001 — a variant that does not apply to this case
            continue
        if _matches(wrong, got, atol):
            return sentence
    return None


# ----------------------------------------------------------------------------- 1. MLM masking

@dataclass
class _MaskRun:
    """One masking case and what a function returned for it (twice with the same seed)."""

    input_ids: torch.Tensor
    vocab_size: int
    mask_token_id: int
    special_ids: tuple[int, ...]
    mlm_probability: float
    first: Any
    second: Any
    other_seed: Any


_Z = 5.0  # tolerance in binomial standard deviations


def _within(name: str, count: int, n: int, p: float) -> str | None:
    """None if ``count`` of ``n`` is within _Z binomial standard deviations of ``n * p``."""
    if n == 0:
        return None
    sd = math.sqrt(n * p * (1 - p))
    if abs(count - n * p) <= _Z * sd + 1e-9:
        return None
    return (f"{name}: expected about {p:.1%} of {n} ({n * p:.0f} ± {_Z * sd:.0f}), got {count} "
            f"({count / n:.1%})")


def _judge_masking(run: _MaskRun) -> str | None:
    """None if ``run.first`` follows the 80/10/10 rule for ``run.input_ids``; else what is wrong."""
    got = run.first
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        return f"expected a pair (inputs, labels), got {type(got).__name__}"
    inputs, labels = got
    ids = run.input_ids
    for name, t in (("inputs", inputs), ("labels", labels)):
        if not isinstance(t, torch.Tensor):
            return f"{name}: expected a torch.Tensor, got {type(t).__name__}"
        if tuple(t.shape) != tuple(ids.shape):
            return f"{name}: expected shape {tuple(ids.shape)} like input_ids, got {tuple(t.shape)}"
        if t.is_floating_point() and t.isnan().any():
            return f"{name}: got NaN at {int(t.isnan().sum())} positions; expected integer token ids"
        if t.is_floating_point() or t.dtype == torch.bool:
            return f"{name}: expected integer token ids (torch.long), got dtype {t.dtype}"
    inputs, labels = inputs.long(), labels.long()
    special = torch.isin(ids, torch.tensor(run.special_ids))
    chosen = labels != IGNORE_INDEX
    n_real, n_chosen = int((~special).sum()), int(chosen.sum())
    if n_chosen == ids.numel() and run.mlm_probability < 1:
        return ("labels are not -100 anywhere: a label is the original token only at the chosen "
                "positions and -100 (ignored by the loss) everywhere else")
    if (chosen & special).any():
        return (f"{int((chosen & special).sum())} special/padding positions were chosen (their label "
                f"is not -100): [CLS], [SEP] and [PAD] ({list(run.special_ids)}) are never predicted")
    if (inputs[special] != ids[special]).any():
        return "special/padding positions were changed in inputs: leave them as they are"
    if (labels[chosen] != ids[chosen]).any():
        wrong = int((labels[chosen] != ids[chosen]).sum())
        hint = " (they hold the replaced tokens?)" if bool((labels[chosen] == inputs[chosen]).all()) else ""
        return (f"labels differ from the original token at {wrong} chosen positions{hint}: the label "
                f"of a chosen position is what stood there before masking")
    if (inputs[~chosen] != ids[~chosen]).any():
        return (f"{int((inputs[~chosen] != ids[~chosen]).sum())} positions that were not chosen "
                f"(label -100) were changed: only chosen positions may be replaced")
    if inputs.numel() and (int(inputs.min()) < 0 or int(inputs.max()) >= run.vocab_size):
        return (f"inputs hold ids outside [0, {run.vocab_size}) (got values in [{int(inputs.min())}, "
                f"{int(inputs.max())}]): draw random tokens with torch.randint(vocab_size, ...)")
    if n_real >= 1000:  # enough tokens for proportions
        msg = _within("chosen positions among the non-special ones", n_chosen, n_real,
                      run.mlm_probability)
        if msg:
            return msg
        V = run.vocab_size
        c_in, c_ids = inputs[chosen], ids[chosen]
        masked = int((c_in == run.mask_token_id).sum())
        kept = int((c_in == c_ids).sum())
        randomised = n_chosen - masked - kept
        # a random draw may hit [MASK] or the original token (1/V each): it counts there
        for name, count, p in (("chosen positions turned into [MASK]", masked, 0.8 + 0.1 / V),
                               ("chosen positions given a random token", randomised, 0.1 - 0.2 / V),
                               ("chosen positions left unchanged", kept, 0.1 + 0.1 / V)):
            msg = _within(name, count, n_chosen, p)
            if msg:
                return msg + " — the split of the chosen positions is 80% [MASK], 10% random, 10% unchanged"
        replaced = c_in[(c_in != run.mask_token_id) & (c_in != c_ids)]
        expected_distinct = V * (1 - (1 - 1 / V) ** replaced.numel())
        if replaced.numel() >= 200 and replaced.unique().numel() < expected_distinct / 2:
            return (f"the {replaced.numel()} random replacements use only {replaced.unique().numel()} "
                    f"different tokens (about {expected_distinct:.0f} expected): draw each one "
                    f"uniformly from the whole vocabulary, torch.randint(vocab_size, shape)")
    if compare(run.first, run.second) is not None:
        return ("two calls with generators seeded alike gave different masks: pass "
                "generator=generator to every torch.bernoulli / torch.rand / torch.randint call")
    if n_real >= 1000 and run.mlm_probability not in (0.0, 1.0) and compare(run.first, run.other_seed) is None:
        return "another seed gave the very same mask: the choice must be random"
    return None


def _masking_runner(fn: Callable) -> Callable:
    def run(input_ids, vocab_size, mask_token_id, special_ids, mlm_probability, seed):
        def call(s):
            return fn(input_ids, vocab_size=vocab_size, mask_token_id=mask_token_id,
                      special_ids=special_ids, mlm_probability=mlm_probability,
                      generator=torch.Generator().manual_seed(s))

        original = input_ids.clone()  # judged against what the ids were before any call
        first = call(seed)
        return _MaskRun(original, vocab_size, mask_token_id, tuple(special_ids),
                        mlm_probability, first, call(seed), call(seed + 1))

    return run


def _compare_masking(expected: _MaskRun, got: _MaskRun, **kw) -> str | None:
    assert _judge_masking(expected) is None, "the reference masking fails its own check"
    return _judge_masking(got)


def _batch(B: int, T: int, V: int, g: torch.Generator, *, pad=0, cls=2, sep=3) -> torch.Tensor:
    """(B, T) ids: [CLS] tokens [SEP] then padding, real tokens in [5, V), random lengths."""
    ids = torch.randint(5, V, (B, T), generator=g)
    lengths = torch.randint(max(3, T // 2), T + 1, (B,), generator=g)
    for b, n in enumerate(lengths.tolist()):
        ids[b, 0], ids[b, n - 1] = cls, sep
        ids[b, n:] = pad
    return ids


def check_mask_tokens(fn) -> CheckResult:
    """``fn(input_ids, vocab_size=, mask_token_id=, special_ids=, mlm_probability=0.15,
    generator=None)`` → ``(inputs, labels)``: BERT's rule (Devlin et al., 2019, §3.1), as the
    package's ``minillm.mlm.mask_tokens``: every non-special position is chosen with probability
    ``mlm_probability``; a chosen one becomes [MASK] with probability 0.8, a token drawn uniformly
    from [0, vocab_size) with probability 0.1, and stays unchanged with probability 0.1; ``labels``
    hold the original token at chosen positions and -100 elsewhere."""
    g = torch.Generator().manual_seed(9)
    specials = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
    small = torch.tensor([[2, 17, 18, 19, 3, 0, 0], [2, 20, 21, 22, 23, 24, 3]])
    cases = [
        Case((small, 100, 4, specials, 0.5, 0), description="2 short rows with padding, p=0.5"),
        Case((_batch(200, 512, 1000, g), 1000, 4, specials, 0.15, 1),
             description="~75k real tokens, p=0.15"),
        Case((_batch(100, 256, 30522, g, cls=101, sep=102), 30522, 103, (0, 100, 101, 102, 103), 0.3, 2),
             description="BERT's ids ([MASK]=103), a large vocabulary, p=0.3"),
        Case((_batch(50, 64, 500, g), 500, 4, specials, 1.0, 3),
             description="p=1: every real token is chosen"),
        Case((_batch(50, 64, 500, g), 500, 4, specials, 0.0, 4), description="p=0: nothing is chosen"),
        Case((torch.tensor([[2, 3, 0, 0]]), 100, 4, specials, 0.9, 5),
             description="only special tokens: nothing to choose"),
    ]
    from ..mlm import mask_tokens

    return run_check("mask_tokens", _masking_runner(fn), _masking_runner(mask_tokens),
                     cases, compare_fn=_compare_masking, time_limit=_time_limit(4),
                     hint="chosen = torch.bernoulli(p where not special, else 0); labels = -100 where not "
                          "chosen; of the chosen: bernoulli(0.8) → [MASK], then bernoulli(0.5) of the "
                          "rest → torch.randint(vocab_size); the others stay")


# ----------------------------------------------------------------------------- 2. embeddings

def _tiny_bert(seed: int, **overrides):
    """A random tiny BertModel in eval mode whose LayerNorm has non-trivial weight and bias."""
    from ..models.bert import BertConfig, BertModel

    with torch.random.fork_rng(devices=[]):  # the learner's global random state stays as it was
        torch.manual_seed(seed)
        model = BertModel(BertConfig.tiny(**overrides)).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "LayerNorm" in name or "position" in name or "token_type" in name:
                    p.copy_(torch.randn_like(p) * (0.5 if "LayerNorm" in name else 0.05)
                            + (1.0 if name.endswith("LayerNorm.weight") else 0.0))
    return model


def _sum_of_embeddings(ids, tt, w, offset=0, use_types=True, use_pos=True):
    T = ids.size(1)
    x = w["word_embeddings.weight"][ids]
    if use_types:
        x = x + w["token_type_embeddings.weight"][tt if tt is not None else torch.zeros_like(ids)]
    if use_pos:
        x = x + w["position_embeddings.weight"][torch.arange(offset, offset + T)]
    return x  # (B, T, C)


def _eps_outside(x, w, eps):
    mu, sd = x.mean(-1, keepdim=True), x.std(-1, unbiased=False, keepdim=True)
    return (x - mu) / (sd + eps) * w["LayerNorm.weight"] + w["LayerNorm.bias"]


def _embedding_variants(ids, tt, w, eps) -> dict[str, Callable[[], Any]]:
    C = w["word_embeddings.weight"].size(1)
    ln = functools.partial(F.layer_norm, normalized_shape=(C,), weight=w["LayerNorm.weight"],
                           bias=w["LayerNorm.bias"])
    s = _sum_of_embeddings
    return {
        "the LayerNorm is missing: the sum of the three embeddings must be normalised":
            lambda: s(ids, tt, w),
        "the LayerNorm ignores its weight and bias (γ, β): use weights['LayerNorm.weight'] and "
        "weights['LayerNorm.bias']":
            lambda: F.layer_norm(s(ids, tt, w), (C,), eps=eps),
        "the position embeddings are missing": lambda: ln(s(ids, tt, w, use_pos=False), eps=eps),
        "the segment (token type) embeddings are missing; when token_type_ids is None every token "
        "is segment 0 and still gets row 0 of token_type_embeddings":
            lambda: ln(s(ids, tt, w, use_types=False), eps=eps),
        "positions are off by one: the first token has position 0":
            lambda: ln(s(ids, tt, w, offset=1), eps=eps),
        "LayerNorm uses the wrong epsilon (torch's default 1e-5?): use the eps argument":
            lambda: ln(s(ids, tt, w), eps=1e-5),
        "ε is added outside the square root: (x - μ) / sqrt(var + eps)":
            lambda: _eps_outside(s(ids, tt, w), w, eps),
    }


def check_bert_embeddings(fn) -> CheckResult:
    """``fn(input_ids, token_type_ids, weights, eps)`` → (B, T, C): LayerNorm(word + segment +
    position embeddings) with the ``weights`` of ``BertModel.embeddings.state_dict()``;
    ``token_type_ids`` None means all segment 0. Equal to the embeddings ``BertModel`` computes
    (its ``hidden_states[0]`` in eval mode)."""
    models: dict[int, Any] = {}

    def make(seed, B, T, types, **overrides):
        model = _tiny_bert(seed, **overrides)
        models[seed] = model
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, model.config.vocab_size, (B, T), generator=g)
        tt = torch.randint(0, model.config.type_vocab_size, (B, T), generator=g) if types else None
        w = {k: v.detach().clone() for k, v in model.embeddings.state_dict().items()}
        return (ids, tt, w, model.config.layer_norm_eps), seed

    def reference(input_ids, token_type_ids, weights, eps, seed):
        with torch.no_grad():
            out = models[seed](input_ids, token_type_ids=token_type_ids, output_hidden_states=True)
        return out.hidden_states[0]

    specs = [
        (make(0, 2, 6, True), "2 sentences of 6 tokens with segments 0 and 1"),
        (make(1, 3, 5, False), "token_type_ids=None: every token is segment 0"),
        (make(2, 1, 1, True), "a single token"),
        (make(3, 2, 64, True, type_vocab_size=3), "T = max_position_embeddings, 3 segment types"),
        (make(4, 2, 7, True, layer_norm_eps=0.5), "eps=0.5: the epsilon matters"),
    ]
    cases = [Case((*args, seed), description=d) for (args, seed), d in specs]
    by_seed = {seed: args for (args, seed), _ in specs}

    def learner(input_ids, token_type_ids, weights, eps, seed):
        return fn(input_ids, token_type_ids, weights, eps)

    def cmp(expected, got, **kw):
        msg = compare(expected, got, **kw)
        if msg is None:
            return None
        for seed, (ids, tt, w, eps) in by_seed.items():  # find this case's inputs
            if _matches(expected, reference(ids, tt, w, eps, seed), 1e-6):
                why = _diagnose(got, _embedding_variants(ids, tt, w, eps), 1e-5)
                return f"{why} ({msg})" if why else msg
        return msg

    return run_check("bert_embeddings", learner, reference, cases, atol=1e-5, compare_fn=cmp,
                     hint="x = W_word[input_ids] + W_type[token_type_ids or zeros] + "
                          "W_pos[arange(T)]; then F.layer_norm(x, (C,), weight, bias, eps)")


# ----------------------------------------------------------------------------- 3. classification heads

def _classifier(seed: int, num_labels: int):
    from ..models.bert import BertConfig, BertForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(BertConfig.tiny(num_labels=num_labels)).eval()
        with torch.no_grad():  # HF's init gives a near-linear tanh; wider weights make it matter
            model.bert.pooler.dense.weight.normal_(0, 0.5)
            model.classifier.weight.normal_(0, 0.5)
            model.classifier.bias.normal_(0, 0.5)
    return model


_HEAD_KEYS = ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight",
              "classifier.bias")


def check_cls_classifier(fn) -> CheckResult:
    """``fn(last_hidden_state, weights)`` → (B, num_labels) logits of ``BertForSequenceClassification``
    in eval mode: classifier(dropout(tanh(pooler.dense(h[:, 0])))), dropout being the identity;
    ``weights`` holds the four tensors named in ``_HEAD_KEYS``."""
    runs = {}

    def make(seed, B, T, num_labels, pad):
        model = _classifier(seed, num_labels)
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, model.config.vocab_size, (B, T), generator=g)
        mask = torch.ones(B, T, dtype=torch.long)
        if pad:
            mask[0, T // 2:] = 0
        with torch.no_grad():
            h = model.bert(ids, attention_mask=mask).last_hidden_state
            logits = model(ids, attention_mask=mask).logits
        w = {k: v.detach().clone() for k, v in model.state_dict().items() if k in _HEAD_KEYS}
        runs[seed] = logits
        return Case((h, w, seed))

    cases = [make(0, 3, 6, 2, True), make(1, 1, 4, 5, False), make(2, 4, 9, 3, True)]
    for c, d in zip(cases, ["B=3, 2 labels, padding", "B=1, 5 labels", "B=4, 3 labels, padding"]):
        c.description = d

    def reference(h, w, seed):
        return runs[seed]

    def learner(h, w, seed):
        return fn(h, w)

    def variants_for(h, w):
        pool = lambda x: torch.tanh(x @ w["bert.pooler.dense.weight"].T + w["bert.pooler.dense.bias"])  # noqa: E731
        clf = lambda x: x @ w["classifier.weight"].T + w["classifier.bias"]  # noqa: E731
        return {
            "the pooler's tanh is missing: pooled = tanh(dense(h[:, 0]))":
                lambda: clf(h[:, 0] @ w["bert.pooler.dense.weight"].T + w["bert.pooler.dense.bias"]),
            "the pooler is skipped: the classifier reads tanh(dense(h[:, 0])), not h[:, 0]":
                lambda: clf(h[:, 0]),
            "this pools the last position; [CLS] is the first token, h[:, 0]": lambda: clf(pool(h[:, -1])),
            "this averages all positions; the [CLS] head reads only h[:, 0]": lambda: clf(pool(h.mean(1))),
        }

    def cmp(expected, got, **kw):
        msg = compare(expected, got, **kw)
        if msg is None:
            return None
        for c in cases:
            if runs[c.args[2]] is expected:
                why = _diagnose(got, variants_for(c.args[0], c.args[1]), 1e-5)
                return f"{why} ({msg})" if why else msg
        return msg

    return run_check("cls_classifier", learner, reference, cases, atol=1e-5, compare_fn=cmp,
                     hint="pooled = torch.tanh(h[:, 0] @ W_pool.T + b_pool); logits = pooled @ "
                          "W_cls.T + b_cls (dropout is the identity in eval mode)")


def check_mean_pool(fn) -> CheckResult:
    """``fn(last_hidden_state, attention_mask)`` → (B, C): the average of the vectors of the real
    tokens (mask 1), as ``minillm.pretrained.mean_pool`` (sentence-transformers' pooling)."""
    from ..pretrained import mean_pool

    g = torch.Generator().manual_seed(7)
    h = torch.randn(3, 5, 4, generator=g)
    pad = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    cases = [
        Case((h, torch.ones(3, 5, dtype=torch.long)), description="no padding"),
        Case((h, pad), description="padding at the end of rows 1 and 3"),
        Case((torch.randn(2, 8, 16, generator=g), torch.tensor([[1] * 8, [1] * 3 + [0] * 5]).bool()),
             description="a bool mask"),
        Case((torch.randn(2, 3, 4, generator=g), torch.tensor([[0, 0, 0], [1, 1, 0]])),
             description="a row without any real token must give zeros, not NaN "
                         "(divide by the count clamped to at least 1e-9)"),
    ]

    def variants_for(h, m):
        return {"padding positions were averaged too: multiply by the mask and divide by the "
                "number of real tokens": lambda: h.mean(1),
                "this is the sum, not the average, of the real tokens' vectors":
                    lambda: (h * m[..., None].to(h.dtype)).sum(1)}

    def cmp(expected, got, **kw):
        msg = compare(expected, got, **kw)
        if msg is None:
            return None
        for c in cases:
            if _matches(expected, mean_pool(*c.args), 1e-7):
                why = _diagnose(got, variants_for(*c.args), 1e-6)
                return f"{why} ({msg})" if why else msg
        return msg

    return run_check("mean_pool", fn, mean_pool, cases, atol=1e-6, compare_fn=cmp,
                     hint="m = attention_mask.to(h.dtype)[:, :, None]; (h * m).sum(1) / "
                          "m.sum(1).clamp(min=1e-9)")


# ----------------------------------------------------------------------------- 4. BIO and entity F1

def _bio_variants(tags) -> dict[str, Callable[[], Any]]:
    from ..metrics.ner import bio_to_spans

    def strict():  # an I- that does not continue an entity is dropped
        out, start, kind = [], -1, ""
        for i, t in enumerate(list(tags) + ["O"]):
            p, k = (t[0], t[2:]) if t != "O" else ("O", "")
            if start >= 0 and (p != "I" or k != kind):
                out.append((kind, start, i - 1))
                start = -1
            if p == "B":
                start, kind = i, k
        return out

    ref = bio_to_spans(tags)
    return {
        "a span's end must be the index of its last token (inclusive), not one past it":
            lambda: [(k, a, b + 1) for k, a, b in ref],
        "the entity at the very end of the sequence is missing: close the open entity after the loop":
            lambda: [s for s in ref if s[2] != len(tags) - 1],
        "an I-X that does not continue an X entity (first token, after O or after another type) "
        "starts a new entity (conlleval / seqeval's default), it is not dropped": strict,
    }


def _people_daily(n: int) -> list[list[str]]:
    """The tags of the first ``n`` People's Daily validation sentences that contain an entity."""
    return [list(t) for t in _people_daily_tags()[:n]]


@functools.lru_cache(maxsize=1)
def _people_daily_tags() -> tuple:
    from ..data import load_people_daily_ner

    return tuple(tuple(ex.tags) for ex in load_people_daily_ner().validation
                 if any(t != "O" for t in ex.tags))


def check_bio_to_spans(fn) -> CheckResult:
    """``fn(tags)`` → the entities of one BIO sequence as ``(type, start, end)`` tuples, ``end``
    inclusive, in order: equal to ``minillm.metrics.ner.bio_to_spans`` (seqeval's default rules)."""
    from ..metrics.ner import bio_to_spans

    real = _people_daily(3)
    cases = [
        Case((["B-PER", "I-PER", "O", "B-LOC"],), description="two entities, the last at the end"),
        Case((["O", "O", "O"],), description="no entity"),
        Case(([],), description="an empty sentence"),
        Case((["I-LOC", "I-LOC", "O"],), description="a stray I- first: it starts an entity"),
        Case((["O", "I-ORG", "O", "B-PER", "I-LOC"],),
             description="I- after O, and I-LOC after B-PER (another type): each starts an entity"),
        Case((["B-PER", "B-PER", "I-PER"],), description="B- right after B-: two entities"),
        Case((["B-ORG", "I-ORG", "I-ORG"],), description="an entity running to the end"),
        *[Case((list(t),), description=f"People's Daily sentence {k + 1} ({len(t)} characters)")
          for k, t in enumerate(real)],
    ]

    def as_tuples(x):
        if isinstance(x, (list, tuple)) and all(isinstance(s, (list, tuple)) for s in x):
            return [tuple(s) for s in x]
        return x

    def cmp(expected, got, **kw):
        msg = compare(expected, as_tuples(got), path="spans", **kw)
        if msg is None:
            return None
        for c in cases:
            if bio_to_spans(c.args[0]) == expected:
                why = _diagnose(as_tuples(got), _bio_variants(c.args[0]), 0)
                return f"{why} ({msg}; expected {expected})" if why else f"{msg}; expected {expected}"
        return msg

    return run_check("bio_to_spans", fn, bio_to_spans, cases, compare_fn=cmp,
                     hint="walk the tags keeping the open entity (start, type); close it before O, "
                          "B-, or a tag of another type; B-X, or I-X with no open X entity, opens one")


def _corrupt(tags: Sequence[Sequence[str]], seed: int) -> list[list[str]]:
    """Predictions: gold tags with some entities dropped, retyped, shifted, and some noise."""
    g = torch.Generator().manual_seed(seed)
    types = ["PER", "LOC", "ORG"]
    out = []
    for sent in tags:
        s = list(sent)
        for i in range(len(s)):
            r = float(torch.rand(1, generator=g))
            if r < 0.04:
                s[i] = "O"
            elif r < 0.06:
                s[i] = f"B-{types[int(torch.randint(3, (1,), generator=g))]}"
            elif r < 0.08 and s[i] != "O":
                s[i] = f"{s[i][:2]}{types[int(torch.randint(3, (1,), generator=g))]}"
        out.append(s)
    return out


def _ref_entity_f1(true_tags, pred_tags, decode=None):
    from ..metrics.ner import entity_scores

    m = entity_scores(true_tags, pred_tags).micro
    return (m.precision, m.recall, m.f1)


def _f1_variants(true_tags, pred_tags) -> dict[str, Callable[[], Any]]:
    from ..metrics.ner import bio_to_spans, entity_scores

    def merged():  # spans of all sentences in one set: the same span in two sentences counts once
        g = {s for t in true_tags for s in bio_to_spans(t)}
        p = {s for t in pred_tags for s in bio_to_spans(t)}
        tp = len(g & p)
        pr, rc = (tp / len(p) if p else 0.0), (tp / len(g) if g else 0.0)
        return (pr, rc, 2 * pr * rc / (pr + rc) if pr + rc else 0.0)

    def tokens():  # token-level scores over non-O tags
        pairs = [(a, b) for t, p in zip(true_tags, pred_tags) for a, b in zip(t, p)]
        tp = sum(a == b != "O" for a, b in pairs)
        n_p, n_g = sum(b != "O" for _, b in pairs), sum(a != "O" for a, _ in pairs)
        pr, rc = (tp / n_p if n_p else 0.0), (tp / n_g if n_g else 0.0)
        return (pr, rc, 2 * pr * rc / (pr + rc) if pr + rc else 0.0)

    macro = entity_scores(true_tags, pred_tags).macro
    return {
        "an entity is identified by its sentence too: count (sentence, type, start, end), "
        "otherwise equal spans in different sentences are merged": merged,
        "these are token-level scores; entity-level scores count whole entities": tokens,
        "this is the macro average over types; micro pools the counts of all types first":
            lambda: (macro.precision, macro.recall, macro.f1),
    }


def check_entity_f1(fn) -> CheckResult:
    """``fn(true_tags, pred_tags, decode)`` → ``(precision, recall, f1)``, entity-level micro
    averages over a corpus (lists of sentences of BIO tags), ``decode`` being a BIO decoder like
    ``bio_to_spans``; equal to ``minillm.metrics.ner.entity_scores(...).micro`` (= seqeval)."""
    from ..metrics.ner import bio_to_spans

    real = [list(t) for t in _people_daily(200)]
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]]
    cases = [
        Case((gold, gold, bio_to_spans), description="perfect predictions"),
        Case((gold, [["O"] * 4, ["O"] * 4], bio_to_spans),
             description="nothing predicted: precision 0/0 counts as 0"),
        Case((gold, [["B-PER", "O", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O"]], bio_to_spans),
             description="a span one token short counts as wrong"),
        Case((gold, [["B-LOC", "I-LOC", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "B-PER"]], bio_to_spans),
             description="a wrong type, and an extra entity"),
        Case(([["B-PER", "O"], ["B-PER", "O"]], [["B-PER", "O"], ["O", "O"]], bio_to_spans),
             description="the same span in two sentences is two entities"),
        Case((real, _corrupt(real, 0), bio_to_spans),
             description=f"{len(real)} People's Daily sentences, noisy predictions"),
    ]

    def cmp(expected, got, **kw):
        if isinstance(got, (list, tuple)) and len(got) == 3:
            got = tuple(got)
        msg = compare(expected, got, path="(precision, recall, f1)", **kw)
        if msg is None:
            return None
        for c in cases:
            if _ref_entity_f1(*c.args) == expected:
                why = _diagnose(got, _f1_variants(c.args[0], c.args[1]), 1e-9)
                return f"{why} ({msg})" if why else msg
        return msg

    return run_check("entity_f1", fn, _ref_entity_f1, cases, atol=1e-9, compare_fn=cmp,
                     hint="gold = {(k, *span) for k, tags in enumerate(true_tags) for span in "
                          "decode(tags)}, same for pred; tp = len(gold & pred); precision = tp / "
                          "len(pred), recall = tp / len(gold) (0 when empty); f1 = 2pr / (p + r)")


# ----------------------------------------------------------------------------- 5. an MLM training step

def _mlm_model(seed: int):
    from ..models.bert import BertConfig, BertForMaskedLM

    # initializer_range 0.1 (not 0.02): attention far enough from uniform that forgetting the
    # padding mask changes the loss by ~5e-3, well above the comparison's tolerance
    config = BertConfig.tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                             initializer_range=0.1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertForMaskedLM(config)


def _ref_mlm_step(model, optimizer, input_ids, attention_mask, mask_fn, max_grad_norm=1.0):
    model.train()
    inputs, labels = mask_fn(input_ids)
    logits = model(inputs, attention_mask=attention_mask).logits  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)
    chosen = labels != IGNORE_INDEX
    accuracy = (logits.argmax(-1)[chosen] == labels[chosen]).float().mean().item()
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return {"loss": loss.item(), "masked_accuracy": accuracy}


def _seeded_mask_fn(vocab_size: int, specials: tuple[int, ...]):
    """The package's masking with a fixed draw per input (seeded by the ids), so two training runs
    see the same masks."""
    from ..mlm import mask_tokens as mask

    def mask_fn(input_ids):
        seed = int((input_ids * torch.arange(1, input_ids.numel() + 1).view_as(input_ids)).sum())
        return mask(input_ids, vocab_size=vocab_size, mask_token_id=4, special_ids=specials,
                    mlm_probability=0.3, generator=torch.Generator().manual_seed(seed))

    return mask_fn


def check_mlm_training_step(fn) -> CheckResult:
    """``fn(model, optimizer, input_ids, attention_mask, mask_fn, max_grad_norm=1.0)`` → ``{"loss":
    float, "masked_accuracy": float}``: one MLM step on a ``BertForMaskedLM`` — mask with
    ``mask_fn``, cross-entropy over the chosen positions only, zero the gradients, backward, clip the
    gradient norm, optimizer step. Checked over several steps against the reference: the losses, the
    accuracies and the weights after training must agree."""
    specials = (0, 1, 2, 3, 4)
    base = _mlm_model(0)
    V = base.config.vocab_size
    g = torch.Generator().manual_seed(11)
    batches = [_batch(4, 12, V, g) for _ in range(4)]

    def train(step, n_steps, lr, max_grad_norm, padded):
        model = copy.deepcopy(base)
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        mask_fn = _seeded_mask_fn(V, specials)
        history = []
        for ids in batches[:n_steps]:
            attention_mask = (ids != 0).long() if padded else torch.ones_like(ids)
            ids = ids.clone() if padded else torch.where(ids == 0, torch.full_like(ids, 7), ids)
            ids_before, mask_before = ids.clone(), attention_mask.clone()
            out = step(model, optimizer, ids, attention_mask, mask_fn, max_grad_norm)
            for name, before, after in (("input_ids", ids_before, ids),
                                        ("attention_mask", mask_before, attention_mask)):
                if not torch.equal(before, after):
                    return {"mutated": name}
            if isinstance(out, dict):
                out = {k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
                       for k, v in out.items()}
            history.append(out)
        return {"steps": history, "weights": {k: v.detach().clone() for k, v in model.state_dict().items()}}

    cases = [
        Case((1, 0.5, 1.0, False), description="one step, no padding"),
        Case((1, 0.5, 1.0, True), description="one step, padded rows (use the attention mask)"),
        Case((1, 0.5, 0.05, True), description="one step, max_grad_norm=0.05: clipping matters"),
        Case((4, 0.5, 1.0, True), description="four steps (gradients must not pile up)"),
    ]

    def cmp(expected, got, **kw):
        if "mutated" in got:
            return (f"your function modified its input `{got['mutated']}` in place; the caller still "
                    f"needs it — build new tensors instead of writing into it")
        for k, (e, s) in enumerate(zip(expected["steps"], got["steps"])):
            if not isinstance(s, dict):
                return f"step {k + 1}: expected a dict {{'loss': ..., 'masked_accuracy': ...}}, got {type(s).__name__}"
            msg = compare(e, s, atol=1e-5, rtol=1e-4, path=f"step {k + 1}")
            if msg:
                if k > 0:
                    msg += (" — the first step agreed, a later one does not: call "
                            "optimizer.zero_grad() every step, or gradients add up")
                elif "loss" in msg:
                    msg += (" — the loss averages the cross-entropy over the chosen positions only "
                            "(labels -100 elsewhere, ignore_index=-100), with the attention mask")
                return msg
        for name, e in expected["weights"].items():
            msg = compare(e, got["weights"][name], atol=1e-5, rtol=1e-4, path=f"weight {name}")
            if msg:
                return msg + (" — the loss agrees but the update does not: zero_grad, backward, "
                              "clip_grad_norm_(model.parameters(), max_grad_norm), then "
                              "optimizer.step(), in this order")
        return None

    def learner(n_steps, lr, max_grad_norm, padded):
        return train(fn, n_steps, lr, max_grad_norm, padded)

    def reference(n_steps, lr, max_grad_norm, padded):
        return train(_ref_mlm_step, n_steps, lr, max_grad_norm, padded)

    return run_check("mlm_training_step", learner, reference, cases, compare_fn=cmp,
                     time_limit=_time_limit(6),
                     hint="inputs, labels = mask_fn(input_ids); logits = model(inputs, "
                          "attention_mask=attention_mask).logits; F.cross_entropy over (B*T, V) with "
                          "ignore_index=-100; zero_grad, backward, clip_grad_norm_, step")
