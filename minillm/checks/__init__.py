"""Exercise checks that run inside a notebook and explain what is wrong.

A check calls the learner's function on several cases, compares each answer with the reference
(values, shapes, dtypes, NaNs, max difference) and prints a short report: which case, expected vs
got, and a hint. It never lets the learner's exception, wrong shape or NaN crash the kernel; it
returns a :class:`CheckResult` (truthy when everything passed).

With ``MINILLM_STRICT_CHECKS=1`` a failed check raises ``AssertionError`` instead of only printing
(the solutions notebooks run that way under nbval, and autograding uses it too).

Chapter checks live in ``minillm.checks.chNN`` modules and are re-exported by name from there.
"""

from __future__ import annotations

import math
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..settings import strict_checks


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

    def __bool__(self) -> bool:
        return self.passed

    def report(self) -> str:
        if self.passed:
            return f"✅ {self.name}: all {self.n_cases} cases passed."
        lines = [f"❌ {self.name}: {len(self.failures)} of {self.n_cases} cases failed."]
        lines += [f"   • {f}" for f in self.failures]
        if self.hint:
            lines.append(f"   hint: {self.hint}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"CheckResult(name={self.name!r}, passed={self.passed}, failures={len(self.failures)})"


def _short(value: Any, limit: int = 120) -> str:
    if isinstance(value, torch.Tensor):
        text = f"tensor(shape={tuple(value.shape)}, dtype={str(value.dtype).replace('torch.', '')})"
        if value.numel() <= 8:
            text += f" {value.detach().cpu().tolist()}"
        return text
    if isinstance(value, np.ndarray):
        text = f"array(shape={value.shape}, dtype={value.dtype})"
        return text + (f" {value.tolist()}" if value.size <= 8 else "")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare(expected: Any, got: Any, *, atol: float = 1e-6, rtol: float = 1e-5,
            path: str = "result") -> str | None:
    """None if ``got`` matches ``expected``; otherwise one sentence saying how it differs."""
    if isinstance(expected, (torch.Tensor, np.ndarray)):
        exp = torch.as_tensor(expected)
        if not isinstance(got, (torch.Tensor, np.ndarray)):
            return f"{path}: expected a {type(expected).__name__}, got {type(got).__name__} {_short(got)}"
        got_t = torch.as_tensor(got)
        if tuple(got_t.shape) != tuple(exp.shape):
            return f"{path}: expected shape {tuple(exp.shape)}, got shape {tuple(got_t.shape)}"
        if exp.is_floating_point() or got_t.is_floating_point():
            e, g = exp.detach().double().cpu(), got_t.detach().double().cpu()
            nan_e, nan_g = torch.isnan(e), torch.isnan(g)
            if (nan_g & ~nan_e).any():
                return f"{path}: got NaN at {int((nan_g & ~nan_e).sum())} positions where a number was expected"
            if not torch.equal(nan_e, nan_g):
                return f"{path}: expected NaN at {int(nan_e.sum())} positions"
            diff = (g - e).abs().nan_to_num(0.0)  # NaNs already matched above
            if not torch.allclose(g, e, atol=atol, rtol=rtol, equal_nan=True):
                where = tuple(int(i) for i in np.unravel_index(int(diff.argmax()), tuple(e.shape)))
                return (f"{path}: values differ, max |difference| = {float(diff.max()):.3g} at index "
                        f"{where}: expected {float(e[where]):.6g}, got {float(g[where]):.6g} "
                        f"(tolerance atol={atol:g}, rtol={rtol:g})")
            return None
        differs = exp.cpu() != got_t.cpu().to(exp.dtype)
        if differs.any():
            where = tuple(int(i) for i in differs.nonzero()[0])
            return (f"{path}: {int(differs.sum())} of {exp.numel()} entries differ; first at index "
                    f"{where}: expected {exp[where].item()}, got {got_t[where].item()}")
        return None
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return None if got == expected else f"{path}: expected {_short(expected)}, got {_short(got)}"
    if isinstance(expected, (int, float)):
        if not isinstance(got, (int, float, np.number)) and not (
                isinstance(got, torch.Tensor) and got.numel() == 1):
            return f"{path}: expected a number, got {type(got).__name__} {_short(got)}"
        g = float(got)
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
    return None if got == expected else f"{path}: expected {_short(expected)}, got {_short(got)}"


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, NotImplementedError):
        return f"not implemented yet ({exc})" if str(exc) else "not implemented yet"
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    for fr in reversed(frames):
        if "minillm/checks" not in fr.filename.replace("\\", "/"):
            code = (fr.line or "").strip()
            where = f" at line {fr.lineno}" + (f": `{code}`" if code else "")
            break
    return f"raised {type(exc).__name__}: {exc}{where}"


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
    return value


def run_check(name: str, learner_fn: Callable, reference_fn: Callable, cases: Sequence[Case], *,
              hint: str = "", atol: float = 1e-6, rtol: float = 1e-5,
              compare_fn: Callable[..., str | None] | None = None, verbose: bool = True) -> CheckResult:
    """Compare ``learner_fn`` with ``reference_fn`` on every case; print and return the result.

    Inputs are copied before each call, so a function that modifies its arguments in place cannot
    change what the reference sees.
    """
    failures: list[str] = []
    if not callable(learner_fn):
        failures.append(f"expected a function, got {type(learner_fn).__name__} {_short(learner_fn)}")
    else:
        cmp = compare_fn or compare
        for i, case in enumerate(cases):
            expected = reference_fn(*_copy_args(case.args), **_copy_args(case.kwargs))
            try:
                got = learner_fn(*_copy_args(case.args), **_copy_args(case.kwargs))
            except Exception as exc:  # noqa: BLE001 — a learner's bug must never crash the check
                failures.append(f"{case.label(i)}: {_describe_exception(exc)}")
                if isinstance(exc, NotImplementedError):
                    break  # every case would say the same
                continue
            msg = cmp(expected, got, atol=atol, rtol=rtol)
            if msg:
                failures.append(f"{case.label(i)}: {msg}")
    result = CheckResult(name, not failures, len(cases), failures, hint)
    if verbose:
        print(result.report())
    if not result.passed and strict_checks():
        raise AssertionError(result.report())
    return result
