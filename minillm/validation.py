"""One validation layer for every public entry point: configs, models, data, metrics, checks.

Each helper checks one kind of value and raises ``TypeError`` (wrong kind of value) or ``ValueError``
(right kind, wrong value) with a message that names the argument, the value received and what was
expected. They return the value (converted where that is lossless), so a config's ``__post_init__``
reads as a list of one-liners::

    self.lr = check_float("lr", self.lr, low=0, low_inclusive=False)

Use these instead of writing the same ``if``/``raise`` again in a model; ``assert`` stays for
internal invariants only.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import torch

__all__ = [
    "check_int", "check_float", "check_bool", "check_choice", "check_str", "check_nonempty",
    "check_token_ids", "check_tensor", "check_same_length", "checked_tokenizer", "describe",
]


def describe(value: Any, limit: int = 80) -> str:
    """A short, readable rendering of ``value`` for error messages (type for big objects)."""
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 3]}... ({type(value).__name__})"


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> int | None:
    """An ``int`` (not bool, not float) within ``[low, high]``; None only if ``allow_none``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        # numpy / 0-d torch integers are accepted, floats are not (3.0 steps is a slip, not a plan)
        if hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and "int" in str(value.dtype):
            value = int(value)
        else:
            raise TypeError(f"{name} must be an int{' or None' if allow_none else ''}, "
                            f"got {describe(value)} of type {type(value).__name__}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_float(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = True,
                allow_none: bool = False) -> float | None:
    """A finite real number (int or float, not bool, not NaN/inf) within the given bounds."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0:
            value = float(value)
        else:
            raise TypeError(f"{name} must be a number{' or None' if allow_none else ''}, "
                            f"got {describe(value)} of type {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {value}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise ValueError(f"{name} must be {'<=' if high_inclusive else '<'} {high}, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (0/1 and strings are refused: ``"False"`` is truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return value


def check_choice(name: str, value: Any, choices: Collection[Any]) -> Any:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(map(repr, choices))}, got {describe(value)}")
    return value


def check_str(name: str, value: Any, *, allow_empty: bool = True) -> str:
    """A ``str`` (bytes and lists of characters are refused)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {describe(value)} of type {type(value).__name__}")
    if not allow_empty and not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def check_nonempty(name: str, value: Sequence[Any]) -> Sequence[Any]:
    """A sequence with at least one element."""
    if len(value) == 0:
        raise ValueError(f"{name} must not be empty")
    return value


def check_same_length(names: tuple[str, str], a: Sequence[Any], b: Sequence[Any]) -> None:
    """Two sequences that pair up element by element."""
    if len(a) != len(b):
        raise ValueError(f"{names[0]} and {names[1]} must have the same length, "
                         f"got {len(a)} and {len(b)}")


def check_tensor(name: str, value: Any, *, ndim: int | tuple[int, ...] | None = None,
                 dtype_kind: str | None = None) -> torch.Tensor:
    """A tensor with the given number of dimensions and kind of dtype (``"int"``, ``"float"``,
    ``"bool"``)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if value.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                             f"got shape {tuple(value.shape)}")
    if dtype_kind is not None:
        ok = {"int": not value.is_floating_point() and not value.is_complex()
                     and value.dtype != torch.bool,
              "float": value.is_floating_point(),
              "bool": value.dtype == torch.bool}[dtype_kind]
        if not ok:
            raise TypeError(f"{name} must have a {dtype_kind} dtype, got {value.dtype}")
    return value


def check_token_ids(name: str, ids: Any, vocab_size: int, *, ndim: int | tuple[int, ...] = 2,
                    allow_empty: bool = False) -> torch.Tensor:
    """An integer tensor of token ids in ``[0, vocab_size)``."""
    ids = check_tensor(name, ids, ndim=ndim, dtype_kind="int")
    if ids.numel() == 0:
        if not allow_empty:
            raise ValueError(f"{name} must hold at least one token, got shape {tuple(ids.shape)}")
        return ids
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} must be token ids in [0, {vocab_size}), got {bad}")
    return ids


def checked_tokenizer(name: str, tokenize: Any) -> Any:
    """Wrap a user's tokenizer ``str -> list[str]`` so a result that is not a list of strings is a
    clear ``TypeError`` naming the argument (metrics take tokenizers from learners)."""
    def tok(text: str) -> list[str]:
        out = tokenize(text)
        if isinstance(out, str) or not isinstance(out, (list, tuple)) or \
                not all(isinstance(t, str) for t in out):
            raise TypeError(f"{name} must return a list of strings, but {tokenize!r:.60} returned "
                            f"{out!r:.60} for {text!r:.40}")
        return list(out)

    return tok


def check_shape(name: str, value: torch.Tensor, shape: tuple[int | None, ...], *,
                expected: str = "") -> torch.Tensor:
    """A tensor of exactly ``shape`` (``None`` = any size there); ``expected`` says where the
    shape comes from, e.g. ``"(B, T) like input_ids"``."""
    ok = value.dim() == len(shape) and all(s is None or s == n for s, n in zip(shape, value.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want}{f' {expected}' if expected else ''}, "
                         f"got {tuple(value.shape)}")
    return value


def check_index_range(name: str, value: torch.Tensor, high: int, *, what: str,
                      allow: tuple[int, ...] = ()) -> torch.Tensor:
    """An integer tensor whose entries lie in ``[0, high)`` (or equal one of ``allow``, e.g. -100
    for ignored labels); ``what`` names the bound, e.g. ``"type_vocab_size"``."""
    value = check_tensor(name, value, dtype_kind="int")
    if value.numel():
        bad = (value < 0) | (value >= high)
        for a in allow:
            bad &= value != a
        if bool(bad.any()):
            raise ValueError(f"{name} must lie in [0, {what}={high})"
                             f"{''.join(f' or be {a}' for a in allow)}, got {int(value[bad][0])}")
    return value
