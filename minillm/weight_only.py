"""Weight-only quantization for fast batch-1 decoding: int8 per channel, int4 per group.

Generating one token at a time multiplies every weight matrix by a single vector: about two
floating-point operations per weight, and every weight must come from memory. At batch 1 the speed
is set by how many *bytes* the weights take, not by arithmetic. Weight-only quantization stores the
weights in fewer bits, keeps the activations in floating point, and de-quantizes inside the matrix
multiplication kernel, where each weight is read once (gpt-fast, torchao's ``int8_weight_only`` and
``int4_weight_only``, llama.cpp's Q8_0/Q4_1 all work this way).

* **int8, symmetric, per output channel**: row n of W (N, K) gets one scale ``s_n = max|W_n| / 127``
  and ``q = round(W / s_n)`` in [-127, 127]; value = ``q · s_n``. 8 bits per weight (+ one float per row).
* **int4, asymmetric, per group** (the idea of GGUF's Q4_1, :mod:`minillm.gguf`): every group of
  ``group_size`` consecutive weights of a row gets a scale ``s = (max - min) / 15`` and its minimum
  m; ``q = round((W - m) / s)`` in 0..15, value = ``q · s + m``. Two codes per byte, the first in
  the high nibble (as :mod:`minillm.quant`'s NF4). With a 16-bit scale and zero per group (what the
  layer keeps) that is 4 + 32/g bits per weight: 5 for g = 32, as Q4_1.

Rounding to the nearest level makes every de-quantized weight at most half a step from the original:
``|W - Ŵ| ≤ s / 2``.

The layers :class:`Int8Linear` and :class:`Int4Linear` run torch's CPU kernels, which read the
integer codes directly: ``torch._weight_int8pack_mm(x (M, K), q int8 (N, K), scales (N,))`` and
``torch._weight_int4pack_mm_for_cpu(x (M, K), packed, group_size, scales_and_zeros (K/g, N, 2))``
after ``torch._convert_weight_to_int4pack_for_cpu(q int32 (N, K) in 0..15, 1)``. What experiments with
torch 2.13 showed (they are private functions without documentation):

* x must be 2-D and fp32, fp16 or bf16, and the scales must have the *same* dtype as x;
* the int4 kernel de-quantizes as ``(q - 8) · scale + zero`` ("zero" is the value of the middle level
  8, i.e. ``zero = m + 8 s``), accepts group sizes 32, 64, 128 and 256 only, K divisible by the group
  size and N divisible by 16; the packed weight is uint8 (N, K/2) in a tiled order that depends on the
  CPU's instruction set (rows side by side, not the row-major order above);
* on an AVX-512 CPU only the **bf16** versions are vectorized: with fp32 (or fp16) activations both
  kernels run a scalar loop about 10× slower than fp32 ``F.linear``, with bf16 they beat it.

So the layers cast the activations to ``compute_dtype`` (default bf16) for the kernel and the result
back to the input's dtype: the residual stream, norms and attention stay in fp32, only the quantized
matrix products see bf16 inputs (and return bf16-rounded outputs). ``compute_dtype=torch.float32``
gives fp32 arithmetic at the scalar kernels' speed. Where a kernel is missing or fails a small check
on first use (another torch version, another CPU), the layer runs its slow twin instead —
de-quantize the weight, then ``F.linear`` — and says so in its repr (``fused=False``). Every layer
also runs the slow twin on request (:meth:`Int8Linear.forward_reference`, or ``use_reference=True``):
the tests hold the kernels to it. The layers are for inference only (the kernels have no gradients).

Shape letters: N out_features, K in_features, M input rows (batch · tokens), g group size, G = K / g.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_choice, check_int, check_tensor, describe

__all__ = ["quantize_int8", "dequantize_int8", "quantize_int4", "dequantize_int4", "Int8Linear",
           "Int4Linear", "quantize_weights", "weight_bytes", "perplexity"]

INT4_KERNEL_GROUP_SIZES = (32, 64, 128, 256)  # what _weight_int4pack_mm_for_cpu accepts
COMPUTE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)  # what both kernels accept


def _check_weight(w: torch.Tensor) -> torch.Tensor:
    w = check_tensor("w", w, ndim=2, dtype_kind="float")
    if w.numel() == 0:
        raise ValueError(f"w must hold at least one value, got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"w must be finite to be quantized, got {describe(w)} with inf or NaN")
    return w.detach().float()  # float32 holds fp16/bf16 values exactly


def _safe(scale: torch.Tensor) -> torch.Tensor:
    """The scale to divide by: 1 where it is 0 (an all-zero row or a constant group: codes 0)."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


# ---------------------------------------------------------------------------------------------
# The formats: quantize and de-quantize


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``(q int8 (N, K), scales float32 (N,))`` with
    ``scales = max|row| / 127`` and ``q = round(w / scale)`` in [-127, 127].

    Raises TypeError for a non-tensor or a non-float dtype, ValueError for a weight that is not
    2-D (N, K), is empty or holds inf/NaN.
    """
    w = _check_weight(w)
    scales = w.abs().amax(dim=1) / 127  # (N,)
    q = torch.round(w / _safe(scales).unsqueeze(1)).clamp_(-127, 127).to(torch.int8)  # (N, K)
    return q, scales


def _check_int8(q: torch.Tensor, scales: torch.Tensor) -> None:
    check_tensor("q", q, ndim=2)
    if q.dtype != torch.int8:
        raise TypeError(f"q must be int8 (from quantize_int8), got {q.dtype}")
    check_tensor("scales", scales, ndim=1, dtype_kind="float")
    if scales.numel() != q.size(0):
        raise ValueError(f"scales must hold one value per row of q ({q.size(0)}), got {scales.numel()}")


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """``q · scale`` of its row (float32 math), (N, K) in ``dtype``."""
    _check_int8(q, scales)
    return (q.float() * scales.float().unsqueeze(1)).to(dtype)


def _check_group_size(group_size: int, K: int) -> int:
    group_size = check_int("group_size", group_size, low=2)
    if group_size % 2:
        raise ValueError(f"group_size must be even (two 4-bit codes per byte), got {group_size}")
    if K % group_size:
        raise ValueError(f"in_features K={K} must be divisible by group_size={group_size} "
                         f"(every group holds group_size weights of one row)")
    return group_size


def quantize_int4(w: torch.Tensor, group_size: int = 32
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise 4-bit (Q4_1's idea): ``(codes uint8 (N, K/2), scales (N, G), mins (N, G))``,
    float32 scales and minima, G = K / group_size.

    Each group of ``group_size`` consecutive weights of a row gets ``scale = (max - min) / 15`` and
    its ``min``; code ``q = round((w - min) / scale)`` in 0..15 and value = ``q · scale + min``. Codes
    2j and 2j + 1 of a row share byte j, the first in the high nibble.

    Raises TypeError/ValueError as :func:`quantize_int8`, and ValueError for a group size that is
    odd, below 2, or does not divide K.
    """
    w = _check_weight(w)
    N, K = w.shape
    group_size = _check_group_size(group_size, K)
    groups = w.view(N, K // group_size, group_size)  # (N, G, g)
    mins = groups.amin(dim=2)  # (N, G)
    scales = (groups.amax(dim=2) - mins) / 15  # (N, G)
    q = torch.round((groups - mins.unsqueeze(2)) / _safe(scales).unsqueeze(2)).clamp_(0, 15)
    q = q.to(torch.uint8).view(N, K)  # (N, K) codes 0..15
    return (q[:, 0::2] << 4) | q[:, 1::2], scales, mins  # codes (N, K/2)


def _check_int4(codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor) -> None:
    check_tensor("codes", codes, ndim=2)
    if codes.dtype != torch.uint8:
        raise TypeError(f"codes must be uint8 (from quantize_int4), got {codes.dtype}")
    N, K = codes.size(0), 2 * codes.size(1)
    for name, t in (("scales", scales), ("mins", mins)):
        check_tensor(name, t, ndim=2, dtype_kind="float")
        if t.size(0) != N or t.size(1) == 0 or K % t.size(1):
            raise ValueError(f"{name} must have shape (N={N}, G) with G dividing K={K} (one value "
                             f"per group of a row), got {tuple(t.shape)}")
    if scales.shape != mins.shape:
        raise ValueError(f"scales and mins must have the same shape, got {tuple(scales.shape)} "
                         f"and {tuple(mins.shape)}")


def _unpack_int4(codes: torch.Tensor) -> torch.Tensor:
    """uint8 (N, K/2) → int64 codes (N, K), the high nibble first."""
    c = codes.long()
    return torch.stack([c >> 4, c & 0xF], dim=2).flatten(1)  # (N, K/2, 2) → (N, K)


def dequantize_int4(codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``q · scale + min`` of its group (float32 math), (N, K) in ``dtype``; the group size is
    K / G, read off the shapes."""
    _check_int4(codes, scales, mins)
    N, K, G = codes.size(0), 2 * codes.size(1), scales.size(1)
    q = _unpack_int4(codes).float().view(N, G, K // G)  # (N, G, g)
    w = q * scales.float().unsqueeze(2) + mins.float().unsqueeze(2)
    return w.view(N, K).to(dtype)


# ---------------------------------------------------------------------------------------------
# Does a fused kernel work here? One small check per (kernel, dtype), then cached


def _int8_kernel(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return torch._weight_int8pack_mm(x, q, scales)  # (M, K) · (N, K)ᵀ, per-row scale → (M, N)


def _int4_kernel(x: torch.Tensor, packed: torch.Tensor, group_size: int,
                 scales_and_zeros: torch.Tensor) -> torch.Tensor:
    return torch._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)  # (M, N)


def _int4_pack(q: torch.Tensor) -> torch.Tensor:
    """Codes (N, K) 0..15 → the CPU kernel's packed uint8 (N, K/2) (tiled, CPU-dependent order)."""
    return torch._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)


@functools.lru_cache(maxsize=None)
def _kernel_works(bits: int, dtype: torch.dtype) -> bool:
    """Whether this torch and CPU run the fused ``bits``-bit kernel in ``dtype`` and match the
    slow twin on a small random problem (N=32, K=64, M=3)."""
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(32, 64, generator=g), torch.randn(3, 64, generator=g).to(dtype)
    try:
        if bits == 8:
            q, s = quantize_int8(w)
            y = _int8_kernel(x, q, s.to(dtype))
            ref = F.linear(x.float(), dequantize_int8(q, s.to(dtype).float()))
        else:
            codes, s, m = quantize_int4(w, 32)
            sz = _scales_and_zeros(s, m, dtype)
            y = _int4_kernel(x, _int4_pack(_unpack_int4(codes)), 32, sz)
            ref = F.linear(x.float(), _dequantize_kernel_form(_unpack_int4(codes), sz, 32))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # a bf16/fp16 output is rounded to 8/11 bits
    return y.shape == ref.shape and bool(torch.allclose(y.float(), ref, rtol=tol, atol=tol))


# ---------------------------------------------------------------------------------------------
# The layers


def _check_compute_dtype(compute_dtype: torch.dtype) -> torch.dtype:
    return check_choice("compute_dtype", compute_dtype, COMPUTE_DTYPES)


def _check_linear(linear: nn.Module) -> nn.Linear:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    return linear


def _frozen_bias(bias: torch.Tensor | None, N: int) -> nn.Parameter | None:
    if bias is None:
        return None
    check_tensor("bias", bias, ndim=1, dtype_kind="float")
    if bias.numel() != N:
        raise ValueError(f"bias must hold out_features={N} values, got {bias.numel()}")
    return nn.Parameter(bias.detach().clone(), requires_grad=False)


class _WeightOnlyLinear(nn.Module):
    """What both layers share: the input checks, flattening to (M, K) for the kernel, the casts to
    and from ``compute_dtype``, the bias, and the switch to the slow twin."""

    use_reference = False  # True: every forward runs forward_reference (the slow twin)

    def _kernel(self, x2: torch.Tensor) -> torch.Tensor:  # (M, K) in compute_dtype → (M, N)
        raise NotImplementedError

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def _check_input(self, x: torch.Tensor) -> None:
        check_tensor("x", x, dtype_kind="float")
        if x.dim() == 0 or x.size(-1) != self.in_features:
            raise ValueError(f"x must have shape (..., in_features={self.in_features}), got "
                             f"{tuple(x.shape)}")

    def _finish(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)  # (..., N)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (..., K) → (..., N)
        self._check_input(x)
        if self.use_reference or not self.fused or x.numel() == 0 or x.device.type != "cpu":
            return self.forward_reference(x)
        x2 = x.reshape(-1, self.in_features).to(self.compute_dtype).contiguous()  # (M, K)
        return self._finish(self._kernel(x2), x)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The slow twin: de-quantize the weight, then ``F.linear``, in float32 with the fused
        path's roundings (input and scales in ``compute_dtype``, the product rounded to it)."""
        self._check_input(x)
        x2 = x.reshape(-1, self.in_features).to(self.compute_dtype).float()  # (M, K)
        y = F.linear(x2, self.dequantized_weight(torch.float32)).to(self.compute_dtype)  # (M, N)
        return self._finish(y, x)

    def extra_repr(self) -> str:
        bits = 8 * sum(t.nelement() * t.element_size() for t in self.buffers()) / (
            self.in_features * self.out_features)
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, compute_dtype={self.compute_dtype}, "
                f"fused={self.fused}, bits_per_weight={bits:.3f}")


class Int8Linear(_WeightOnlyLinear):
    """An inference-only linear layer with int8 weights (N, K), one float32 scale per output row
    (:func:`quantize_int8`), run by ``torch._weight_int8pack_mm`` (see the module docstring), or by
    its slow twin where that kernel does not work. Build one with :meth:`from_linear`."""

    def __init__(self, q: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None = None, *,
                 compute_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        _check_int8(q, scales)
        self.out_features, self.in_features = q.shape
        self.compute_dtype = _check_compute_dtype(compute_dtype)
        self.register_buffer("qweight", q.contiguous())  # (N, K) int8
        self.register_buffer("scales", scales.float().contiguous())  # (N,)
        self._kernel_scales = self.scales.to(self.compute_dtype)  # cast once, not on every decode step
        self.bias = _frozen_bias(bias, self.out_features)
        self.fused = _kernel_works(8, self.compute_dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, compute_dtype: torch.dtype = torch.bfloat16
                    ) -> "Int8Linear":
        """Quantize ``linear``'s weight (its bias is kept in full precision, frozen)."""
        linear = _check_linear(linear)
        return cls(*quantize_int8(linear.weight), linear.bias, compute_dtype=compute_dtype)

    def _kernel(self, x2: torch.Tensor) -> torch.Tensor:
        return _int8_kernel(x2, self.qweight, self._kernel_scales)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight the layer computes with, (N, K): codes times scales rounded to compute_dtype."""
        return dequantize_int8(self.qweight, self.scales.to(self.compute_dtype).float(), dtype)


def _scales_and_zeros(scales: torch.Tensor, mins: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(N, G) scales and minima → the int4 kernel's (G, N, 2): [scale, zero = min + 8 · scale]."""
    return torch.stack([scales.t(), (mins + 8 * scales).t()], dim=2).to(dtype).contiguous()


def _dequantize_kernel_form(q: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int
                            ) -> torch.Tensor:
    """Codes (N, K) and the kernel's (G, N, 2) → float32 (N, K) = (q − 8) · scale + zero."""
    N, K = q.shape
    sz = scales_and_zeros.float().permute(1, 0, 2)  # (N, G, 2)
    q = q.float().view(N, K // group_size, group_size)  # (N, G, g)
    return ((q - 8) * sz[..., :1] + sz[..., 1:]).view(N, K)


class Int4Linear(_WeightOnlyLinear):
    """An inference-only linear layer with group-wise 4-bit weights (:func:`quantize_int4`), run by
    ``torch._weight_int4pack_mm_for_cpu`` (see the module docstring), or by its slow twin.

    The scales and minima are kept as the kernel wants them, ``scales_and_zeros`` (G, N, 2) in
    ``compute_dtype`` with zero = min + 8 · scale. The codes are kept once, in the format the forward
    reads: the kernel's packed uint8 (N, K/2), whose order depends on the CPU (``layout="cpu_kernel"``),
    or, where the kernel cannot run (N not a multiple of 16, a group size other than 32/64/128/256,
    a failed check), :func:`quantize_int4`'s row-major packing (``layout="rows"``). To de-quantize
    the kernel's layout without knowing it, the kernel itself multiplies the identity matrix with
    scale 1 and zero 8, which returns the codes exactly (as torchao does); the tests compare the layer
    with an independent twin built from :func:`quantize_int4` and :func:`dequantize_int4`.
    Because of that layout the layer is for the process that built it: to save a model, save the
    float weights and quantize again after loading.
    """

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, mins: torch.Tensor,
                 bias: torch.Tensor | None = None, *, compute_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        _check_int4(codes, scales, mins)
        self.out_features, self.in_features = N, K = codes.size(0), 2 * codes.size(1)
        self.group_size = K // scales.size(1)
        self.compute_dtype = _check_compute_dtype(compute_dtype)
        self.fused = (N % 16 == 0 and self.group_size in INT4_KERNEL_GROUP_SIZES
                      and _kernel_works(4, self.compute_dtype))
        self.layout = "cpu_kernel" if self.fused else "rows"
        q = _unpack_int4(codes)  # (N, K) 0..15
        self.register_buffer("qweight", _int4_pack(q) if self.fused else codes.contiguous())
        self.register_buffer("scales_and_zeros",
                             _scales_and_zeros(scales.float(), mins.float(), self.compute_dtype))
        self.bias = _frozen_bias(bias, N)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32, *,
                    compute_dtype: torch.dtype = torch.bfloat16) -> "Int4Linear":
        """Quantize ``linear``'s weight in groups of ``group_size`` (its bias is kept, frozen)."""
        linear = _check_linear(linear)
        return cls(*quantize_int4(linear.weight, group_size), linear.bias, compute_dtype=compute_dtype)

    def _kernel(self, x2: torch.Tensor) -> torch.Tensor:
        return _int4_kernel(x2, self.qweight, self.group_size, self.scales_and_zeros)

    def codes(self) -> torch.Tensor:
        """The 4-bit codes, int64 (N, K), unpacked from whichever layout the layer holds."""
        if self.layout == "rows":
            return _unpack_int4(self.qweight)
        eye = torch.eye(self.in_features, dtype=self.compute_dtype, device=self.qweight.device)
        unit = torch.tensor([1.0, 8.0], dtype=self.compute_dtype, device=self.qweight.device)
        unit = unit.expand(self.in_features // self.group_size, self.out_features, 2).contiguous()
        return _int4_kernel(eye, self.qweight, self.group_size, unit).t().round().long()  # (N, K)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight the layer computes with, (N, K): (q − 8) · scale + zero, scales in compute_dtype."""
        return _dequantize_kernel_form(self.codes(), self.scales_and_zeros, self.group_size).to(dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, group_size={self.group_size}, layout={self.layout!r}"


# ---------------------------------------------------------------------------------------------
# Whole models


def _matches(name: str, names: Sequence[str]) -> bool:
    return any(name == n or name.endswith("." + n) for n in names)


def quantize_weights(model: nn.Module, bits: int = 8, *, group_size: int = 32,
                     skip: Sequence[str] = (), target: Callable[[str, nn.Module], bool] | None = None,
                     compute_dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers by :class:`Int8Linear` or :class:`Int4Linear` in
    place and return it (for inference: the new layers have no gradients).

    Args:
        model: any ``nn.Module``.
        bits: 8 (per-channel int8) or 4 (group-wise int4).
        group_size: weights per int4 group (32 as in Q4_1; the CPU kernel takes 32, 64, 128, 256).
        skip: names (or ``.``-suffixes of names) left in full precision.
        target: ``target(name, module) -> bool`` picks layers among the linear ones (default: all).
        compute_dtype: the activations' dtype inside the kernels (bf16: see the module docstring).

    A head tied to the input embedding (SmolLM2) is quantized into its own copy while the embedding
    keeps the float matrix: a token's embedding is one row, read once, but the head reads every row
    for every token. Raises ValueError when no layer is chosen or, for int4, a chosen layer's
    in_features is not divisible by ``group_size`` (the message names the layer).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    bits = check_choice("bits", bits, (8, 4))
    if isinstance(skip, str):
        raise TypeError(f"skip must be a sequence of module names, got the string {skip!r}")
    _check_compute_dtype(compute_dtype)
    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen = [(n, m) for n, m in linear if not _matches(n, skip) and (target is None or target(n, m))]
    if not chosen:
        raise ValueError(f"no linear layer of {type(model).__name__} was chosen (skip={list(skip)}, "
                         f"target={target!r}); its linear layers are e.g. {[n for n, _ in linear][:8]}")
    if bits == 4:
        group_size = check_int("group_size", group_size, low=2)
        for name, module in chosen:
            if module.in_features % group_size:
                raise ValueError(f"{name!r} has in_features={module.in_features}, not divisible by "
                                 f"group_size={group_size}: choose another group size or add "
                                 f"{name!r} to skip")
    for name, module in chosen:
        new = (Int8Linear.from_linear(module, compute_dtype=compute_dtype) if bits == 8 else
               Int4Linear.from_linear(module, group_size, compute_dtype=compute_dtype))
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, new)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers of ``model``, each storage counted once (a tied matrix
    once): the memory its weights take, float or quantized."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


@torch.inference_mode()
def perplexity(model: nn.Module, input_ids: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) of a causal LM ``model(ids) -> logits (B, T, V)`` on
    ``input_ids`` (B, T ≥ 2), in one forward pass: the quality a quantization costs."""
    check_tensor("input_ids", input_ids, ndim=2, dtype_kind="int")
    if input_ids.size(1) < 2:
        raise ValueError(f"input_ids needs at least 2 tokens per row, got shape {tuple(input_ids.shape)}")
    logits = model(input_ids)[:, :-1].float()  # (B, T-1, V): predictions of tokens 1..T-1
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), input_ids[:, 1:].reshape(-1))
    return math.exp(float(loss))
