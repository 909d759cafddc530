"""Chapter 16 (memory vs time): activation checkpointing in GPT and Llama gives the same loss and
gradients as the plain forward and is used only when training; minillm.efficiency counts saved
activations honestly (views once, parameters apart), checkpointing / accumulation / bf16 shrink
them by the expected factors, the accumulated update equals the full-batch one, fp16 with a
GradScaler trains to finite weights, fp16 loses small gradients that bf16 keeps, and bad settings
raise errors that name the bad value."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import minillm.models.gpt as gpt_module
import minillm.models.llama as llama_module
from minillm.efficiency import (SavedTensorCounter, StepMeasurement, StepSetting, default_settings,
                                format_table, gradient_underflow, make_scaler, measure_step,
                                plot_efficiency, split_batch, state_bytes, sweep, train_step)
from minillm.models.gpt import GPT, GPTConfig, KVCache
from minillm.models.llama import LlamaConfig, LlamaForCausalLM
from minillm.train import lm_loss

B, T = 8, 32


def gpt(n_layer: int = 4, **kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.tiny(n_layer=n_layer, **kw)).train()


def llama(n_layer: int = 4) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig.tiny(num_hidden_layers=n_layer)).train()


def batch(vocab: int, b: int = B, t: int = T, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(vocab, (b, t + 1), generator=torch.Generator().manual_seed(seed))
    return ids[:, :-1], ids[:, 1:]  # (b, t) each


def loss_and_grads(model: nn.Module, data) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(2)  # the same dropout masks on both sides
    loss = lm_loss(model, data)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in model.parameters()]


def activation_bytes(model: nn.Module, data, setting: StepSetting) -> int:
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    _, nbytes = train_step(model, opt, data, setting, scaler=make_scaler(setting, "cpu"),
                           count_activations=True)
    return nbytes


# ---------------------------------------------------------------- activation checkpointing


@pytest.mark.parametrize("make, vocab", [(lambda: gpt(dropout=0.1), 65), (llama, 256)],
                         ids=["gpt-with-dropout", "llama"])
def test_checkpointing_gives_the_same_loss_and_gradients(make, vocab):
    model, data = make(), batch(vocab)
    loss, grads = loss_and_grads(model, data)
    model.gradient_checkpointing_enable()
    assert model.gradient_checkpointing
    loss_ckpt, grads_ckpt = loss_and_grads(model, data)
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    for g, gc in zip(grads, grads_ckpt):
        torch.testing.assert_close(gc, g, rtol=1e-5, atol=1e-7)
    model.gradient_checkpointing_disable()
    assert not model.gradient_checkpointing


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_checkpointing_only_in_training_with_gradients_and_no_cache(family, monkeypatch):
    module = gpt_module if family == "gpt" else llama_module
    calls = []

    def counting_checkpoint(fn, *args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return torch.utils.checkpoint.checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(module, "checkpoint", counting_checkpoint)
    model = gpt() if family == "gpt" else llama()
    x, _ = batch(model.config.vocab_size)
    model.gradient_checkpointing_enable()
    model(x)
    assert calls == [False] * 4  # once per block, non-reentrant
    with torch.no_grad():
        model(x)
    model.eval()
    model(x)
    prompt = x[:2, :5]
    out = model.generate(prompt, 4)  # inference mode and a KV cache
    assert len(calls) == 4
    model.gradient_checkpointing_disable()
    assert torch.equal(out, model.generate(prompt, 4))
    if family == "gpt":  # a KV cache in training mode with gradients: never recomputed
        model.train()
        cache = KVCache(model.config, 2)
        model.gradient_checkpointing_enable()
        model(prompt, past_key_values=cache)
        assert len(calls) == 4 and cache.length == 5


def test_llama_flag_is_settable_and_checked():
    model = llama(2)
    model.gradient_checkpointing = True
    assert model.model.gradient_checkpointing is True
    with pytest.raises(TypeError, match="gradient_checkpointing must be True or False"):
        model.gradient_checkpointing = "yes"


# ---------------------------------------------------------------- counting saved activations


def test_counter_counts_a_shared_storage_once_and_skips_parameters():
    w = nn.Parameter(torch.randn(100))
    x = torch.randn(100, requires_grad=True)
    with SavedTensorCounter(exclude=[w]) as saved:
        y = x * 2  # mul by a constant saves nothing from x
        z = (y[:50] * y[50:]).sum() + (w * y).sum()  # two views of y's storage, w, y
    assert saved.nbytes == 100 * 4  # y's storage once; w is a parameter
    assert saved.by_dtype == {torch.float32: 400}
    z.backward()  # the hooks stay attached after the block
    assert x.grad is not None


def test_checkpointing_shrinks_activations_of_a_four_layer_model():
    for model, vocab, C in ((gpt(), 65, 32), (llama(), 256, 64)):
        data = batch(vocab)
        plain = activation_bytes(model, data, StepSetting())
        ckpt = activation_bytes(model, data, StepSetting(checkpointing=True))
        ratio = ckpt / plain
        # measured: GPT 0.12, Llama 0.14 — each block keeps only its (B, T, C) input
        assert ratio < 0.2, (type(model).__name__, ratio)
        assert ckpt >= 4 * B * T * C * 4  # the block inputs are really kept (fp32)


def test_accumulation_divides_activations_by_the_micro_batch_count():
    model, data = gpt(), batch(65)
    plain = activation_bytes(model, data, StepSetting())
    for m in (2, 4, 8):
        ratio = activation_bytes(model, data, StepSetting(micro_batches=m)) / plain
        assert ratio == pytest.approx(1 / m, rel=0.05), (m, ratio)


def test_bf16_halves_the_saved_matmul_outputs():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256, bias=False), nn.Linear(256, 256, bias=False),
                        nn.Linear(256, 64, bias=False))
    x = torch.randn(4096, 64)
    counts = {}
    for dtype in (None, torch.bfloat16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            with SavedTensorCounter(exclude=mlp.parameters()) as saved:
                mlp(x).sum()
        counts[dtype] = saved
    ratio = counts[torch.bfloat16].nbytes / counts[None].nbytes
    # the saved inputs of the three matmuls go from 4 to 2 bytes; the bf16 weight copies add ~4%
    assert 0.5 <= ratio < 0.56, ratio
    assert counts[torch.bfloat16].by_dtype[torch.bfloat16] == counts[torch.bfloat16].nbytes
    # a whole GPT: LayerNorm, softmax and the loss stay fp32, so less than half is saved
    model, data = gpt(), batch(65, b=16, t=32)
    gpt_ratio = (activation_bytes(model, data, StepSetting("bf16"))
                 / activation_bytes(model, data, StepSetting()))
    assert 0.5 < gpt_ratio < 0.75, gpt_ratio


# ---------------------------------------------------------------- the step itself


def test_accumulated_update_equals_the_full_batch_update():
    model, data = gpt(), batch(65)
    after = {}
    for m in (1, 4):
        copy_ = copy.deepcopy(model)
        opt = torch.optim.SGD(copy_.parameters(), lr=0.5)
        loss, _ = train_step(copy_, opt, data, StepSetting(micro_batches=m))
        after[m] = (loss, [p.detach().clone() for p in copy_.parameters()])
    assert after[4][0] == pytest.approx(after[1][0], abs=1e-6)
    moved = max(float((a - p.detach()).abs().max()) for a, p in zip(after[1][1], model.parameters()))
    assert moved > 1e-3  # the step did something
    for a, b in zip(after[1][1], after[4][1]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_fp16_with_grad_scaler_trains_to_finite_weights():
    model, data = gpt(2), batch(65)
    before = [p.detach().clone() for p in model.parameters()]
    setting = StepSetting("fp16", micro_batches=2, checkpointing=True)
    scaler = make_scaler(setting, "cpu")
    assert isinstance(scaler, torch.amp.GradScaler)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss, _ = train_step(model, opt, data, setting, scaler=scaler)
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))  # not all skipped
    assert all(torch.isfinite(torch.tensor(losses))) and scaler.get_scale() > 0


def test_state_bytes_reads_the_tensors():
    model, data = gpt(2), batch(65)
    n = model.num_params()  # the tied matrix once
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert state_bytes(model, opt) == {"parameters": 4 * n, "gradients": 0, "optimizer": 0}
    train_step(model, opt, data)
    sizes = state_bytes(model, opt)
    assert sizes["gradients"] == 4 * n
    n_tensors = len(list(model.parameters()))
    assert sizes["optimizer"] == 8 * n + 4 * n_tensors  # two fp32 moments + a step counter each


# ---------------------------------------------------------------- sweep, table, plot


def test_sweep_rows_table_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    model, data = gpt(), batch(65)
    before = [p.detach().clone() for p in model.parameters()]
    settings = [StepSetting(), StepSetting("bf16", 2, True), StepSetting("fp16")]
    rows = sweep(model, data, settings, rounds=2)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))  # a copy was trained
    assert not model.gradient_checkpointing
    assert [r.setting for r in rows] == settings
    for r in rows:
        assert isinstance(r, StepMeasurement) and len(r.step_seconds) == 2 and r.seconds > 0
        assert r.parameter_bytes == 4 * model.num_params() == r.gradient_bytes
        n_tensors = len(list(model.parameters()))
        assert r.optimizer_bytes == 2 * r.parameter_bytes + 4 * n_tensors  # AdamW's moments + steps
        assert r.total_bytes > r.activation_bytes > 0 and r.cuda_peak_bytes is None
    assert rows[1].activation_bytes < rows[0].activation_bytes / 4
    table = format_table(rows)
    assert table.splitlines()[0].startswith("| setting") and "bf16 ckpt m=2" in table
    assert "1.00x" in table.splitlines()[2]  # the fp32 row is the baseline
    assert "fp16" in format_table(rows, markdown=False)
    ax, bx = plot_efficiency(rows)
    assert len(ax.texts) == 3 and len(bx.patches) == 4 * 3
    one = measure_step(model, data, StepSetting("bf16"), rounds=1)
    assert one.setting.precision == "bf16" and len(one.step_seconds) == 1
    one = measure_step(model, data, StepSetting("fp16"), rounds=1)
    assert one.optimizer_bytes == rows[0].optimizer_bytes  # even if a scaled step was skipped
    assert len(default_settings()) == 12 and default_settings()[0] == StepSetting()


def test_fp16_loses_small_gradients_that_bf16_keeps():
    demo = gradient_underflow()
    assert demo.in_fp16 == 0.0 and demo.in_bf16 == pytest.approx(demo.value, rel=0.01)
    assert demo.fp16_smallest == 2.0 ** -24
    z = demo.zero_fraction
    assert z["fp32"] < 1e-3 and z["bf16"] < 1e-3
    assert z["fp16"] > 0.05  # measured 0.16 with loss_factor 1e-3
    assert z["fp16 + loss scale"] < 1e-3


# ---------------------------------------------------------------- errors


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match=r"precision must be one of .*'fp32'.*got 'fp8'"):
        StepSetting("fp8")
    with pytest.raises(ValueError, match="micro_batches"):
        StepSetting(micro_batches=0)
    with pytest.raises(TypeError, match="checkpointing must be True or False"):
        StepSetting(checkpointing="yes")
    data = batch(65)
    with pytest.raises(ValueError, match=r"micro_batches=3 must divide the batch size B=8"):
        split_batch(data, 3)
    with pytest.raises(TypeError, match="batch must be a tensor or a tuple/list of tensors"):
        split_batch({"x": data[0]}, 2)
    model = gpt(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="precision='fp16' needs a GradScaler"):
        train_step(model, opt, data, StepSetting("fp16"))
    with pytest.raises(ValueError, match="micro_batches=3 must divide"):
        sweep(model, data, [StepSetting(), StepSetting(micro_batches=3)])

    class NoCheckpointing(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(65, 65)

        def forward(self, x):
            return self.emb(x)

    with pytest.raises(TypeError, match=r"checkpointing=True needs .*got NoCheckpointing"):
        sweep(NoCheckpointing(), data, [StepSetting(checkpointing=True)])
    with pytest.raises(TypeError, match="settings must be a non-empty list of StepSetting"):
        sweep(model, data, ["fp32"])
    with pytest.raises(ValueError, match="rounds"):
        sweep(model, data, [StepSetting()], rounds=0)
