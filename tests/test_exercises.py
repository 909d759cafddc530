"""Exercises are generated from solutions; every check passes on the solution and fails on the stub.

For each exercise cell of ``solutions/*.ipynb`` (a cell with ``### BEGIN SOLUTION``), the test runs
the notebook's first code cell (imports), the exercise cell, then the check cell that follows it,
once with the solution and once with the generated stub from ``exercises/``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from minillm.checks import CheckResult
from minillm.exercises import BEGIN, make_exercise, strip_code, sync

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def _src(cell) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def _code(source: str) -> str:
    return "\n".join(l for l in source.split("\n") if not l.lstrip().startswith(("%", "!")))


def _exercises():
    for path in SOLUTIONS:
        cells = [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
        for i, cell in enumerate(cells):
            if BEGIN in _src(cell):
                check = cells[i + 1] if i + 1 < len(cells) else None
                yield pytest.param(path, _src(cells[0]), _src(cell), check and _src(check),
                                   id=f"{path.stem}-exercise{i}")


EXERCISES = list(_exercises())


def _run(setup: str, exercise: str, check: str) -> CheckResult:
    ns: dict = {"__name__": "__exercise__"}
    exec(compile(_code(setup), "<setup cell>", "exec"), ns)
    exec(compile(exercise, "<exercise cell>", "exec"), ns)
    tree = ast.parse(_code(check))
    assert tree.body and isinstance(tree.body[-1], ast.Expr), "a check cell must end in check_...(fn)"
    *body, last = tree.body
    exec(compile(ast.Module(body=body, type_ignores=[]), "<check cell>", "exec"), ns)
    return eval(compile(ast.Expression(last.value), "<check cell>", "eval"), ns)


def test_exercises_are_in_sync_with_solutions():
    stale = sync(ROOT / "solutions", ROOT / "exercises", write=False)
    assert not stale, f"run `python -m minillm.exercises`; out of date: {stale}"


def test_every_solutions_notebook_has_an_exercise():
    for path in SOLUTIONS:
        assert BEGIN in path.read_text(encoding="utf-8"), f"{path.name} has no exercise"


@pytest.mark.parametrize("path,setup,exercise,check", EXERCISES)
def test_check_passes_on_solution_and_fails_on_stub(path, setup, exercise, check, monkeypatch, capsys):
    monkeypatch.setenv("MINILLM_STRICT_CHECKS", "0")
    assert check is not None and "check_" in check, f"{path.name}: an exercise cell must be followed by its check"
    solved = _run(setup, exercise, check)
    assert isinstance(solved, CheckResult), f"the check cell returned {type(solved).__name__}"
    assert solved.passed, f"check fails on the solution:\n{solved.report()}"
    stubbed = _run(setup, strip_code(exercise), check)
    assert not stubbed.passed, "check passes on the NotImplementedError stub"
    assert "not implemented yet" in stubbed.report()


def test_stub_generation_keeps_indentation_hints_and_nbgrader_metadata():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {}, "outputs": [{"x": 1}], "execution_count": 3,
         "source": "def f(x):\n    ### BEGIN SOLUTION\n    # HINT: double it\n    return 2 * x\n    ### END SOLUTION\n"},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 4, "source": "check_f(f)"},
        {"cell_type": "markdown", "metadata": {}, "source": "Why? ### BEGIN SOLUTION because ### END SOLUTION"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    ex = make_exercise(nb, "demo.ipynb")
    code, check, md = ex["cells"]
    assert code["source"] == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError('double it')\n"
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"]["nbgrader"]["solution"] is True
    assert check["metadata"]["nbgrader"]["grade"] is True and check["metadata"]["nbgrader"]["points"] == 1
    assert md["source"] == "Why? YOUR ANSWER HERE"
    ns: dict = {}
    exec(code["source"], ns)
    with pytest.raises(NotImplementedError, match="double it"):
        ns["f"](1)


def test_unbalanced_markers_are_an_error():
    with pytest.raises(ValueError, match="without a matching"):
        strip_code("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without a matching"):
        strip_code("x = 1\n### END SOLUTION\n")
