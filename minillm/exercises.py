"""Generate ``exercises/`` from ``solutions/``: the solutions notebooks are the single source.

In a solutions notebook, solution code sits between nbgrader's markers::

    def softmax(x):
        ### BEGIN SOLUTION
        # HINT: subtract the row maximum before exponentiating
        e = (x - x.max(-1, keepdim=True).values).exp()
        return e / e.sum(-1, keepdim=True)
        ### END SOLUTION

The exercise copy replaces the block with ``raise NotImplementedError("<hint>")`` at the same
indentation (``# HINT:`` lines at the top of a block become the message), clears outputs, and keeps
everything else. Markdown answers between the markers become "YOUR ANSWER HERE". Cells with markers
get nbgrader metadata (solution cells); the cell after an exercise, which runs its check, is marked
as an autograded test cell so an instructor can run the notebooks through nbgrader unchanged.

Run ``python -m minillm.exercises`` after editing a solutions notebook; ``--check`` only reports
notebooks that are out of date (the test suite does the same).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
HINT = re.compile(r"^\s*#\s*HINT:\s?(.*)$")


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def has_solution(cell: dict) -> bool:
    return BEGIN in _source(cell)


def strip_code(source: str) -> str:
    """Replace every BEGIN/END SOLUTION block of a code cell with a NotImplementedError stub."""
    out: list[str] = []
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != BEGIN:
            if line.strip() == END:
                raise ValueError(f"'{END}' without a matching '{BEGIN}' in:\n{source}")
            out.append(line)
            i += 1
            continue
        indent = line[: len(line) - len(line.lstrip())]
        hints, j = [], i + 1
        while j < len(lines) and lines[j].strip() != END:
            m = HINT.match(lines[j])
            if m and len(hints) == j - i - 1:  # only the leading run of HINT lines
                hints.append(m.group(1).strip())
            j += 1
        if j == len(lines):
            raise ValueError(f"'{BEGIN}' without a matching '{END}' in:\n{source}")
        message = " ".join(hints) or "replace this line with your code"
        out.append(f"{indent}# YOUR CODE HERE")
        out.append(f"{indent}raise NotImplementedError({message!r})")
        i = j + 1
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


def sync(solutions: Path, exercises: Path, *, write: bool) -> list[str]:
    """Regenerate (``write=True``) or compare; returns the notebooks that were/are out of date."""
    stale = []
    for src in sorted(solutions.glob("*.ipynb")):
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
    solution_names = {p.name for p in solutions.glob("*.ipynb")}
    for orphan in sorted(exercises.glob("*.ipynb")):
        if orphan.name not in solution_names:
            stale.append(f"{orphan} (no solutions notebook)")
            if write:
                orphan.unlink()
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate exercises/ from solutions/.")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="repository root")
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    stale = sync(args.root / "solutions", args.root / "exercises", write=not args.check)
    verb = "out of date" if args.check else "written"
    for s in stale:
        print(f"{verb}: {s}")
    if not stale:
        print("exercises/ is in sync with solutions/")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
