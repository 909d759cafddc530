"""The training loop: schedule, accumulation, clipping, evaluation, NaN detection, reproducibility."""

import math

import pytest
import torch
from torch import nn

from minillm.train import (History, LMBatches, NonFiniteLossError, TrainConfig, evaluate, get_lr,
                           sequential_lm_batches, train)


def _tiny_lm(vocab=11, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(vocab, 16), nn.Linear(16, vocab))


def _tokens(n=4000, vocab=11):
    # a learnable pattern: each token is followed by (token + 1) % vocab most of the time
    g = torch.Generator().manual_seed(0)
    t = torch.zeros(n, dtype=torch.long)
    noise = torch.rand(n, generator=g) < 0.1
    rnd = torch.randint(0, vocab, (n,), generator=g)
    for i in range(1, n):
        t[i] = rnd[i] if noise[i] else (t[i - 1] + 1) % vocab
    return t


def test_get_lr_warmup_then_cosine():
    kw = dict(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert get_lr(0, **kw) == pytest.approx(0.1)
    assert get_lr(9, **kw) == pytest.approx(1.0)
    assert get_lr(10, **kw) == pytest.approx(1.0)
    assert get_lr(60, **kw) == pytest.approx(0.55)  # half way down the cosine
    assert get_lr(110, **kw) == pytest.approx(0.1)
    lrs = [get_lr(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay after warmup


def test_training_learns_and_evaluates():
    tokens = _tokens()
    model = _tiny_lm()
    val = sequential_lm_batches(tokens[-800:], 32, 8)
    before = evaluate(model, val, autocast=None)
    hist = train(model, LMBatches(tokens[:-800], 32, 16, seed=0), val_data=val, steps=150, lr=3e-2,
                 warmup_steps=10, eval_every=50, autocast=None, progress=False)
    assert len(hist.train_loss) == 150 and hist.eval_step == [49, 99, 149]
    assert hist.final_val_loss < before - 1.0
    assert model.training  # evaluation restored train mode


def test_rerun_with_same_seed_reproduces():
    tokens = _tokens()
    runs = []
    for _ in range(2):
        model = _tiny_lm(seed=3)
        h = train(model, LMBatches(tokens, 16, 8, seed=5), steps=20, autocast=None, progress=False)
        runs.append((h.train_loss, model[1].weight.detach().clone()))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def test_gradient_accumulation_matches_big_batch():
    """accum_steps=2 over two halves equals one step over the whole batch (mean loss)."""
    tokens = _tokens()
    x, y = LMBatches(tokens, 16, 8, seed=1)()
    halves = iter([(x[:4], y[:4]), (x[4:], y[4:])])
    a, b = _tiny_lm(seed=7), _tiny_lm(seed=7)
    cfg = dict(steps=1, lr=1e-2, warmup_steps=0, grad_clip=None, autocast=None, progress=False)
    train(a, lambda: (x, y), **cfg)
    train(b, lambda: next(halves), accum_steps=2, **cfg)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_gradient_clipping_bounds_the_update():
    model = _tiny_lm()
    x = torch.randint(0, 11, (4, 8))
    seen = []

    def loss_fn(m, batch):
        return m(batch[0]).sum() * 1e4  # enormous gradients

    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = [p.detach().clone() for p in model.parameters()]
    hist = train(model, lambda: (x, x), loss_fn=loss_fn, optimizer=opt, steps=1, lr=1.0, warmup_steps=0,
                 grad_clip=0.5, autocast=None, progress=False)
    seen.append(hist.grad_norm[0])
    with torch.no_grad():
        step = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert seen[0] > 100  # the raw norm was huge ...
    assert float(step) == pytest.approx(0.5, rel=1e-4)  # ... the applied SGD step was clipped to 0.5


def test_nan_loss_stops_with_a_message_saying_where():
    model = _tiny_lm()
    calls = {"n": 0}

    def loss_fn(m, batch):
        calls["n"] += 1
        loss = m(batch[0]).float().logsumexp(-1).mean()
        return loss * float("nan") if calls["n"] == 7 else loss

    x = torch.randint(0, 11, (2, 4))
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 3 \(micro-batch 0 of 2"):
        train(model, lambda: (x, x), loss_fn=loss_fn, steps=10, accum_steps=2, autocast=None,
              progress=False)


def test_inf_loss_is_detected_too():
    model = _tiny_lm()
    x = torch.randint(0, 11, (2, 4))
    with pytest.raises(NonFiniteLossError, match="inf at step 0"):
        train(model, lambda: (x, x), loss_fn=lambda m, b: m(b[0]).sum() * float("inf"), steps=3,
              autocast=None, progress=False)


def test_bf16_autocast_trains_on_cpu():
    tokens = _tokens()
    model = _tiny_lm()
    h = train(model, LMBatches(tokens, 32, 16, seed=0), steps=40, lr=3e-2, autocast=torch.bfloat16,
              progress=False)
    assert all(math.isfinite(v) for v in h.train_loss)
    assert h.train_loss[-1] < h.train_loss[0]


def test_bad_config_and_data_are_clear_errors():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="yielded no batches"):
        train(_tiny_lm(), [], steps=1, progress=False)
    with pytest.raises(ValueError, match="more than block_size"):
        LMBatches(torch.arange(5), 8, 2)


def test_history_round_trips_and_plots():
    import matplotlib

    matplotlib.use("Agg")
    h = History(step=[0, 1], train_loss=[2.0, 1.5], lr=[1e-3, 1e-3], grad_norm=[1, 1],
                eval_step=[1], val_loss=[1.7])
    assert History.from_dict(h.to_dict()) == h
    ax = h.plot(title="t")
    assert ax.get_title() == "t" and len(ax.get_lines()) == 3
