"""Exercises are generated from solutions; every check passes on the solution and fails on the stub.

For each exercise cell of ``solutions/*.ipynb`` (a cell with ``### BEGIN SOLUTION``), the test runs
the notebook's first code cell (imports), the exercise cell, then the check cell that follows it,
once with the solution and once with the generated stub from ``exercises/``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from minillm.checks import CheckResult
from minillm.checks import hint
from minillm.checks.hints import hints_for
from minillm.exercises import BEGIN, main, make_exercise, solution_hints, strip_code, sync

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def _src(cell) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def _code(source: str) -> str:
    return "\n".join(l for l in source.split("\n") if not l.lstrip().startswith(("%", "!")))


def _exercises():
    for path in SOLUTIONS:
        cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        for i, cell in enumerate(cells):
            if BEGIN in _src(cell):
                check = cells[i + 1] if i + 1 < len(cells) else None
                yield pytest.param(path, _src(cells[0]), _src(cell), check and _src(check),
                                   id=f"{path.stem}-exercise{i}")


EXERCISES = list(_exercises())


def _run(setup: str, exercise: str, check: str) -> CheckResult:
    ns: dict = {"__name__": "__exercise__"}
    exec(compile(_code(setup), "<setup cell>", "exec"), ns)
    exec(compile(exercise, "<exercise cell>", "exec"), ns)
    tree = ast.parse(_code(check))
    assert tree.body and isinstance(tree.body[-1], ast.Expr), "a check cell must end in check_...(fn)"
    *body, last = tree.body
    exec(compile(ast.Module(body=body, type_ignores=[]), "<check cell>", "exec"), ns)
    return eval(compile(ast.Expression(last.value), "<check cell>", "eval"), ns)


def test_exercises_are_in_sync_with_solutions():
    stale = sync(ROOT / "solutions", ROOT / "exercises", write=False)
    assert not stale, f"run `python -m minillm.exercises`; out of date: {stale}"


def test_every_solutions_notebook_has_an_exercise():
    for path in SOLUTIONS:
        assert BEGIN in path.read_text(encoding="utf-8"), f"{path.name} has no exercise"


@pytest.mark.parametrize("path,setup,exercise,check", EXERCISES)
def test_check_passes_on_solution_and_fails_on_stub(path, setup, exercise, check, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    assert check is not None and "check_" in check, f"{path.name}: an exercise cell must be followed by its check"
    solved = _run(setup, exercise, check)
    assert isinstance(solved, CheckResult), f"the check cell returned {type(solved).__name__}"
    assert solved.passed, f"check fails on the solution:\n{solved.report()}"
    stubbed = _run(setup, strip_code(exercise), check)
    assert not stubbed.passed, "check passes on the NotImplementedError stub"
    assert "not implemented yet" in stubbed.report()


def test_stub_generation_keeps_indentation_hints_and_nbgrader_metadata():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [{"x": 1}], "execution_count": 3,
         "source": "def f(x):\n    ### BEGIN SOLUTION\n    # HINT: double it\n    return 2 * x\n    ### END SOLUTION\n"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 4, "source": "check_f(f)"},
        {"cell_type": "markdown", "metadata": {}, "source": "Why? ### BEGIN SOLUTION because ### END SOLUTION"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    ex = make_exercise(nb, "demo.ipynb")
    code, check, md = ex["cells"]
    assert code["source"] == ("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError("
                              "\"write your solution here — call hint('f') for a hint\")\n")
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"]["nbgrader"]["solution"] is True
    assert check["metadata"]["nbgrader"]["grade"] is True and check["metadata"]["nbgrader"]["points"] == 1
    assert md["source"] == "Why? YOUR ANSWER HERE"
    ns: dict = {}
    exec(code["source"], ns)
    with pytest.raises(NotImplementedError, match=r"call hint\('f'\)"):
        ns["f"](1)
    assert "double it" not in json.dumps(ex), "the stub must not reveal the hint"
    assert solution_hints(nb["cells"][0]["source"]) == {"f": ["double it"]}


def test_unbalanced_markers_are_an_error():
    with pytest.raises(ValueError, match="without a matching"):
        strip_code("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without a matching"):
        strip_code("x = 1\n### END SOLUTION\n")


def _exercise_hints():
    for path in SOLUTIONS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] == "code" and BEGIN in _src(cell):
                for name, hints in solution_hints(_src(cell)).items():
                    yield pytest.param(path.name, name, hints, id=f"{path.stem}-{name}")


@pytest.mark.parametrize("notebook,name,hints", list(_exercise_hints()))
def test_hints_are_revealed_on_request_from_the_exercise_notebook(notebook, name, hints, capsys):
    """The exercise notebook's first cell imports hint(); hint(name) shows the solution's # HINT lines,
    one per call; neither the stub nor the notebook prints them by itself."""
    cells = json.loads((ROOT / "exercises" / notebook).read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(h not in json.dumps(cells, ensure_ascii=False) for h in hints), "a hint leaks into the exercise"
    stub = next(_src(c) for c in code if f"def {name}(" in _src(c))
    assert f"hint({name!r})" in stub
    ns: dict = {}
    exec(compile(_code(_src(code[0])), "<setup cell>", "exec"), ns)
    capsys.readouterr()
    for k in range(len(hints)):
        ns["hint"](name)
        assert hints[k] in capsys.readouterr().out
    assert hints_for(name) == hints


def test_hint_for_an_unknown_exercise_is_a_clear_error():
    with pytest.raises(ValueError, match="did you mean 'bigram_counts'"):
        hint("bigram_count")
    with pytest.raises(TypeError, match="name must be a str"):
        hint(3)


def test_check_with_a_wrong_root_is_an_error(tmp_path, capsys):
    assert main(["--check", "--root", str(tmp_path)]) == 2
    assert "no solutions notebooks" in capsys.readouterr().err
    assert main(["--check", "--root", str(ROOT)]) == 0
    assert "in sync" in capsys.readouterr().out


# ----- chapter 9: every check fails on each usual mistake, and says which one it is -----
# (the solutions pass: test_check_passes_on_solution_and_fails_on_stub runs them)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from minillm.checks import ch09  # noqa: E402
from minillm.metrics.ner import bio_to_spans as _spans, entity_scores as _entity_scores  # noqa: E402


def _masker(*, specials_ok=False, minus100=True, labels_from_inputs=False, split=(0.8, 0.5),
            use_generator=True, random_high=None, in_place=False):
    """BERT's masking with one thing changed."""
    def mask_tokens(input_ids, vocab_size, mask_token_id, special_ids, mlm_probability=0.15,
                    generator=None):
        gen = generator if use_generator else None
        special = torch.isin(input_ids, torch.tensor(list(special_ids)))
        prob = torch.full(input_ids.shape, float(mlm_probability))
        chosen = torch.bernoulli(prob if specials_ok else prob.masked_fill(special, 0.0), generator=gen).bool()
        to_mask = torch.bernoulli(torch.full(input_ids.shape, split[0]), generator=gen).bool() & chosen
        to_random = (torch.bernoulli(torch.full(input_ids.shape, split[1]), generator=gen).bool()
                     & chosen & ~to_mask)
        random_ids = torch.randint(random_high or vocab_size, input_ids.shape, generator=gen)
        inputs = torch.where(to_random, random_ids, input_ids.masked_fill(to_mask, mask_token_id))
        labels = (inputs if labels_from_inputs else input_ids).clone()
        if minus100:
            labels[~chosen] = -100
        if in_place:
            input_ids.copy_(inputs)
            inputs = input_ids
        return inputs, labels
    return mask_tokens


def _every_kth(input_ids, vocab_size, mask_token_id, special_ids, mlm_probability=0.15, generator=None):
    """Always the same positions, all [MASK]."""
    special = torch.isin(input_ids, torch.tensor(list(special_ids)))
    k = round(1 / mlm_probability) if mlm_probability > 0 else input_ids.numel() + 1
    chosen = (torch.arange(input_ids.numel()).view_as(input_ids) % k == 0) & ~special
    return input_ids.masked_fill(chosen, mask_token_id), input_ids.masked_fill(~chosen, -100)


def _embedder(*, norm=True, affine=True, positions=True, types=True, offset=0, eps=None,
              eps_outside=False, none_types_crash=False):
    def bert_embeddings(input_ids, token_type_ids, weights, e):
        T = input_ids.size(1)
        x = weights["word_embeddings.weight"][input_ids]
        if types:
            tt = token_type_ids if (token_type_ids is not None or none_types_crash) else torch.zeros_like(input_ids)
            x = x + weights["token_type_embeddings.weight"][tt]
        if positions:
            x = x + weights["position_embeddings.weight"][torch.arange(offset, offset + T)]
        if not norm:
            return x
        w, b = (weights["LayerNorm.weight"], weights["LayerNorm.bias"]) if affine else (None, None)
        if eps_outside:
            mu, sd = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True).sqrt()
            return (x - mu) / (sd + e) * w + b
        return F.layer_norm(x, (x.size(-1),), w, b, e if eps is None else eps)
    return bert_embeddings


def _head(kind):
    def cls_classifier(h, w):
        W, b = w["bert.pooler.dense.weight"], w["bert.pooler.dense.bias"]
        Wc, bc = w["classifier.weight"], w["classifier.bias"]
        x = {"last": h[:, -1], "mean": h.mean(1)}.get(kind, h[:, 0])
        if kind == "no pooler":
            pooled = x
        elif kind == "no tanh":
            pooled = x @ W.T + b
        else:
            pooled = torch.tanh(x @ W.T + b)
        if kind == "dropout":
            pooled = F.dropout(pooled, 0.5, training=True)
        return pooled @ Wc.T + (0 if kind == "no bias" else bc)
    return cls_classifier


def _spans_variant(kind):
    def bio_to_spans(tags):
        if kind == "exclusive":
            return [(k, a, b + 1) for k, a, b in _spans(tags)]
        if kind == "drop last":
            return [s for s in _spans(tags) if s[2] != len(tags) - 1]
        out, start, kind_ = [], -1, ""  # "strict": only B- opens an entity
        for i, t in enumerate(list(tags) + ["O"]):
            if start >= 0 and t != f"I-{kind_}":
                out.append((kind_, start, i - 1))
                start = -1
            if t.startswith("B-"):
                start, kind_ = i, t[2:]
        return out
    return bio_to_spans


def _prf(tp, n_pred, n_gold):
    p, r = (tp / n_pred if n_pred else 0.0), (tp / n_gold if n_gold else 0.0)
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def _f1_variant(kind):
    def entity_f1(true_tags, pred_tags, decode):
        if kind == "merged":
            gold = {s for t in true_tags for s in decode(t)}
            pred = {s for t in pred_tags for s in decode(t)}
            return _prf(len(gold & pred), len(pred), len(gold))
        if kind == "tokens":
            pairs = [(a, b) for t, p in zip(true_tags, pred_tags) for a, b in zip(t, p)]
            return _prf(sum(a == b != "O" for a, b in pairs), sum(b != "O" for _, b in pairs),
                        sum(a != "O" for a, _ in pairs))
        s = _entity_scores(true_tags, pred_tags)
        if kind == "macro":
            return s.macro.precision, s.macro.recall, s.macro.f1
        if kind == "zero division":
            gold = {(k, *x) for k, t in enumerate(true_tags) for x in decode(t)}
            pred = {(k, *x) for k, t in enumerate(pred_tags) for x in decode(t)}
            p, r = len(gold & pred) / len(pred), len(gold & pred) / len(gold)
            return p, r, 2 * p * r / (p + r)
        return s.micro.recall, s.micro.precision, s.micro.f1  # "swapped"
    return entity_f1


def _stepper(kind):
    def mlm_training_step(model, optimizer, input_ids, attention_mask, mask_fn, max_grad_norm=1.0):
        inputs, labels = mask_fn(input_ids)
        kw = {} if kind == "no attention mask" else {"attention_mask": attention_mask}
        logits = model(inputs, **kw).logits
        target = torch.where(labels == -100, input_ids, labels) if kind == "all positions" else labels
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100)
        chosen = labels != -100
        hit = logits.argmax(-1) == labels
        accuracy = (hit.float().mean() if kind == "accuracy over all" else hit[chosen].float().mean()).item()
        if kind != "no zero_grad":
            optimizer.zero_grad()
        loss.backward()
        if kind != "no clipping":
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if kind != "no step":
            optimizer.step()
        return {"loss": loss.item(), "masked_accuracy": accuracy}
    return mlm_training_step


CH09_MISTAKES = [
    ("check_mask_tokens", _masker(specials_ok=True), "special/padding positions were chosen"),
    ("check_mask_tokens", _masker(minus100=False), "labels are not -100 anywhere"),
    ("check_mask_tokens", _masker(labels_from_inputs=True), "hold the replaced tokens"),
    ("check_mask_tokens", _masker(split=(1.0, 0.5)), "turned into [MASK]"),
    ("check_mask_tokens", _masker(split=(0.1, 8 / 9)), "turned into [MASK]"),
    ("check_mask_tokens", _masker(split=(0.8, 0.0)), "given a random token"),
    ("check_mask_tokens", _masker(use_generator=False), "generators seeded alike gave different masks"),
    ("check_mask_tokens", _masker(random_high=5), "80% [MASK], 10% random, 10% unchanged"),
    ("check_mask_tokens", _masker(in_place=True), "modified its input `input_ids`"),
    ("check_mask_tokens", _every_kth, "expected about"),
    ("check_bert_embeddings", _embedder(norm=False), "the LayerNorm is missing"),
    ("check_bert_embeddings", _embedder(affine=False), "ignores its weight and bias"),
    ("check_bert_embeddings", _embedder(positions=False), "position embeddings are missing"),
    ("check_bert_embeddings", _embedder(types=False), "segment (token type) embeddings are missing"),
    ("check_bert_embeddings", _embedder(offset=1), "positions are off by one"),
    ("check_bert_embeddings", _embedder(eps=1e-5), "wrong epsilon"),
    ("check_bert_embeddings", _embedder(eps_outside=True), "outside the square root"),
    ("check_bert_embeddings", _embedder(none_types_crash=True), "case 2 (token_type_ids=None"),
    ("check_cls_classifier", _head("no tanh"), "tanh is missing"),
    ("check_cls_classifier", _head("no pooler"), "the pooler is skipped"),
    ("check_cls_classifier", _head("last"), "pools the last position"),
    ("check_cls_classifier", _head("mean"), "averages all positions"),
    ("check_cls_classifier", _head("no bias"), "values differ"),
    ("check_cls_classifier", _head("dropout"), "values differ"),
    ("check_mean_pool", lambda h, m: h.mean(1), "padding positions were averaged too"),
    ("check_mean_pool", lambda h, m: (h * m[..., None].to(h.dtype)).sum(1), "the sum, not the average"),
    ("check_mean_pool", lambda h, m: (h * m[..., None]).sum(1) / m.sum(1, keepdim=True), "NaN"),
    ("check_bio_to_spans", _spans_variant("exclusive"), "(inclusive), not one past it"),
    ("check_bio_to_spans", _spans_variant("drop last"), "at the very end of the sequence is missing"),
    ("check_bio_to_spans", _spans_variant("strict"), "starts a new entity"),
    ("check_entity_f1", _f1_variant("merged"), "identified by its sentence too"),
    ("check_entity_f1", _f1_variant("tokens"), "token-level scores"),
    ("check_entity_f1", _f1_variant("macro"), "macro average"),
    ("check_entity_f1", _f1_variant("zero division"), "ZeroDivisionError"),
    ("check_entity_f1", _f1_variant("swapped"), "expected 0.5, got 0.666"),
    ("check_mlm_training_step", _stepper("all positions"), "over the chosen positions only"),
    ("check_mlm_training_step", _stepper("no attention mask"), "case 2 (one step, padded rows"),
    ("check_mlm_training_step", _stepper("no zero_grad"), "call optimizer.zero_grad() every step"),
    ("check_mlm_training_step", _stepper("no clipping"), "case 3 (one step, max_grad_norm=0.05"),
    ("check_mlm_training_step", _stepper("no step"), "the update does not"),
    ("check_mlm_training_step", _stepper("accuracy over all"), "['masked_accuracy']"),
]


@pytest.mark.parametrize("check,fn,phrase", CH09_MISTAKES,
                         ids=[f"09-{c}-{k}" for k, (c, _, _) in enumerate(CH09_MISTAKES)])
def test_ch09_check_names_the_mistake(check, fn, phrase, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch09, check)(fn)
    assert not result.passed, f"{check} passes a wrong function (expected it to say {phrase!r})"
    assert phrase in result.report(), result.report()


def test_ch09_the_packages_masking_passes_the_masking_check(monkeypatch, capsys):
    """The check's reference is minillm.mlm.mask_tokens; the check must accept it as a learner too
    (its statistics are judged, not compared with the reference's draws)."""
    from minillm.mlm import mask_tokens

    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    assert ch09.check_mask_tokens(mask_tokens).passed, capsys.readouterr().out


def test_ch09_checks_leave_the_global_random_state_alone(monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ch09.check_bert_embeddings(_embedder())
    ch09.check_cls_classifier(_head("ok"))
    ch09.check_mlm_training_step(_stepper("ok"))
    assert torch.equal(torch.get_rng_state(), state)


# ----- chapter 10: every check fails on each usual mistake, and says which one it is -----


from minillm.checks import ch10  # noqa: E402


def _rms(*, center=False, std=False, affine=True, eps_outside=False, total=False, dim=-1, eps=None,
         low_precision=False, keep_fp32=False):
    """T5's RMSNorm with one thing changed."""
    def rms_norm(x, weight, e):
        e = e if eps is None else eps
        xf = x if low_precision else x.float()
        if center or std:
            ms = xf.var(dim, unbiased=False, keepdim=True)
            if center:
                xf = xf - xf.mean(dim, keepdim=True)
        elif total:
            ms = xf.pow(2).sum(dim, keepdim=True)
        else:
            ms = xf.pow(2).mean(dim, keepdim=True)
        y = xf / (ms.sqrt() + e) if eps_outside else xf * torch.rsqrt(ms + e)
        if keep_fp32:
            return weight.float() * y
        y = y.to(x.dtype)
        return weight * y if affine else y
    return rms_norm


def _buckets(**change):
    def relative_position_bucket(relative_position, bidirectional, num_buckets, max_distance):
        return ch10._bucket_variant(relative_position, bidirectional, num_buckets, max_distance, **change)
    return relative_position_bucket


def _float_buckets(relative_position, bidirectional, num_buckets, max_distance):
    return _buckets()(relative_position, bidirectional, num_buckets, max_distance).float()


def _corruptor(sentinel=None, **change):
    """Span corruption with one thing changed; ``sentinel(vocab_size, i)``: the id of span i."""
    def span_corruption_inputs_targets(ids, noise_mask, vocab_size):
        numbering = (lambda i: sentinel(vocab_size, i)) if sentinel else None
        return ch10._corrupt_variant(ids, noise_mask, vocab_size, sentinel=numbering, **change)
    return span_corruption_inputs_targets


def _shifter(kind):
    def shift_right(labels, decoder_start_token_id, pad_token_id):
        start = pad_token_id if kind == "pad first" else decoder_start_token_id
        if kind == "in place":
            labels[labels == -100] = pad_token_id
        out = torch.full_like(labels, start)
        out[:, 1:] = labels[:, :-1]
        if kind == "left":
            out = torch.cat([labels[:, 1:], labels[:, :1].clone().fill_(start)], dim=1)
        if kind == "no shift":
            out = labels.clone()
        if kind == "longer":
            out = torch.cat([labels[:, :1].clone().fill_(start), labels], dim=1)
        fill = {"keep -100": -100, "-100 to start": decoder_start_token_id}.get(kind, pad_token_id)
        return out.masked_fill(out == -100, fill)
    return shift_right


def _t5_loss(kind):
    """The T5 loss with one thing changed."""
    def t5_loss(model, input_ids, attention_mask, labels):
        c = model.config
        if kind == "labels shortcut":
            return model(input_ids, attention_mask=attention_mask, labels=labels).loss
        start = c.pad_token_id if kind == "pad first" else c.decoder_start_token_id
        dec = torch.full_like(labels, start)
        dec[:, 1:] = labels[:, :-1]
        if kind == "unshifted":
            dec = labels.clone()
        dec = dec.masked_fill(dec == -100, c.pad_token_id)
        mask = None if kind == "no mask" else attention_mask
        logits = model(input_ids, attention_mask=mask, decoder_input_ids=dec).logits
        flat, target = logits.reshape(-1, logits.size(-1)), labels.reshape(-1)
        if kind == "padding counted":
            return F.cross_entropy(flat, target.masked_fill(target == -100, c.pad_token_id))
        if kind == "sum":
            return F.cross_entropy(flat, target, ignore_index=-100, reduction="sum")
        if kind == "per sequence":
            tok = F.cross_entropy(flat, target, ignore_index=-100, reduction="none").view(labels.shape)
            real = (labels != -100).float()
            return ((tok * real).sum(1) / real.sum(1)).mean()
        loss = F.cross_entropy(flat, target, ignore_index=-100)
        return loss.item() if kind == "float" else loss
    return t5_loss


CH10_MISTAKES = [
    ("check_rms_norm", _rms(center=True), "you subtracted the mean"),
    ("check_rms_norm", _rms(std=True), "divided by the standard deviation"),
    ("check_rms_norm", _rms(affine=False), "the gain `weight` is missing"),
    ("check_rms_norm", _rms(eps_outside=True), "eps is added outside the square root"),
    ("check_rms_norm", _rms(total=True), "root of the *sum* of squares"),
    ("check_rms_norm", _rms(dim=-2), "over the wrong dimension"),
    ("check_rms_norm", _rms(eps=1e-6), "the eps argument is ignored"),
    ("check_rms_norm", _rms(low_precision=True), "overflowed or underflowed in float16"),
    ("check_rms_norm", _rms(keep_fp32=True), "expected dtype float16 like x, got float32"),
    ("check_relative_position_bucket", _buckets(flip=True), "buckets for negative and positive distances are swapped"),
    ("check_relative_position_bucket", _buckets(flip=True), "the direction is reversed"),
    ("check_relative_position_bucket", _buckets(halve=False), "gets num_buckets // 2 buckets"),
    ("check_relative_position_bucket", _buckets(abs_one_sided=True), "not the absolute value"),
    ("check_relative_position_bucket", _buckets(clamp=False), "must share the last bucket"),
    ("check_relative_position_bucket", _buckets(offset=False), "add max_exact"),
    ("check_relative_position_bucket", _buckets(rounded=True), "T5 truncates it"),
    ("check_relative_position_bucket", _float_buckets, "buckets: expected integer ids"),
    ("check_span_corruption_inputs_targets", _corruptor(per_token=True), "each span gets ONE sentinel"),
    ("check_span_corruption_inputs_targets", _corruptor(keep_noise=True), "inputs still hold the dropped tokens"),
    ("check_span_corruption_inputs_targets", _corruptor(lambda V, i: V - i), "off by one"),
    ("check_span_corruption_inputs_targets", _corruptor(lambda V, i: V - 100 + i), "count down"),
    ("check_span_corruption_inputs_targets", _corruptor(lambda V, i: V - 1), "the same sentinel"),
    ("check_span_corruption_inputs_targets", _corruptor(target_sentinels=False), "targets lack the sentinels"),
    ("check_span_corruption_inputs_targets", _corruptor(continue_numbering=True), "reuse the inputs' sentinels"),
    ("check_span_corruption_inputs_targets", _corruptor(final_sentinel=True), "no sentinel follows it"),
    ("check_span_corruption_inputs_targets", _corruptor(swap=True), "inputs and targets are swapped"),
    ("check_shift_right", _shifter("keep -100"), "-100 is not replaced by pad"),
    ("check_shift_right", _shifter("-100 to start"), "-100 became the start token"),
    ("check_shift_right", _shifter("pad first"), "the first decoder input is decoder_start_token_id"),
    ("check_shift_right", _shifter("left"), "this shifts left"),
    ("check_shift_right", _shifter("no shift"), "the labels were not shifted"),
    ("check_shift_right", _shifter("longer"), "drop the last label"),
    ("check_shift_right", _shifter("in place"), "modified its input `labels`"),
    ("check_t5_loss", _t5_loss("unshifted"), "the decoder input must be the labels shifted right"),
    ("check_t5_loss", _t5_loss("no mask"), "the encoder's attention_mask is missing"),
    ("check_t5_loss", _t5_loss("padding counted"), "the padding positions were counted"),
    ("check_t5_loss", _t5_loss("sum"), "this is the sum over tokens"),
    ("check_t5_loss", _t5_loss("per sequence"), "averages each sequence first"),
    ("check_t5_loss", _t5_loss("pad first"), "not the pad id"),
    ("check_t5_loss", _t5_loss("float"), "expected the loss as a 0-d tensor"),
    ("check_t5_loss", _t5_loss("labels shortcut"), "call the model without labels="),
]


@pytest.mark.parametrize("check,fn,phrase", CH10_MISTAKES,
                         ids=[f"10-{c}-{k}" for k, (c, _, _) in enumerate(CH10_MISTAKES)])
def test_ch10_check_names_the_mistake(check, fn, phrase, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch10, check)(fn)
    assert not result.passed, f"{check} passes a wrong function (expected it to say {phrase!r})"
    assert phrase in result.report(), result.report()


def test_ch10_the_checks_own_versions_equal_the_package():
    """The unchanged variants the checks diagnose with are the package's functions, so a mistake
    is named only when it really is that mistake."""
    from minillm.models.t5 import relative_position_bucket
    from minillm.span_corruption import random_spans_noise_mask, span_corrupt

    rel = torch.arange(-400, 401)
    for bidirectional, nb, md in ((True, 32, 128), (False, 32, 128), (True, 8, 20), (False, 16, 50)):
        assert torch.equal(ch10._bucket_variant(rel, bidirectional, nb, md),
                           relative_position_bucket(rel, bidirectional, nb, md))
    for seed, (length, density, mean) in enumerate([(2, 0.5, 1.0), (30, 0.15, 3.0), (200, 0.5, 1.0),
                                                    (512, 0.15, 3.0), (77, 0.3, 5.0)]):
        ids = torch.randint(0, 900, (length,), generator=torch.Generator().manual_seed(seed))
        noise = random_spans_noise_mask(length, density, mean, generator=torch.Generator().manual_seed(seed))
        expected = span_corrupt(ids, vocab_size=1000, noise_density=density, mean_noise_span_length=mean,
                                generator=torch.Generator().manual_seed(seed))
        got = ch10._corrupt_variant(ids, noise, 1000)
        assert all(torch.equal(a, b) for a, b in zip(expected, got))


def test_ch10_checks_leave_the_global_random_state_alone(monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert ch10.check_t5_loss(_t5_loss("ok")).passed
    assert torch.equal(torch.get_rng_state(), state)


# ----- chapter 11: every check fails on each usual mistake, and says which one it is -----


import math  # noqa: E402

from minillm.checks import ch11  # noqa: E402


def _swiglu(kind):
    """LLaMA's feed-forward as a learner might write it, with one mistake."""
    def swiglu(x, w_gate, w_up, w_down):
        if kind == "not transposed":
            return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down
        gate, up = x @ w_gate.T, x @ w_up.T
        if kind == "swapped":
            gate, up = up, gate
        act = {"sigmoid": torch.sigmoid, "gelu": F.gelu, "relu": F.relu}.get(kind, F.silu)
        hidden = F.silu(gate * up) if kind == "silu of product" else act(gate) * up
        if kind == "no down":
            return hidden
        if kind == "float32":
            return (hidden.float() @ w_down.T.float())
        return hidden @ w_down.T
    return swiglu


def _rope(kind):
    """Rotary embedding as a learner might write it, with one mistake."""
    def apply_rope(x, positions, theta):
        hd, T = x.size(-1), x.size(-2)
        pos = {"positions + 1": positions + 1, "arange": torch.arange(T)}.get(kind, positions)
        th = 10000.0 if kind == "theta ignored" else theta
        i = torch.arange(0, hd, 2).float()
        inv_freq = 1.0 / th ** ((i / 2 if kind == "no factor 2" else i) / hd)  # (hd/2,)
        if kind == "bf16 angles":
            angles = pos.to(x.dtype)[:, None] * inv_freq.to(x.dtype)
        elif kind == "squared positions":
            angles = pos.float()[:, None] ** 2 * inv_freq
        else:
            angles = pos.float()[:, None] * inv_freq  # (T, hd/2)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        if kind == "interleaved":
            even, odd = x[..., 0::2], x[..., 1::2]
            c, s = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
            return torch.stack((even * c - odd * s, odd * c + even * s), -1).flatten(-2)
        if kind == "first half":
            c, s = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
            return torch.cat((x1 * c - x2 * s, x2), -1)
        emb = angles.repeat_interleave(2, -1) if kind == "interleaved table" else torch.cat((angles, angles), -1)
        cos, sin = emb.cos(), (2 * emb if kind == "double sin" else emb).sin()
        if kind != "no cast":
            cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        rotated = torch.cat((x2, -x1), -1) if kind == "rotate_half sign" else torch.cat((-x2, x1), -1)
        if kind == "sign":
            return x * cos - rotated * sin
        if kind == "cos sin swapped":
            return x * sin + rotated * cos
        return x * cos + rotated * sin
    return apply_rope


def _repeat(kind):
    def repeat_kv(x, n_rep):
        B, nkv, T, hd = x.shape
        if kind == "tiled":
            return x.repeat(1, n_rep, 1, 1)
        if kind == "cat":
            return torch.cat([x] * n_rep, dim=1)
        if kind == "new dim in front":
            return x[:, None].expand(B, n_rep, nkv, T, hd).reshape(B, nkv * n_rep, T, hd)
        if kind == "time":
            return x.repeat_interleave(n_rep, dim=2)
        if kind == "no reshape":
            return x[:, :, None].expand(B, nkv, n_rep, T, hd)
        if kind == "ignored":
            return x
        return x.repeat_interleave(n_rep, dim=1)
    return repeat_kv


def _route(kind):
    """Top-k routing as a learner might write it, with one mistake."""
    def top_k_route(router_logits, k, normalize):
        if kind == "softmax of top-k logits":
            top, experts = router_logits.float().topk(k, dim=-1)
            return top.softmax(-1).to(router_logits.dtype), experts
        probs = router_logits.float().softmax(dim=0 if kind == "dim 0" else -1)
        weights, experts = probs.topk(k, dim=-1, largest=kind != "smallest")
        if kind == "logits":
            weights = router_logits.float().gather(-1, experts)
        if normalize and kind != "never normalize":
            weights = weights / weights.sum(-1, keepdim=True)
        if kind == "sorted ids":
            experts, order = experts.sort(-1)
            weights = weights.gather(-1, order)
        if kind == "float experts":
            experts = experts.float()
        if kind != "no cast":
            weights = weights.to(router_logits.dtype)
        return (experts, weights) if kind == "swapped" else (weights, experts)
    return top_k_route


def _balance(kind):
    """The load-balancing loss as a learner might write it, with one mistake."""
    def load_balancing_loss(router_logits, k):
        N, E = router_logits.shape
        probs = router_logits.float().softmax(dim=0 if kind == "dim 0" else -1)  # (N, E)
        top = probs.topk(1 if kind == "top 1" else k, dim=-1).indices
        chosen = torch.zeros(N, E).scatter_(1, top, 1.0)  # (N, E)
        f = chosen.sum(0) if kind == "counts" else chosen.mean(0)
        if kind == "f / k":
            f = f / k
        P = (probs * chosen).mean(0) if kind == "P of chosen" else probs.mean(0)
        if kind == "no E":
            return (f * P).sum()
        if kind == "mean over experts":
            return E * (f * P).mean()
        loss = E * (f * P).sum()
        return loss.item() if kind == "float" else loss
    return load_balancing_loss


CH11_MISTAKES = [
    ("check_swiglu", _swiglu("swapped"), "gate and up are swapped"),
    ("check_swiglu", _swiglu("sigmoid"), "the gate is a sigmoid (that is GLU)"),
    ("check_swiglu", _swiglu("gelu"), "that is GEGLU"),
    ("check_swiglu", _swiglu("relu"), "that is ReGLU"),
    ("check_swiglu", _swiglu("silu of product"), "SiLU was applied to the product"),
    ("check_swiglu", _swiglu("not transposed"), "the weights are not transposed"),
    ("check_swiglu", _swiglu("not transposed"), "mat1 and mat2 shapes cannot be multiplied (10x16 and 24x16) "
                                                "— nn.Linear stores a weight as (out_features, in_features)"),
    ("check_swiglu", _swiglu("no down"), "the down projection is missing"),
    ("check_swiglu", _swiglu("float32"), "expected dtype float64 like x, got float32"),
    ("check_apply_rope", _rope("interleaved"), "you rotated neighbouring channels (2i, 2i + 1)"),
    ("check_apply_rope", _rope("sign"), "the rotation turns the wrong way"),
    ("check_apply_rope", _rope("rotate_half sign"), "the rotation turns the wrong way"),
    ("check_apply_rope", _rope("no factor 2"), "the frequencies are theta^(−i/hd)"),
    ("check_apply_rope", _rope("positions + 1"), "the positions are off by one"),
    ("check_apply_rope", _rope("arange"), "the positions argument is ignored"),
    ("check_apply_rope", _rope("cos sin swapped"), "cos and sin are swapped"),
    ("check_apply_rope", _rope("first half"), "only the first half was rotated"),
    ("check_apply_rope", _rope("interleaved table"), "the angle table is interleaved"),
    ("check_apply_rope", _rope("theta ignored"), "the theta argument is ignored"),
    ("check_apply_rope", _rope("no cast"), "expected dtype bfloat16 like x, got float32"),
    ("check_apply_rope", _rope("bf16 angles"), "the angles were computed in low precision"),
    ("check_apply_rope", _rope("double sin"), "the length of a head vector changed"),
    ("check_apply_rope", _rope("squared positions"), "q·k is not a function of the distance"),
    ("check_repeat_kv", _repeat("tiled"), "the heads are tiled"),
    ("check_repeat_kv", _repeat("cat"), "the heads are tiled"),
    ("check_repeat_kv", _repeat("new dim in front"), "the heads are tiled"),
    ("check_repeat_kv", _repeat("time"), "the repeat runs over the wrong dimension"),
    ("check_repeat_kv", _repeat("no reshape"), "expand added a dimension"),
    ("check_repeat_kv", _repeat("ignored"), "n_rep is ignored"),
    ("check_top_k_route", _route("softmax of top-k logits"), "a softmax over only the k kept logits"),
    ("check_top_k_route", _route("never normalize"), "normalize=True: divide the k kept probabilities"),
    ("check_top_k_route", _route("dim 0"), "the softmax runs over the tokens (dim 0)"),
    ("check_top_k_route", _route("logits"), "the weights are raw logits"),
    ("check_top_k_route", _route("sorted ids"), "the experts are sorted by id"),
    ("check_top_k_route", _route("smallest"), "the k *least* likely experts"),
    ("check_top_k_route", _route("no cast"), "expected dtype bfloat16 like router_logits"),
    ("check_top_k_route", _route("swapped"), "weights and experts are swapped"),
    ("check_top_k_route", _route("float experts"), "experts: expected integer ids"),
    ("check_load_balancing_loss", _balance("no E"), "the factor E (the number of experts) is missing"),
    ("check_load_balancing_loss", _balance("mean over experts"), "averaged over the experts"),
    ("check_load_balancing_loss", _balance("P of chosen"), "not only over the tokens that chose it"),
    ("check_load_balancing_loss", _balance("f / k"), "f_e was divided by k"),
    ("check_load_balancing_loss", _balance("top 1"), "counts only each token's first choice"),
    ("check_load_balancing_loss", _balance("dim 0"), "the softmax runs over the tokens (dim 0)"),
    ("check_load_balancing_loss", _balance("counts"), "divide the counts by N"),
    ("check_load_balancing_loss", _balance("float"), "expected the loss as a 0-d tensor"),
]


@pytest.mark.parametrize("check,fn,phrase", CH11_MISTAKES,
                         ids=[f"11-{c}-{k}" for k, (c, _, _) in enumerate(CH11_MISTAKES)])
def test_ch11_check_names_the_mistake(check, fn, phrase, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch11, check)(fn)
    assert not result.passed, f"{check} passes a wrong function (expected it to say {phrase!r})"
    assert phrase in result.report(), result.report()


def _rope_complex(x, positions, theta):
    """RoPE through complex numbers (Meta's way), on the half-split pairs: z = x_i + i·x_{i+hd/2}."""
    hd = x.size(-1)
    inv_freq = torch.exp(-torch.arange(0, hd, 2, dtype=torch.float64) / hd * math.log(theta))  # float64
    angles = positions.double()[:, None] * inv_freq  # (T, hd/2)
    turn = torch.polar(torch.ones_like(angles), angles)  # e^{i·angle}
    z = torch.complex(x[..., : hd // 2].double(), x[..., hd // 2:].double()) * turn
    return torch.cat((z.real, z.imag), -1).to(x.dtype)


def _route_by_sorting(router_logits, k, normalize):
    probs = torch.softmax(router_logits.to(torch.float32), dim=1)
    order = probs.argsort(dim=1, descending=True)[:, :k]
    weights = probs.gather(1, order)
    if normalize:
        weights = weights / weights.sum(1, keepdim=True)
    return weights.to(router_logits.dtype), order


def _balance_like_transformers(router_logits, k):
    """transformers' load_balancing_loss_func for one layer, without a mask."""
    E = router_logits.size(-1)
    routing_weights = F.softmax(router_logits.float(), dim=-1)
    _, selected = torch.topk(routing_weights, k, dim=-1)
    expert_mask = F.one_hot(selected, E)  # (N, k, E)
    tokens_per_expert = expert_mask.float().mean(0)  # (k, E)
    return (tokens_per_expert * routing_weights.mean(0)[None]).sum() * E


@pytest.mark.parametrize("check,fn", [
    ("check_swiglu", lambda x, wg, wu, wd: F.linear(F.silu(F.linear(x, wg)) * F.linear(x, wu), wd)),
    ("check_swiglu", lambda x, wg, wu, wd: ((x @ wg.T) * torch.sigmoid(x @ wg.T) * (x @ wu.T)) @ wd.T),
    ("check_apply_rope", _rope_complex),
    ("check_repeat_kv", lambda x, n_rep: x.repeat_interleave(n_rep, dim=1)),
    ("check_repeat_kv", lambda x, n_rep: torch.stack([x] * n_rep, dim=2).flatten(1, 2)),
    ("check_top_k_route", _route_by_sorting),
    ("check_load_balancing_loss", _balance_like_transformers),
], ids=["swiglu-F.linear", "swiglu-x·sigmoid(x)", "rope-complex", "repeat_interleave", "stack-flatten",
        "route-argsort", "balance-transformers"])
def test_ch11_other_correct_answers_pass(check, fn, monkeypatch, capsys):
    """Correct answers written differently from the reference (other operations, float64 angles,
    complex numbers) pass: the tolerances leave room for their rounding."""
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch11, check)(fn)
    assert result.passed, result.report()


def test_ch11_the_checks_own_versions_equal_the_package():
    """The unchanged variants the checks diagnose with are the package's functions, so a mistake
    is named only when it really is that mistake; the interleaved variant is Meta's RoPE (the same
    rotation once the channels are reordered, even ones first)."""
    from minillm.moe import load_balancing_loss

    g = torch.Generator().manual_seed(0)
    x, w_gate, w_up, w_down = (torch.randn(3, 4, 16, generator=g), torch.randn(40, 16, generator=g),
                               torch.randn(40, 16, generator=g), torch.randn(16, 40, generator=g))
    torch.testing.assert_close(ch11._swiglu_variant(x, w_gate, w_up, w_down),
                               ch11._ref_swiglu(x, w_gate, w_up, w_down))
    for shape, positions, theta, dtype in [((2, 3, 5, 8), torch.arange(5), 1e4, torch.float32),
                                           ((1, 2, 4, 64), torch.tensor([0, 7, 300, 4000]), 1e5, torch.float32),
                                           ((2, 2, 3, 16), torch.arange(40, 43), 5e5, torch.bfloat16)]:
        q = torch.randn(*shape, generator=g).to(dtype)
        expected = ch11._ref_rope(q, positions, theta)
        assert torch.equal(ch11._rope_variant(q, positions, theta), expected)
        even_first = torch.cat((q[..., 0::2], q[..., 1::2]), -1)  # Meta's pairs (2i, 2i+1) → halves
        meta = ch11._rope_variant(q, positions, theta, layout="interleaved")
        assert torch.equal(torch.cat((meta[..., 0::2], meta[..., 1::2]), -1),
                           ch11._ref_rope(even_first, positions, theta))
    for N, E, k, normalize, dtype in [(6, 8, 2, False, torch.float32), (5, 8, 2, True, torch.float32),
                                      (9, 16, 4, True, torch.bfloat16), (3, 4, 1, False, torch.float32)]:
        logits = ch11._separated_logits(N, E, g).to(dtype)
        expected = ch11._ref_route(logits, k, normalize)
        got = ch11._route_variant(logits, k, normalize)
        assert torch.equal(got[1], expected[1]) and got[0].dtype == expected[0].dtype == dtype
        torch.testing.assert_close(got[0], expected[0])
    for N, E, k in [(12, 4, 1), (20, 8, 2), (10, 16, 4)]:
        logits = torch.randn(N, E, generator=g)
        torch.testing.assert_close(ch11._balance_variant(logits, k), load_balancing_loss(logits, k))


def test_ch11_the_relative_rope_case_has_the_property_it_describes():
    """The RoPE check's relative case says q·k depends only on the distance: true of the reference."""
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)
    same = torch.stack([q.expand(8, 16), k.expand(8, 16)])[None]  # (1, 2, 8, 16)
    out = ch11._ref_rope(same, ch11.RELATIVE_POSITIONS, 10000.0)
    scores = out[0, 0] @ out[0, 1].T  # (8, 8)
    torch.testing.assert_close(scores[:4, :4], scores[4:, 4:], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores[:4, :4], scores[:4, 4:], atol=1e-2), "distance 100 must score differently"


def test_ch11_checks_leave_the_global_random_state_alone(monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert ch11.check_swiglu(_swiglu("ok")).passed
    assert ch11.check_top_k_route(_route("ok")).passed
    assert torch.equal(torch.get_rng_state(), state)
