"""Did a change slow GPT down? Times the current ``minillm.models.gpt`` against the same file at an
earlier git revision, side by side in one process, with the protocol of ``common.py``.

    python benchmarks/compare_revision.py 137ac82           # training fp32/bf16 + generation
    MINILLM_BENCH_QUICK=1 python benchmarks/compare_revision.py 137ac82

The old module is read with ``git show REV:minillm/models/gpt.py`` and imported next to the new one
(it uses the current ``minillm`` for everything else). Both models get the same weights, their outputs
are asserted equal before timing, and each figure is the median of paired ratios (> 1 = the current
code is faster) with alternating order, after a warm-up.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_gpt as bg  # noqa: E402  the same sizes, training step and FLOP count as bench_gpt
from common import Row, assert_same_output, format_table, matmul_peak, paired_timing, threads  # noqa: E402


def old_gpt_module(rev: str):
    """``minillm.models.gpt`` as it was at ``rev``, importable beside the current one."""
    source = subprocess.run(["git", "show", f"{rev}:minillm/models/gpt.py"], cwd=HERE.parent,
                            check=True, capture_output=True, text=True).stdout
    name = "minillm.models._gpt_at_" + rev.replace("/", "_").replace("~", "_").replace("^", "_")
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "minillm.models"
    sys.modules[name] = module
    exec(compile(source, f"{rev}:minillm/models/gpt.py", "exec"), module.__dict__)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="git revision to compare with, e.g. 137ac82 or HEAD~3")
    args = parser.parse_args()
    old = old_gpt_module(args.rev)
    with threads(bg.THREADS):
        new, _ = bg.models("gelu_pytorch_tanh")
        before = old.GPT(old.GPTConfig(**vars(new.config)))
        before.load_state_dict(new.state_dict())
        x, y = bg._batch()
        new.eval(), before.eval()
        with torch.no_grad():
            assert_same_output(new(x[:2]), before(x[:2]), "logits, current vs " + args.rev)
        rows = []
        fpt = bg.flops_per_token(new)
        for bf16 in (False, True):
            new.train(), before.train()
            opt_n = torch.optim.AdamW(new.parameters(), lr=1e-4, fused=True)
            opt_b = torch.optim.AdamW(before.parameters(), lr=1e-4, fused=True)
            step_n = bg.train_step(new, opt_n, x, y, bf16)
            step_b = bg.train_step(before, opt_b, x, y, bf16)
            if not bf16:
                assert_same_output(torch.tensor(step_n()), torch.tensor(step_b()),
                                   "first training-step loss", atol=1e-6)
            peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32)
            p = paired_timing(step_n, step_b, repeats=bg.TRAIN_PAIRS, warmup=1)
            kind = "bf16 autocast" if bf16 else "fp32"
            rows.append(Row.timed(f"GPT training tokens/s, {kind}, B{bg.BATCH} T{bg.BLOCK} {bg.LAYERS}L "
                                  f"{bg.WIDTH}", p, work=bg.BATCH * bg.BLOCK, unit="tokens/s",
                                  reference_name=f"GPT at {args.rev}, same weights"))
            mfu = lambda s: 100 * bg.BATCH * bg.BLOCK / s * fpt / peak  # noqa: E731
            rows.append(Row(f"GPT training MFU, {kind}", mfu(p.ours_s), mfu(p.ref_s), "% of peak",
                            paired_ratio=p.ratio, pairs=p.pairs,
                            reference_name=f"at {args.rev}; same-run peak {peak / 1e9:.0f} GFLOP/s"))
        new.eval(), before.eval()
        prompt = torch.zeros(1, 1, dtype=torch.long)
        gen_n = lambda: new.generate(prompt, bg.NEW_TOKENS)  # noqa: E731
        gen_b = lambda: before.generate(prompt, bg.NEW_TOKENS)  # noqa: E731
        assert_same_output(gen_n(), gen_b(), "greedy tokens")
    for n in sorted({bg.THREADS, 1}, reverse=True):
        with threads(n):
            p = paired_timing(gen_n, gen_b, repeats=bg.GEN_PAIRS, warmup=1)
        rows.append(Row.timed(f"GPT generation tokens/s (B1, {bg.NEW_TOKENS} new, KV cache, {n} thr)", p,
                              work=bg.NEW_TOKENS, unit="tokens/s",
                              reference_name=f"GPT at {args.rev}, same tokens"))
    print(format_table(rows))


if __name__ == "__main__":
    main()
