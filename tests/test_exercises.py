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
from minillm.checks import hint
from minillm.checks.hints import hints_for
from minillm.exercises import BEGIN, main, make_exercise, solution_hints, strip_code, sync

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
    assert code["source"] == ("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError("
                              "\"write your solution here — call hint('f') for a hint\")\n")
    assert code["outputs"] == [] and code["execution_count"] is None
    assert code["metadata"]["nbgrader"]["solution"] is True
    assert check["metadata"]["nbgrader"]["grade"] is True and check["metadata"]["nbgrader"]["points"] == 1
    assert md["source"] == "Why? YOUR ANSWER HERE"
    ns: dict = {}
    exec(code["source"], ns)
    with pytest.raises(NotImplementedError, match=r"call hint\('f'\)"):
        ns["f"](1)
    assert "double it" not in json.dumps(ex), "the stub must not reveal the hint"
    assert solution_hints(nb["cells"][0]["source"]) == {"f": ["double it"]}


def test_unbalanced_markers_are_an_error():
    with pytest.raises(ValueError, match="without a matching"):
        strip_code("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without a matching"):
        strip_code("x = 1\n### END SOLUTION\n")


def _exercise_hints():
    for path in SOLUTIONS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] == "code" and BEGIN in _src(cell):
                for name, hints in solution_hints(_src(cell)).items():
                    yield pytest.param(path.name, name, hints, id=f"{path.stem}-{name}")


@pytest.mark.parametrize("notebook,name,hints", list(_exercise_hints()))
def test_hints_are_revealed_on_request_from_the_exercise_notebook(notebook, name, hints, capsys):
    """The exercise notebook's first cell imports hint(); hint(name) shows the solution's # HINT lines,
    one per call; neither the stub nor the notebook prints them by itself."""
    cells = json.loads((ROOT / "exercises" / notebook).read_text(encoding="utf-8"))["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(h not in json.dumps(cells, ensure_ascii=False) for h in hints), "a hint leaks into the exercise"
    stub = next(_src(c) for c in code if f"def {name}(" in _src(c))
    assert f"hint({name!r})" in stub
    ns: dict = {}
    exec(compile(_code(_src(code[0])), "<setup cell>", "exec"), ns)
    capsys.readouterr()
    for k in range(len(hints)):
        ns["hint"](name)
        assert hints[k] in capsys.readouterr().out
    assert hints_for(name) == hints


def test_hint_for_an_unknown_exercise_is_a_clear_error():
    with pytest.raises(ValueError, match="did you mean 'bigram_counts'"):
        hint("bigram_count")
    with pytest.raises(TypeError, match="name must be a str"):
        hint(3)


def test_check_with_a_wrong_root_is_an_error(tmp_path, capsys):
    assert main(["--check", "--root", str(tmp_path)]) == 2
    assert "no solutions notebooks" in capsys.readouterr().err
    assert main(["--check", "--root", str(ROOT)]) == 0
    assert "in sync" in capsys.readouterr().out
