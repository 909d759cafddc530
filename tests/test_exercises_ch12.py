"""Chapter 12's checks: each fails on the usual mistakes and says which one it is; other correct
answers pass; the checks' own rules are the package's (``minillm.finetune``, ``train(patience=)``)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from minillm.checks import ch12


# ----- freezing by name


def _freezer(kind):
    """freeze_except as a learner might write it, with one mistake."""
    def freeze_except(model, prefixes):
        names = []
        for name, p in model.named_parameters():
            if kind == "startswith":
                keep = any(name.startswith(q) for q in prefixes)
            elif kind == "in":
                keep = any(q in name for q in prefixes)
            elif kind == "equal":
                keep = name in prefixes
            else:
                keep = any(name == q or name.startswith(q + ".") for q in prefixes)
            if kind == "inverted":
                keep = not keep
            if kind == "only freeze":
                if not keep:
                    p.requires_grad = False
            else:
                p.requires_grad_(keep)
            if (p.requires_grad if kind == "only freeze" else keep) != (kind == "frozen names"):
                names.append(name)
        if kind == "no return":
            return None
        return sorted(names) if kind == "sorted" else names
    return freeze_except


def _freeze_by_regex(model, prefixes):
    """Another correct answer: one regular expression for all prefixes."""
    rule = re.compile("|".join(f"{re.escape(q)}(\\..*)?" for q in prefixes)) if prefixes else None
    kept = []
    for name, p in model.named_parameters():
        p.requires_grad = bool(rule and rule.fullmatch(name))
        if p.requires_grad:
            kept.append(name)
    return kept


# ----- counting


def _counter(kind):
    def count_trainable(model):
        if kind == "state_dict":
            tensors = list(model.state_dict().values())
            return sum(t.numel() for n, t in model.named_parameters() if t.requires_grad) + (
                model.lm_head.weight.numel() if hasattr(model, "lm_head") and model.lm_head.weight.requires_grad
                else 0), sum(t.numel() for t in tensors)
        params = (list(model.parameters()) if kind != "no dedup"
                  else [p for _, p in model.named_parameters(remove_duplicate=False)])
        size = (lambda p: 1) if kind == "tensors" else (lambda p: p.numel())
        if kind == "grad":
            trainable = sum(size(p) for p in params if p.grad is not None)
        elif kind == "all":
            trainable = sum(size(p) for p in params)
        elif kind == "frozen":
            trainable = sum(size(p) for p in params if not p.requires_grad)
        else:
            trainable = sum(size(p) for p in params if p.requires_grad)
        total = sum(size(p) for p in params)
        return (total, trainable) if kind == "swapped" else (trainable, total)
    return count_trainable


# ----- layer-wise rates


def _scaler(kind):
    def layerwise_lr_scales(names, num_layers, decay):
        out, seen = [], False
        for n in names:
            m = re.search(r"\.(?:layer|h)\.(\d)" if kind == "one digit" else r"\.(?:layer|h)\.(\d+)\.", n)
            if m:
                seen, i = True, int(m.group(1))
                depth = {"top decayed": num_layers - i, "reversed": i}.get(kind, num_layers - 1 - i)
            elif not seen:
                depth = {"embeddings like layer 0": num_layers - 1, "embeddings full": 0}.get(kind, num_layers)
            else:
                depth = num_layers if kind == "head decayed" else 0
            out.append(decay ** depth)
        return {n: s for n, s in zip(names, out)} if kind == "dict" else out
    return layerwise_lr_scales


# ----- early stopping


def _stopper(kind):
    def should_stop(val_losses, patience):
        if kind == "previous":
            run = 0
            for a, b in zip(val_losses, val_losses[1:]):
                run = run + 1 if b >= a else 0
            return run >= patience
        if kind == "no patience":
            return bool(val_losses) and val_losses[-1] > min(val_losses)
        best, since = float("inf"), 0
        for v in val_losses:
            if v < best or (kind == "ties" and v <= best):
                best, since = v, 0
            else:
                since += 1
        if kind == "late":
            return since > patience
        if kind == "int":
            return int(since >= patience)
        return since >= patience
    return should_stop


MISTAKES = [
    ("check_freeze_except", _freezer("inverted"), "it is the other way round"),
    ("check_freeze_except", _freezer("startswith"), "not layers 10 and 11"),
    ("check_freeze_except", _freezer("in"), "not layers 10 and 11"),
    ("check_freeze_except", _freezer("equal"), "a prefix names a module, not one parameter"),
    ("check_freeze_except", _freezer("only freeze"), "must be set trainable too"),
    ("check_freeze_except", _freezer("frozen names"), "the returned list holds the frozen parameters"),
    ("check_freeze_except", _freezer("no return"), "nothing was returned"),
    ("check_freeze_except", _freezer("sorted"), "the names are sorted"),
    ("check_count_trainable", _counter("swapped"), "the two numbers are swapped"),
    ("check_count_trainable", _counter("tensors"), "these count parameter tensors"),
    ("check_count_trainable", _counter("no dedup"), "a tied matrix was counted twice"),
    ("check_count_trainable", _counter("state_dict"), "a tied matrix was counted twice"),
    ("check_count_trainable", _counter("all"), "every parameter was counted as trainable"),
    ("check_count_trainable", _counter("grad"), "the trainable count was taken from p.grad"),
    ("check_count_trainable", _counter("frozen"), "the frozen parameters were counted"),
    ("check_layerwise_lr_scales", _scaler("top decayed"), "off by one: the top layer"),
    ("check_layerwise_lr_scales", _scaler("reversed"), "the decay runs the wrong way"),
    ("check_layerwise_lr_scales", _scaler("embeddings like layer 0"), "sit below layer 0"),
    ("check_layerwise_lr_scales", _scaler("embeddings full"), "the embeddings (the names before the first "
                                                              "layer) got the full rate"),
    ("check_layerwise_lr_scales", _scaler("head decayed"), "they train at the full rate 1"),
    ("check_layerwise_lr_scales", _scaler("one digit"), "'layer.10' is layer 10, not layer 1"),
    ("check_layerwise_lr_scales", _scaler("dict"), "got a dict"),
    ("check_should_stop", _stopper("previous"), "the rule counts the evaluations since the *best* loss"),
    ("check_should_stop", _stopper("ties"), "strictly lower"),
    ("check_should_stop", _stopper("late"), "one evaluation too late"),
    ("check_should_stop", _stopper("no patience"), "the patience is ignored"),
    ("check_should_stop", _stopper("int"), "expected True or False, got int"),
]


@pytest.mark.parametrize("check,fn,phrase", MISTAKES, ids=[f"12-{c}-{k}" for k, (c, _, _) in enumerate(MISTAKES)])
def test_ch12_check_names_the_mistake(check, fn, phrase, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch12, check)(fn)
    assert not result.passed, f"{check} passes a wrong function (expected it to say {phrase!r})"
    assert phrase in result.report(), result.report()


@pytest.mark.parametrize("check,fn", [
    ("check_freeze_except", _freezer("ok")),
    ("check_freeze_except", _freeze_by_regex),
    ("check_count_trainable", _counter("ok")),
    ("check_count_trainable", lambda m: (sum(p.numel() for p in {id(p): p for p in m.parameters()}.values()
                                             if p.requires_grad), m.num_params() if hasattr(m, "num_params")
                                         else sum(p.numel() for p in m.parameters()))),
    ("check_layerwise_lr_scales", _scaler("ok")),
    ("check_should_stop", _stopper("ok")),
    ("check_should_stop", lambda v, k: len(v) - 1 - min(range(len(v)), key=lambda i: (v[i], i)) >= k if v else False),
], ids=["freeze", "freeze-regex", "count", "count-dedup", "scales", "stop", "stop-argmin"])
def test_ch12_correct_answers_pass(check, fn, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    result = getattr(ch12, check)(fn)
    assert result.passed, result.report()


def test_ch12_the_checks_rules_equal_the_package():
    """The layer-wise scales of the check are the lr_scale layerwise_lr_groups gives each parameter
    (BERT, 12-layer BERT, GPT with a tied head), and its freezing reference is set_trainable."""
    from minillm.finetune import layerwise_lr_groups

    for model, layers, decay in [(ch12._tiny_classifier(0, 2), 2, 0.5), (ch12._tiny_classifier(0, 12), 12, 0.9),
                                 (ch12._tiny_classifier(0, 3, tied_lm=True), 3, 0.8)]:
        names = [n for n, _ in model.named_parameters()]
        package = {n: g["lr_scale"] for g in layerwise_lr_groups(model, decay) for n in g["names"]}
        assert set(package) == set(names)
        ours = ch12._ref_lr_scales(names, layers, decay)
        assert [package[n] for n in names] == pytest.approx(ours, rel=1e-12)


class _Scripted(nn.Module):
    """A model whose validation losses are a script: train() evaluates it through loss_fn."""

    def __init__(self, losses):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.losses, self.evaluations = list(losses), 0

    def loss(self, batch):
        if self.training:
            return (self.w ** 2).sum() + 1.0
        v = self.losses[min(self.evaluations, len(self.losses) - 1)]
        self.evaluations += 1
        return torch.tensor(v)


@pytest.mark.parametrize("losses,patience", [(l, p) for l, p, _ in ch12.STOP_CASES if l] + [
    ([0.5, 0.4, 0.4, 0.3, 0.35, 0.36, 0.2], 2), ([3.0, 2.0, 2.5, 1.0, 1.5, 1.6, 1.7, 0.9], 3)])
def test_ch12_should_stop_is_the_rule_of_train(losses, patience):
    """train(patience=) stops after the first evaluation at which the check's rule says stop."""
    from minillm.train import train

    model = _Scripted(losses)
    h = train(model, lambda: None, val_data=[None], loss_fn=lambda m, b: m.loss(b), steps=len(losses),
              lr=1e-3, warmup_steps=0, eval_every=1, eval_batches=1, patience=patience, progress=False)
    rule = [ch12._ref_should_stop(losses[:k + 1], patience) for k in range(len(losses))]
    expected_evals = rule.index(True) + 1 if True in rule else len(losses)
    assert len(h.val_loss) == expected_evals
    if True in rule[:len(losses) - 1]:
        assert h.stopped_early and len(h.step) < len(losses)


def test_ch12_every_stopping_mistake_is_told_apart():
    """Each mistake the early-stopping check names gives, on its cases, answers no other mistake and
    not the rule give, so the diagnosis is never ambiguous."""
    answers = {kind: tuple(ch12._stop_variant(list(l), p, kind=kind) for l, p, _ in ch12.STOP_CASES)
               for kind, _ in ch12._STOP_MISTAKES}
    answers["rule"] = tuple(ch12._ref_should_stop(list(l), p) for l, p, _ in ch12.STOP_CASES)
    assert len(set(answers.values())) == len(answers), answers


def test_ch12_checks_leave_the_global_random_state_alone(monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert ch12.check_freeze_except(_freezer("ok")).passed
    assert ch12.check_count_trainable(_counter("ok")).passed
    assert ch12.check_layerwise_lr_scales(_scaler("ok")).passed
    assert torch.equal(torch.get_rng_state(), state)
