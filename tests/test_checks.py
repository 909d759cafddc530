"""The in-notebook checks report wrong answers clearly and never crash on broken learner code."""

import math

import pytest
import torch

from minillm.checks import Case, compare, run_check


def _softmax(x):
    return x.softmax(-1)


CASES = [Case((torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),), description="random"),
         Case((torch.zeros(2, 5),), description="zeros")]


@pytest.fixture(autouse=True)
def lenient(monkeypatch):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")


def test_correct_function_passes(capsys):
    result = run_check("softmax", _softmax, _softmax, CASES)
    assert result and result.passed and result.n_cases == 2
    assert "all 2 cases passed" in capsys.readouterr().out


@pytest.mark.parametrize("fn,expected", [
    (lambda x: x.exp(), "max |difference|"),
    (lambda x: x.sum(), "expected shape (3, 4), got shape ()"),
    (lambda x: x * float("nan"), "got NaN at 12 positions"),
    (lambda x: 1 / 0, "raised ZeroDivisionError: division by zero"),
    (lambda x: x.tolist(), "expected a Tensor, got list"),
])
def test_wrong_answers_are_explained(fn, expected, capsys):
    result = run_check("softmax", fn, _softmax, CASES, hint="divide by the sum")
    out = capsys.readouterr().out
    assert not result and expected in out and "hint: divide by the sum" in out


def test_not_implemented_is_reported_once():
    def stub(x):
        raise NotImplementedError("use exp")

    result = run_check("softmax", stub, _softmax, CASES, verbose=False)
    assert result.failures == ["case 1 (random): not implemented yet (use exp)"]


def test_strict_mode_raises(monkeypatch):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "1")
    with pytest.raises(AssertionError, match="softmax"):
        run_check("softmax", lambda x: x, _softmax, CASES, verbose=False)


def test_learner_cannot_mutate_the_reference_inputs():
    def mutating(x):
        x.zero_()
        return _softmax(x)

    assert not run_check("softmax", mutating, _softmax, CASES[:1], verbose=False)


def test_not_a_function():
    result = run_check("softmax", 42, _softmax, CASES, verbose=False)
    assert not result and "expected a function" in result.failures[0]


def test_compare_covers_python_values():
    assert compare(1.0, 1.0 + 1e-9) is None
    assert "expected 2.0, got 3.0" in compare(2.0, 3.0)
    assert compare(math.inf, math.inf) is None
    assert "got NaN" in compare(1.0, float("nan"))
    assert "expected length 2" in compare([1, 2], [1])
    assert "keys differ" in compare({"a": 1}, {"b": 1})
    assert compare({"a": [1, (2.0, "x")]}, {"a": [1, (2.0, "x")]}) is None
    assert "entries differ" in compare(torch.tensor([1, 2]), torch.tensor([1, 3]))


# --------------------------------------------------------------------------- closed holes (issue 10 §4)
def _ln(x, weight, bias, eps=1e-5, *, eps_inside=True):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    denom = (var + eps).sqrt() if eps_inside else var.sqrt() + eps
    return (x - mean) / denom * weight + bias


def _kv(cache_k, cache_v, k, v, length, *, how="in_place"):
    end = length + k.size(2)
    if how == "cat":  # what a learner writes first: correct values, but no preallocated buffer
        return (torch.cat([cache_k[:, :, :length], k], 2), torch.cat([cache_v[:, :, :length], v], 2))
    cache_k[:, :, length:end] = k
    cache_v[:, :, length:end] = v
    if how == "copy":
        return cache_k[:, :, :end].clone(), cache_v[:, :, :end].clone()
    return cache_k[:, :, :end], cache_v[:, :, :end]


def test_causal_mask_must_be_bool():
    from minillm.checks.ch07 import check_causal_mask

    float_mask = check_causal_mask(lambda T: torch.ones(T, T).tril())
    assert not float_mask and "expected a bool tensor" in float_mask.failures[0]
    assert check_causal_mask(lambda T: torch.ones(T, T, dtype=torch.bool).tril())


def test_layer_norm_with_eps_outside_the_square_root_fails():
    from minillm.checks.ch07 import check_layer_norm

    assert check_layer_norm(_ln)
    outside = check_layer_norm(lambda x, w, b, eps=1e-5: _ln(x, w, b, eps, eps_inside=False))
    assert not outside and any("tiny variance" in f for f in outside.failures)
    ignores_eps = check_layer_norm(lambda x, w, b, eps=1e-5: _ln(x, w, b, 1e-5))
    assert not ignores_eps


def test_kv_cache_append_must_write_into_the_preallocated_cache():
    from minillm.checks.ch08 import check_kv_cache_append

    assert check_kv_cache_append(_kv)
    cat = check_kv_cache_append(lambda *a: _kv(*a, how="cat"))
    assert not cat and "was not written in place" in cat.failures[0]
    copy = check_kv_cache_append(lambda *a: _kv(*a, how="copy"))
    assert not copy and "is a copy, not a slice" in copy.failures[0]


def test_top_p_nan_is_reported_as_nan():
    from minillm.checks.ch08 import check_top_p_filter

    result = check_top_p_filter(lambda logits, p: logits * float("nan"))
    assert not result and "got NaN" in result.failures[0] and "kept tokens" not in result.failures[0]


def test_not_implemented_report_does_not_reveal_the_hint(capsys):
    def stub(x):
        raise NotImplementedError("write your solution here — call hint('softmax') for a hint")

    result = run_check("softmax", stub, _softmax, CASES, hint="divide by the sum")
    out = capsys.readouterr().out
    assert not result and result.not_implemented
    assert "divide by the sum" not in out and "hint('softmax')" in out
