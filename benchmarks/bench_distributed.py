"""Data-parallel training on this machine's CPUs: one process vs 2 ranks (DDP, ZeRO-1, FSDP2).

Every side runs ``minillm.distributed_demo`` (a character GPT on Shakespeare) with the same settings,
seed and global batch: one process with all the cores (``OMP_NUM_THREADS`` = cores) on the whole
batch, or ``torchrun`` with 2 ranks of half the cores each (so the ranks do not oversubscribe), each
on half of every global batch, with ``--strategy`` ddp, zero or fsdp. The demo times each optimizer
step inside the training loop and logs the mean without the first step, so process start-up,
imports, the process-group rendezvous and first-step allocations are excluded.

Before anything is compared, each 2-rank run's losses must equal the single process's (allclose: only
the order of fp32 sums differs, see tests/test_distributed.py). Then rounds alternate the order of
the runs (single, single with 1 thread, ddp, zero, fsdp, then reversed, ...); each row gives the
median over rounds of (single ms/step) / (its ms/step), > 1 = faster than the single process with
all cores. The 1-thread single process shows what intra-op threading gains on this machine right
now: on a busy machine (the load average is printed) a multi-threaded process loses the most, since
its threads wait for each other at every parallel region whenever one of them is descheduled. Memory rows
(no pairs: they are exact counts) give the bytes one rank holds, next to DDP's.

``MINILLM_BENCH_QUICK=1``: fewer steps and rounds.

    python benchmarks/run.py distributed
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Paired, Row

ROOT = Path(__file__).resolve().parents[1]
STEPS, ROUNDS = 25, 3
if os.environ.get("MINILLM_BENCH_QUICK") == "1":
    STEPS, ROUNDS = 10, 2
MODEL = ["--batch-size", "32", "--block-size", "128", "--n-layer", "4", "--n-embd", "128",
         "--lr", "3e-3", "--seed", "0"]
RANKS = 2
STRATEGIES = ("ddp", "zero", "fsdp")

WHY = """\
  why, on {cores} CPU cores, 2 ranks should be barely faster (or slower) than 1 process:
    - the machine has {cores} core(s): each rank gets {per_rank} thread(s), while the single process
      already spreads every matmul over all {cores} with intra-op threads, so there is no idle
      core for a second process to use: data parallelism only adds compute where it adds devices;
    - every step the ranks exchange the gradients over gloo (TCP through the kernel, a copy each
      way): DDP and ZeRO all-reduce them (ZeRO also broadcasts each rank's updated parameters),
      FSDP all-gathers every block's weights in forward and backward and reduce-scatters the
      gradients, so it communicates most, in many small messages;
    - half a batch per rank makes smaller matmuls, which use a core less efficiently.
  What sharding buys is memory: ZeRO-1 halves each rank's optimizer state, FSDP halves parameters,
  gradients and optimizer state too; that is what lets a model too big for one device train at all.
"""


def _run(kind: str, out: Path, cores: int) -> dict:
    """One demo run; returns its log.json. kind is "single" (all cores), "single1" (one thread) or
    a strategy for 2 ranks."""
    args = ["--steps", str(STEPS), *MODEL, "--out", str(out)]
    if kind in ("single", "single1"):
        cmd = [sys.executable, "-m", "minillm.distributed_demo", *args]
        threads = cores if kind == "single" else 1
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={RANKS}",
               "-m", "minillm.distributed_demo", *args, "--strategy", kind]
        threads = max(1, cores // RANKS)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    if done.returncode:
        raise RuntimeError(f"{kind} run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads((out / "log.json").read_text())


def run() -> list[Row]:
    import torch

    cores = os.cpu_count() or 1
    kinds = ("single", "single1", *STRATEGIES)
    print(f"  character GPT {' '.join(MODEL[:8])}, {STEPS} steps; 1 process x {cores} threads vs "
          f"{RANKS} ranks x {max(1, cores // RANKS)} thread(s), gloo", flush=True)
    load_before = os.getloadavg()[0]
    times = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        logs = {k: _run(k, Path(tmp) / f"warmup-{k}", cores) for k in kinds}  # warm-up: page cache
        for k in ("single1", *STRATEGIES):  # the same training before any timing is compared
            torch.testing.assert_close(logs[k]["history"]["train_loss"],
                                       logs["single"]["history"]["train_loss"], atol=1e-4, rtol=1e-4)
        for r in range(ROUNDS):
            for k in (kinds if r % 2 == 0 else kinds[::-1]):
                times[k].append(_run(k, Path(tmp) / f"{k}-{r}", cores)["mean_step_seconds"])
            print(f"  round {r + 1}/{ROUNDS}: " + ", ".join(f"{k} {times[k][-1] * 1e3:.0f} ms/step"
                                                           for k in kinds), flush=True)
    rows = []
    for k in ("single1", *STRATEGIES):
        ratios = [s / t for s, t in zip(times["single"], times[k])]
        paired = Paired(statistics.median(times[k]), statistics.median(times["single"]),
                        statistics.median(ratios), ROUNDS, ratios)
        figure = ("train step, 1 process 1 thread, whole batch" if k == "single1"
                  else f"train step, {RANKS} ranks {k}, half batch each")
        rows.append(Row.timed(figure, paired, scale=1e3, unit="ms/step",
                              reference_name=f"1 process, whole batch, {cores} threads"))
    memory = {k: logs[k]["memory"][0] for k in STRATEGIES}  # rank 0; every rank holds the same here
    for k in ("zero", "fsdp"):
        for kind in ("param_bytes", "grad_bytes", "optimizer_bytes"):
            rows.append(Row(f"per-rank {kind.removesuffix('_bytes')} {'state ' if kind[0] == 'o' else ''}"
                            f"memory, {k}", memory[k][kind] / 1e6, memory["ddp"][kind] / 1e6, "MB",
                            higher_is_better=False, reference_name="DDP, per rank"))
    print(WHY.format(cores=cores, per_rank=max(1, cores // RANKS)), flush=True)
    load = (load_before + os.getloadavg()[0]) / 2
    one_thread_gain = statistics.median(times["single1"]) / statistics.median(times["single"])
    print(f"  measured: load average {load:.1f} on {cores} cores during the run; 1 process ran "
          f"{one_thread_gain:.2f}x as fast with {cores} threads as with 1.", flush=True)
    if load > cores or one_thread_gain < 1.2:
        vs_one = ", ".join(f"{k} {statistics.median(times['single1']) / statistics.median(times[k]):.2f}x"
                           for k in STRATEGIES)
        print("  This machine is shared and busy: other processes take cores away from ours, and a\n"
              "  multi-threaded process loses most (each parallel region waits for its slowest,\n"
              "  descheduled thread), so here the 1-thread ranks look faster than one process on\n"
              "  the whole batch with all its threads. That is contention, not a speed-up from data\n"
              "  parallelism. Against 1 process with 1 thread, which suffers no such waits, the 2\n"
              f"  ranks run {vs_one} (they also hold 2 of the busy machine's run-queue slots\n"
              "  where it holds 1); on an idle machine expect ratios near or below 1x.", flush=True)
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
