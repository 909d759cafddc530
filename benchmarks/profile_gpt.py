"""Where the time goes in our GPT: torch.profiler tables of the top operators.

Two profiles of the bench_gpt.py model (6 layers, width 384, context 256, vocab 65, 2 threads;
``MINILLM_BENCH_QUICK=1`` uses its smaller size): one fused-AdamW training step (batch 16) under
bf16 autocast (fp32 with ``--fp32``) and batch-1 greedy generation with the KV cache. The tables
sort operators by self CPU time; shares are of the profiled total. Relative shares are meaningful
on a busy machine; absolute times are not.

    python benchmarks/profile_gpt.py [--fp32] [--rows 20] [--hf]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

import bench_gpt  # noqa: E402
from common import threads  # noqa: E402


def top_ops(prof, rows: int) -> str:
    """The ``rows`` operators with the most self CPU time, with their share of the total."""
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ranked = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    lines = [f"{'operator':48s} {'self ms':>9s} {'share':>6s} {'calls':>6s}", "-" * 72]
    for e in ranked:
        lines.append(f"{e.key[:48]:48s} {e.self_cpu_time_total / 1e3:9.1f} "
                     f"{100 * e.self_cpu_time_total / total:5.1f}% {e.count:6d}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", action="store_true", help="profile the fp32 step instead of bf16")
    parser.add_argument("--hf", action="store_true", help="profile HF GPT2LMHeadModel instead of ours")
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    with threads(bench_gpt.THREADS):
        ours, hf = bench_gpt.models("gelu_pytorch_tanh")
        model = hf if args.hf else ours
        x, y = bench_gpt._batch()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as bench_gpt.py
        step = bench_gpt.train_step(model.train(), opt, x, y, bf16=not args.fp32)
        step()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        kind = "fp32" if args.fp32 else "bf16 autocast"
        print(f"\n{'HF' if args.hf else 'our'} GPT training step, {kind}, B{bench_gpt.BATCH} "
              f"T{bench_gpt.BLOCK}\n{top_ops(prof, args.rows)}")

        model.eval()
        prompt = torch.zeros(1, 1, dtype=torch.long)

        def generate():
            if args.hf:
                with torch.inference_mode():
                    return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=64,
                                       min_new_tokens=64, do_sample=False, pad_token_id=0)
            return ours.generate(prompt, 64)

        generate()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            generate()
        print(f"\n{'HF' if args.hf else 'our'} GPT generation, B1, 64 new tokens, KV cache, fp32\n"
              f"{top_ops(prof, args.rows)}")


if __name__ == "__main__":
    main()
