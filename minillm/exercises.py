"""Generate ``exercises/`` from ``solutions/``: the solutions notebooks are the single source.

In a solutions notebook, solution code sits between nbgrader's markers::

    def softmax(x):
        ### BEGIN SOLUTION
        # HINT: subtract the row maximum before exponentiating
        e = (x - x.max(-1, keepdim=True).values).exp()
        return e / e.sum(-1, keepdim=True)
        ### END SOLUTION

The exercise copy replaces the block with ``raise NotImplementedError(...)`` at the same
indentation, clears outputs, and keeps everything else. The ``# HINT:`` lines at the top of a block
are not printed by the stub: they are collected into ``minillm/checks/_hints.py`` and revealed on
request by ``hint("<function name>")`` (imported into the exercise notebook's first code cell), so a
learner tries first and asks for help when stuck. Markdown answers between the markers become "YOUR ANSWER HERE". Cells with markers
get nbgrader metadata (solution cells); the cell after an exercise, which runs its check, is marked
as an autograded test cell so an instructor can run the notebooks through nbgrader unchanged.

Run ``python -m minillm.exercises`` after editing a solutions notebook; ``--check`` only reports
files that are out of date (the test suite does the same), and fails when ``--root`` holds no
``solutions/*.ipynb``.
"""

from __future__ import annotations

import argparse
import copy
import json
import pprint
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HINT = re.compile(r"^\s*#\s*HINT:\s?(.*)$")
DEF = re.compile(r"^(\s*)def\s+(\w+)\s*\(")
CHECK_CALL = re.compile(r"\bcheck_(\w+)\s*\(")
HINT_IMPORT = "from minillm.checks import hint  # hint(\"function name\") reveals an exercise's hint"
HINTS_MODULE = Path("minillm") / "checks" / "_hints.py"


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def has_solution(cell: dict) -> bool:
    return BEGIN in _source(cell)


def _blocks(source: str) -> list[tuple[int, int, str | None, list[str]]]:
    """Each BEGIN/END block of a code cell: (begin line, end line, enclosing function, hint lines)."""
    lines = source.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.strip() == END:
            raise ValueError(f"'{END}' without a matching '{BEGIN}' in:\n{source}")
        if line.strip() != BEGIN:
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        name = None
        for previous in reversed(lines[:i]):  # the innermost def that encloses the block
            m = DEF.match(previous)
            if m and len(m.group(1)) < indent:
                name = m.group(2)
                break
        hints, j = [], i + 1
        while j < len(lines) and lines[j].strip() != END:
            m = HINT.match(lines[j])
            if m and len(hints) == j - i - 1:  # only the leading run of HINT lines
                hints.append(m.group(1).strip())
            j += 1
        if j == len(lines):
            raise ValueError(f"'{BEGIN}' without a matching '{END}' in:\n{source}")
        blocks.append((i, j, name, hints))
        i = j + 1
    return blocks


def solution_hints(source: str) -> dict[str, list[str]]:
    """Function name -> its ``# HINT:`` lines, for every solution block of a code cell."""
    return {name: hints for _, _, name, hints in _blocks(source) if name and hints}


def stub_message(name: str | None, has_hints: bool) -> str:
    """The NotImplementedError message of a stub: says where to write and how to get a hint."""
    if name and has_hints:
        return f"write your solution here — call hint({name!r}) for a hint"
    return "write your solution here"


def strip_code(source: str) -> str:
    """Replace every BEGIN/END SOLUTION block of a code cell with a NotImplementedError stub."""
    lines = source.split("\n")
    out: list[str] = []
    last = 0
    for begin, end, name, hints in _blocks(source):
        out += lines[last:begin]
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        out.append(f"{indent}# YOUR CODE HERE")
        out.append(f"{indent}raise NotImplementedError({stub_message(name, bool(hints))!r})")
        last = end + 1
    out += lines[last:]
    return "\n".join(out)


def strip_markdown(source: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    return pattern.sub("YOUR ANSWER HERE", source)


def _grade_id(notebook_name: str, index: int, kind: str) -> str:
    return f"{Path(notebook_name).stem}-{kind}-{index}"


def with_nbgrader_metadata(nb: dict, notebook_name: str) -> dict:
    """A copy of ``nb`` whose solution cells and their check cells carry nbgrader metadata."""
    nb = copy.deepcopy(nb)
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        meta = cell.setdefault("metadata", {})
        meta.pop("nbgrader", None)
        if has_solution(cell):
            meta["nbgrader"] = {"grade": False, "grade_id": _grade_id(notebook_name, i, "solution"),
                                "locked": False, "schema_version": 3, "solution": True,
                                "task": False}
    for i, cell in enumerate(cells):
        if has_solution(cell) and cell["cell_type"] == "code" and i + 1 < len(cells):
            nxt = cells[i + 1]
            if nxt["cell_type"] == "code" and "check_" in _source(nxt) and not has_solution(nxt):
                nxt["metadata"]["nbgrader"] = {
                    "grade": True, "grade_id": _grade_id(notebook_name, i + 1, "check"),
                    "locked": True, "points": 1, "schema_version": 3, "solution": False,
                    "task": False}
    return nb


def make_exercise(nb: dict, notebook_name: str) -> dict:
    """The exercise version of a solutions notebook (dict in nbformat 4 JSON)."""
    nb = with_nbgrader_metadata(nb, notebook_name)
    has_hints = any(solution_hints(_source(c)) for c in nb["cells"]
                    if c["cell_type"] == "code" and has_solution(c))
    first_code = next((c for c in nb["cells"] if c["cell_type"] == "code"), None)
    if has_hints and first_code is not None and not has_solution(first_code):
        src = _source(first_code)
        if not re.search(r"^from minillm\.checks import .*\bhint\b", src, re.M):
            first_code["source"] = src.rstrip("\n") + "\n" + HINT_IMPORT
    for cell in nb["cells"]:
        src = _source(cell)
        if cell["cell_type"] == "code":
            if BEGIN in src or END in src:
                cell["source"] = strip_code(src)
            cell["outputs"] = []
            cell["execution_count"] = None
        elif cell["cell_type"] == "markdown" and BEGIN in src:
            cell["source"] = strip_markdown(src)
    return nb


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def collect_hints(solutions: Path) -> dict[str, list[dict]]:
    """Exercise function name (and its check's name, when different) -> hints, from every notebook."""
    table: dict[str, list[dict]] = {}
    for path in sorted(solutions.glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for i, cell in enumerate(cells):
            if cell["cell_type"] != "code" or not has_solution(cell):
                continue
            nxt = next((c for c in cells[i + 1:] if c["cell_type"] == "code"), None)
            m = CHECK_CALL.search(_source(nxt)) if nxt else None
            for name, hints in solution_hints(_source(cell)).items():
                entry = {"notebook": path.name, "function": name, "hints": hints}
                for key in {name, m.group(1) if m else name}:
                    table.setdefault(key, []).append(entry)
    return table


def hints_module(table: dict[str, list[dict]]) -> str:
    """Source of ``minillm/checks/_hints.py`` for ``table``."""
    return ('"""Exercise hints from the ``# HINT:`` lines of ``solutions/*.ipynb``, shown by '
            '``minillm.checks.hint``.\n\nGenerated by ``python -m minillm.exercises``: do not edit.\n"""\n\n'
            f"HINTS = {pprint.pformat(table, width=100, sort_dicts=True)}\n")


def sync(solutions: Path, exercises: Path, *, write: bool, hints_file: Path | None = None) -> list[str]:
    """Regenerate (``write=True``) or compare; returns the files that were/are out of date.

    ``hints_file`` defaults to ``minillm/checks/_hints.py`` next to ``solutions/``.
    Raises ``FileNotFoundError`` if ``solutions`` holds no notebook (a wrong ``--root``).
    """
    sources = sorted(solutions.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no solutions notebooks (*.ipynb) in {solutions}: is the root "
                                f"{solutions.parent} a minillm checkout?")
    stale = []
    for src in sources:
        nb = json.loads(src.read_text(encoding="utf-8"))
        annotated = _dump(with_nbgrader_metadata(nb, src.name))
        if annotated != src.read_text(encoding="utf-8"):
            stale.append(str(src))
            if write:
                src.write_text(annotated, encoding="utf-8")
        target = exercises / src.name
        expected = _dump(make_exercise(nb, src.name))
        if not target.exists() or target.read_text(encoding="utf-8") != expected:
            stale.append(str(target))
            if write:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(expected, encoding="utf-8")
    solution_names = {p.name for p in sources}
    for orphan in sorted(exercises.glob("*.ipynb")):
        if orphan.name not in solution_names:
            stale.append(f"{orphan} (no solutions notebook)")
            if write:
                orphan.unlink()
    hints_file = hints_file or solutions.parent / HINTS_MODULE
    text = hints_module(collect_hints(solutions))
    if not hints_file.exists() or hints_file.read_text(encoding="utf-8") != text:
        stale.append(str(hints_file))
        if write:
            hints_file.write_text(text, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate exercises/ from solutions/.")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    try:
        stale = sync(args.root / "solutions", args.root / "exercises", write=not args.check)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verb = "out of date" if args.check else "written"
    for s in stale:
        print(f"{verb}: {s}")
    if not stale:
        print("exercises/ is in sync with solutions/")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
