"""Memory against time of one GPT training step (chapter 16, ``minillm.efficiency``).

One GPT (the chapter-8 ``shakespeare_small`` size: 4 layers, width 128, context 128) takes AdamW
steps on a fixed batch of BATCH sequences under twelve settings: fp32 / bf16 autocast / fp16
autocast + GradScaler, activation checkpointing off / on, the batch in 1 or 4 micro-batches
(gradient accumulation: the same global batch, the same update). Memory is counted, not sampled:
the activations are the bytes of the tensors autograd saves for backward (each storage once,
parameters apart), and parameters, gradients and AdamW's moments are read off their tensors; the
total is their sum. Time: every setting takes one untimed step (which also counts the
activations), then ROUNDS timed rounds each run every setting once, in reverse order on odd
rounds (common.py's alternation, widened to twelve sides); the headline is the median over rounds
of each setting's step time divided by the plain fp32 step's in the same round.

Before timing, the benchmark asserts that the settings do the same work: the fp32 step with
checkpointing and with 4 micro-batches gives the plain fp32 step's loss and gradients (allclose),
and bf16 / fp16 give its loss within 2%.

Why the model is small: this CPU has no float16 matrix units (no AVX512-FP16 / AMX-FP16), so
torch runs fp16 matmuls on a slow fallback kernel, an order of magnitude slower than fp32 (bf16
has AVX512-BF16 here and keeps pace with fp32). A 6-layer width-384 step at context 256 takes
seconds in fp32 and minutes in fp16. The time ratios of fp16 rows therefore measure this CPU's
missing fp16 kernels, not what fp16 costs on a GPU, where fp16 and bf16 run at the same speed.

THREADS = 1: on a shared 2-core machine a second intra-op thread waits for a core that another
process holds, which makes step times swing several-fold; one thread keeps the ratios stable.

``MINILLM_BENCH_QUICK=1``: batch 8 at context 64, 2 rounds.

    python benchmarks/run.py memory
"""

from __future__ import annotations

import os

import torch

from common import Row, assert_same_output, threads

BATCH, CONTEXT, ROUNDS, THREADS, MICRO = 16, 128, 3, 1, 4
if os.environ.get("MINILLM_BENCH_QUICK") == "1":
    BATCH, CONTEXT, ROUNDS = 8, 64, 2
BASE = "fp32, 1 micro-batch, no checkpointing"


def grads_of(model, batch, setting):
    """(loss, gradients) of one step of ``setting`` on a copy of ``model``, with a no-op optimizer."""
    import copy

    from minillm.efficiency import make_scaler, train_step

    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    loss, _ = train_step(model, opt, batch, setting, scaler=make_scaler(setting, "cpu"))
    return loss, torch.cat([p.grad.flatten() for p in model.parameters()])


def run() -> list[Row]:
    from minillm.efficiency import (StepSetting, default_settings, format_table, relative_time,
                                    sweep)
    from minillm.models.gpt import GPT, GPTConfig

    settings = default_settings((1, MICRO))
    print(f"  GPT 4x128 (shakespeare_small), batch {BATCH}x{CONTEXT}, {len(settings)} settings, "
          f"{ROUNDS} rounds, {THREADS} thread(s)", flush=True)
    with threads(THREADS):
        torch.manual_seed(0)
        model = GPT(GPTConfig.shakespeare_small(block_size=CONTEXT)).train()
        ids = torch.randint(model.config.vocab_size, (BATCH, CONTEXT + 1),
                            generator=torch.Generator().manual_seed(0))
        batch = (ids[:, :-1], ids[:, 1:])  # (BATCH, CONTEXT) each

        loss, grads = grads_of(model, batch, StepSetting())
        for same in (StepSetting(checkpointing=True), StepSetting(micro_batches=MICRO)):
            other_loss, other = grads_of(model, batch, same)
            assert abs(other_loss - loss) < 1e-5, (same.label, other_loss, loss)
            assert_same_output(other, grads, f"{same.label} vs fp32 gradients",
                               atol=1e-6 * float(grads.abs().max()), rtol=1e-4)
        for precision in ("bf16", "fp16"):
            from minillm.device import autocast

            with torch.no_grad(), autocast("cpu", {"bf16": torch.bfloat16,
                                                   "fp16": torch.float16}[precision]):
                low = float(torch.nn.functional.cross_entropy(
                    model(batch[0]).flatten(0, 1).float(), batch[1].flatten()))
            assert abs(low - loss) < 0.02 * loss, (precision, low, loss)
        print("  same work checked; timing ...", flush=True)

        rows_ = sweep(model, batch, settings, rounds=ROUNDS)
    print()
    print(format_table(rows_))
    print()
    base = rows_[0]
    assert base.setting == StepSetting()
    rows = []
    name = "GPT 4x128 step"
    for r in rows_[1:]:
        rows.append(Row(f"{name}, {r.label}: activation memory", r.activation_bytes / 1e6,
                        base.activation_bytes / 1e6, "MB", higher_is_better=False,
                        reference_name=BASE))
        rows.append(Row(f"{name}, {r.label}: total memory", r.total_bytes / 1e6,
                        base.total_bytes / 1e6, "MB", higher_is_better=False,
                        reference_name=BASE + "; params+grads+AdamW+activations"))
        rows.append(Row(f"{name}, {r.label}: step time", r.seconds, base.seconds, "s",
                        higher_is_better=False, reference_name=BASE,
                        paired_ratio=1 / relative_time(r, base), pairs=len(r.step_seconds)))
    return rows


if __name__ == "__main__":
    from common import format_table

    print(format_table(run()))
