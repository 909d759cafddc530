"""Exercise checks that run inside a notebook and explain what is wrong.

A check calls the learner's function on several cases, compares each answer with the reference
(values, shapes, dtypes, NaNs, max difference) and prints a short report: which case, expected vs
got, and a hint. Nothing the learner's code does escapes into the notebook: an exception, an
infinite loop (each case has a time limit, see :mod:`minillm.checks.limits`), a result that cannot
be compared, or a change to its own inputs all become lines of the report. It returns a
:class:`CheckResult` (truthy when everything passed).

Hints are given on request: the exercise stubs only say ``call hint('<name>')``, and :func:`hint`
reveals the solution's ``# HINT:`` lines one at a time (see :mod:`minillm.checks.hints`). A check
that fails on a stub (NotImplementedError) does not print its own hint either.

With ``MINILLM_STRICT_CHECKS=1`` a failed check raises ``AssertionError`` instead of only printing
(the solutions notebooks run that way under nbval, and autograding uses it too).

Chapter checks live in ``minillm.checks.chNN`` modules and are re-exported by name from there.
"""

from __future__ import annotations

import inspect
import math
import traceback
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..settings import strict_checks
from ..validation import check_float
from .limits import call_with_time_limit

__all__ = ["Case", "CheckResult", "DEFAULT_TIME_LIMIT", "compare", "hint", "run_check"]

DEFAULT_TIME_LIMIT = 5.0  # seconds per case; the references take milliseconds


@dataclass
class Case:
    """One input for a check: positional/keyword arguments and a short description."""

    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    description: str = ""

    def label(self, index: int) -> str:
        return f"case {index + 1}" + (f" ({self.description})" if self.description else "")


@dataclass
class CheckResult:
    """Outcome of one check; truthy if every case passed."""

    name: str
    passed: bool
    n_cases: int
    failures: list[str]
    hint: str = ""
    not_implemented: bool = False  # the function still raises NotImplementedError

    def __bool__(self) -> bool:
        return self.passed

    def report(self) -> str:
        if self.passed:
            return f"✅ {self.name}: all {self.n_cases} cases passed."
        lines = [f"❌ {self.name}: {len(self.failures)} of {self.n_cases} cases failed."]
        lines += [f"   • {f}" for f in self.failures]
        if self.hint and not self.not_implemented:  # no hint before a first attempt: hint() gives one
            lines.append(f"   hint: {self.hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"CheckResult(name={self.name!r}, passed={self.passed}, failures={len(self.failures)})"


def _short(value: Any, limit: int = 120) -> str:
    try:
        if isinstance(value, torch.Tensor):
            text = f"tensor(shape={tuple(value.shape)}, dtype={str(value.dtype).replace('torch.', '')})"
            if value.numel() <= 8:
                text += f" {value.detach().cpu().tolist()}"
            return text
        if isinstance(value, np.ndarray):
            text = f"array(shape={value.shape}, dtype={value.dtype})"
            return text + (f" {value.tolist()}" if value.size <= 8 else "")
        text = repr(value)
    except Exception:  # noqa: BLE001 — a learner's object whose repr fails
        return f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_tensor(value: Any, path: str) -> tuple[torch.Tensor | None, str | None]:
    """``value`` (tensor or numpy array) as a CPU tensor, or a sentence saying why it cannot be one."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu(), None
    if value.dtype.kind not in "biufc":  # object, str, datetime ... arrays
        return None, (f"{path}: expected an array of numbers, got an array of dtype {value.dtype} "
                      f"(dtype=object usually means rows of different lengths or mixed types)")
    value = np.ascontiguousarray(value)  # negative strides (a[::-1]) cannot become tensors
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    try:
        return torch.from_numpy(value), None
    except (TypeError, RuntimeError) as exc:  # e.g. uint16 on old torch versions
        return None, f"{path}: cannot read an array of dtype {value.dtype} ({exc})"


def compare(expected: Any, got: Any, *, atol: float = 1e-6, rtol: float = 1e-5,
            path: str = "result") -> str | None:
    """None if ``got`` matches ``expected``; otherwise one sentence saying how it differs.

    A bool tensor must come back as a bool tensor (a float 0/1 mask breaks ``~mask`` and
    ``masked_fill``); other numeric dtypes are compared by value.
    """
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        exp, why = _as_tensor(expected, path)
        if why:
            raise TypeError(why)  # the reference itself is broken: a bug in the check
        if not isinstance(got, (torch.Tensor, np.ndarray)):
            return f"{path}: expected a {type(expected).__name__}, got {type(got).__name__} {_short(got)}"
        got_t, why = _as_tensor(got, path)
        if why:
            return why
        if tuple(got_t.shape) != tuple(exp.shape):
            return f"{path}: expected shape {tuple(exp.shape)}, got shape {tuple(got_t.shape)}"
        if exp.dtype == torch.bool and got_t.dtype != torch.bool:
            return (f"{path}: expected a bool tensor (True/False), got dtype "
                    f"{str(got_t.dtype).replace('torch.', '')}; build it with a comparison or "
                    f"dtype=torch.bool")
        if exp.is_complex() or got_t.is_complex():
            if not torch.allclose(got_t.to(torch.complex128), exp.to(torch.complex128), atol=atol, rtol=rtol):
                return f"{path}: complex values differ"
            return None
        if exp.is_floating_point() or got_t.is_floating_point():
            e, g = exp.double(), got_t.double()
            nan_e, nan_g = torch.isnan(e), torch.isnan(g)
            if (nan_g & ~nan_e).any():
                return f"{path}: got NaN at {int((nan_g & ~nan_e).sum())} positions where a number was expected"
            if not torch.equal(nan_e, nan_g):
                return f"{path}: expected NaN at {int(nan_e.sum())} positions"
            if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
                inf_mismatch = (torch.isinf(e) | torch.isinf(g)) & (e != g)
                diff = (g - e).abs().nan_to_num(0.0, posinf=math.inf)
                diff = torch.where(inf_mismatch, torch.full_like(diff, math.inf), diff)
                where = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(e.shape)))
                return (f"{path}: values differ, max |difference| = {float(diff.max()):.3g} at index "
                        f"{where}: expected {float(e[where]):.6g}, got {float(g[where]):.6g} "
                        f"(tolerance atol={atol:g}, rtol={rtol:g})")
            return None
        differs = exp != got_t.to(exp.dtype)
        if differs.any():
            where = tuple(int(i) for i in differs.nonzero()[0])
            return (f"{path}: {int(differs.sum())} of {exp.numel()} entries differ; first at index "
                    f"{where}: expected {exp[where].item()}, got {got_t[where].item()}")
        return None
    if expected is None:
        return None if got is None else f"{path}: expected None, got {_short(got)}"
    if isinstance(expected, bool):
        ok = isinstance(got, (bool, np.bool_)) or (isinstance(got, torch.Tensor) and got.dtype == torch.bool
                                                   and got.numel() == 1)
        return None if ok and bool(got) == expected else f"{path}: expected {expected!r}, got {_short(got)}"
    if isinstance(expected, str):
        return None if isinstance(got, str) and got == expected else \
            f"{path}: expected {_short(expected)}, got {_short(got)}"
    if isinstance(expected, (int, float)):
        if not _is_real_scalar(got):
            return f"{path}: expected a number, got {type(got).__name__} {_short(got)}"
        g = float(got.item() if isinstance(got, (torch.Tensor, np.ndarray)) else got)
        if math.isnan(g) and not math.isnan(expected):
            return f"{path}: got NaN, expected {expected!r}"
        if math.isinf(expected) or math.isnan(expected):
            return None if (g == expected or (math.isnan(g) and math.isnan(expected))) else \
                f"{path}: expected {expected!r}, got {g!r}"
        if not math.isclose(g, expected, rel_tol=rtol, abs_tol=atol):
            return f"{path}: expected {expected!r}, got {g!r} (difference {abs(g - expected):.3g})"
        return None
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{path}: expected a dict, got {type(got).__name__}"
        if set(expected) != set(got):
            missing, extra = set(expected) - set(got), set(got) - set(expected)
            return f"{path}: keys differ (missing {sorted(map(str, missing))[:5]}, unexpected {sorted(map(str, extra))[:5]})"
        for k in expected:
            msg = compare(expected[k], got[k], atol=atol, rtol=rtol, path=f"{path}[{k!r}]")
            if msg:
                return msg
        return None
    if isinstance(expected, (list, tuple)):
        if not isinstance(got, (list, tuple)):
            return f"{path}: expected a {type(expected).__name__}, got {type(got).__name__} {_short(got)}"
        if len(got) != len(expected):
            return f"{path}: expected length {len(expected)}, got length {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            msg = compare(e, g, atol=atol, rtol=rtol, path=f"{path}[{i}]")
            if msg:
                return msg
        return None
    return None if _equal(got, expected) else f"{path}: expected {_short(expected)}, got {_short(got)}"


def _is_real_scalar(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.integer, np.floating)):
        return True
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and (value.is_floating_point() or value.dtype not in
                                       (torch.bool, torch.complex64, torch.complex128))
    if isinstance(value, np.ndarray):
        return value.size == 1 and value.dtype.kind in "iuf"
    return False


def _equal(a: Any, b: Any) -> bool:
    """Deep equality that treats NaN as equal to NaN and never raises (unknown kinds: ``==``)."""
    try:
        if isinstance(a, (torch.Tensor, np.ndarray)) or isinstance(b, (torch.Tensor, np.ndarray)):
            if type(a) is not type(b) or tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
                return False
            if isinstance(a, np.ndarray):
                return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
            return bool(torch.equal(a, b) or (a.is_floating_point() and torch.allclose(
                a, b, rtol=0, atol=0, equal_nan=True)))
        if isinstance(a, (list, tuple)):
            return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return bool(a == b)
    except Exception:  # noqa: BLE001 — objects that cannot be compared count as unchanged
        return True


def _describe_exception(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 — an exception whose __str__ fails
        text = f"<{type(exc).__name__} without a readable message>"
    if isinstance(exc, NotImplementedError):
        return f"not implemented yet ({text})" if text else "not implemented yet"
    if isinstance(exc, SystemExit):
        return f"called exit() / sys.exit({text}); a function should return its answer instead"
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for fr in reversed(frames):
        if "minillm/checks" not in fr.filename.replace("\\", "/"):
            code = (fr.line or "").strip()
            where = f" at line {fr.lineno}" + (f": `{code}`" if code else "")
            break
    return f"raised {type(exc).__name__}: {text}{where}"


def _copy_args(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [_copy_args(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_args(v) for v in value)
    if isinstance(value, dict):
        return {k: _copy_args(v) for k, v in value.items()}
    if isinstance(value, (set, bytearray)):
        return type(value)(value)
    return value


def _argument_names(fn: Callable, case: Case) -> list[str]:
    """Names for the positional arguments of ``case`` as ``fn`` calls them (``x``, ``mask``)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"argument {i + 1}" for i in range(len(case.args))]


def _in_place(case: Case, names: list[str], learner_args: tuple, learner_kwargs: dict,
              ref_args: tuple, ref_kwargs: dict, modifies: Collection[int | str], atol: float,
              rtol: float) -> str | None:
    """Does every argument the function must write in place hold what the reference wrote there?"""
    for key in modifies:
        if isinstance(key, int):
            if key >= len(case.args):
                continue
            name, before, ref_after, got_after = names[key], case.args[key], ref_args[key], learner_args[key]
        else:
            if key not in case.kwargs:
                continue
            name, before, ref_after, got_after = key, case.kwargs[key], ref_kwargs[key], learner_kwargs[key]
        if _equal(got_after, before) and not _equal(ref_after, before):
            return (f"`{name}` was not written in place: after the call it should hold the new "
                    f"values (assign into a slice of it, e.g. `{name}[...] = ...`, instead of "
                    f"building a new tensor with torch.cat)")
        msg = compare(ref_after, got_after, atol=atol, rtol=rtol, path=f"`{name}` after the call")
        if msg:
            return msg
    return None


def _mutated(case: Case, names: list[str], learner_args: tuple, learner_kwargs: dict,
             modifies: Collection[int | str]) -> str | None:
    """The arguments the function changed although it should only have read them."""
    changed = [names[i] for i, (before, after) in enumerate(zip(case.args, learner_args))
               if i not in modifies and not _equal(after, before)]
    changed += [k for k, before in case.kwargs.items()
                if k not in modifies and not _equal(learner_kwargs.get(k), before)]
    if not changed:
        return None
    what = ", ".join(f"`{n}`" for n in changed)
    return (f"your function modified its input {what} in place; the caller still needs it — "
            f"use out-of-place operations (`x = x / t`, not `x /= t`; `.clone()` before writing)")


def _timeout_message(seconds: float, still_running: bool) -> str:
    msg = (f"did not finish within {seconds:g} s — is there an infinite loop? Check that every "
           f"`while` loop changes what its condition tests on every path (e.g. `i += 1` is not "
           f"skipped by a `continue`), and that a loop does not append to the list it walks over")
    if still_running:
        msg += (". It could not be stopped and is still running in the background: restart the "
                "kernel after fixing it")
    return msg


def run_check(name: str, learner_fn: Callable, reference_fn: Callable, cases: Sequence[Case], *,
              hint: str = "", atol: float = 1e-6, rtol: float = 1e-5,
              compare_fn: Callable[..., str | None] | None = None, verbose: bool = True,
              time_limit: float | None | str = "default", modifies: Collection[int | str] = (),
              extra_check: Callable[[tuple, dict, Any], str | None] | None = None) -> CheckResult:
    """Compare ``learner_fn`` with ``reference_fn`` on every case; print and return the result.

    Each call gets its own copy of the inputs. Nothing the learner's function does escapes: an
    exception, a call that runs past ``time_limit`` seconds (an infinite loop; interrupted, see
    :mod:`minillm.checks.limits`), a result that cannot be compared, NaNs, a wrong shape or type
    all become failure lines (``time_limit="default"`` reads :data:`DEFAULT_TIME_LIMIT` at call
    time; ``None`` disables the limit). A function that changes one of its inputs fails too, unless that
    argument (a positional index or keyword name) is in ``modifies``: those must be written in
    place exactly as the reference writes them (e.g. a preallocated KV cache). ``extra_check(args,
    kwargs, result)`` may add one more test of a correct result against the arguments the learner's
    function received (e.g. that it returned views of them); it returns a sentence or None.
    """
    if time_limit == "default":
        time_limit = DEFAULT_TIME_LIMIT
    check_float("time_limit", time_limit, low=0, low_inclusive=False, allow_none=True)
    failures: list[str] = []
    not_implemented = False
    if not callable(learner_fn):
        failures.append(f"expected a function, got {type(learner_fn).__name__} {_short(learner_fn)}")
    else:
        cmp = compare_fn or compare
        modifies = set(modifies)
        for i, case in enumerate(cases):
            ref_args, ref_kwargs = _copy_args(case.args), _copy_args(case.kwargs)
            expected = reference_fn(*ref_args, **ref_kwargs)
            args, kwargs = _copy_args(case.args), _copy_args(case.kwargs)
            outcome = call_with_time_limit(learner_fn, args, kwargs, time_limit)
            label = case.label(i)
            if outcome.timed_out:
                skipped = len(cases) - i - 1
                failures.append(f"{label}: {_timeout_message(time_limit, outcome.still_running)}"
                                + (f" (the other {skipped} cases were skipped)" if skipped else ""))
                break  # the next cases would most likely loop too
            if outcome.error is not None:
                failures.append(f"{label}: {_describe_exception(outcome.error)}")
                if isinstance(outcome.error, NotImplementedError):
                    not_implemented = True
                    break  # every case would say the same
                continue
            names = _argument_names(learner_fn, case)
            try:
                msg = cmp(expected, outcome.value, atol=atol, rtol=rtol)
                if not msg and modifies:
                    msg = _in_place(case, names, args, kwargs, ref_args, ref_kwargs, modifies, atol, rtol)
                if not msg and extra_check is not None:
                    msg = extra_check(args, kwargs, outcome.value)
            except Exception as exc:  # noqa: BLE001 — an odd result must not crash the check
                msg = (f"could not compare your result {_short(outcome.value)} with the expected one "
                       f"({type(exc).__name__}: {exc})")
            mutation = _mutated(case, names, args, kwargs, modifies)
            if msg or mutation:
                failures.append(f"{label}: " + "; also, ".join(m for m in (msg, mutation) if m))
    result = CheckResult(name, not failures, len(cases), failures, hint, not_implemented)
    if verbose:
        print(result.report())
    if not result.passed and strict_checks():
        raise AssertionError(result.report())
    return result


from .hints import hint  # noqa: E402 — re-exported: ``from minillm.checks import hint``
