"""The training loop's overhead: minillm.train versus a bare PyTorch loop on the same model.

Both sides start from the same weights and batches, use the same optimizer, schedule and clipping;
their final weights are asserted allclose before timing (so they did the same work), then whole
300-step runs are timed in alternating pairs (common.py).
"""

from __future__ import annotations

import torch
from torch import nn

from common import Row, assert_same_output, paired_timing
from minillm.train import LMBatches, get_lr, lm_loss, make_optimizer, train

STEPS = 300
TOKENS = torch.randint(0, 65, (100_000,), generator=torch.Generator().manual_seed(0))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(65, 128), nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 65))


def _bare_loop() -> nn.Module:
    model, batches = _model(), LMBatches(TOKENS, 64, 32, seed=0)
    opt = make_optimizer(model, 1e-3)
    model.train()
    for step in range(STEPS):
        for g in opt.param_groups:
            g["lr"] = get_lr(step, max_lr=1e-3, warmup_steps=50, total_steps=STEPS)
        loss = lm_loss(model, batches())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # the same host sync minillm.train does for logging
    return model


def _ours() -> nn.Module:
    model = _model()
    train(model, LMBatches(TOKENS, 64, 32, seed=0), steps=STEPS, lr=1e-3, warmup_steps=50,
          autocast=None, progress=True)
    return model


def run() -> list[Row]:
    for (name, a), b in zip(_ours().state_dict().items(), _bare_loop().state_dict().values()):
        assert_same_output(a, b, f"final weight {name}, train() vs bare loop", atol=1e-5)
    p = paired_timing(_ours, _bare_loop, repeats=3, warmup=0)
    return [Row.timed("train(): steps/s, MLP LM, fp32, progress bar on", p, work=STEPS, unit="steps/s",
                      reference_name="bare PyTorch loop, same model/optimizer/clipping/weights")]
