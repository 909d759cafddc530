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
