"""Bad inputs to training, batching, devices, settings and data loaders: each is a clear error.

One table of probes; each must raise the expected exception type with a message that names the
argument and the value (or what was expected). Before issue 9 many of these ran silently (grad_clip=0
stopped learning, grad_clip=-1 climbed the loss, max_batches=0 meant "all", batch_size=0 trained to
NaN, describe_device("cuda") on a CPU reported cuda/float16) or hung (evaluate on a callable).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minillm import device as dev
from minillm import settings
from minillm.data import Splits, data_card, load_en_es
from minillm.train import (History, LMBatches, TrainConfig, evaluate, get_lr, make_optimizer,
                           sequential_lm_batches, train)

TOKENS = torch.arange(200) % 7
NAN, INF = float("nan"), float("inf")


def _lm() -> nn.Module:
    return nn.Sequential(nn.Embedding(7, 8), nn.Linear(8, 7))


def _batches():
    return sequential_lm_batches(TOKENS, 8, 4, max_batches=2)


def _endless_but_guarded():
    """An endless sampler that fails the test instead of hanging it if evaluate keeps drawing."""
    sampler, calls = LMBatches(TOKENS, 8, 2, seed=0), [0]

    def draw():
        calls[0] += 1
        if calls[0] > 100:
            raise AssertionError("evaluate kept drawing batches from an endless source")
        return sampler()

    return draw


PROBES = [
    # TrainConfig: every field
    ("steps=0", lambda: TrainConfig(steps=0), ValueError, r"steps must be >= 1, got 0"),
    ("steps=2.5", lambda: TrainConfig(steps=2.5), TypeError, r"steps must be an int, got 2.5"),
    ("steps=True", lambda: TrainConfig(steps=True), TypeError, r"steps must be an int, got True"),
    ("lr=0", lambda: TrainConfig(lr=0), ValueError, r"lr must be > 0, got 0"),
    ("lr<0", lambda: TrainConfig(lr=-1e-3), ValueError, r"lr must be > 0, got -0.001"),
    ("lr=nan", lambda: TrainConfig(lr=NAN), ValueError, r"lr must be a finite number, got nan"),
    ("lr=inf", lambda: TrainConfig(lr=INF), ValueError, r"lr must be a finite number, got inf"),
    ("lr=str", lambda: TrainConfig(lr="3e-4"), TypeError, r"lr must be a number, got '3e-4'"),
    ("min_lr<0", lambda: TrainConfig(min_lr=-1e-4), ValueError, r"min_lr must be >= 0, got -0.0001"),
    ("min_lr>lr", lambda: TrainConfig(lr=1e-3, min_lr=2e-3),
     ValueError, r"min_lr must be <= 0.001, got 0.002"),
    ("min_lr=nan", lambda: TrainConfig(min_lr=NAN), ValueError, r"min_lr must be a finite number"),
    ("warmup<0", lambda: TrainConfig(warmup_steps=-1), ValueError, r"warmup_steps must be >= 0, got -1"),
    ("warmup=1.5", lambda: TrainConfig(warmup_steps=1.5), TypeError, r"warmup_steps must be an int, got 1.5"),
    ("weight_decay<0", lambda: TrainConfig(weight_decay=-0.1),
     ValueError, r"weight_decay must be >= 0, got -0.1"),
    ("weight_decay=nan", lambda: TrainConfig(weight_decay=NAN), ValueError, r"weight_decay must be a finite"),
    ("betas 1 value", lambda: TrainConfig(betas=(0.9,)), TypeError, r"betas must be a pair .* got \(0.9,\)"),
    ("betas str", lambda: TrainConfig(betas="ab"), TypeError, r"betas must be a pair .* got 'ab'"),
    ("beta2=1", lambda: TrainConfig(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be < 1, got 1.0"),
    ("beta1<0", lambda: TrainConfig(betas=(-0.1, 0.9)), ValueError, r"betas\[0\] must be >= 0, got -0.1"),
    ("grad_clip=0", lambda: TrainConfig(grad_clip=0), ValueError, r"grad_clip must be > 0, got 0"),
    ("grad_clip<0", lambda: TrainConfig(grad_clip=-1), ValueError, r"grad_clip must be > 0, got -1"),
    ("grad_clip=nan", lambda: TrainConfig(grad_clip=NAN), ValueError, r"grad_clip must be a finite"),
    ("accum_steps=0", lambda: TrainConfig(accum_steps=0), ValueError, r"accum_steps must be >= 1, got 0"),
    ("eval_every<0", lambda: TrainConfig(eval_every=-1), ValueError, r"eval_every must be >= 0, got -1"),
    ("eval_every=2.0", lambda: TrainConfig(eval_every=2.0), TypeError, r"eval_every must be an int, got 2.0"),
    ("eval_batches=0", lambda: TrainConfig(eval_batches=0), ValueError, r"eval_batches must be >= 1, got 0"),
    ("autocast='bf16'", lambda: TrainConfig(autocast="bf16"),
     ValueError, r"autocast must be 'auto', None .* got 'bf16'"),
    ("autocast=int64", lambda: TrainConfig(autocast=torch.int64),
     ValueError, r"autocast must be .* got torch.int64"),
    ("compile='yes'", lambda: TrainConfig(compile="yes"),
     TypeError, r"compile must be True or False, got 'yes'"),
    ("progress=1", lambda: TrainConfig(progress=1), TypeError, r"progress must be True or False, got 1"),
    # get_lr (the pure schedule)
    ("get_lr step<0", lambda: get_lr(-1, max_lr=1e-3, warmup_steps=0, total_steps=10), ValueError,
     r"step must be >= 0, got -1"),
    ("get_lr max_lr=nan", lambda: get_lr(0, max_lr=NAN, warmup_steps=0, total_steps=10), ValueError,
     r"max_lr must be a finite number, got nan"),
    ("get_lr total=0", lambda: get_lr(0, max_lr=1e-3, warmup_steps=0, total_steps=0), ValueError,
     r"total_steps must be >= 1, got 0"),
    ("get_lr min_lr>max_lr", lambda: get_lr(0, max_lr=1e-3, warmup_steps=0, total_steps=5, min_lr=1.0),
     ValueError, r"min_lr must be <= 0.001, got 1.0"),
    ("get_lr warmup=2.5", lambda: get_lr(0, max_lr=1e-3, warmup_steps=2.5, total_steps=5), TypeError,
     r"warmup_steps must be an int, got 2.5"),
    # LMBatches
    ("LMBatches list", lambda: LMBatches([1, 2, 3], 2, 1),
     TypeError, r"tokens must be a torch.Tensor, got list"),
    ("LMBatches 2-D", lambda: LMBatches(TOKENS.view(20, 10), 4, 2),
     ValueError, r"tokens must have 1 dimensions, got shape \(20, 10\)"),
    ("LMBatches float", lambda: LMBatches(TOKENS.float(), 4, 2),
     TypeError, r"tokens must have a int dtype, got torch.float32"),
    ("LMBatches block=0", lambda: LMBatches(TOKENS, 0, 2), ValueError, r"block_size must be >= 1, got 0"),
    ("LMBatches block<0", lambda: LMBatches(TOKENS, -5, 2), ValueError, r"block_size must be >= 1, got -5"),
    ("LMBatches block=2.0", lambda: LMBatches(TOKENS, 2.0, 2),
     TypeError, r"block_size must be an int, got 2.0"),
    ("LMBatches batch=0", lambda: LMBatches(TOKENS, 8, 0), ValueError, r"batch_size must be >= 1, got 0"),
    ("LMBatches batch<0", lambda: LMBatches(TOKENS, 8, -1), ValueError, r"batch_size must be >= 1, got -1"),
    ("LMBatches seed<0", lambda: LMBatches(TOKENS, 8, 2, seed=-1), ValueError, r"seed must be >= 0, got -1"),
    ("LMBatches short text", lambda: LMBatches(torch.arange(5), 8, 2),
     ValueError, r"more than block_size=8 tokens, got 5"),
    ("LMBatches len=block", lambda: LMBatches(torch.arange(8), 8, 2),
     ValueError, r"more than block_size=8 tokens, got 8"),
    # sequential_lm_batches
    ("seq max_batches=0", lambda: sequential_lm_batches(TOKENS, 8, 4, max_batches=0),
     ValueError, r"max_batches must be >= 1, got 0"),
    ("seq max_batches<0", lambda: sequential_lm_batches(TOKENS, 8, 4, max_batches=-1),
     ValueError, r"max_batches must be >= 1, got -1"),
    ("seq max_batches=1.5", lambda: sequential_lm_batches(TOKENS, 8, 4, max_batches=1.5),
     TypeError, r"max_batches must be an int or None, got 1.5"),
    ("seq batch=0", lambda: sequential_lm_batches(TOKENS, 8, 0),
     ValueError, r"batch_size must be >= 1, got 0"),
    ("seq block=0", lambda: sequential_lm_batches(TOKENS, 0, 4),
     ValueError, r"block_size must be >= 1, got 0"),
    ("seq short text", lambda: sequential_lm_batches(torch.arange(4), 8, 4),
     ValueError, r"more than block_size=8 tokens, got 4"),
    ("seq list", lambda: sequential_lm_batches(list(range(50)), 8, 4),
     TypeError, r"tokens must be a torch.Tensor, got list"),
    # evaluate
    ("evaluate max_batches=0", lambda: evaluate(_lm(), _batches(), max_batches=0),
     ValueError, r"max_batches must be >= 1, got 0"),
    ("evaluate endless callable", lambda: evaluate(_lm(), _endless_but_guarded()),
     ValueError, r"max_batches must be given when batches is a callable"),
    ("evaluate not a model", lambda: evaluate("gpt", _batches()),
     TypeError, r"model must be a torch.nn.Module, got 'gpt'"),
    ("evaluate batches=int", lambda: evaluate(_lm(), 5),
     TypeError, r"batches must be a zero-argument callable .* got 5"),
    ("evaluate batches=tensor", lambda: evaluate(_lm(), TOKENS),
     TypeError, r"batches must be .* got tensor\(shape=\(200,\)"),
    ("evaluate device=cuda", lambda: evaluate(_lm(), _batches(), device="cuda"),
     ValueError, r"'cuda' was requested for device but CUDA is not available"),
    ("evaluate autocast='fp16'", lambda: evaluate(_lm(), _batches(), autocast="fp16"),
     ValueError, r"autocast must be .* got 'fp16'"),
    # make_optimizer
    ("optimizer lr=0", lambda: make_optimizer(_lm(), 0), ValueError, r"lr must be > 0, got 0"),
    ("optimizer lr=nan", lambda: make_optimizer(_lm(), NAN),
     ValueError, r"lr must be a finite number, got nan"),
    ("optimizer lr=str", lambda: make_optimizer(_lm(), "1e-3"),
     TypeError, r"lr must be a number, got '1e-3'"),
    ("optimizer weight_decay<0", lambda: make_optimizer(_lm(), 1e-3, weight_decay=-1),
     ValueError, r"weight_decay must be >= 0, got -1"),
    ("optimizer betas", lambda: make_optimizer(_lm(), 1e-3, betas=(1.5, 0.9)),
     ValueError, r"betas\[0\] must be < 1, got 1.5"),
    ("optimizer model=None", lambda: make_optimizer(None, 1e-3),
     TypeError, r"model must be a torch.nn.Module, got None"),
    ("optimizer frozen model", lambda: make_optimizer(_lm().requires_grad_(False), 1e-3),
     ValueError, r"no trainable parameters"),
    # train
    ("train model=str", lambda: train("gpt", _batches(), steps=1),
     TypeError, r"model must be a torch.nn.Module, got 'gpt'"),
    ("train data=int", lambda: train(_lm(), 5, steps=1),
     TypeError, r"train_data must be a zero-argument callable .* got 5"),
    ("train data=tensor", lambda: train(_lm(), TOKENS, steps=1),
     TypeError, r"train_data must be .* got tensor"),
    ("train val_data=int", lambda: train(_lm(), _batches(), val_data=3, steps=1),
     TypeError, r"val_data must be .* got 3"),
    ("train config=dict", lambda: train(_lm(), _batches(), {"steps": 1}),
     TypeError, r"config must be a TrainConfig or None, got dict"),
    ("train unknown option", lambda: train(_lm(), _batches(), lrr=1e-3),
     TypeError, r"unknown training option\(s\) \['lrr'\]"),
    ("train loss_fn=str", lambda: train(_lm(), _batches(), loss_fn="ce", steps=1),
     TypeError, r"loss_fn must be a callable .* got 'ce'"),
    ("train optimizer=str", lambda: train(_lm(), _batches(), optimizer="adam", steps=1),
     TypeError, r"optimizer must be a torch.optim.Optimizer or None, got str"),
    ("train history=dict", lambda: train(_lm(), _batches(), history={}, steps=1),
     TypeError, r"history must be a History or None, got dict"),
    ("train device=cuda", lambda: train(_lm(), _batches(), device="cuda", steps=1),
     ValueError, r"'cuda' was requested for device but CUDA is not available"),
    ("train steps=0", lambda: train(_lm(), _batches(), steps=0), ValueError, r"steps must be >= 1, got 0"),
    ("train grad_clip=0", lambda: train(_lm(), _batches(), grad_clip=0, steps=1),
     ValueError, r"grad_clip must be > 0, got 0"),
    ("train no batches", lambda: train(_lm(), [], steps=1, progress=False),
     ValueError, r"the training data yielded no batches"),
    # device functions
    ("pick_device('tpu')", lambda: dev.pick_device("tpu"), ValueError, r"unknown device 'tpu'"),
    ("pick_device(3)", lambda: dev.pick_device(3),
     TypeError, r"prefer must be a device name .* got 3 of type int"),
    ("pick_device('cuda')", lambda: dev.pick_device("cuda"),
     ValueError, r"'cuda' was requested for prefer but CUDA is not available"),
    ("pick_device('mps')", lambda: dev.pick_device("mps"),
     ValueError, r"'mps' was requested for prefer but Apple MPS is not available"),
    ("describe_device('cuda')", lambda: dev.describe_device("cuda"),
     ValueError, r"'cuda' was requested .* CUDA is not available"),
    ("describe_device('cuda:1')", lambda: dev.describe_device("cuda:1"),
     ValueError, r"'cuda:1' was requested .* CUDA is not available"),
    ("autocast_dtype('xpu')", lambda: dev.autocast_dtype("xpu"),
     ValueError, r"unknown device 'xpu' for device"),
    ("autocast_dtype(None)", lambda: dev.autocast_dtype(None),
     TypeError, r"device must be a device name .* got None"),
    ("autocast dtype='fp16'", lambda: dev.autocast("cpu", "fp16"),
     TypeError, r"dtype must be 'auto', None or a torch dtype, got 'fp16'"),
    ("seed=1.5", lambda: dev.seed_everything(1.5), TypeError, r"seed must be an int, got 1.5"),
    ("seed=True", lambda: dev.seed_everything(True), TypeError, r"seed must be an int, got True"),
    ("seed=-1", lambda: dev.seed_everything(-1), ValueError, r"seed must be >= 0, got -1"),
    # data loaders
    ("load_en_es(max_words=0)", lambda: load_en_es(max_words=0),
     ValueError, r"max_words must be >= 1, got 0"),
    ("load_en_es(max_words=2.5)", lambda: load_en_es(max_words=2.5),
     TypeError, r"max_words must be an int or None, got 2.5"),
    ("load_en_es(max_words='5')", lambda: load_en_es(max_words="5"),
     TypeError, r"max_words must be an int or None, got '5'"),
    ("load_en_es(max_words=True)", lambda: load_en_es(max_words=True),
     TypeError, r"max_words must be an int or None, got True"),
    ("data_card(3)", lambda: data_card(3), TypeError, r"name must be a str, got 3"),
    ("data_card('imdb')", lambda: data_card("imdb"), ValueError, r"unknown dataset 'imdb'; expected one of"),
    ("Splits['dev']", lambda: Splits("a", "b", "c")["dev"], KeyError, r"unknown split 'dev'"),
    ("Splits[0]", lambda: Splits("a", "b", "c")[0], KeyError, r"unknown split 0"),
]


@pytest.fixture
def cpu_only(monkeypatch):
    """The probes assume a machine without CUDA or MPS, wherever they run."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    monkeypatch.delenv("MINILLM_DEVICE", raising=False)


@pytest.mark.parametrize("name, probe, error, message", PROBES, ids=[p[0] for p in PROBES])
def test_bad_input_is_a_clear_error(cpu_only, name, probe, error, message):
    with pytest.raises(error, match=message):
        probe()


def test_probe_table_covers_every_entry_point():
    names = " ".join(p[0] for p in PROBES)
    for entry in ("steps", "lr", "min_lr", "warmup", "weight_decay", "betas", "grad_clip", "accum_steps",
                  "eval_every", "eval_batches", "autocast", "compile", "progress", "get_lr", "LMBatches", "seq ",
                  "evaluate", "optimizer", "train", "pick_device", "describe_device", "autocast_dtype",
                  "seed", "load_en_es", "data_card", "Splits"):
        assert entry in names, entry
    assert len(PROBES) >= 100


@pytest.mark.parametrize("value", ["2", "ture", "enabled"])
def test_a_mistyped_switch_is_an_error_not_off(monkeypatch, value):
    monkeypatch.setenv("MINILLM_QUICK", value)
    with pytest.raises(ValueError, match=rf"MINILLM_QUICK={value!r} is not a switch value"):
        settings.quick_mode()
    for off in ("", "0", "off", "False"):
        monkeypatch.setenv("MINILLM_QUICK", off)
        assert settings.quick_mode() is False
    monkeypatch.setenv("MINILLM_QUICK", "Yes")
    assert settings.quick_mode() is True


def test_an_unknown_minillm_device_variable_is_named(monkeypatch):
    monkeypatch.setenv("MINILLM_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"unknown device 'gpu' for \$MINILLM_DEVICE"):
        dev.pick_device()


def test_evaluate_on_an_endless_source_returns_or_refuses_without_drawing_forever():
    calls = {"n": 0}
    sampler = LMBatches(TOKENS, 8, 2, seed=0)

    def endless():
        calls["n"] += 1
        if calls["n"] > 100:  # the old code drew batches forever
            raise AssertionError("evaluate kept drawing batches from an endless source")
        return sampler()

    with pytest.raises(ValueError, match="max_batches must be given"):
        evaluate(_lm(), endless)
    assert calls["n"] == 0
    loss = evaluate(_lm(), endless, max_batches=3, autocast=None)
    assert calls["n"] == 3 and math.isfinite(loss)


def test_max_batches_limits_and_none_means_all():
    full = sequential_lm_batches(TOKENS, 8, 4)
    assert len(full) == math.ceil(((len(TOKENS) - 1) // 8) / 4)
    assert len(sequential_lm_batches(TOKENS, 8, 4, max_batches=2)) == 2
    model = _lm()
    one = evaluate(model, full, max_batches=1, autocast=None)
    first_only = evaluate(model, full[:1], autocast=None)
    assert one == first_only


def test_valid_configs_still_train_and_clip():
    """The checks refuse only bad values: fractional clip, zero decay, min_lr == lr, lists for betas."""
    cfg = TrainConfig(steps=3, lr=1e-2, min_lr=1e-2, weight_decay=0.0, grad_clip=0.5, betas=[0.9, 0.99],
                      warmup_steps=0, eval_every=0, autocast=None, progress=False)
    assert cfg.betas == (0.9, 0.99)
    hist = train(_lm(), _batches(), cfg)
    assert len(hist.train_loss) == 3 and all(lr == 1e-2 for lr in hist.lr)
    assert isinstance(hist, History)
