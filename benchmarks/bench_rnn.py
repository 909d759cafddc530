"""Recurrent layers: the teaching LSTM/GRU (Python loop over time) versus the fused torch modules,
and bfloat16 autocast versus fp32 for a character-LSTM training step.

All rows time one forward + backward pass at the same sizes: batch 32, 128 steps, input 64,
hidden 256, 2 layers (the chapter-5 character model's shapes). The teaching layers get the torch
modules' weights and their outputs are asserted allclose first; the bf16 row checks that its loss
is within bf16 rounding of the fp32 loss. Timings are paired and alternating (common.py).
"""

from __future__ import annotations

import torch
from torch import nn

from common import Row, assert_same_output, paired_timing
from minillm.models.char_rnn import CharRNN, CharRNNConfig
from minillm.rnn import GRUTeaching, LSTMTeaching
from minillm.train import lm_loss

B, T, I, H, L = 32, 128, 64, 256, 2


def _fwd_bwd(model: nn.Module, x: torch.Tensor):
    def step():
        model.zero_grad(set_to_none=True)
        out, _ = model(x)
        out.sum().backward()
    return step


def _teaching_vs_torch(ours_cls, ref_cls, name: str) -> Row:
    torch.manual_seed(0)
    ref = ref_cls(I, H, num_layers=L, batch_first=True)
    ours = ours_cls(I, H, num_layers=L, batch_first=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(B, T, I)
    with torch.no_grad():
        assert_same_output(ours(x)[0], ref(x)[0], f"{name} outputs vs torch", atol=1e-5)
    p = paired_timing(_fwd_bwd(ours, x), _fwd_bwd(ref, x), repeats=3)
    return Row.timed(f"{name} fwd+bwd, B{B} T{T} H{H} L{L}, fp32", p, unit="ms", scale=1e3,
                     reference_name=f"torch.nn.{ref_cls.__name__}, same weights")


def _autocast_row() -> Row | None:
    from minillm.device import autocast_dtype

    dtype = autocast_dtype("cpu")
    if dtype is None:
        return None
    torch.manual_seed(0)
    model = CharRNN(CharRNNConfig(vocab_size=82, n_embd=I, hidden_size=H, num_layers=L))
    x = torch.randint(0, 82, (B, T))
    y = torch.randint(0, 82, (B, T))

    def step(amp):
        def run():
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                loss = lm_loss(model, (x, y))
            loss.backward()
            return loss.detach()
        return run

    assert_same_output(step(dtype)(), step(None)(), "LSTM loss, autocast vs fp32", atol=2e-2)
    p = paired_timing(step(dtype), step(None), repeats=3)
    return Row.timed(f"CharRNN LSTM train step, {str(dtype).replace('torch.', '')} autocast", p,
                     unit="ms", scale=1e3, reference_name="same model and batch in fp32")


def run() -> list[Row]:
    rows = [_teaching_vs_torch(LSTMTeaching, nn.LSTM, "LSTMTeaching"),
            _teaching_vs_torch(GRUTeaching, nn.GRU, "GRUTeaching")]
    amp = _autocast_row()
    if amp is not None:
        rows.append(amp)
    return rows
