"""Chapter 14's exercise checks (minillm.checks.ch14): each fails on the usual mistakes and says which
one it is, passes correct answers written differently from the reference, agrees with the package
(minillm.prompt_tuning, minillm.adapters) and leaves the global random state alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minillm.checks import ch14


def _verbalizer(kind):
    """Scoring the classes through a verbalizer as a learner might write it, with one mistake."""
    def verbalizer_scores(logits_last, verbalizer_ids):
        if kind == "naive exp":
            e = logits_last.exp()
            table = (e / e.sum(-1, keepdim=True)).log()
        elif kind == "renormalised":
            words = [i for ids in verbalizer_ids for i in ids]
            table = torch.full_like(logits_last, float("nan"))
            table[:, words] = logits_last[:, words].log_softmax(-1)
        elif kind == "raw logits":
            table = logits_last
        elif kind == "dim 0":
            table = logits_last.log_softmax(0)
        elif kind == "probabilities":
            table = logits_last.softmax(-1)
        else:
            table = logits_last.log_softmax(-1)
        reduce = {"max": lambda t: t.max(-1).values, "mean": lambda t: t.mean(-1), "sum": lambda t: t.sum(-1),
                  "probabilities": lambda t: t.sum(-1),
                  "mean prob": lambda t: torch.logsumexp(t, -1) - torch.log(torch.tensor(float(t.size(-1))))
                  }.get(kind, lambda t: torch.logsumexp(t, -1))
        out = torch.stack([reduce(table[:, ids]) for ids in verbalizer_ids], dim=-1)
        if kind == "transposed":
            return out.T
        return out.float() if kind == "float32" else out
    return verbalizer_scores


def _prepend(kind):
    """Prepending a soft prompt as a learner might write it, with one mistake."""
    def prepend_soft_prompt(inputs_embeds, attention_mask, prompt, labels=None):
        B, N = inputs_embeds.size(0), prompt.size(0)
        prompts = prompt.unsqueeze(0) if kind == "not expanded" else prompt.unsqueeze(0).expand(B, -1, -1)
        if kind != "no cast":
            prompts = prompts.to(inputs_embeds.dtype)
        if kind == "no unsqueeze":
            prompts = prompt
        if kind == "after":
            embeds = torch.cat([inputs_embeds, prompts], dim=1)
        elif kind == "replace":
            embeds = inputs_embeds.clone()  # the prompt written over the first N tokens
            n = min(N, embeds.size(1))
            embeds[:, :n] = prompts[:, :n]
        else:
            embeds = torch.cat([prompts, inputs_embeds], dim=1)
        ones = {"mask zeros": torch.zeros(B, N, dtype=attention_mask.dtype),
                "mask float": torch.ones(B, N)}.get(kind, attention_mask.new_ones(B, N))
        if kind == "mask after":
            mask = torch.cat([attention_mask, ones], dim=1)
        elif kind == "mask unchanged":
            mask = attention_mask
        else:
            mask = torch.cat([ones, attention_mask], dim=1)
        if labels is not None:
            if kind == "labels 0":
                labels = torch.cat([labels.new_zeros(B, N), labels], dim=1)
            elif kind == "labels ids":
                labels = torch.cat([torch.arange(N).expand(B, N), labels], dim=1)
            elif kind == "labels 7":
                labels = torch.cat([labels.new_full((B, N), 7), labels], dim=1)
            elif kind == "labels float":
                labels = torch.cat([torch.full((B, N), -100.0), labels.float()], dim=1)
            elif kind != "labels unchanged":
                labels = torch.cat([labels.new_full((B, N), -100), labels], dim=1)
        elif kind == "labels made up":
            labels = torch.full(mask.shape, -100)
        return embeds, mask, labels
    return prepend_soft_prompt


def _split(kind):
    """Cutting the prefix table into per-layer keys and values as a learner might, with one mistake."""
    def split_prefixes(prefix_table, n_layers, n_heads, batch_size):
        N, width = prefix_table.shape
        L, H, B = n_layers, n_heads, batch_size
        hs = width // (2 * L * H)
        if kind == "no permute":
            kv = prefix_table.reshape(2 * L, H, N, hs)
        elif kind == "hs H":
            kv = prefix_table.view(N, 2 * L, hs, H).permute(1, 3, 0, 2)
        elif kind == "bad view":
            kv = prefix_table.view(N, 2 * L, H, hs + 1).permute(1, 2, 0, 3)
        else:
            kv = prefix_table.view(N, 2 * L, H, hs).permute(1, 2, 0, 3)  # (2L, H, N, hs)
        if kind == "positions first":
            kv = kv.transpose(1, 2)
        if kind == "flat":
            return [c[None].expand(B, -1, -1, -1) for c in kv]
        if kind == "halves":
            pairs = [(kv[l], kv[L + l]) for l in range(L)]
        elif kind == "swapped":
            pairs = [(kv[2 * l + 1], kv[2 * l]) for l in range(L)]
        else:
            pairs = [(kv[2 * l], kv[2 * l + 1]) for l in range(L)]
        if kind == "no batch":
            return [(k[None], v[None]) for k, v in pairs]
        out = [(k[None].expand(B, *k.shape), v[None].expand(B, *v.shape)) for k, v in pairs]
        if kind == "float32":
            return [(k.float(), v.float()) for k, v in out]
        return out
    return split_prefixes


def _adapter(kind):
    """The bottleneck adapter as a learner might write it, with one mistake."""
    def adapter_forward(h, W_down, b_down, W_up, b_up, activation="relu"):
        act = {"relu": F.relu, "gelu": F.gelu, "swish": F.silu}[activation]
        if kind == "always relu":
            act = F.relu
        if kind == "tanh gelu" and activation == "gelu":
            act = lambda z: F.gelu(z, approximate="tanh")  # noqa: E731
        if kind == "swish sigmoid" and activation == "swish":
            act = torch.sigmoid
        Wd, Wu = (W_down, W_up) if kind == "not transposed" else (W_down.T, W_up.T)
        down = h @ Wd + (0 if kind == "no biases" else b_down)
        up = lambda z: z @ Wu + (0 if kind in ("no biases", "no b_up") else b_up)  # noqa: E731
        if kind == "no residual":
            return up(act(down))
        if kind == "no activation":
            return h + up(down)
        if kind == "act after up":
            return h + act(up(down))
        if kind == "act around":
            return act(h + up(down))
        if kind == "residual before up":
            return up(h + act(down))
        out = h + up(act(down))
        return out.float() if kind == "float32" else out
    return adapter_forward


CH14_MISTAKES = [
    ("check_verbalizer_scores", _verbalizer("renormalised"), "the softmax ran over only the label words"),
    ("check_verbalizer_scores", _verbalizer("raw logits"), "the scores are raw logits"),
    ("check_verbalizer_scores", _verbalizer("max"), "took the max of their log-probabilities"),
    ("check_verbalizer_scores", _verbalizer("mean"), "took the mean of their log-probabilities"),
    ("check_verbalizer_scores", _verbalizer("sum"), "that multiplies their probabilities"),
    ("check_verbalizer_scores", _verbalizer("mean prob"), "probabilities of a class's label words were averaged"),
    ("check_verbalizer_scores", _verbalizer("probabilities"), "these are probabilities, not log-probabilities"),
    ("check_verbalizer_scores", _verbalizer("dim 0"), "the softmax ran over the batch (dim=0)"),
    ("check_verbalizer_scores", _verbalizer("naive exp"), "exp(logits) overflows"),
    ("check_verbalizer_scores", _verbalizer("transposed"), "one row per example, one column per class"),
    ("check_verbalizer_scores", _verbalizer("float32"), "expected dtype float64 like logits_last, got float32"),
    ("check_prepend_soft_prompt", _prepend("after"), "the prompt is after the input"),
    ("check_prepend_soft_prompt", _prepend("not expanded"), "Sizes of tensors must match"),
    ("check_prepend_soft_prompt", _prepend("not expanded"), "expand it to (B, N, C)"),
    ("check_prepend_soft_prompt", _prepend("no unsqueeze"), "expand it to (B, N, C)"),
    ("check_prepend_soft_prompt", _prepend("no cast"), "expected dtype bfloat16 like inputs_embeds, got float32"),
    ("check_prepend_soft_prompt", _prepend("replace"), "it does not replace or change the first tokens"),
    ("check_prepend_soft_prompt", _prepend("mask zeros"), "the prompt's positions are masked out"),
    ("check_prepend_soft_prompt", _prepend("mask after"), "the ones were appended after the input"),
    ("check_prepend_soft_prompt", _prepend("mask unchanged"), "the mask must cover the prompt's N positions"),
    ("check_prepend_soft_prompt", _prepend("mask float"), "the dtype changed from int64 to float32"),
    ("check_prepend_soft_prompt", _prepend("labels 0"), "got the label 0, a real token id"),
    ("check_prepend_soft_prompt", _prepend("labels ids"), "got labels 0 … N-1"),
    ("check_prepend_soft_prompt", _prepend("labels 7"), "must have the label -100 (ignored by the loss), got [7, 7, 7]"),
    ("check_prepend_soft_prompt", _prepend("labels unchanged"), "put N -100s in front"),
    ("check_prepend_soft_prompt", _prepend("labels float"), "labels: expected integer ids (torch.long)"),
    ("check_prepend_soft_prompt", _prepend("labels made up"), "labels=None was passed, so return None"),
    ("check_split_prefixes", _split("swapped"), "key and value are swapped"),
    ("check_split_prefixes", _split("halves"), "all the keys, then all the values"),
    ("check_split_prefixes", _split("positions first"), "heads and positions are transposed"),
    ("check_split_prefixes", _split("hs H"), "was cut as (hs, H)"),
    ("check_split_prefixes", _split("no permute"), "reshaped without moving its N axis"),
    ("check_split_prefixes", _split("bad view"), "is invalid for input of size"),
    ("check_split_prefixes", _split("bad view"), "view(N, 2 * L, H, hs)"),
    ("check_split_prefixes", _split("no batch"), "expand every prefix over the batch"),
    ("check_split_prefixes", _split("flat"), "pair them up"),
    ("check_split_prefixes", _split("float32"), "expected dtype float64 like prefix_table, got float32"),
    ("check_adapter_forward", _adapter("no residual"), "the residual is missing"),
    ("check_adapter_forward", _adapter("no activation"), "the activation is missing"),
    ("check_adapter_forward", _adapter("act after up"), "the activation comes after the up-projection"),
    ("check_adapter_forward", _adapter("act around"), "the activation was applied to the sum"),
    ("check_adapter_forward", _adapter("residual before up"), "the residual was added before the up-projection"),
    ("check_adapter_forward", _adapter("residual before up"), "h is added to the output, not inside"),
    ("check_adapter_forward", _adapter("not transposed"), "the weights are not transposed"),
    ("check_adapter_forward", _adapter("not transposed"), "cannot be multiplied"),
    ("check_adapter_forward", _adapter("no biases"), "both biases are missing"),
    ("check_adapter_forward", _adapter("no b_up"), "b_up is missing"),
    ("check_adapter_forward", _adapter("always relu"), "the activation argument is ignored"),
    ("check_adapter_forward", _adapter("tanh gelu"), "GELU with the tanh approximation"),
    ("check_adapter_forward", _adapter("swish sigmoid"), "swish is x · sigmoid(x)"),
    ("check_adapter_forward", _adapter("float32"), "expected dtype float64 like h, got float32"),
]


@pytest.mark.parametrize("check,fn,phrase", CH14_MISTAKES,
                         ids=[f"14-{c}-{k}" for k, (c, _, _) in enumerate(CH14_MISTAKES)])
def test_ch14_check_names_the_mistake(check, fn, phrase, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch14, check)(fn)
    assert not result.passed, f"{check} passes a wrong function (expected it to say {phrase!r})"
    assert phrase in result.report(), result.report()


def _verbalizer_loop(logits_last, verbalizer_ids):
    """One example and one class at a time, in float64, via the probabilities."""
    out = torch.empty(logits_last.size(0), len(verbalizer_ids), dtype=logits_last.dtype)
    for b, row in enumerate(logits_last.double()):
        probs = torch.softmax(row, dim=0)
        for k, ids in enumerate(verbalizer_ids):
            out[b, k] = torch.log(sum(probs[i] for i in ids))
    return out


def _verbalizer_gather(logits_last, verbalizer_ids):
    """Padded id table + gather + masked logsumexp, with the normaliser subtracted last."""
    width = max(map(len, verbalizer_ids))
    ids = torch.tensor([row + [row[0]] * (width - len(row)) for row in verbalizer_ids])  # (K, width)
    valid = torch.tensor([[j < len(row) for j in range(width)] for row in verbalizer_ids])
    picked = logits_last[:, ids]  # (B, K, width)
    picked = picked.masked_fill(~valid, float("-inf"))
    return torch.logsumexp(picked, -1) - torch.logsumexp(logits_last, -1, keepdim=True)


def _prepend_repeat(inputs_embeds, attention_mask, prompt, labels=None):
    B, N = inputs_embeds.size(0), prompt.size(0)
    embeds = torch.cat((prompt.repeat(B, 1, 1).type_as(inputs_embeds), inputs_embeds), 1)
    mask = F.pad(attention_mask, (N, 0), value=1)
    return embeds, mask, None if labels is None else F.pad(labels, (N, 0), value=-100)


def _prepend_loop(inputs_embeds, attention_mask, prompt, labels=None):
    rows = [torch.cat([prompt.to(inputs_embeds.dtype), x]) for x in inputs_embeds]
    mask = torch.stack([torch.cat([torch.ones_like(m[:1]).expand(prompt.size(0)), m]) for m in attention_mask])
    lab = None if labels is None else torch.stack(
        [torch.cat([torch.full((prompt.size(0),), -100, dtype=l.dtype), l]) for l in labels])
    return torch.stack(rows), mask, lab


def _split_loop(prefix_table, n_layers, n_heads, batch_size):
    """Slice layer l's key and value chunks out of the width, then split the heads."""
    N, width = prefix_table.shape
    C = width // (2 * n_layers)
    out = []
    for l in range(n_layers):
        k = prefix_table[:, 2 * l * C:(2 * l + 1) * C]  # (N, C)
        v = prefix_table[:, (2 * l + 1) * C:(2 * l + 2) * C]
        heads = lambda t: t.reshape(N, n_heads, -1).transpose(0, 1).repeat(batch_size, 1, 1, 1)  # noqa: E731
        out.append((heads(k), heads(v)))
    return out


def _split_chunk(prefix_table, n_layers, n_heads, batch_size):
    N = prefix_table.size(0)
    chunks = prefix_table.chunk(2 * n_layers, dim=1)  # 2L × (N, C)
    kv = [c.unflatten(1, (n_heads, -1)).permute(1, 0, 2).expand(batch_size, -1, -1, -1) for c in chunks]
    return tuple(zip(kv[0::2], kv[1::2]))


def _adapter_linear(h, W_down, b_down, W_up, b_up, activation="relu"):
    act = {"relu": torch.relu, "gelu": lambda z: 0.5 * z * (1 + torch.erf(z / 2 ** 0.5)),
           "swish": lambda z: z * torch.sigmoid(z)}[activation]
    return F.linear(act(F.linear(h, W_down, b_down)), W_up, b_up) + h


@pytest.mark.parametrize("check,fn", [
    ("check_verbalizer_scores", _verbalizer("ok")),
    ("check_verbalizer_scores", _verbalizer_loop),
    ("check_verbalizer_scores", _verbalizer_gather),
    ("check_prepend_soft_prompt", _prepend("ok")),
    ("check_prepend_soft_prompt", _prepend_repeat),
    ("check_prepend_soft_prompt", _prepend_loop),
    ("check_split_prefixes", _split("ok")),
    ("check_split_prefixes", _split_loop),
    ("check_split_prefixes", _split_chunk),
    ("check_adapter_forward", _adapter("ok")),
    ("check_adapter_forward", _adapter_linear),
], ids=["verbalizer", "verbalizer-loop-probs", "verbalizer-gather", "prepend", "prepend-repeat-pad",
        "prepend-loop", "split", "split-slices", "split-chunk-tuple", "adapter", "adapter-F.linear-erf"])
def test_ch14_other_correct_answers_pass(check, fn, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch14, check)(fn)
    assert result.passed, result.report()


def test_ch14_the_checks_own_versions_equal_the_package():
    """The written-out references and the unchanged variants the checks diagnose with equal the
    package: the prompt-tuning forward of minillm.prompt_tuning (= PEFT's) is the base model run on
    the prepended embeddings, mask and labels; the prefixes are PromptModel.get_prompt's; the adapter
    is minillm.adapters.Adapter; so a mistake is named only when it really is that mistake."""
    from minillm.models.gpt import GPT, GPTConfig
    from minillm.prompt_tuning import PromptTuningConfig, causal_lm_loss, get_prompt_model

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=8)).eval()
    wrapped = get_prompt_model(model, PromptTuningConfig(num_virtual_tokens=3))
    prompt = wrapped.prompt_encoder.embedding.weight.detach()
    ids = torch.randint(0, 32, (2, 5), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = wrapped(ids, attention_mask=mask, labels=labels)
        embeds, mask2, labels2 = ch14._ref_prepend_soft_prompt(model.transformer.wte(ids), mask, prompt, labels)
        logits = model(inputs_embeds=embeds, attention_mask=mask2)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.loss, causal_lm_loss(logits, labels2))

    for N, L, H, hs, B in [(4, 2, 2, 4, 3), (3, 3, 4, 2, 1), (5, 1, 3, 2, 2)]:
        table = torch.randn(N, L * 2 * H * hs, generator=g)
        expected = ch14._ref_split_prefixes(table, L, H, B)
        got = ch14._prefix_variant(table, L, H, B)
        assert len(got) == len(expected) == L
        for (k, v), (ek, ev) in zip(got, expected):
            assert torch.equal(k, ek) and torch.equal(v, ev) and ek.shape == (B, H, N, hs)

    for shape, m, activation in [((2, 5, 16), 4, "relu"), ((1, 3, 12), 3, "gelu"), ((2, 4, 10), 5, "swish")]:
        h = torch.randn(*shape, generator=g)
        C = shape[-1]
        weights = (torch.randn(m, C, generator=g), torch.randn(m, generator=g), torch.randn(C, m, generator=g),
                   torch.randn(C, generator=g))
        torch.testing.assert_close(ch14._adapter_variant(h, *weights, activation),
                                   ch14._ref_adapter_forward(h, *weights, activation))

    logits = torch.randn(3, 40, generator=g)
    verbalizer = [[1, 2], [3], [4, 5, 6]]
    torch.testing.assert_close(ch14._verbalizer_variant(logits, verbalizer),
                               ch14._ref_verbalizer_scores(logits, verbalizer))
    try:  # chapter 14's package module (the exercise keeps the logits' dtype; the package computes in fp32)
        from minillm.prompting import verbalizer_log_probs
    except ImportError:
        verbalizer_log_probs = None
    if verbalizer_log_probs is not None:
        torch.testing.assert_close(verbalizer_log_probs(logits, verbalizer),
                                   ch14._ref_verbalizer_scores(logits, verbalizer))
    p = logits.softmax(-1)  # the class probability is the sum of its words' probabilities
    torch.testing.assert_close(ch14._ref_verbalizer_scores(logits, verbalizer).exp(),
                               torch.stack([p[:, w].sum(-1) for w in verbalizer], -1))


def test_ch14_checks_leave_the_global_random_state_alone(monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert ch14.check_split_prefixes(_split("ok")).passed
    assert ch14.check_adapter_forward(_adapter("ok")).passed
    assert ch14.check_prepend_soft_prompt(_prepend("ok")).passed
    assert ch14.check_verbalizer_scores(_verbalizer("ok")).passed
    assert torch.equal(torch.get_rng_state(), state)
