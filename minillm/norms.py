"""Normalisation layers shared by the models that do not use LayerNorm (T5, the Llama family).

:class:`RMSNorm` (Zhang & Sennrich, 2019, "Root Mean Square Layer Normalization") rescales each
vector by the root mean square of its entries and a learned per-channel gain: no mean is subtracted
and there is no bias, so it costs less than LayerNorm and behaves the same in practice.
"""

from __future__ import annotations

import torch
from torch import nn

from .validation import check_bool, check_float, check_int


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x²) + eps)`` over the last dimension, with Hugging Face's numerics.

    The mean of squares is computed in fp32 whatever the input dtype. Two casting conventions exist
    and both are offered:

    - T5 (``T5LayerNorm``, the default): the fp32 statistic multiplies ``x`` (so the product is
      fp32), cast to the weight's dtype only when the weight is fp16/bf16, then times ``weight``;
    - Llama (``LlamaRMSNorm``, ``cast_to_input=True``): ``x`` is normalised in fp32, cast back to the
      input's dtype, then times ``weight``.

    In fp32 both are the same function. The gain is named ``weight`` (starts at 1) and the epsilon
    ``variance_epsilon``, as in Hugging Face, so state dicts load key for key.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, *, cast_to_input: bool = False):
        super().__init__()
        hidden_size = check_int("hidden_size", hidden_size, low=1)
        self.variance_epsilon = check_float("eps", eps, low=0, low_inclusive=False)
        self.cast_to_input = check_bool("cast_to_input", cast_to_input)
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., hidden_size) → same shape."""
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)  # (..., 1) always fp32
        if self.cast_to_input:
            return self.weight * (x.to(torch.float32) * torch.rsqrt(variance + self.variance_epsilon)
                                  ).to(x.dtype)
        x = x * torch.rsqrt(variance + self.variance_epsilon)  # promoted to fp32
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.variance_epsilon}" + (
            ", cast_to_input=True" if self.cast_to_input else "")


__all__ = ["RMSNorm"]
