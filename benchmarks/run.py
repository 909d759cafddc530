"""Run the benchmarks and print one table: figure, ours, reference, ratio (ours vs reference).

    python benchmarks/run.py            # every benchmarks/bench_*.py
    python benchmarks/run.py train gpt  # only bench_train.py and bench_gpt.py
    python benchmarks/run.py serve      # the chat server, dynamic batching vs none (chapter 16)
    python benchmarks/run.py memory     # one GPT training step: memory vs time (chapter 16)
    python benchmarks/run.py distributed  # 1 process vs 2 ranks: DDP, ZeRO-1, FSDP2 (chapter 16)

Ratios > 1 mean ours is better (faster, or smaller for memory). Timed rows (a number in column n)
show each side's median and the median of n paired ratios, both sides timed alternately on the same
inputs after their outputs were asserted equal (see common.py). Everything in one table was measured
in the same process on the same machine; numbers from different machines are not comparable.
On a busy machine: ``MINILLM_BENCH_QUICK=1 python benchmarks/run.py gpt`` (a smaller GPT).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import format_table  # noqa: E402


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="*", help="bench_<topic>.py files to run (default: all)")
    args = parser.parse_args()
    files = sorted(HERE.glob("bench_*.py"))
    if args.topics:
        files = [f for f in files if f.stem.removeprefix("bench_") in args.topics]
        if not files:
            raise SystemExit(f"no benchmark matches {args.topics}")
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    rows = []
    for f in files:
        print(f"running {f.name} ...", flush=True)
        rows += load(f).run()
    print()
    print(format_table(rows))


if __name__ == "__main__":
    main()
