"""Every exercise check survives broken learner code: raising, hanging, NaN, wrong shape or type,
mutated inputs. Each must come back as a failed CheckResult (never an exception, never a hang).

The learner functions are built from the real solutions (``solutions/*.ipynb``), so every check of
every chapter is probed with the same table of faults.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import minillm.checks as checks
from minillm.checks import Case, CheckResult, compare, run_check
from minillm.checks.limits import CaseTimeout, available_strategy, call_with_time_limit, time_limit
from minillm.exercises import BEGIN

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 0.3  # seconds per case while probing hangs
SOLUTION_LIMIT = 60.0  # seconds per case for answers that finish (slow, contended CI machines)


def _src(cell) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def _solutions():
    """(id, check function, solution function) for every exercise of every solutions notebook."""
    out = []
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        ns: dict = {"__name__": "__probe__"}
        exec(_src(cells[0]), ns)
        for i, cell in enumerate(cells):
            if BEGIN not in _src(cell):
                continue
            exec(_src(cell), ns)
            check_src = _src(cells[i + 1]).strip()
            check_name, fn_name = check_src.rstrip(")").split("(")
            out.append((f"{path.stem}-{fn_name}", ns[check_name], ns[fn_name]))
    return out


SOLUTIONS = _solutions()
IDS = [s[0] for s in SOLUTIONS]


@pytest.fixture(autouse=True)
def lenient(monkeypatch):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    monkeypatch.setattr(checks, "DEFAULT_TIME_LIMIT", LIMIT)


# --------------------------------------------------------------------------- faults
def _nan_like(value):
    if isinstance(value, torch.Tensor):
        return torch.full_like(value, math.nan, dtype=torch.float32 if not value.is_floating_point() else value.dtype)
    if isinstance(value, np.ndarray):
        return np.full(value.shape, np.nan)
    if isinstance(value, (bool, str)) or value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return math.nan
    if isinstance(value, (list, tuple)):
        return type(value)(_nan_like(v) for v in value) if value else [math.nan]
    if isinstance(value, dict):
        return {k: _nan_like(v) for k, v in value.items()} or {"x": math.nan}
    return math.nan


def _wrong_shape(value):
    if isinstance(value, torch.Tensor):
        return value.unsqueeze(0).repeat(2, *([1] * value.dim()))
    if isinstance(value, np.ndarray):
        return np.stack([value, value])
    if isinstance(value, (list, tuple)):
        return list(value) + list(value[:1]) + [0]
    if isinstance(value, dict):
        return {**value, "<extra>": 1}
    return [value, value]


def _mutate(value) -> bool:
    """Change ``value`` in place; True if it could be changed."""
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool:
            value.logical_not_()
        else:
            value.add_(1)
        return True
    if isinstance(value, np.ndarray) and value.flags.writeable:
        value += 1 if value.dtype.kind in "iuf" else 0
        return value.dtype.kind in "iuf"
    if isinstance(value, list):
        value.append(value[0] if value else 0)
        return True
    if isinstance(value, (dict, set)):
        (value.__setitem__("<probe>", 1) if isinstance(value, dict) else value.add("<probe>"))
        return True
    return False


def _copy(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    if isinstance(value, (dict, set)):
        return type(value)(value) if isinstance(value, set) else {k: _copy(v) for k, v in value.items()}
    return value


def _learner(kind: str, solution):
    """A broken version of ``solution``."""
    def learner(*args, **kwargs):
        if kind == "raises":
            return {}["missing key"]
        if kind == "hangs":
            while True:
                pass
        if kind == "hangs_and_swallows":
            while True:
                try:
                    while True:
                        pass
                except BaseException:  # noqa: BLE001 — the worst a learner can do
                    pass
        if kind == "returns_none":
            return None
        if kind == "wrong_type":
            return "a string"
        if kind == "object_array":
            return np.array([[1, 2], [3]], dtype=object)
        if kind == "system_exit":
            raise SystemExit(1)
        if kind == "mutates":
            result = solution(*_copy(args), **_copy(kwargs))
            changed = [_mutate(a) for a in (*args, *kwargs.values())]
            learner.changed = any(changed)
            return result
        result = solution(*args, **kwargs)
        if kind == "nan":
            return _nan_like(result)
        if kind == "wrong_shape":
            return _wrong_shape(result)
        raise AssertionError(kind)

    learner.changed = False
    return learner


FAULTS = ["raises", "hangs", "hangs_and_swallows", "returns_none", "wrong_type", "object_array",
          "system_exit", "nan", "wrong_shape", "mutates"]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name,check,solution", SOLUTIONS, ids=IDS)
def test_every_check_reports_every_fault(name, check, solution, fault, capsys, monkeypatch):
    if not fault.startswith("hangs"):
        # the short probing limit is for hangs; a slow machine must not fail a correct answer
        monkeypatch.setattr(checks, "DEFAULT_TIME_LIMIT", SOLUTION_LIMIT)
    learner = _learner(fault, solution)
    start = time.monotonic()
    result = check(learner)  # must not raise, whatever the learner does
    elapsed = time.monotonic() - start
    out = capsys.readouterr().out
    assert isinstance(result, CheckResult)
    if fault.startswith("hangs"):
        assert elapsed < LIMIT * 4 + 10, f"{name}: the check took {elapsed:.1f} s"
    if fault == "mutates" and not learner.changed:
        assert result.passed, f"{name}: nothing mutable to change, the solution's answer must pass"
        return
    assert not result.passed, f"{name}: the check passed a learner that {fault}:\n{out}"
    assert "❌" in out
    if fault.startswith("hangs"):
        assert "did not finish within" in out and "infinite loop" in out
    if fault == "raises":
        assert "raised KeyError" in out
    if fault == "mutates":
        assert "in place" in out


@pytest.mark.parametrize("name,check,solution", SOLUTIONS, ids=IDS)
def test_every_check_passes_its_solution_without_mutation_complaints(name, check, solution, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(checks, "DEFAULT_TIME_LIMIT", SOLUTION_LIMIT)
    assert check(solution).passed, capsys.readouterr().out


@pytest.mark.parametrize("name,check,solution", SOLUTIONS, ids=IDS)
def test_nan_results_are_reported_as_nan(name, check, solution, capsys, monkeypatch):
    # the learner runs the real solution first: give it the finishing-answer limit, not the hang probe's
    monkeypatch.setattr(checks, "DEFAULT_TIME_LIMIT", SOLUTION_LIMIT)
    result = check(_learner("nan", solution))
    out = capsys.readouterr().out
    assert not result.passed
    # a NaN-filled float where a bool mask is expected is reported by its dtype first
    assert "NaN" in out or "nan" in out or "expected a bool tensor" in out, out


# --------------------------------------------------------------------------- comparisons
def test_numpy_results_with_negative_strides_or_other_byte_order_are_compared():
    expected = np.arange(6.0).reshape(2, 3)
    flipped = np.flip(np.flip(expected).copy())  # same values, negative strides
    assert flipped.strides[0] < 0
    assert compare(expected, flipped) is None
    assert compare(expected, expected.astype(">f8")) is None
    assert "values differ" in compare(expected, np.flip(expected))


def test_object_and_string_arrays_are_explained_not_raised():
    assert "dtype object" in compare(np.zeros(2), np.array([1, None], dtype=object))
    assert "dtype <U1" in compare(np.zeros(2), np.array(["a", "b"]))


def test_a_compare_fn_that_raises_is_reported():
    def broken_compare(expected, got, **_):
        raise RuntimeError("boom")

    result = run_check("x", lambda x: x, lambda x: x, [Case((1,))], compare_fn=broken_compare, verbose=False)
    assert not result and "could not compare" in result.failures[0] and "boom" in result.failures[0]


def test_a_bool_result_must_be_bool():
    assert "expected a bool tensor" in compare(torch.ones(2, 2, dtype=torch.bool), torch.ones(2, 2))
    assert "expected True" in compare(True, 1)
    assert compare(True, np.bool_(True)) is None


def test_tensor_results_with_grad_and_inf_mismatch():
    got = torch.zeros(3, requires_grad=True) * 1
    assert compare(torch.zeros(3), got) is None
    msg = compare(torch.tensor([0.0, 1.0]), torch.tensor([0.0, math.inf]))
    assert "max |difference| = inf" in msg


def test_mutation_is_reported_with_the_argument_name():
    def scale(logits, t):
        logits /= t
        return logits.softmax(-1)

    result = run_check("softmax_t", scale, lambda logits, t: (logits / t).softmax(-1),
                       [Case((torch.randn(2, 3), 2.0))], verbose=False)
    assert not result and "modified its input `logits` in place" in result.failures[0]


def test_modifies_requires_the_in_place_write():
    def ref(buf, x):
        buf[0] = x
        return None

    def forgot(buf, x):
        return None

    ok = run_check("write", ref, ref, [Case((torch.zeros(2), 3.0))], modifies=(0,), verbose=False)
    bad = run_check("write", forgot, ref, [Case((torch.zeros(2), 3.0))], modifies=(0,), verbose=False)
    assert ok and not bad and "was not written in place" in bad.failures[0]


# --------------------------------------------------------------------------- time limits
def _spin(stop: threading.Event | None = None):
    while stop is None or not stop.is_set():
        pass


@pytest.mark.skipif(available_strategy() != "alarm", reason="needs SIGALRM (POSIX main thread)")
def test_alarm_strategy_stops_a_loop_and_restores_the_previous_timer():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 5.0)
        outcome = call_with_time_limit(_spin, seconds=0.2, strategy="alarm")
        assert outcome.timed_out and 0.1 < outcome.seconds < 3
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 3.0 < remaining <= 5.0, "the outer timer was not given back"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert not fired


def test_interrupt_strategy_stops_a_loop_as_on_windows():
    previous = signal.getsignal(signal.SIGINT)
    outcome = call_with_time_limit(_spin, seconds=0.2, strategy="interrupt")
    assert outcome.timed_out and not outcome.still_running
    assert signal.getsignal(signal.SIGINT) is previous
    time.sleep(0.3)  # a late interrupt must not arrive as a KeyboardInterrupt


def test_a_real_interrupt_still_interrupts():
    with pytest.raises(KeyboardInterrupt):
        with time_limit(5.0, strategy="interrupt"):
            signal.raise_signal(signal.SIGINT)


def test_outside_the_main_thread_the_call_is_abandoned_not_waited_for():
    stop = threading.Event()
    box = {}
    worker = threading.Thread(target=lambda: box.update(o=call_with_time_limit(_spin, (stop,), seconds=0.2)))
    worker.start()
    worker.join(10)
    stop.set()  # let the abandoned loop end
    assert box["o"].timed_out and box["o"].still_running


def test_a_fast_function_is_not_affected_by_the_limit():
    outcome = call_with_time_limit(lambda: sum(range(1000)), seconds=1.0)
    assert outcome.value == 499500 and not outcome.timed_out and outcome.error is None
    outcome = call_with_time_limit(lambda: 1 / 0, seconds=1.0)
    assert isinstance(outcome.error, ZeroDivisionError)


def test_case_timeout_is_not_an_exception_learners_catch():
    assert not issubclass(CaseTimeout, Exception)


def test_strict_mode_still_raises_on_a_timeout(monkeypatch):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "1")
    with pytest.raises(AssertionError, match="did not finish"):
        run_check("spin", lambda: _spin(), lambda: None, [Case()], verbose=False, time_limit=0.2)


def _swallow():
    while True:
        try:
            while True:
                pass
        except BaseException:  # noqa: BLE001
            pass


@pytest.mark.parametrize("strategy", ["alarm", "interrupt"])
def test_a_loop_that_swallows_the_interrupt_is_still_stopped_and_tracing_is_given_back(strategy):
    if strategy == "alarm" and available_strategy() != "alarm":
        pytest.skip("needs SIGALRM")
    previous = sys.gettrace()

    def other_tracer(frame, event, arg):
        return None

    sys.settrace(other_tracer)
    try:
        outcome = call_with_time_limit(_swallow, seconds=0.2, strategy=strategy)
        assert sys.gettrace() is other_tracer
    finally:
        sys.settrace(previous)
    assert outcome.timed_out
