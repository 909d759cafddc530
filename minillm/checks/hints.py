"""Hints for the exercises, revealed one at a time when the learner asks: ``hint("bigram_counts")``.

The hints are the ``# HINT:`` lines at the top of each solution block in ``solutions/*.ipynb``;
``python -m minillm.exercises`` collects them into ``minillm/checks/_hints.py`` (generated, a plain
Python dict, so it ships with the package and works offline), and the generated exercise stubs only
say that a hint exists. The first call shows the first hint line, each further call one more.
"""

from __future__ import annotations

import difflib

from ..validation import check_str

__all__ = ["hint", "hints_for", "exercise_names"]

_shown: dict[str, int] = {}  # exercise name -> how many hint lines were revealed so far


def _table() -> dict[str, list[dict]]:
    from ._hints import HINTS  # generated; imported lazily so a stale file cannot break the package

    return HINTS


def exercise_names() -> list[str]:
    """The names of the exercise functions that have hints."""
    return sorted(_table())


def hints_for(name: str) -> list[str]:
    """All hint lines recorded for the exercise function ``name`` (one notebook after another)."""
    check_str("name", name, allow_empty=False)
    table = _table()
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=3)
        suggestion = f"; did you mean {' or '.join(map(repr, close))}?" if close else \
            f"; exercises with hints: {', '.join(sorted(table))}"
        raise ValueError(f"no exercise named {name!r} has a hint{suggestion}")
    return [line for entry in table[name] for line in entry["hints"]]


def hint(name: str, *, all: bool = False) -> None:  # noqa: A002 — reads well at the call site
    """Print the next hint for exercise ``name`` (the function's name); ``all=True`` prints them all.

    Example: ``hint("bigram_counts")``.
    """
    lines = hints_for(name)
    if not lines:
        print(f"No hint is recorded for {name}: re-read the exercise text and the check's messages.")
        return
    shown = len(lines) if all else min(_shown.get(name, 0) + 1, len(lines))
    _shown[name] = max(shown, _shown.get(name, 0))
    for k, line in enumerate(lines[:shown]):
        print(f"💡 hint {k + 1}/{len(lines)} for {name}: {line}")
    if shown < len(lines):
        print(f"   (call hint({name!r}) again for the next one)")
