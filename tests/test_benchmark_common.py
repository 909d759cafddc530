"""The benchmark protocol's shared pieces (benchmarks/common.py) work as the bench_*.py files use
them — a broken helper there once crashed every benchmark without any test noticing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_threads_is_a_context_manager_that_restores_the_setting():
    common = load("common")
    before = torch.get_num_threads()
    with common.threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_paired_timing_alternates_and_reports_the_median_ratio():
    common = load("common")
    calls = []
    p = common.paired_timing(lambda: calls.append("ours"), lambda: calls.append("ref"), repeats=4,
                             warmup=1)
    assert p.pairs == 4 and len(p.ratios) == 4 and p.ratio > 0
    timed = calls[2:]  # after one warm-up call of each
    assert timed[0::2] != timed[1::2] and {timed[0], timed[2]} == {"ours", "ref"}  # order alternates


def test_peak_rows_report_start_and_end_of_a_run(monkeypatch):
    common = load("common")
    # the end-of-run peak is measured again; a 2048^3 bf16 matmul takes minutes on CPUs without bf16
    # instructions, and this test is about the rows, so the measurement is stubbed
    monkeypatch.setattr(common, "matmul_peak", lambda dtype=None, **kw: 3e9)
    rows = common.peak_rows({"fp32": 1e9, "bf16": 2e9})
    assert [r.value for r in rows] == [1.0, 2.0] and all("end of the run" in r.reference_name for r in rows)
    assert all(r.reference_name.startswith("3 at the end") for r in rows)
    assert "matmul peak fp32" in common.format_table(rows)


def test_every_benchmark_module_imports_and_has_run():
    for path in sorted(BENCH.glob("bench_*.py")):
        assert callable(load(path.stem).run), path.name
