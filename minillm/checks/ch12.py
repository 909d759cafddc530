"""Checks for chapter 12's exercises (fine-tuning): freezing parameters by name, counting the
trainable parameters, layer-wise learning-rate scales, and the early-stopping rule.

Each check compares the learner's function with the package's (``minillm.finetune.set_trainable``,
``count_parameters``, ``layer_of`` as ``layerwise_lr_groups`` uses it, and the ``patience`` rule of
``minillm.train.train``) and, where the answer is wrong, recomputes the usual mistakes on the same
inputs (a prefix that also catches ``layer.10`` when it names ``layer.1``, a tied matrix counted
twice, the top layer given the decayed rate, losses compared with the previous evaluation instead of
the best...) to say which one it is.

The models the cases are built on are drawn inside ``torch.random.fork_rng``, so a learner's seeded
notebook draws the same numbers before and after a check.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import torch

from . import Case, CheckResult, compare, run_check
from .ch10 import _Recorder
from .limits import call_with_time_limit

_Variants = Sequence[tuple[str, Callable[[], Any]]]


def _diagnose(got: Any, variants: _Variants, atol: float = 1e-12) -> str | None:
    """The first known mistake whose result equals ``got`` (its sentence), or None."""
    for sentence, make in variants:
        try:
            wrong = make()
        except Exception:  # noqa: BLE001 — a variant that does not apply to this case
            continue
        try:
            if compare(wrong, got, atol=atol, rtol=0) is None:
                return sentence
        except Exception:  # noqa: BLE001 — a result that cannot be compared does not match
            continue
    return None


def _tiny_classifier(seed: int, layers: int = 2, *, tied_lm: bool = False) -> torch.nn.Module:
    """A small random model: a BertForSequenceClassification (``layers`` encoder layers, width 16),
    or with ``tied_lm`` a GPT whose output matrix is its token embedding."""
    from ..models.bert import BertConfig, BertForSequenceClassification
    from ..models.gpt import GPT, GPTConfig

    with torch.random.fork_rng(devices=[]):  # the learner's global random state stays as it was
        torch.manual_seed(seed)
        if tied_lm:
            return GPT(GPTConfig.tiny(n_layer=layers, n_embd=16, n_head=2))
        config = BertConfig.tiny(hidden_size=16, num_attention_heads=2, intermediate_size=32,
                                 num_hidden_layers=layers, max_position_embeddings=16)
        return BertForSequenceClassification(config)


def _start(model: torch.nn.Module, start: str) -> None:
    """How the model arrives: every parameter trainable, all frozen, or only the embeddings frozen."""
    for name, p in model.named_parameters():
        p.requires_grad_(start == "trainable" or (start == "mixed" and "embeddings" not in name))


def _names(names: Any, limit: int = 4) -> str:
    if not isinstance(names, list):
        return repr(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}] ({len(names)} names)"


# ----------------------------------------------------------------------------- 1. freezing by name

def _prefix_hit(name: str, prefix: str, rule: str) -> bool:
    if rule == "startswith":
        return name.startswith(prefix)
    if rule == "equal":
        return name == prefix
    if rule == "in":
        return prefix in name
    return name == prefix or name.startswith(prefix + ".")


def _freeze_variant(names, start, prefixes, *, rule="ok", unfreeze=True, invert=False,
                    report="trainable", order="model"):
    """The freezing rule with one thing changed → (returned names, names left trainable)."""
    flags = []
    for name, was in zip(names, start):
        hit = any(_prefix_hit(name, p, rule) for p in prefixes)
        hit = not hit if invert else hit
        flags.append(hit if unfreeze else (was and hit))
    trainable = [n for n, f in zip(names, flags) if f]
    frozen = [n for n, f in zip(names, flags) if not f]
    returned = {"trainable": trainable, "frozen": frozen, "none": None}[report]
    if order == "sorted" and returned is not None:
        returned = sorted(returned)
    return [returned, trainable]


def _freeze_variants(names, start, prefixes) -> _Variants:
    v = lambda **kw: lambda: _freeze_variant(names, start, prefixes, **kw)  # noqa: E731
    boundary = ("a prefix must end where a name part ends: 'bert.encoder.layer.1' names layer 1, not "
                "layers 10 and 11 — match name == prefix or name.startswith(prefix + '.')")
    return [
        ("the matching parameters were frozen and the others left trainable: it is the other way "
         "round — only the parameters named by a prefix train", v(invert=True)),
        (boundary, v(rule="startswith")),
        (boundary, v(rule="in")),
        ("a prefix names a module, not one parameter: 'classifier' must unfreeze classifier.weight "
         "and classifier.bias — match name == prefix or name.startswith(prefix + '.')", v(rule="equal")),
        ("the parameters that match must be set trainable too (requires_grad_(True)): this model "
         "arrived with some of them frozen, and only freezing the others leaves those frozen",
         v(unfreeze=False)),
        ("the returned list holds the frozen parameters: return the names of those that train",
         v(report="frozen")),
        ("nothing was returned: return the list of the names of the parameters left trainable",
         v(report="none")),
        ("the names are sorted: return them in the model's order (as named_parameters() yields them)",
         v(order="sorted")),
    ]


_CHANGED_PREFIXES = object()  # what the learner wrapper returns when fn modified its prefixes argument


def check_freeze_except(fn) -> CheckResult:
    """``fn(model, prefixes)`` freezes every parameter of ``model`` except those whose name equals
    one of ``prefixes`` or starts with it followed by ``.``, makes those trainable, and returns their
    names in the model's order; equal to ``minillm.finetune.set_trainable`` with the prefixes as
    literal patterns."""
    from ..finetune import set_trainable

    def make(seed, layers, prefixes, start, description):
        return Case((seed, layers, tuple(prefixes), start), description=description)

    cases = [
        make(0, 2, ["classifier"], "trainable", "head only: the classifier of a 2-layer BERT"),
        make(1, 2, ["classifier", "bert.pooler", "bert.encoder.layer.1"], "trainable",
             "the top layer, the pooler and the classifier"),
        make(2, 12, ["bert.encoder.layer.1", "classifier"], "trainable",
             "12 layers: 'bert.encoder.layer.1' is layer 1 only, not layers 10 and 11"),
        make(3, 2, ["bert.embeddings.LayerNorm", "bert.encoder.layer.0.attention", "classifier"], "frozen",
             "a model that arrives with every parameter frozen; prefixes of sub-modules"),
        make(4, 3, ["bert.embeddings", "classifier"], "mixed",
             "a model whose embeddings arrive frozen: the prefix must unfreeze them"),
        make(5, 2, [], "trainable", "no prefix: everything is frozen, and the list is empty"),
    ]
    names: dict[int, list[str]] = {}
    starts: dict[int, list[bool]] = {}

    def build(seed, layers, start):
        model = _tiny_classifier(seed, layers)
        _start(model, start)
        names[seed] = [n for n, _ in model.named_parameters()]
        starts[seed] = [p.requires_grad for p in model.parameters()]
        return model

    def reference(seed, layers, prefixes, start):
        model = build(seed, layers, start)
        returned = set_trainable(model, [re.escape(p) for p in prefixes])
        return returned, [n for n, p in model.named_parameters() if p.requires_grad]

    def learner(seed, layers, prefixes, start):
        model = build(seed, layers, start)
        given = list(prefixes)
        returned = fn(model, given)
        if given != list(prefixes):  # the caller's list must come back as it was
            return _CHANGED_PREFIXES, given
        if isinstance(returned, tuple):
            returned = list(returned)
        return returned, [n for n, p in model.named_parameters() if p.requires_grad]

    def cmp(expected, got, **kw):
        returned, trainable = got
        if returned is _CHANGED_PREFIXES:
            return (f"freeze_except changed the list of prefixes it was given in place (it came back "
                    f"as {trainable!r}): read the prefixes, do not modify the caller's list")
        msg = compare(expected[1], trainable, path="the parameters left trainable")
        if msg is None and not (isinstance(returned, list) and returned == expected[0]):
            msg = (f"the returned names: expected the list {_names(expected[0])}, got "
                   f"{_names(returned) if isinstance(returned, list) else type(returned).__name__}")
        if msg is None:
            return None
        seed, _, prefixes, _ = ref.args
        why = _diagnose([returned, trainable], _freeze_variants(names[seed], starts[seed], prefixes))
        return f"{why} ({msg})" if why else msg

    ref = _Recorder(reference)
    return run_check("freeze_except", learner, ref, cases, compare_fn=cmp,
                     hint="for name, p in model.named_parameters(): keep = any(name == q or "
                          "name.startswith(q + '.') for q in prefixes); p.requires_grad_(keep); "
                          "collect the names with keep; return them")


# ----------------------------------------------------------------------------- 2. counting

def _count_variants(model) -> _Variants:
    params = list(model.parameters())
    state = model.state_dict()
    all_named = [p for _, p in model.named_parameters(remove_duplicate=False)]
    trainable = lambda ps: sum(p.numel() for p in ps if p.requires_grad)  # noqa: E731
    total = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    return [
        ("the two numbers are swapped: return (trainable, total)",
         lambda: (total(params), trainable(params))),
        ("these count parameter tensors, not the numbers in them: add up p.numel()",
         lambda: (sum(1 for p in params if p.requires_grad), len(params))),
        ("a tied matrix was counted twice: GPT's lm_head.weight *is* transformer.wte.weight, and "
         "model.parameters() yields a shared tensor once (state_dict() and "
         "named_parameters(remove_duplicate=False) list it under both names)",
         lambda: (trainable(all_named), total(all_named))),
        ("a tied matrix was counted twice: GPT's lm_head.weight *is* transformer.wte.weight, and "
         "model.parameters() yields a shared tensor once (state_dict() lists it under both names)",
         lambda: (trainable(all_named), sum(t.numel() for t in state.values()))),
        ("every parameter was counted as trainable: only those with p.requires_grad train",
         lambda: (total(params), total(params))),
        ("the trainable count was taken from p.grad: before a backward pass no parameter has a "
         "gradient; requires_grad says which ones will train",
         lambda: (0, total(params))),
        ("the frozen parameters were counted as the trainable ones: requires_grad is True for "
         "those that train", lambda: (total(params) - trainable(params), total(params))),
    ]


def check_count_trainable(fn) -> CheckResult:
    """``fn(model)`` → ``(trainable, total)``: how many numbers of ``model``'s parameters train
    (``requires_grad``) and how many there are, a tied (shared) matrix counted once; equal to
    ``minillm.finetune.count_parameters`` (PEFT's ``get_nb_trainable_parameters``)."""
    from ..finetune import count_parameters, set_trainable

    setups = {
        "all": ("a 2-layer BERT classifier, everything trainable", lambda m: None),
        "head": ("head only: the classifier trains", lambda m: set_trainable(m, ["classifier"])),
        "top": ("the top layer, the pooler and the classifier of a 3-layer BERT",
                lambda m: set_trainable(m, [r"bert\.encoder\.layer\.2", r"bert\.pooler", "classifier"])),
        "none": ("everything frozen", lambda m: set_trainable(m, [])),
        "gpt": ("a GPT whose lm_head shares its matrix with the token embedding; the embeddings frozen",
                lambda m: set_trainable(m, [r"transformer\.h\.\d+", r"transformer\.ln_f"])),
    }
    cases = [Case((k, i), description=setups[k][0]) for i, k in enumerate(setups)]
    models: dict[str, torch.nn.Module] = {}

    def build(kind, seed):
        model = _tiny_classifier(seed, 3 if kind == "top" else 2, tied_lm=kind == "gpt")
        setups[kind][1](model)
        models[kind] = model
        return model

    def reference(kind, seed):
        c = count_parameters(build(kind, seed))
        return c.trainable, c.total

    def learner(kind, seed):
        out = fn(build(kind, seed))
        return tuple(out) if isinstance(out, list) else out

    ref = _Recorder(reference)

    def cmp(expected, got, **kw):
        if not isinstance(got, tuple) or len(got) != 2:
            what = type(got).__name__ + (f" of length {len(got)}" if isinstance(got, tuple) else "")
            return f"expected a pair (trainable, total), got a {what}"
        msg = compare(expected, got, atol=0, rtol=0, path="(trainable, total)")
        if msg is None:
            return None
        why = _diagnose(got, _count_variants(models[ref.args[0]]), atol=0)
        return f"{why} ({msg})" if why else msg

    return run_check("count_trainable", learner, ref, cases, compare_fn=cmp,
                     hint="params = list(model.parameters()) (a shared tensor once); return "
                          "(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))")


# ----------------------------------------------------------------------------- 3. layer-wise rates

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|h)\.(\d+)(?:\.|$)")


def _lr_scale_variant(names, num_layers, decay, *, top=1, reverse=False, below="under",
                      after="top", one_digit=False):
    """Layer-wise scales (the package's rule) with one thing changed."""
    pattern = re.compile(r"(?:^|\.)(?:layer|h)\.(\d)") if one_digit else _LAYER_INDEX
    scales, seen = [], False
    for name in names:
        m = pattern.search(name)
        if m:
            seen = True
            i = int(m.group(1))
            depth = i if reverse else num_layers - top - i
        elif not seen:  # before the first layer: the embeddings
            depth = {"under": num_layers, "layer0": num_layers - 1, "top": 0}[below]
        else:  # after the last layer: pooler, classifier, final norm, lm_head
            depth = {"top": 0, "under": num_layers}[after]
        scales.append(decay ** depth)
    return scales


def _ref_lr_scales(names: list[str], num_layers: int, decay: float) -> list[float]:
    return _lr_scale_variant(names, num_layers, decay)


def _lr_variants(names, num_layers, decay) -> _Variants:
    v = lambda **kw: lambda: _lr_scale_variant(names, num_layers, decay, **kw)  # noqa: E731
    return [
        ("off by one: the top layer (i = num_layers − 1) trains at the full rate, so layer i gets "
         "decay ** (num_layers − 1 − i)", v(top=0)),
        ("the decay runs the wrong way: the layers nearest the input (layer 0, the embeddings) hold "
         "the most general features and get the *smallest* rates, decay ** (num_layers − 1 − i)",
         v(reverse=True)),
        ("the embeddings (the names before the first layer) sit below layer 0: decay ** num_layers",
         v(below="layer0")),
        ("the embeddings (the names before the first layer) got the full rate: they are the lowest of "
         "all, decay ** num_layers", v(below="top")),
        ("the names after the last layer (pooler, classifier, final LayerNorm, lm_head) are the head: "
         "they train at the full rate 1 — only the names *before* the first layer are embeddings",
         v(after="under")),
        ("a two-digit layer number was read as one digit: 'layer.10' is layer 10, not layer 1 — "
         "take all the digits, e.g. re.search(r'\\.(?:layer|h)\\.(\\d+)\\.', name)", v(one_digit=True)),
    ]


def check_layerwise_lr_scales(fn) -> CheckResult:
    """``fn(names, num_layers, decay)`` → one learning-rate scale per parameter name, in order:
    ``decay ** (num_layers − 1 − i)`` for a name in layer i (``…layer.i…`` in BERT, ``…h.i…`` in
    GPT-2), ``decay ** num_layers`` for the names before the first layer (embeddings) and 1 for those
    after the last (pooler, classifier, final norm, lm_head); the ``lr_scale`` that
    ``minillm.finetune.layerwise_lr_groups`` gives each parameter."""
    bert2 = [n for n, _ in _tiny_classifier(0, 2).named_parameters()]
    bert12 = [n for n, _ in _tiny_classifier(0, 12).named_parameters()]
    gpt3 = [n for n, _ in _tiny_classifier(0, 3, tied_lm=True).named_parameters()] + ["lm_head.bias"]
    cases = [
        Case((bert2, 2, 0.5), description="a 2-layer BERT classifier, decay 0.5"),
        Case((bert12, 12, 0.9), description="a 12-layer BERT, decay 0.9 (layers 10 and 11 have two digits)"),
        Case((gpt3, 3, 0.8), description="a 3-layer GPT (transformer.h.i), decay 0.8; ln_f and lm_head "
                                         "come after the last layer"),
        Case((bert2, 2, 1.0), description="decay 1: every parameter at the full rate"),
        Case((bert12[:5] + bert12[-6:], 12, 0.7),
             description="only some names (the embeddings, the top layer, the pooler and the head), decay 0.7"),
    ]
    ref = _Recorder(_ref_lr_scales)

    def cmp(expected, got, **kw):
        if isinstance(got, tuple):
            got = list(got)
        if isinstance(got, torch.Tensor):
            got = got.tolist()
        if isinstance(got, dict):
            return "expected a list of scales, one per name in the same order, got a dict"
        if not isinstance(got, list):
            return f"expected a list of scales, one per name, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"expected {len(expected)} scales (one per name), got {len(got)}"
        for k, (e, g) in enumerate(zip(expected, got)):
            msg = compare(e, g, atol=1e-12, rtol=1e-9, path=f"the scale of {ref.args[0][k]!r}")
            if msg:
                why = _diagnose(got, _lr_variants(*ref.args), atol=1e-12)
                return f"{why} ({msg})" if why else msg
        return None

    return run_check("layerwise_lr_scales", fn, ref, cases, compare_fn=cmp,
                     hint="m = re.search(r'\\.(?:layer|h)\\.(\\d+)\\.', name): layer i → decay ** "
                          "(num_layers - 1 - i); no layer number and no layer seen yet → decay ** num_layers; "
                          "no layer number after the layers → 1.0")


# ----------------------------------------------------------------------------- 4. early stopping

def _ref_should_stop(val_losses: list[float], patience: int) -> bool:
    """``minillm.train.train``'s rule: count the evaluations since the last strictly lower loss."""
    best, since = math.inf, 0
    for v in val_losses:
        if v < best:
            best, since = v, 0
        else:
            since += 1
    return since >= patience


def _stop_variant(val_losses, patience, *, kind):
    if kind == "previous":  # count the evaluations worse than the one before, in a row at the end
        run = 0
        for a, b in zip(val_losses, val_losses[1:]):
            run = run + 1 if b >= a else 0
        return run >= patience
    if kind == "ties":  # an equal loss counts as a new best
        best, since = math.inf, 0
        for v in val_losses:
            best, since = (v, 0) if v <= best else (best, since + 1)
        return since >= patience
    if kind == "late":  # since_best > patience: one evaluation too late
        return _ref_should_stop(val_losses, patience + 1)
    if kind == "no patience":
        return bool(val_losses) and min(val_losses) < val_losses[-1]
    if kind == "first":  # compared with the first evaluation, not the best
        return len(val_losses) > patience and all(v >= val_losses[0] for v in val_losses[-patience:])
    raise ValueError(kind)


_STOP_MISTAKES = [
    ("previous", "you stopped after `patience` evaluations that were each worse than the one before; "
                 "the rule counts the evaluations since the *best* loss so far — a small dip that does "
                 "not beat the best does not reset the count"),
    ("ties", "an evaluation that only equals the best loss is not an improvement: a new best must be "
             "strictly lower (v < best)"),
    ("late", "one evaluation too late: stop as soon as `patience` evaluations in a row brought no new "
             "best (since_best >= patience)"),
    ("no patience", "the patience is ignored: one evaluation above the best is not enough to stop"),
    ("first", "the losses were compared with the first evaluation: compare with the best so far"),
]

STOP_CASES = [
    ([], 2, "no evaluation yet"),
    ([0.9], 1, "one evaluation: it is the best so far"),
    ([0.9, 0.8, 0.7, 0.6], 2, "still improving"),
    ([0.9, 0.7, 0.8, 0.9], 2, "two evaluations above the best of 0.7, patience 2: stop"),
    ([0.9, 0.7, 0.8], 2, "one evaluation above the best, patience 2: go on"),
    ([0.9, 0.7, 0.8, 0.75, 0.72], 3, "three evaluations without a new best although the last two fell: stop"),
    ([0.9, 0.7, 0.7, 0.7], 2, "two losses equal to the best of 0.7 are no new best, patience 2: stop"),
    ([0.9, 0.7, 0.8, 0.9, 0.95], 4, "three evaluations above the best, patience 4: go on"),
    ([0.5, 0.6, 0.4, 0.45], 2, "the best moved to the third evaluation; one above it, patience 2: go on"),
    ([1.0, 0.6, 0.8, 0.9, 0.95], 3, "three evaluations above the best but below the first: stop"),
    ([1.0, 0.6, 0.8, 0.9, 0.95, 0.97], 3, "four evaluations above the best, patience 3: stop"),
]


def check_should_stop(fn) -> CheckResult:
    """``fn(val_losses, patience)`` → True when the last ``patience`` evaluations (or more) brought
    no new best, i.e. no loss strictly lower than every loss before it: the rule by which
    ``minillm.train.train(..., patience=)`` stops (it then restores the weights of the best one)."""
    cases = [Case((list(losses), patience), description=d) for losses, patience, d in STOP_CASES]
    answers: dict[int, Any] = {}

    def learner_answers() -> dict[int, Any]:
        """The learner's answer on every case (for a diagnosis that explains all of them)."""
        if not answers:
            for k, (losses, patience, _) in enumerate(STOP_CASES):
                out = call_with_time_limit(fn, (list(losses), patience), {}, 1.0)
                answers[k] = None if out.error is not None or out.timed_out else out.value
        return answers

    def cmp(expected, got, **kw):
        if not isinstance(got, (bool, torch.Tensor)) and type(got).__name__ != "bool_":
            return f"expected True or False, got {type(got).__name__} {got!r}"
        msg = compare(expected, bool(got), path="should stop")
        if msg is None:
            return None
        mine = learner_answers()
        for kind, sentence in _STOP_MISTAKES:
            if all(mine[k] is not None and bool(mine[k]) == _stop_variant(list(losses), patience, kind=kind)
                   for k, (losses, patience, _) in enumerate(STOP_CASES)):
                return f"{sentence} ({msg})"
        return msg

    return run_check("should_stop", fn, _ref_should_stop, cases, compare_fn=cmp,
                     hint="best, since = float('inf'), 0; for v in val_losses: if v < best: best, since = v, 0 "
                          "else: since += 1; return since >= patience")


__all__ = ["check_count_trainable", "check_freeze_except", "check_layerwise_lr_scales", "check_should_stop"]
