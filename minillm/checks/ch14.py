"""Checks for chapter 14's exercises (prompting and prompt tuning): scoring the classes of a prompt
through a verbalizer, putting a soft prompt in front of the input (with its attention mask and
labels), cutting a prefix-tuning table into per-layer keys and values, and the forward pass of a
bottleneck adapter.

Each check compares the learner's function with the package where the package has the computation
(``minillm.prompt_tuning.PromptModel.get_prompt`` for the prefixes, ``minillm.adapters.Adapter`` for
the adapter; the prompt-tuning forward — mask prefixed with ones, labels with -100, as PEFT does — is
written out here and tested against ``PromptModel``'s forward in ``tests/test_exercises_ch14.py``;
the verbalizer's reference is written out here, in the logits' dtype, and tested against
``minillm.prompting.verbalizer_log_probs``, which computes in float32) and, where the answer is wrong,
recomputes the usual mistakes on the same inputs (a softmax over only the label words, raw logits,
max or mean instead of logsumexp, the prompt after the input, a mask prefixed with zeros, labels
prefixed with 0, keys and values swapped, the layers cut in the wrong order, the residual or the
activation missing...) to say which one it is.

The package modules the references are built from draw their initial weights from the global random
generator; the checks build them inside ``torch.random.fork_rng``, so a learner's seeded notebook
draws the same numbers before and after a check.

Shape letters: B batch, V vocabulary, K classes, T tokens, N virtual tokens (prompt or prefix
positions), C width, L layers, H (key/value) heads, hs head size (C = H · hs), m bottleneck size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import Case, CheckResult, compare, run_check
from .ch10 import _integer_result, _Recorder
from .ch11 import _diagnose, _dtype_name, _fork_rng, _Variants
from .ch13 import _signature

IGNORE_INDEX = -100


def _explain_errors(fn, explanation: str, phrases: tuple[str, ...]):
    """``fn`` with the message of a RuntimeError containing one of ``phrases`` extended by
    ``explanation`` (the traceback still points at the learner's line)."""
    if not callable(fn):
        return fn  # run_check says what it got

    def learner(*args):
        try:
            return fn(*args)
        except RuntimeError as exc:
            if exc.args and isinstance(exc.args[0], str) and any(p in exc.args[0] for p in phrases):
                exc.args = (f"{exc.args[0]} — {explanation}",) + exc.args[1:]
            raise
    learner.__signature__ = _signature(fn)
    return learner


def _non_finite(expected: torch.Tensor, got: Any, what: str, why: str) -> str | None:
    """A sentence if ``got`` has NaN or ±inf where ``expected`` is finite."""
    if not (isinstance(got, torch.Tensor) and got.is_floating_point() and got.shape == expected.shape):
        return None
    bad = ~torch.isfinite(got) & torch.isfinite(expected)
    if bad.any():
        return f"{what}: got NaN or ±inf at {int(bad.sum())} positions where a finite number was expected — {why}"
    return None


# ----------------------------------------------------------------------------- 1. verbalizer

def _ref_verbalizer_scores(logits_last: torch.Tensor, verbalizer_ids: list[list[int]]) -> torch.Tensor:
    """log P(class) = logsumexp over the class's label words of log_softmax(logits) (B, K)."""
    logp = logits_last.double().log_softmax(dim=-1)  # (B, V), over the whole vocabulary
    scores = [torch.logsumexp(logp[:, list(ids)], dim=-1) for ids in verbalizer_ids]  # K × (B,)
    return torch.stack(scores, dim=-1).to(logits_last.dtype)  # (B, K)


def _verbalizer_variant(logits, verbalizer_ids, *, norm="vocab", reduce="logsumexp"):
    """The class scores written out, with one thing changed."""
    x = logits.double()
    if norm == "vocab":
        table = x.log_softmax(-1)
    elif norm == "batch":
        table = x.log_softmax(0)
    elif norm == "words":  # a softmax over only the label words of all classes
        words = sorted({i for ids in verbalizer_ids for i in ids})
        table = torch.full_like(x, float("nan"))
        table[:, words] = x[:, words].log_softmax(-1)
    elif norm == "probs":
        table = x.softmax(-1)
    else:  # raw logits
        table = x
    reducers = {"logsumexp": lambda t: torch.logsumexp(t, -1), "max": lambda t: t.amax(-1),
                "mean": lambda t: t.mean(-1), "sum": lambda t: t.sum(-1),
                "log mean exp": lambda t: torch.logsumexp(t, -1) - torch.log(torch.tensor(float(t.size(-1)),
                                                                                        dtype=t.dtype))}
    scores = torch.stack([reducers[reduce](table[:, list(ids)]) for ids in verbalizer_ids], -1)
    return scores.to(logits.dtype)


def _verbalizer_variants(logits, verbalizer_ids) -> _Variants:
    v = lambda **kw: lambda: _verbalizer_variant(logits, verbalizer_ids, **kw)  # noqa: E731
    renorm = ("the softmax ran over only the label words (renormalised), so the label words' probabilities "
              "add up to 1: take log_softmax over the whole vocabulary (dim=-1) — the rest of the "
              "vocabulary keeps its share")
    raw = ("the scores are raw logits: turn them into log-probabilities with logits.log_softmax(dim=-1) over "
           "the whole vocabulary first")
    return [
        (renorm, v(norm="words")),
        (renorm, v(norm="words", reduce="max")),
        (raw, v(norm="raw")),
        (raw, v(norm="raw", reduce="max")),
        (raw, v(norm="raw", reduce="mean")),
        (raw, v(norm="raw", reduce="sum")),
        ("a class with several label words took the max of their log-probabilities: its probability is the "
         "*sum* of its words' probabilities, torch.logsumexp(logp[:, ids], dim=-1)", v(reduce="max")),
        ("a class with several label words took the mean of their log-probabilities: its probability is the "
         "*sum* of its words' probabilities, torch.logsumexp(logp[:, ids], dim=-1)", v(reduce="mean")),
        ("the log-probabilities of a class's label words were added (that multiplies their probabilities): "
         "the class's probability is the *sum* of its words' probabilities, torch.logsumexp(logp[:, ids], "
         "dim=-1)", v(reduce="sum")),
        ("the probabilities of a class's label words were averaged: add them (logsumexp, without "
         "subtracting log(number of words))", v(reduce="log mean exp")),
        ("these are probabilities, not log-probabilities: take log_softmax (and logsumexp over a class's "
         "words)", v(norm="probs", reduce="sum")),
        ("these are probabilities, not log-probabilities: take log_softmax (and logsumexp over a class's "
         "words)", v(norm="probs", reduce="max")),
        ("the softmax ran over the batch (dim=0): each row's log_softmax runs over the vocabulary, dim=-1",
         v(norm="batch")),
    ]


def check_verbalizer_scores(fn) -> CheckResult:
    """``fn(logits_last, verbalizer_ids)`` → (B, K) in logits' dtype: for class k, the log-probability
    at the next position of its label words ``verbalizer_ids[k]`` — log_softmax over the whole
    vocabulary, then logsumexp over the class's words (their probabilities add up)."""
    g = torch.Generator().manual_seed(140)
    cases = [
        Case((torch.randn(2, 10, generator=g) * 2, [[3], [7]]),
             description="B = 2, V = 10, one label word per class ('great' / 'terrible')"),
        Case((torch.randn(3, 20, generator=g) * 2, [[2, 5], [11], [4, 8, 15]]),
             description="three classes with 2, 1 and 3 label words"),
        Case((torch.randn(2, 1000, generator=g) * 3, [[10, 20], [30, 40]]),
             description="V = 1,000: most of the probability lies outside the label words"),
        Case((torch.randn(4, 50, generator=g).double() * 2, [[0, 1], [2, 3], [4, 49]]),
             description="float64, B = 4: the result stays float64"),
        Case((torch.randn(2, 30, generator=g) * 2 + 100, [[1, 2], [3]]),
             description="logits near 100: exp(logits) overflows in float32, log_softmax does not"),
    ]
    ref = _Recorder(_ref_verbalizer_scores)

    def cmp(expected, got, **kw):
        B, K = expected.shape
        if isinstance(got, torch.Tensor):
            if B != K and tuple(got.shape) == (K, B):
                return (f"expected shape (B, K) = {(B, K)}, got {tuple(got.shape)}: one row per example, one "
                        f"column per class — stack the class scores with dim=-1")
            if got.shape == expected.shape and got.dtype != expected.dtype:
                return (f"expected dtype {_dtype_name(expected.dtype)} like logits_last, got "
                        f"{_dtype_name(got.dtype)}")
        msg = _non_finite(expected, got, "scores", "exp(logits) overflows (or a tiny probability underflows "
                          "to 0 and its log is -inf): use logits.log_softmax(dim=-1) and torch.logsumexp, "
                          "which subtract the maximum first")
        if msg:
            return msg
        msg = compare(expected, got, atol=1e-5, rtol=1e-5, path="scores")
        if msg is None:
            return None
        why = _diagnose(got, _verbalizer_variants(*ref.args), 1e-5)
        return f"{why} ({msg})" if why else msg

    return run_check("verbalizer_scores", fn, ref, cases, compare_fn=cmp,
                     hint="logp = logits_last.log_softmax(dim=-1); for each class, torch.logsumexp(logp[:, ids], "
                          "dim=-1); torch.stack(..., dim=-1)")


# ----------------------------------------------------------------------------- 2. soft prompt

def _ref_prepend_soft_prompt(inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, prompt: torch.Tensor,
                             labels: torch.Tensor | None = None):
    """What ``minillm.prompt_tuning.PromptModel.forward`` (= PEFT's prompt tuning) feeds the model:
    the prompt (B, N, C) in the input's dtype, then the input; the mask prefixed with ones of its own
    dtype; the labels with -100 (the virtual tokens predict nothing)."""
    B, N = inputs_embeds.size(0), prompt.size(0)
    prompts = prompt[None].expand(B, -1, -1).to(inputs_embeds.dtype)  # (B, N, C)
    embeds = torch.cat([prompts, inputs_embeds], dim=1)  # (B, N + T, C)
    mask = torch.cat([attention_mask.new_ones(B, N), attention_mask], dim=1)  # (B, N + T)
    if labels is None:
        return embeds, mask, None
    return embeds, mask, torch.cat([labels.new_full((B, N), IGNORE_INDEX), labels], dim=1)


def _padding_variants(rest: torch.Tensor, N: int, wanted: str) -> list[tuple[str, torch.Tensor]]:
    """(sentence, wrong (B, N + T) tensor) for the usual mistakes with a mask or the labels."""
    B = rest.size(0)
    fill = lambda value: rest.new_full((B, N), value)  # noqa: E731
    if wanted == "mask":
        return [
            ("the prompt's positions are masked out (zeros in front): the model must attend to the virtual "
             "tokens, so the mask gets N *ones* in front", torch.cat([fill(0), rest], 1)),
            ("the ones were appended after the input: the prompt is in front, so its N ones are too",
             torch.cat([rest, fill(1)], 1)),
            ("zeros were appended after the input: the prompt is in front, and its N positions are attended "
             "to — N ones in front", torch.cat([rest, fill(0)], 1)),
        ]
    ids = torch.arange(N, dtype=rest.dtype).expand(B, N)
    return [
        ("the prompt's positions got the label 0, a real token id: the loss would train the model to predict "
         "token 0 there — use -100, which the loss ignores", torch.cat([fill(0), rest], 1)),
        ("the prompt's positions got labels 0 … N-1 (as if the virtual tokens had token ids): a soft prompt "
         "has no token to predict — use -100, which the loss ignores", torch.cat([ids, rest], 1)),
        ("the -100s were appended after the labels: the prompt is in front, so its -100s are too",
         torch.cat([rest, fill(IGNORE_INDEX)], 1)),
    ]


def check_prepend_soft_prompt(fn) -> CheckResult:
    """``fn(inputs_embeds, attention_mask, prompt, labels)`` → ``(embeds, mask, labels)``: the prompt
    (N, C), expanded over the batch and cast to the input's dtype, in front of inputs_embeds (B, T, C)
    → (B, N + T, C); the mask (B, T) with N ones in front, in its own dtype; labels (B, T) with N
    -100s in front, or None when labels is None — what ``minillm.prompt_tuning`` (= PEFT's prompt
    tuning) feeds the model."""
    g = torch.Generator().manual_seed(141)

    def case(B, T, C, N, description, *, dtype=torch.float32, prompt_dtype=torch.float32, mask_dtype=torch.long,
             labels=True):
        embeds = torch.randn(B, T, C, generator=g).to(dtype)
        prompt = torch.randn(N, C, generator=g).to(prompt_dtype)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        mask = (torch.arange(T)[None] < lengths[:, None]).to(mask_dtype)  # right padding
        lab = torch.randint(0, 50, (B, T), generator=g).masked_fill(mask == 0, IGNORE_INDEX) if labels else None
        return Case((embeds, mask, prompt, lab), description=description)

    cases = [
        case(2, 5, 8, 3, "B = 2, T = 5, C = 8, N = 3, a padded second row (mask int64, labels -100 on padding)"),
        case(1, 4, 6, 2, "B = 1, labels=None: return None as the third element", labels=False),
        case(3, 4, 8, 1, "B = 3, N = 1, a bool mask: it stays bool", mask_dtype=torch.bool),
        case(2, 3, 8, 4, "bfloat16 embeddings, a float32 prompt (the model in bf16, the prompt trained in fp32): "
             "the result is bfloat16", dtype=torch.bfloat16),
        case(4, 6, 4, 5, "float64 embeddings and prompt, B = 4, T = 6, N = 5", dtype=torch.float64,
             prompt_dtype=torch.float64),
    ]
    ref = _Recorder(_ref_prepend_soft_prompt)

    def cmp(expected, got, **kw):
        if isinstance(got, list):
            got = tuple(got)
        if not isinstance(got, tuple) or len(got) != 3:
            what = f"a {type(got).__name__}" + (f" of length {len(got)}" if isinstance(got, tuple) else "")
            return f"expected a tuple (embeds, mask, labels), got {what}"
        inputs_embeds, attention_mask, prompt, labels = ref.args
        B, T, C = inputs_embeds.shape
        N = prompt.size(0)
        embeds, mask, lab = got
        # the embeddings
        if isinstance(embeds, torch.Tensor):
            if tuple(embeds.shape) == (B, T, C):
                return (f"embeds: expected shape {(B, N + T, C)}, got {(B, T, C)}: the prompt is *added in front* "
                        f"of the input (N + T positions), it does not replace or change the first tokens")
            if B > 1 and tuple(embeds.shape) == (1, N + T, C):
                return (f"embeds: expected shape {(B, N + T, C)}, got {(1, N + T, C)}: the prompt is shared by the "
                        f"batch — expand it to (B, N, C) with prompt.unsqueeze(0).expand(B, -1, -1)")
            if embeds.shape == expected[0].shape and embeds.dtype != expected[0].dtype:
                return (f"embeds: expected dtype {_dtype_name(expected[0].dtype)} like inputs_embeds, got "
                        f"{_dtype_name(embeds.dtype)}: cast the prompt with .to(inputs_embeds.dtype) "
                        f"(torch.cat promotes to the wider dtype)")
        msg = compare(expected[0], embeds, atol=1e-6, rtol=1e-5, path="embeds")
        if msg:
            after = torch.cat([inputs_embeds, prompt[None].expand(B, -1, -1).to(inputs_embeds.dtype)], 1)
            if compare(after, embeds, atol=1e-6, rtol=1e-5) is None:
                return (f"the prompt is after the input: a soft prompt goes *in front*, torch.cat([prompts, "
                        f"inputs_embeds], dim=1) ({msg})")
            return msg
        # the attention mask
        if isinstance(mask, torch.Tensor):
            if tuple(mask.shape) == (B, T):
                return (f"mask: expected shape {(B, N + T)}, got {(B, T)}: the mask must cover the prompt's N "
                        f"positions too, like the embeddings")
            if mask.shape == expected[1].shape and mask.dtype != expected[1].dtype:
                return (f"mask: the dtype changed from {_dtype_name(expected[1].dtype)} to "
                        f"{_dtype_name(mask.dtype)}: make the ones with attention_mask.new_ones(B, N) (or "
                        f"dtype=attention_mask.dtype) so that the mask keeps its dtype")
        msg = compare(expected[1], mask, path="mask")
        if msg:
            why = next((s for s, wrong in _padding_variants(attention_mask, N, "mask")
                        if compare(wrong, mask) is None), None)
            return f"{why} ({msg})" if why else msg
        # the labels
        if labels is None:
            return None if lab is None else f"labels: labels=None was passed, so return None, got {type(lab).__name__}"
        if lab is None:
            return "labels: expected the labels (B, N + T) with -100 in front, got None"
        msg = _integer_result(lab, "labels")
        if msg:
            return msg
        if isinstance(lab, torch.Tensor) and tuple(lab.shape) == (B, T):
            return (f"labels: expected shape {(B, N + T)}, got {(B, T)}: the labels must line up with the N + T "
                    f"positions — put N -100s in front")
        msg = compare(expected[2], lab, path="labels")
        if msg:
            why = next((s for s, wrong in _padding_variants(labels, N, "labels") if compare(wrong, lab) is None), None)
            if why is None and isinstance(lab, torch.Tensor) and lab.shape == expected[2].shape \
                    and torch.equal(lab[:, N:].to(labels.dtype), labels):
                why = (f"the prompt's N positions must have the label -100 (ignored by the loss), got "
                       f"{lab[0, :N].tolist()} in the first row")
            return f"{why} ({msg})" if why else msg
        return None

    learner = _explain_errors(
        fn, "the prompt (N, C) is shared by the batch: expand it to (B, N, C) with "
            "prompt.unsqueeze(0).expand(B, -1, -1) before torch.cat([prompts, inputs_embeds], dim=1)",
        ("Sizes of tensors must match", "Tensors must have same number of dimensions"))
    return run_check("prepend_soft_prompt", learner, ref, cases, compare_fn=cmp,
                     hint="prompts = prompt.unsqueeze(0).expand(B, -1, -1).to(inputs_embeds.dtype); "
                          "torch.cat([prompts, inputs_embeds], dim=1); the mask with "
                          "attention_mask.new_ones(B, N) in front; labels with labels.new_full((B, N), -100) "
                          "in front")


# ----------------------------------------------------------------------------- 3. prefixes

def _ref_split_prefixes(prefix_table: torch.Tensor, n_layers: int, n_heads: int, batch_size: int):
    """The package's prefixes: a tiny GPT of L layers, H heads and width C wrapped for prefix tuning
    with ``prefix_table`` as its table; ``get_prompt(B)`` (= PEFT's) → L pairs (key, value) (B, H, N, hs)."""
    from ..models.gpt import GPT, GPTConfig
    from ..prompt_tuning import PrefixTuningConfig, get_prompt_model

    N, width = prefix_table.shape
    C = width // (2 * n_layers)
    with _fork_rng():
        model = GPT(GPTConfig(vocab_size=4, block_size=N + 1, n_layer=n_layers, n_head=n_heads, n_embd=C))
        model = model.to(prefix_table.dtype)
        wrapped = get_prompt_model(model, PrefixTuningConfig(num_virtual_tokens=N))
    wrapped.prompt_encoder.to(prefix_table.dtype)
    with torch.no_grad():
        wrapped.prompt_encoder.embedding.weight.copy_(prefix_table)
        pairs = wrapped.get_prompt(batch_size)
    return [(k.clone(), v.clone()) for k, v in pairs]


def _prefix_variant(table, L, H, B, *, order="layer", swap=False, heads="H hs", no_permute=False,
                    positions_first=False):
    """The per-layer prefixes written out, with one thing changed."""
    N, width = table.shape
    C = width // (2 * L)
    hs = C // H
    if no_permute:  # the whole table read as (2L, H, N, hs)
        chunks = table.reshape(2 * L, H, N, hs)
    else:
        x = table.reshape(N, 2 * L, hs, H).transpose(-1, -2) if heads == "hs H" else table.reshape(N, 2 * L, H, hs)
        chunks = x.permute(1, 2, 0, 3)  # (2L, H, N, hs)
    if positions_first:
        chunks = chunks.transpose(1, 2)  # (2L, N, H, hs)
    if order == "halves":  # all keys, then all values
        keys, values = chunks[:L], chunks[L:]
    else:
        keys, values = chunks[0::2], chunks[1::2]
    if swap:
        keys, values = values, keys
    grow = lambda t: t[None].expand(B, *t.shape)  # noqa: E731
    return [(grow(keys[l]), grow(values[l])) for l in range(L)]


def _prefix_variants(table, L, H, B) -> _Variants:
    v = lambda **kw: lambda: _prefix_variant(table, L, H, B, **kw)  # noqa: E731
    return [
        ("key and value are swapped: chunk 2l of the width is layer l's key prefix, chunk 2l+1 its value prefix",
         v(swap=True)),
        ("the chunks were read as all the keys, then all the values (2 halves of L): the layout goes layer by "
         "layer — chunk 2l is layer l's key, 2l+1 its value: view(N, 2 * L, H, hs) (or (N, L, 2, H, hs))",
         v(order="halves")),
        ("the chunks were read as all the keys, then all the values, with key and value swapped too: chunk 2l "
         "is layer l's key, 2l+1 its value", v(order="halves", swap=True)),
        ("heads and positions are transposed: a past key is (B, H, N, hs) — heads first, then the N positions "
         "(permute the N axis behind H)", v(positions_first=True)),
        ("each chunk of C numbers was cut as (hs, H): it is H heads of hs consecutive numbers each, "
         "view(..., H, hs)", v(heads="hs H")),
        ("the table was reshaped without moving its N axis: it is (N, L·2·C), positions first — "
         "view(N, 2 * L, H, hs), then permute to (2L, H, N, hs)", v(no_permute=True)),
    ]


def check_split_prefixes(fn) -> CheckResult:
    """``fn(prefix_table, n_layers, n_heads, batch_size)`` → a list of L pairs ``(key, value)``, each
    (B, H, N, hs): the prefix-tuning table (N, L·2·C) cut into 2L chunks of width C (chunk 2l is
    layer l's keys, 2l+1 its values), each chunk split into H heads of hs = C / H, and expanded over
    the batch — ``minillm.prompt_tuning.PromptModel.get_prompt`` (= PEFT's ``past_key_values``)."""
    g = torch.Generator().manual_seed(142)

    def case(N, L, H, hs, B, description, dtype=torch.float32):
        return Case((torch.randn(N, L * 2 * H * hs, generator=g).to(dtype), L, H, B), description=description)

    cases = [
        case(4, 2, 2, 4, 3, "N = 4, L = 2, H = 2, hs = 4 (C = 8), B = 3"),
        case(3, 3, 4, 2, 1, "N = 3, L = 3, H = 4, hs = 2, B = 1"),
        case(4, 2, 4, 3, 2, "N = H = 4: heads and positions transposed have the right shape"),
        case(5, 4, 3, 4, 2, "float64, N = 5, L = 4, H = 3, hs = 4: the prefixes stay float64", torch.float64),
    ]
    ref = _Recorder(_ref_split_prefixes)

    def cmp(expected, got, **kw):
        table, L, H, B = ref.args
        N = table.size(0)
        hs = table.size(1) // (2 * L * H)
        if isinstance(got, tuple):
            got = list(got)
        if not isinstance(got, list):
            return f"expected a list of {L} pairs (key, value), got {type(got).__name__}"
        if len(got) == 2 * L and L > 1 and all(isinstance(t, torch.Tensor) for t in got):
            return (f"expected a list of {L} pairs (key, value), got a list of {2 * L} tensors: pair them up, "
                    f"[(chunks[2 * l], chunks[2 * l + 1]) for l in range(L)]")
        if len(got) != L:
            return f"expected a list of {L} pairs (key, value), one per layer, got a list of length {len(got)}"
        first = got[0]
        if not isinstance(first, (tuple, list)) or len(first) != 2:
            return f"result[0]: expected a pair (key, value), got {type(first).__name__}"
        key = first[0]
        if isinstance(key, torch.Tensor):
            shape = tuple(key.shape)
            want = (B, H, N, hs)
            if shape != want and shape == (B, N, H, hs):
                return (f"result[0][0]: expected shape (B, H, N, hs) = {want}, got {shape}: heads and positions "
                        f"are transposed — a past key is (B, H, N, hs), heads first")
            if shape != want and B > 1 and shape == (1, H, N, hs):
                return (f"result[0][0]: expected shape {want}, got {shape}: expand every prefix over the batch, "
                        f"key[None].expand(B, -1, -1, -1)")
            if shape != want and shape == (H, N, hs):
                return (f"result[0][0]: expected shape {want}, got {shape}: add the batch axis in front and "
                        f"expand it to B = {B}")
            if shape == want and key.dtype != expected[0][0].dtype:
                return (f"result[0][0]: expected dtype {_dtype_name(expected[0][0].dtype)} like prefix_table, "
                        f"got {_dtype_name(key.dtype)}")
        msg = compare(expected, got, atol=0, rtol=0)
        if msg is None:
            return None
        why = _diagnose(got, _prefix_variants(*ref.args), 0, 0)
        return f"{why} ({msg})" if why else msg

    learner = _explain_errors(fn, "the table is (N, L·2·C) with C = H · hs: view(N, 2 * L, H, hs)",
                              ("is invalid for input of size",))
    return run_check("split_prefixes", learner, ref, cases, compare_fn=cmp,
                     hint="kv = prefix_table.view(N, 2 * L, H, hs).permute(1, 2, 0, 3) is (2L, H, N, hs); layer "
                          "l is (kv[2 * l], kv[2 * l + 1]), each expanded to (B, H, N, hs)")


# ----------------------------------------------------------------------------- 4. adapter

_ACT = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}


def _ref_adapter_forward(h, W_down, b_down, W_up, b_up, activation="relu"):
    """``minillm.adapters.Adapter`` with these weights: h + up(act(down(h)))."""
    from ..adapters import Adapter

    m, C = W_down.shape
    with _fork_rng():
        adapter = Adapter(C, m, activation).to(h.dtype)
    with torch.no_grad():
        adapter.down.weight.copy_(W_down)
        adapter.down.bias.copy_(b_down)
        adapter.up.weight.copy_(W_up)
        adapter.up.bias.copy_(b_up)
        return adapter(h)


def _adapter_variant(h, W_down, b_down, W_up, b_up, activation="relu", *, residual=True, where="middle",
                     act=None, transpose=True, bias_down=True, bias_up=True, residual_before_up=False):
    """The adapter written out, with one thing changed."""
    f = act or _ACT[activation]
    down = lambda x: x @ (W_down.T if transpose else W_down) + (b_down if bias_down else 0)  # noqa: E731
    up = lambda z: z @ (W_up.T if transpose else W_up) + (b_up if bias_up else 0)  # noqa: E731
    if residual_before_up:
        return up(h + f(down(h)))
    if where == "none":
        branch = up(down(h))
    elif where == "after up":
        branch = f(up(down(h)))
    elif where == "before down":
        branch = up(down(f(h)))
    else:
        branch = up(f(down(h)))
    if where == "around":
        return f(h + up(down(h)))
    return h + branch if residual else branch


def _adapter_variants(h, W_down, b_down, W_up, b_up, activation="relu") -> _Variants:
    v = lambda **kw: lambda: _adapter_variant(h, W_down, b_down, W_up, b_up, activation, **kw)  # noqa: E731
    out = [
        ("the residual is missing: an adapter returns h + up(act(down(h))), so that a zero up-projection leaves "
         "the layer unchanged", v(residual=False)),
        ("the activation is missing: up(down(h)) alone is one linear map of rank m — apply the activation "
         "between down and up", v(where="none")),
        ("the activation comes after the up-projection: it goes between down and up, h + up(act(down(h)))",
         v(where="after up")),
        ("the activation was applied to the sum h + up(down(h)): it goes inside the bottleneck, between down "
         "and up, and the residual is added last", v(where="around")),
        ("the activation was applied to h before the down-projection: it goes between down and up",
         v(where="before down")),
        ("the residual was added before the up-projection, up(h + act(down(h))): the skip connection adds h "
         "to the adapter's *output*, h + up(act(down(h)))", v(residual_before_up=True)),
        ("the weights are not transposed: nn.Linear stores a weight as (out_features, in_features), so down "
         "is h @ W_down.T + b_down and up is z @ W_up.T + b_up", v(transpose=False)),
        ("b_down is missing: down(h) = h @ W_down.T + b_down", v(bias_down=False)),
        ("b_up is missing: up(z) = z @ W_up.T + b_up", v(bias_up=False)),
        ("both biases are missing: down(h) = h @ W_down.T + b_down, up(z) = z @ W_up.T + b_up",
         v(bias_down=False, bias_up=False)),
    ]
    if activation != "relu":
        out.append((f"the activation argument is ignored: activation={activation!r} asks for "
                    f"{'F.gelu' if activation == 'gelu' else 'F.silu (x · sigmoid(x))'}, not ReLU",
                    v(act=F.relu)))
    if activation == "gelu":
        out.append(("GELU with the tanh approximation: the package's 'gelu' is the exact F.gelu (erf)",
                    v(act=lambda z: F.gelu(z, approximate="tanh"))))
    if activation == "swish":
        out.append(("swish is x · sigmoid(x) (F.silu), not sigmoid(x)", v(act=torch.sigmoid)))
    return out


def check_adapter_forward(fn) -> CheckResult:
    """``fn(h, W_down, b_down, W_up, b_up, activation)`` → ``h + up(act(down(h)))`` (B, T, C) in h's
    dtype, W_down (m, C) and W_up (C, m) as nn.Linear stores them, activation "relu", "gelu" or
    "swish" — the output of ``minillm.adapters.Adapter`` (Houlsby et al.'s bottleneck adapter)."""
    g = torch.Generator().manual_seed(143)

    def case(shape, m, activation, description, dtype=torch.float32):
        C = shape[-1]
        h = torch.randn(*shape, generator=g)
        W_down, b_down = torch.randn(m, C, generator=g) / C ** 0.5, torch.randn(m, generator=g) * 0.5
        W_up, b_up = torch.randn(C, m, generator=g) / m ** 0.5, torch.randn(C, generator=g) * 0.5
        return Case(tuple(t.to(dtype) for t in (h, W_down, b_down, W_up, b_up)) + (activation,),
                    description=description)

    cases = [
        case((2, 5, 16), 4, "relu", "(B, T, C) = (2, 5, 16), m = 4, relu"),
        case((2, 3, 8), 8, "relu", "m = C = 8: W_down and W_up are square, so a missing transpose raises no error"),
        case((1, 6, 12), 3, "gelu", "gelu (exact, F.gelu), m = 3"),
        case((2, 4, 10), 5, "swish", "swish (F.silu), m = 5"),
        case((3, 2, 16), 2, "relu", "float64, m = 2: the result stays float64", dtype=torch.float64),
    ]
    ref = _Recorder(_ref_adapter_forward)

    def cmp(expected, got, **kw):
        if isinstance(got, torch.Tensor) and got.dtype != expected.dtype and got.shape == expected.shape:
            return f"expected dtype {_dtype_name(expected.dtype)} like h, got {_dtype_name(got.dtype)}"
        msg = compare(expected, got, atol=1e-5, rtol=1e-5)
        if msg is None:
            return None
        why = _diagnose(got, _adapter_variants(*ref.args), 1e-5)
        return f"{why} ({msg})" if why else msg

    learner = _explain_errors(
        fn, "W_down is (m, C) and W_up (C, m), as nn.Linear stores weights (out_features, in_features): "
            "h + act(h @ W_down.T + b_down) @ W_up.T + b_up — and h is added to the output, not inside",
        ("cannot be multiplied", "must match the size"))
    return run_check("adapter_forward", learner, ref, cases, compare_fn=cmp,
                     hint="z = act(h @ W_down.T + b_down) is (B, T, m); return h + z @ W_up.T + b_up — "
                          "act = F.relu, F.gelu or F.silu for 'relu', 'gelu', 'swish'")


__all__ = ["check_adapter_forward", "check_prepend_soft_prompt", "check_split_prefixes",
           "check_verbalizer_scores"]
