"""Checks for chapter 10's exercises (T5): RMSNorm, the relative-position buckets, span corruption's
inputs and targets for a given noise mask, the decoder input of teacher forcing (shift right), and
the training loss of a whole tiny T5.

Each check compares the learner's function with the package's reference (``minillm.norms.RMSNorm``,
``minillm.models.t5.relative_position_bucket``, ``minillm.span_corruption.span_corrupt``,
``minillm.models.t5.shift_right``, ``T5ForConditionalGeneration(..., labels=).loss``) and, where the
answer is wrong, tries the usual mistakes on the same inputs (the mean subtracted, the directions
swapped, one sentinel per token, -100 left in the decoder input, the labels not shifted...) to say
which one it is.

The span-corruption check cannot hand ``span_corrupt`` a mask: it draws one. Each case therefore
draws the mask with ``random_spans_noise_mask`` from a seeded generator and calls ``span_corrupt``
with a generator seeded alike, whose first draw is that very mask; the learner gets the ids and the
mask. Such masks always start with a kept token and end with a noise span, as T5's do.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from . import Case, CheckResult, compare, run_check

IGNORE_INDEX = -100  # label of the positions the loss skips


# ----------------------------------------------------------------------------- helpers

def _matches(expected: Any, got: Any, atol: float, rtol: float = 1e-5) -> bool:
    try:
        return compare(expected, got, atol=atol, rtol=rtol) is None
    except Exception:  # noqa: BLE001 — a variant that cannot be compared does not match
        return False


def _diagnose(got: Any, variants: dict[str, Callable[[], Any]], atol: float, rtol: float = 1e-5
              ) -> str | None:
    """The first known mistake whose result equals ``got`` (its sentence), or None."""
    for sentence, make in variants.items():
        try:
            wrong = make()
        except Exception:  # noqa: BLE001 — a variant that does not apply to this case
            continue
        if _matches(wrong, got, atol, rtol):
            return sentence
    return None


class _Recorder:
    """The reference function, remembering the arguments of its last call: ``run_check`` calls the
    reference, then the learner's function, then the comparison, one case at a time, so the
    comparison can rebuild the usual mistakes from this case's inputs."""

    def __init__(self, fn: Callable):
        self.fn, self.args = fn, ()

    def __call__(self, *args):
        self.args = args
        return self.fn(*args)


def _integer_result(got: Any, what: str) -> str | None:
    """A sentence if ``got`` is a tensor of floats or bools where integer ids are expected."""
    if isinstance(got, torch.Tensor) and got.is_floating_point() and bool(got.isnan().any()):
        return f"{what}: got NaN at {int(got.isnan().sum())} positions; expected integer ids (torch.long)"
    if isinstance(got, torch.Tensor) and (got.is_floating_point() or got.dtype == torch.bool):
        return (f"{what}: expected integer ids (torch.long), got dtype "
                f"{str(got.dtype).replace('torch.', '')}")
    return None


# ----------------------------------------------------------------------------- 1. RMSNorm

def _ref_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    from ..norms import RMSNorm

    norm = RMSNorm(x.size(-1), eps).to(weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def _rms_variants(x, w, eps) -> dict[str, Callable[[], Any]]:
    xf = x.float()
    ms = xf.pow(2).mean(-1, keepdim=True)
    out = lambda y: (y.to(w.dtype) * w)  # noqa: E731
    return {
        "you subtracted the mean (that is LayerNorm): RMSNorm divides x itself by "
        "sqrt(mean(x²) + eps), with no centring and no bias":
            lambda: out(F.layer_norm(xf, (x.size(-1),), eps=eps)),
        "you divided by the standard deviation, which subtracts the mean inside: the RMS is "
        "sqrt(mean(x²)), not x.std()":
            lambda: out(xf / (xf.var(-1, unbiased=False, keepdim=True) + eps).sqrt()),
        "the gain `weight` is missing: multiply the normalised x by weight":
            lambda: (xf * torch.rsqrt(ms + eps)).to(x.dtype),
        "eps is added outside the square root: x / sqrt(mean(x²) + eps)":
            lambda: out(xf / (ms.sqrt() + eps)),
        "this divides by the root of the *sum* of squares; RMS uses the mean":
            lambda: out(xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)),
        "the statistic runs over the wrong dimension: average x² over the last one (the channels)":
            lambda: out(xf * torch.rsqrt(xf.pow(2).mean(-2, keepdim=True) + eps)),
        "the eps argument is ignored (a fixed 1e-6?): use the eps you are given":
            lambda: out(xf * torch.rsqrt(ms + 1e-6)),
        "x² overflowed or underflowed in float16 (its largest number is 65504): compute the mean of "
        "squares in float32 — x.float().pow(2).mean(-1, keepdim=True) — and cast back at the end":
            lambda: w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)),
    }


def _low_precision_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol): one or two units in the last place of the result's dtype."""
    if dtype == torch.bfloat16:
        return 1e-2, 1.6e-2
    if dtype == torch.float16:
        return 2e-3, 2e-3
    return 1e-5, 1e-5


def check_rms_norm(fn) -> CheckResult:
    """``fn(x, weight, eps)`` → same shape and dtype as ``x``: T5's RMSNorm over the last dimension,
    ``weight * x / sqrt(mean(x²) + eps)`` with the mean of squares in float32 and the result cast
    back to the (fp16/bf16) dtype, as ``minillm.norms.RMSNorm`` (= ``transformers``' T5LayerNorm)."""
    g = torch.Generator().manual_seed(10)

    def gain(C, dtype=torch.float32):
        return (1 + 0.3 * torch.randn(C, generator=g)).to(dtype)

    cases = [
        Case((torch.randn(2, 5, 16, generator=g) * 3 + 2, gain(16), 1e-6),
             description="(B, T, C) = (2, 5, 16), mean far from 0"),
        Case((torch.randn(3, 8, generator=g), gain(8), 0.5), description="eps = 0.5: the epsilon matters"),
        Case(((torch.randn(2, 4, 32, generator=g) * 500).half(), gain(32, torch.float16), 1e-6),
             description="float16 x and weight with entries in the hundreds: x² overflows float16"),
        Case((torch.randn(2, 3, 64, generator=g).bfloat16(), gain(64, torch.bfloat16), 1e-6),
             description="bfloat16 x and weight: the result stays bfloat16"),
        Case((torch.randn(1, 1, 7, generator=g) * 1e-3, gain(7), 1e-6),
             description="tiny entries: eps is not negligible"),
    ]
    ref = _Recorder(_ref_rms_norm)

    def cmp(expected, got, **kw):
        if isinstance(got, torch.Tensor) and got.dtype != expected.dtype and got.shape == expected.shape:
            return (f"expected dtype {str(expected.dtype).replace('torch.', '')} like x, got "
                    f"{str(got.dtype).replace('torch.', '')}: compute in float32, then cast the "
                    f"normalised x back (.to(weight.dtype)) before multiplying by weight")
        atol, rtol = _low_precision_tolerance(expected.dtype)
        msg = compare(expected, got, atol=atol, rtol=rtol)
        if msg is None:
            return None
        why = _diagnose(got, _rms_variants(*ref.args), atol, rtol)
        return f"{why} ({msg})" if why else msg

    return run_check("rms_norm", fn, ref, cases, compare_fn=cmp,
                     hint="variance = x.float().pow(2).mean(-1, keepdim=True); y = x.float() * "
                          "torch.rsqrt(variance + eps); return weight * y.to(weight.dtype)")


# ----------------------------------------------------------------------------- 2. relative buckets

def _bucket_variant(rel, bidirectional, num_buckets, max_distance, *, flip=False, halve=True,
                    clamp=True, offset=True, rounded=False, abs_one_sided=False):
    """T5's bucketing (the package's, written out) with one thing changed."""
    rel = rel.long()
    if flip:
        rel = -rel
    buckets = torch.zeros_like(rel)
    if bidirectional:
        if halve:
            num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets
        n = rel.abs()
    else:
        n = rel.abs() if abs_one_sided else (-rel).clamp(min=0)
    exact = num_buckets // 2
    ratio = torch.log(n.float() / exact) / math.log(max_distance / exact) * (num_buckets - exact)
    far = (exact if offset else 0) + (ratio.round() if rounded else ratio).long()
    if clamp:
        far = far.clamp(max=num_buckets - 1)
    return buckets + torch.where(n < exact, n, far)


def _bucket_variants(rel, bidirectional, num_buckets, max_distance) -> dict[str, Callable[[], Any]]:
    v = lambda **kw: lambda: _bucket_variant(rel, bidirectional, num_buckets, max_distance, **kw)  # noqa: E731
    sign = ("buckets for negative and positive distances are swapped: relative_position is key − "
            "query, keys *after* the query (> 0) get the upper half" if bidirectional else
            "the direction is reversed: the decoder buckets how far *back* the key is, "
            "n = max(-relative_position, 0); keys after the query (> 0) all get bucket 0")
    return {
        sign: v(flip=True),
        "in the bidirectional case each direction gets num_buckets // 2 buckets: halve num_buckets "
        "before splitting it into exact and log-spaced ones": v(halve=False),
        "one-sided (decoder) buckets: keys after the query all share bucket 0; take "
        "max(-relative_position, 0), not the absolute value": v(abs_one_sided=True),
        "distances beyond max_distance must share the last bucket: clamp the log-spaced bucket at "
        "num_buckets - 1 (of this direction)": v(clamp=False),
        "the log-spaced buckets come after the exact ones: add max_exact (= num_buckets // 2 of this "
        "direction) to the log-spaced part": v(offset=False),
        "the log-spaced bucket is rounded; T5 truncates it (.long() / floor)": v(rounded=True),
    }


def check_relative_position_bucket(fn) -> CheckResult:
    """``fn(relative_position, bidirectional, num_buckets, max_distance)`` → int64 buckets, same shape:
    T5's distance buckets, as ``minillm.models.t5.relative_position_bucket`` (= ``transformers``'
    ``T5Attention._relative_position_bucket``)."""
    from ..models.t5 import relative_position_bucket

    wide = torch.arange(-300, 301)
    q, k = torch.arange(12)[:, None], torch.arange(12)[None, :]
    cases = [
        Case((wide, True, 32, 128), description="distances -300..300, encoder (bidirectional), T5's 32 buckets"),
        Case((wide, False, 32, 128), description="distances -300..300, decoder (one-sided), 32 buckets"),
        Case((k - q, True, 8, 20), description="the (12, 12) key − query matrix of an encoder, 8 buckets"),
        Case((k - q, False, 8, 20), description="the (12, 12) key − query matrix of a decoder, 8 buckets"),
        Case((torch.tensor([-1000, -129, -128, -127, -16, -15, -8, -7, 0, 7, 8, 15, 16, 127, 128, 129, 1000]),
              True, 32, 128), description="the boundaries: ±7/8, ±15/16, ±127/128, far away"),
        Case((torch.arange(-60, 61), False, 16, 50), description="decoder, 16 buckets, max_distance 50"),
    ]
    ref = _Recorder(relative_position_bucket)

    def cmp(expected, got, **kw):
        msg = _integer_result(got, "buckets") or compare(expected, got)
        if msg is None:
            return None
        rel, bidirectional, nb, md = ref.args
        why = _diagnose(got, _bucket_variants(rel, bidirectional, nb, md), 0)
        return f"{why} ({msg})" if why else msg

    return run_check("relative_position_bucket", fn, ref, cases, compare_fn=cmp,
                     hint="bidirectional: num_buckets //= 2, bucket = (rel > 0) * num_buckets, n = |rel|; "
                          "one-sided: n = max(-rel, 0); exact = num_buckets // 2; n < exact → n, else "
                          "exact + floor(log(n/exact) / log(max_distance/exact) * (num_buckets - exact)), "
                          "at most num_buckets - 1")


# ----------------------------------------------------------------------------- 3. span corruption

def _runs(noise: list[bool]) -> list[tuple[bool, int, int]]:
    """(is_noise, start, end) of each run of equal mask values, end exclusive."""
    runs, start = [], 0
    for i in range(1, len(noise) + 1):
        if i == len(noise) or noise[i] != noise[start]:
            runs.append((noise[start], start, i))
            start = i
    return runs


def _corrupt_variant(ids, noise_mask, vocab_size, *, sentinel=None, per_token=False, keep_noise=False,
                     target_sentinels=True, continue_numbering=False, final_sentinel=False, swap=False):
    """Span corruption written as a loop over runs, with one thing changed."""
    sentinel = sentinel or (lambda i: vocab_size - 1 - i)
    ids_list, noise = ids.tolist(), [bool(b) for b in noise_mask.tolist()]
    spans = [ids_list[a:b] for is_noise, a, b in _runs(noise) if is_noise]
    if per_token:
        spans = [[t] for span in spans for t in span]
    offset = len(spans) if continue_numbering else 0  # the targets' first sentinel
    inputs, targets, i = [], [], 0
    for is_noise, a, b in _runs(noise):
        if not is_noise:
            inputs += ids_list[a:b]
            continue
        for _ in range(b - a if per_token else 1):
            inputs += [sentinel(i)] + (spans[i] if keep_noise else [])
            targets += ([sentinel(offset + i)] if target_sentinels else []) + spans[i]
            i += 1
    if final_sentinel:
        targets.append(sentinel(offset + i))
    inputs, targets = torch.tensor(inputs, dtype=torch.long), torch.tensor(targets, dtype=torch.long)
    return (targets, inputs) if swap else (inputs, targets)


def _corruption_variants(ids, noise_mask, vocab_size) -> dict[str, Callable[[], Any]]:
    v = lambda **kw: lambda: _corrupt_variant(ids, noise_mask, vocab_size, **kw)  # noqa: E731
    return {
        "each span gets ONE sentinel: consecutive noise tokens form one span and share it, they do "
        "not get a sentinel each": v(per_token=True),
        "the sentinels are off by one: <extra_id_0> is vocab_size - 1, the last id of the vocabulary":
            v(sentinel=lambda i: vocab_size - i),
        "the sentinels count down from the top of the vocabulary: span i gets vocab_size - 1 - i":
            v(sentinel=lambda i: vocab_size - 100 + i),
        "every span got the same sentinel; span i gets its own, <extra_id_i> = vocab_size - 1 - i":
            v(sentinel=lambda i: vocab_size - 1),
        "inputs still hold the dropped tokens: a noise span is *replaced* by its sentinel":
            v(keep_noise=True),
        "targets lack the sentinels: each dropped span follows the sentinel that marks its place":
            v(target_sentinels=False),
        "targets must reuse the inputs' sentinels (span i is <extra_id_i> on both sides), not "
        "continue counting": v(continue_numbering=True),
        "targets end with the last span: these masks end with noise, so no sentinel follows it":
            v(final_sentinel=True),
        "inputs and targets are swapped: inputs keep the text with sentinels in the gaps, targets "
        "list the dropped spans": v(swap=True),
    }


def check_span_corruption_inputs_targets(fn) -> CheckResult:
    """``fn(ids, noise_mask, vocab_size)`` → ``(inputs, targets)``, two 1-D int64 tensors: T5's span
    corruption for the given bool mask — each noise span replaced in ``inputs`` by one sentinel,
    ``<extra_id_i>`` = ``vocab_size - 1 - i`` for the i-th span; ``targets`` = each span behind its
    sentinel. Equal to ``minillm.span_corruption.span_corrupt`` when it draws that mask."""
    from ..span_corruption import random_spans_noise_mask, span_corrupt

    def make(seed, length, vocab_size, density=0.15, mean_span=3.0):
        g = torch.Generator().manual_seed(1000 + seed)
        ids = torch.randint(2, vocab_size - 100, (length,), generator=g)
        noise = random_spans_noise_mask(length, density, mean_span,
                                        generator=torch.Generator().manual_seed(seed))
        return (ids, noise, vocab_size, density, mean_span, seed)

    specs = [
        (make(0, 20, 300, 0.3), "20 tokens, density 0.3"),
        (make(1, 2, 150, 0.5, 1.0), "2 tokens: one kept, one dropped"),
        (make(2, 40, 1024, 0.5, 1.0), "40 tokens, density 0.5, spans of 1 token on average"),
        (make(3, 512, 32128, 0.15, 3.0), "512 tokens with T5's vocabulary (32,128): 26 spans"),
        (make(4, 64, 500, 0.15, 8.0), "64 tokens, one long span"),
    ]
    cases = [Case(args, description=d) for args, d in specs]

    def reference(ids, noise, vocab_size, density, mean_span, seed):
        inputs, targets = span_corrupt(ids, vocab_size=vocab_size, noise_density=density,
                                       mean_noise_span_length=mean_span,
                                       generator=torch.Generator().manual_seed(seed))
        return inputs, targets

    ref = _Recorder(reference)

    def learner(ids, noise, vocab_size, density, mean_span, seed):
        return fn(ids, noise, vocab_size)

    def cmp(expected, got, **kw):
        if isinstance(got, list):
            got = tuple(got)
        if isinstance(got, tuple) and len(got) == 2:
            for name, t in zip(("inputs", "targets"), got):
                msg = _integer_result(t, name)
                if msg:
                    return msg
        msg = compare(expected, got, path="(inputs, targets)")
        if msg is None:
            return None
        ids, noise, vocab_size = ref.args[:3]
        why = _diagnose(got, _corruption_variants(ids, noise, vocab_size), 0)
        return f"{why} ({msg})" if why else msg

    return run_check("span_corruption_inputs_targets", learner, ref, cases, compare_fn=cmp,
                     hint="walk the runs of equal noise_mask values; a kept run goes to inputs as it is; "
                          "the i-th noise run puts vocab_size - 1 - i in inputs, and vocab_size - 1 - i "
                          "followed by its tokens in targets")


# ----------------------------------------------------------------------------- 4. shift right

def _shift_variants(labels, start, pad) -> dict[str, Callable[[], Any]]:
    def shifted(first, fill=None, left=False):
        if left:
            out = torch.cat([labels[:, 1:], labels.new_full((labels.size(0), 1), first)], dim=1)
        else:
            out = torch.cat([labels.new_full((labels.size(0), 1), first), labels[:, :-1]], dim=1)
        return out if fill is None else out.masked_fill(out == IGNORE_INDEX, fill)

    return {
        "-100 is not replaced by pad: the loss ignores -100 labels, but the decoder input must be real "
        "token ids (an embedding lookup of -100 fails)": lambda: shifted(start),
        "-100 became the start token; it must become pad_token_id": lambda: shifted(start, start),
        "the first decoder input is decoder_start_token_id, not pad_token_id": lambda: shifted(pad, pad),
        "this shifts left: the decoder input at step t is the label of step t - 1, so the start "
        "token comes first and the last label is dropped": lambda: shifted(start, pad, left=True),
        "the labels were not shifted: position t must see y_{t-1}, never y_t itself (it would copy it)":
            lambda: labels.masked_fill(labels == IGNORE_INDEX, pad),
        "the decoder input has as many positions as the labels: put the start token in front and drop "
        "the last label": lambda: torch.cat([labels.new_full((labels.size(0), 1), start),
                                             labels.masked_fill(labels == IGNORE_INDEX, pad)], dim=1),
    }


def check_shift_right(fn) -> CheckResult:
    """``fn(labels, decoder_start_token_id, pad_token_id)`` → (B, T) decoder input for teacher
    forcing: ``[start, y_0, ..., y_{T-2}]`` with -100 replaced by ``pad_token_id``, as
    ``minillm.models.t5.shift_right`` (= ``transformers``' ``T5PreTrainedModel._shift_right``)."""
    from ..models.t5 import shift_right

    g = torch.Generator().manual_seed(4)
    padded = torch.randint(2, 100, (3, 7), generator=g)
    padded[0, 4:] = IGNORE_INDEX
    padded[2, 2:] = IGNORE_INDEX
    middle = torch.tensor([[11, -100, 12, 13, 1], [21, 22, -100, -100, 1]])
    cases = [
        Case((torch.tensor([[10, 11, 12, 1]]), 0, 0), description="one row, no -100, T5's start = pad = 0"),
        Case((padded, 0, 0), description="3 rows padded with -100 at the end"),
        Case((padded, 5, 3), description="start token 5 ≠ pad 3"),
        Case((middle, 2, 7), description="-100 in the middle of rows, start 2, pad 7"),
        Case((torch.tensor([[42], [-100]]), 9, 0), description="T = 1: only the start token"),
    ]
    ref = _Recorder(shift_right)

    def cmp(expected, got, **kw):
        msg = _integer_result(got, "decoder input") or compare(expected, got)
        if msg is None:
            return None
        why = _diagnose(got, _shift_variants(*ref.args), 0)
        return f"{why} ({msg})" if why else msg

    return run_check("shift_right", fn, ref, cases, compare_fn=cmp,
                     hint="out = torch.full_like(labels, decoder_start_token_id); out[:, 1:] = "
                          "labels[:, :-1]; then out.masked_fill(out == -100, pad_token_id)")


# ----------------------------------------------------------------------------- 5. the T5 loss

def _tiny_t5(seed: int, **overrides):
    """A random tiny T5ForConditionalGeneration in eval mode, dropout off, weights wide enough that
    the attention is far from uniform (forgetting a mask changes the loss)."""
    from ..models.t5 import T5Config, T5ForConditionalGeneration

    with torch.random.fork_rng(devices=[]):  # the learner's global random state stays as it was
        torch.manual_seed(seed)
        config = T5Config.tiny(dropout_rate=0.0, initializer_factor=1.0, **overrides)
        return T5ForConditionalGeneration(config).eval()


class _NoLabels:
    """The model as the learner gets it: called without ``labels`` (the exercise computes the loss)."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def __call__(self, *args, labels=None, **kwargs):
        if labels is not None:
            raise ValueError("call the model without labels=: build the decoder input (exercise 4) "
                             "and compute the cross-entropy from the logits yourself")
        return self.model(*args, **kwargs)


def _loss_variants(model, input_ids, attention_mask, labels) -> dict[str, Callable[[], Any]]:
    c = model.config

    def shifted(start):
        dec = torch.cat([labels.new_full((labels.size(0), 1), start), labels[:, :-1]], dim=1)
        return dec.masked_fill(dec == IGNORE_INDEX, c.pad_token_id)

    def logits(dec, mask=attention_mask):
        with torch.no_grad():
            return model(input_ids, attention_mask=mask, decoder_input_ids=dec).logits  # (B, T, V)

    def ce(lg, target=labels, reduction="mean"):
        return F.cross_entropy(lg.reshape(-1, lg.size(-1)).float(), target.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction=reduction)

    def per_sequence():
        lg = logits(shifted(c.decoder_start_token_id))
        tok = ce(lg, reduction="none").view(labels.shape)
        real = (labels != IGNORE_INDEX).float()
        return ((tok * real).sum(1) / real.sum(1)).mean()

    start = c.decoder_start_token_id
    return {
        "the decoder input must be the labels shifted right (start token first): fed the labels "
        "themselves, position t sees the token it must predict":
            lambda: ce(logits(labels.masked_fill(labels == IGNORE_INDEX, c.pad_token_id))),
        "the encoder's attention_mask is missing: pass attention_mask= so no token attends to "
        "input padding": lambda: ce(logits(shifted(start), None)),
        "the padding positions were counted in the loss: skip the labels that are -100 "
        "(F.cross_entropy(..., ignore_index=-100))":
            lambda: ce(logits(shifted(start)), labels.masked_fill(labels == IGNORE_INDEX, c.pad_token_id)),
        "this is the sum over tokens; the loss is the mean over the target tokens that are not -100":
            lambda: ce(logits(shifted(start)), reduction="sum"),
        "this averages each sequence first, then the sequences; T5's loss is one mean over all "
        "target tokens of the batch (long targets weigh more)": per_sequence,
        "the first decoder input is model.config.decoder_start_token_id, not the pad id":
            lambda: ce(logits(shifted(c.pad_token_id))),
    }


def check_t5_loss(fn) -> CheckResult:
    """``fn(model, input_ids, attention_mask, labels)`` → the 0-d loss tensor of a
    ``T5ForConditionalGeneration``: decoder input = labels shifted right (start token in front, -100
    → pad), logits from ``model(input_ids, attention_mask=, decoder_input_ids=)``, mean cross-entropy
    over the labels that are not -100; equal to ``model(..., labels=labels).loss``. The model is
    handed over without its ``labels`` shortcut."""
    models: dict[int, Any] = {}

    def make(seed, B, S, T, pad, **overrides):
        model = _tiny_t5(seed, **overrides)
        models[seed] = model
        V = model.config.vocab_size
        g = torch.Generator().manual_seed(seed)
        input_ids = torch.randint(2, V, (B, S), generator=g)
        labels = torch.randint(2, V, (B, T), generator=g)
        attention_mask = torch.ones(B, S, dtype=torch.long)
        if pad:
            for b in range(B):
                n_in, n_out = S - (b * 2) % (S - 1), T - (b * 3) % (T - 1)
                input_ids[b, n_in:], attention_mask[b, n_in:] = model.config.pad_token_id, 0
                labels[b, n_out:] = IGNORE_INDEX
        return Case((seed, input_ids, attention_mask, labels))

    cases = [make(0, 2, 6, 5, False), make(1, 3, 9, 7, True),
             make(2, 3, 8, 6, True, decoder_start_token_id=2),
             make(3, 2, 7, 6, True, feed_forward_proj="gated-gelu", tie_word_embeddings=False)]
    for c, d in zip(cases, ["no padding", "padded inputs and -100 labels", "decoder_start_token_id = 2 "
                            "≠ pad 0, padded", "T5 v1.1 (gated-gelu, untied head), padded"]):
        c.description = d

    def reference(seed, input_ids, attention_mask, labels):
        with torch.no_grad():
            return models[seed](input_ids, attention_mask=attention_mask, labels=labels).loss

    ref = _Recorder(reference)

    def learner(seed, input_ids, attention_mask, labels):
        out = fn(_NoLabels(models[seed]), input_ids, attention_mask, labels)
        return out.detach() if isinstance(out, torch.Tensor) else out

    def cmp(expected, got, **kw):
        if isinstance(got, (int, float)) and not isinstance(got, bool):
            return f"expected the loss as a 0-d tensor (backward needs it), got a {type(got).__name__}"
        msg = compare(expected, got, atol=1e-5, rtol=1e-5, path="loss")
        if msg is None:
            return None
        seed, input_ids, attention_mask, labels = ref.args
        why = _diagnose(got, _loss_variants(models[seed], input_ids, attention_mask, labels), 1e-5)
        return f"{why} ({msg})" if why else msg

    return run_check("t5_loss", learner, ref, cases, compare_fn=cmp,
                     hint="decoder_input_ids = labels shifted right behind model.config.decoder_start_token_id, "
                          "-100 → model.config.pad_token_id; logits = model(input_ids, attention_mask="
                          "attention_mask, decoder_input_ids=decoder_input_ids).logits; F.cross_entropy("
                          "logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)")


__all__ = ["check_relative_position_bucket", "check_rms_norm", "check_shift_right",
           "check_span_corruption_inputs_targets", "check_t5_loss"]
