"""Environment switches read by minillm — the only knobs that change behaviour without code.

| variable               | effect                                                                 |
|------------------------|------------------------------------------------------------------------|
| ``MINILLM_QUICK=1``    | notebooks run shortened training (CI uses it); learners leave it unset |
| ``MINILLM_CACHE=dir``  | where trained chapter models and unpacked files are cached             |
|                        | (default ``~/.cache/minillm``)                                         |
| ``MINILLM_STRICT_CHECKS=1`` | a failed exercise check raises instead of only printing (used when |
|                        | the solutions notebooks run under nbval)                               |
| ``MINILLM_DEVICE=cpu`` | force a device instead of the automatic CUDA → MPS → CPU choice         |

Values are read at call time, never cached at import, so a notebook can change them mid-session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(name: str) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value not in _TRUE | _FALSE:  # a typo must not silently mean "off"
        raise ValueError(f"environment variable {name}={os.environ[name]!r} is not a switch value: "
                         f"expected one of {sorted(_TRUE)} (on) or {sorted(_FALSE - {''})} (off)")
    return value in _TRUE


def quick_mode() -> bool:
    """True when ``MINILLM_QUICK`` is set: notebooks shrink their training runs (used by CI)."""
    return _flag("MINILLM_QUICK")


def scaled(full: T, quick: T) -> T:
    """Pick a size for a notebook: ``full`` for learners, ``quick`` under ``MINILLM_QUICK=1``.

    The one switch that lets CI run the same notebook shorter: ``steps = scaled(2000, quick=100)``.
    """
    return quick if quick_mode() else full


def strict_checks() -> bool:
    """True when a failed exercise check should raise (``MINILLM_STRICT_CHECKS=1``)."""
    return _flag("MINILLM_STRICT_CHECKS")


def cache_dir() -> Path:
    """Directory for cached models and unpacked files: ``$MINILLM_CACHE`` or ``~/.cache/minillm``."""
    root = os.environ.get("MINILLM_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "minillm"
