"""Repository-wide pytest set-up: test-mode environment and a per-notebook timing table.

Under pytest, notebooks run with ``MINILLM_QUICK=1`` (shortened training; set ``MINILLM_QUICK=0``
to test them exactly as learners run them). Notebooks in ``solutions/`` run with
``MINILLM_STRICT_CHECKS=1`` (a failed exercise check raises, so a broken solution fails its
notebook); course notebooks may show a failing check on purpose, so they run without it. Kernels
started by nbval inherit the environment at the moment they start.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict

import pytest

os.environ.setdefault("MINILLM_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# Each test gets a fresh cache unless one is given, so "trained on first use" paths really run.
os.environ.setdefault("MINILLM_CACHE", os.path.join(os.getcwd(), ".pytest_cache", "minillm-cache"))

_notebook_seconds: dict[str, float] = defaultdict(float)
_notebook_failed: dict[str, bool] = defaultdict(bool)
_session_start = time.perf_counter()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    # runs before nbval starts the notebook's kernel (in its file collector's setup)
    path = str(item.path)
    if path.endswith(".ipynb"):
        os.environ["MINILLM_STRICT_CHECKS"] = "1" if "solutions" in item.path.parts else "0"


def pytest_runtest_logreport(report) -> None:
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration
        _notebook_failed[path] |= report.failed


def pytest_terminal_summary(terminalreporter) -> None:
    if not _notebook_seconds:
        return
    tr = terminalreporter
    tr.section("notebook times (MINILLM_QUICK=%s)" % os.environ.get("MINILLM_QUICK", ""))
    tr.write_line(f"{'notebook':58s} {'seconds':>8s}  status")
    for path, seconds in sorted(_notebook_seconds.items()):
        status = "FAILED" if _notebook_failed[path] else "ok"
        tr.write_line(f"{path:58s} {seconds:8.1f}  {status}")
    tr.write_line(f"{'all notebooks':58s} {sum(_notebook_seconds.values()):8.1f}")
    tr.write_line(f"{'whole session':58s} {time.perf_counter() - _session_start:8.1f}")
