"""The training loop's overhead: minillm.train versus a bare PyTorch loop on the same model."""

from __future__ import annotations

import time

import torch
from torch import nn

from common import Row
from minillm.train import LMBatches, get_lr, lm_loss, make_optimizer, train

STEPS = 300


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(65, 128), nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 65))


def _bare_loop(model: nn.Module, batches: LMBatches, steps: int) -> float:
    opt = make_optimizer(model, 1e-3)
    t = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = get_lr(step, max_lr=1e-3, warmup_steps=50, total_steps=steps)
        loss = lm_loss(model, batches())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # the same host sync minillm.train does for logging
    return time.perf_counter() - t


def _ours(model: nn.Module, batches: LMBatches, steps: int) -> float:
    t = time.perf_counter()
    train(model, batches, steps=steps, lr=1e-3, warmup_steps=50, autocast=None, progress=True)
    return time.perf_counter() - t


def run() -> list[Row]:
    tokens = torch.randint(0, 65, (100_000,), generator=torch.Generator().manual_seed(0))
    timings = {}
    for name, fn in [("bare", _bare_loop), ("ours", _ours), ("bare2", _bare_loop), ("ours2", _ours)]:
        timings[name] = fn(_model(), LMBatches(tokens, 64, 32, seed=0), STEPS)
    bare = min(timings["bare"], timings["bare2"])
    ours = min(timings["ours"], timings["ours2"])
    return [Row("train(): steps/s, MLP LM, fp32, progress bar on", STEPS / ours, STEPS / bare,
                "steps/s", reference_name="bare PyTorch loop, same model/optimizer/clipping")]
