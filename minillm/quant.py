"""QLoRA's 4-bit NormalFloat (NF4): block-wise quantization, double quantization, a 4-bit linear.

Dettmers et al. (2023, "QLoRA: Efficient Finetuning of Quantized LLMs") fine-tune a model whose
frozen weights are stored in 4 bits and de-quantized on the fly, with LoRA adapters
(:mod:`minillm.peft`) trained in full precision on top. Three pieces make the 4 bits good enough:

* **NF4**: weights of a trained layer are close to normally distributed, so the 16 levels are not
  evenly spaced but placed at quantiles of N(0, 1), scaled into [-1, 1] (8 positive levels, 7
  negative, and an exact 0). Each level is then used about equally often.
* **Block-wise absmax**: every block of 64 consecutive weights is divided by its largest magnitude,
  so one outlier only spoils its own block; a weight is stored as the index of the nearest level,
  two indices per byte. Value = ``code[index] · absmax``: 4 + 32/64 = 4.5 bits per weight.
* **Double quantization**: the fp32 absmax values themselves are quantized in blocks of 256 (here:
  minus their mean, symmetric int8 with one fp32 scale per block; the paper and bitsandbytes use an
  8-bit float code), which brings the cost to about 4 + 8/64 + 32/(64·256) ≈ 4.127 bits.

Compare GGUF's Q4_1 (:mod:`minillm.gguf`): 32 weights share a scale *and* a minimum and the 16
levels are evenly spaced (affine), 5 bits per weight; NF4 has 64 weights, one absmax, and levels at
normal quantiles. Numerics follow bitsandbytes 0.50 (``quantize_4bit(quant_type="nf4")``): the same
code book bit for bit, the same packing (first value in the high nibble), the same absmax; the
nearest level is found in float64 here, so values that sit on a midpoint to float32 precision may
round the other way there. A weight count that is not a multiple of the block size is padded with
zeros in the last block (as bitsandbytes' short last block, the padding changes no absmax) and
unpadded on de-quantization.

:class:`Linear4bit` subclasses ``nn.Linear`` as bitsandbytes' ``Linear4bit`` does, so that
``minillm.peft.get_peft_model`` wraps it like any linear layer: :func:`quantize_model` followed by
``get_peft_model`` is QLoRA. Its ``weight`` is read-only (the de-quantized weight); to merge an
adapter, de-quantize first with :func:`dequantize_model`.

Shape letters: N weights in a tensor, nb blocks of weights, ns blocks of scales, I in_features,
O out_features, B batch, T tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .validation import check_bool, check_int, check_tensor, describe

NF4_OFFSET = 0.9677083  # outermost quantile: ndtri(offset) ≈ 1.848 σ becomes the level 1.0
__all__ = ["nf4_code_book", "NF4Tensor", "quantize_nf4", "dequantize_nf4", "Linear4bit",
           "quantize_model", "dequantize_model"]


def nf4_code_book() -> torch.Tensor:
    """The 16 NF4 levels (float32, sorted, from -1 to 1 with an exact 0), as QLoRA's appendix lists
    them and bitsandbytes' ``create_normal_map(offset=0.9677083, use_extra_value=True)`` builds them.

    8 positive levels are normal quantiles at 8 evenly spaced probabilities from 0.9677 down to
    0.5 (exclusive), 7 negative ones the same with 7 probabilities, plus 0; divided by the largest.
    The probabilities are float32 and the quantiles float64, as in bitsandbytes (its
    ``torch.linspace`` and scipy's ``norm.ppf``): that reproduces the published values exactly.
    """
    def quantiles(n: int) -> torch.Tensor:
        p = torch.linspace(NF4_OFFSET, 0.5, n + 1)[:-1]  # float32, the last (0.5) would give 0
        return torch.special.ndtri(p.double())

    v = torch.cat([quantiles(8), torch.zeros(1, dtype=torch.float64), -quantiles(7)]).float()
    v = v.sort().values
    return v / v.max()


@dataclass
class NF4Tensor:
    """A tensor in NF4: packed 4-bit level indices plus one scale (absmax) per block of weights."""

    codes: torch.Tensor  # uint8 (ceil(N / 2),): two indices per byte, the first in the high nibble
    absmax: torch.Tensor  # (nb,) float32, or int8 when double-quantized
    shape: torch.Size  # shape of the original tensor
    dtype: torch.dtype  # dtype of the original tensor (what dequantize_nf4 returns)
    block_size: int = 64  # weights per absmax
    absmax_scale: torch.Tensor | None = None  # (ns,) float32: one per block of int8 absmax values
    absmax_mean: torch.Tensor | None = None  # () float32: subtracted before the int8 quantization
    scale_block_size: int = 256  # absmax values per absmax_scale

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nblocks(self) -> int:
        return -(-self.numel // self.block_size)

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    @property
    def nbytes(self) -> int:
        """Bytes of all stored tensors (codes and scales; shape and dtype are not counted)."""
        parts = [self.codes, self.absmax, self.absmax_scale, self.absmax_mean]
        return sum(t.nelement() * t.element_size() for t in parts if t is not None)

    @property
    def bits_per_parameter(self) -> float:
        return 8 * self.nbytes / self.numel

    def indices(self) -> torch.Tensor:
        """The 4-bit level indices, unpacked, int64 (N,)."""
        c = self.codes.long()
        return torch.stack([c >> 4, c & 0xF], dim=1).reshape(-1)[:self.numel]

    def scales(self) -> torch.Tensor:
        """The absmax of every block, float32 (nb,), de-quantized first if double-quantized."""
        if not self.double_quant:
            return self.absmax.float()
        q = F.pad(self.absmax.float(), (0, -self.nblocks % self.scale_block_size))
        q = q.view(-1, self.scale_block_size)  # (ns, 256)
        scale = self.absmax_scale.float().unsqueeze(1) / 127
        return (q * scale).reshape(-1)[:self.nblocks] + self.absmax_mean.float()


def _nearest_level(x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the level of ``code`` (sorted) nearest to each value of ``x``; ties go down."""
    code = code.to(torch.float64)
    midpoints = (code[1:] + code[:-1]) / 2  # (15,): level i wins in (mid[i-1], mid[i]]
    return torch.bucketize(x.to(torch.float64), midpoints)


def _quantize_scales(absmax: torch.Tensor, block: int) -> tuple[torch.Tensor, ...]:
    """Double quantization: (int8 values (nb,), fp32 scales (ns,), fp32 mean ())."""
    mean = absmax.mean()
    centered = F.pad(absmax - mean, (0, -absmax.numel() % block)).view(-1, block)  # (ns, 256)
    scale = centered.abs().amax(dim=1)  # (ns,)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-mean block stores zeros
    q = torch.round(centered / safe.unsqueeze(1) * 127).to(torch.int8)
    return q.reshape(-1)[:absmax.numel()], scale, mean


def quantize_nf4(w: torch.Tensor, block_size: int = 64, *, double_quant: bool = False,
                 scale_block_size: int = 256) -> NF4Tensor:
    """Quantize ``w`` to NF4 in blocks of ``block_size`` consecutive (row-major) values.

    Args:
        w: a floating-point tensor of any shape, finite values.
        block_size: weights per absmax (QLoRA: 64). A last, shorter block is padded with zeros.
        double_quant: also quantize the absmax values (int8, blocks of ``scale_block_size``).
        scale_block_size: absmax values per fp32 scale when ``double_quant`` (QLoRA: 256).

    Raises TypeError for a non-tensor or a non-float dtype, ValueError for an empty tensor,
    non-finite values, or a block size below 1.
    """
    w = check_tensor("w", w, dtype_kind="float")
    block_size = check_int("block_size", block_size, low=1)
    scale_block_size = check_int("scale_block_size", scale_block_size, low=1)
    check_bool("double_quant", double_quant)
    if w.numel() == 0:
        raise ValueError(f"w must hold at least one value, got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"w must be finite to be quantized, got {describe(w)} with inf or NaN")
    flat = w.detach().reshape(-1).float()  # float32 holds fp16/bf16 values exactly
    flat = F.pad(flat, (0, -flat.numel() % block_size))  # zeros change no absmax
    blocks = flat.view(-1, block_size)  # (nb, block_size)
    absmax = blocks.abs().amax(dim=1)  # (nb,) float32, the exact largest magnitude
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))  # an all-zero block: index of 0
    idx = _nearest_level(blocks.double() / safe.double().unsqueeze(1), nf4_code_book())
    idx = idx.reshape(-1)[:w.numel()]  # (N,) the padding is not stored
    idx = F.pad(idx, (0, idx.numel() % 2), value=7).to(torch.uint8)  # odd N: one more nibble, level 0.0
    codes = (idx[0::2] << 4) | idx[1::2]  # (ceil(N/2),) the first index in the high nibble
    q = NF4Tensor(codes, absmax, w.shape, w.dtype, block_size, scale_block_size=scale_block_size)
    if double_quant:
        q.absmax, q.absmax_scale, q.absmax_mean = _quantize_scales(absmax, scale_block_size)
    return q


def dequantize_nf4(q: NF4Tensor) -> torch.Tensor:
    """The tensor ``q`` stands for: ``code[index] · absmax`` of its block (float32 math), in
    ``q.dtype`` and ``q.shape``."""
    if not isinstance(q, NF4Tensor):
        raise TypeError(f"q must be an NF4Tensor (from quantize_nf4), got {type(q).__name__}")
    code = nf4_code_book().to(q.codes.device)
    values = F.pad(code[q.indices()], (0, -q.numel % q.block_size))  # (nb · block_size,)
    values = values.view(-1, q.block_size) * q.scales().unsqueeze(1)  # (nb, block_size)
    return values.reshape(-1)[:q.numel].view(q.shape).to(q.dtype)


class _NF4Linear(torch.autograd.Function):
    """``F.linear`` with an NF4 weight de-quantized in the forward *and again* in the backward, so
    that autograd keeps the 4-bit codes, not a full-precision copy of every weight, for the gradient
    of the input (as bitsandbytes' ``MatMul4Bit``). The weight itself gets no gradient (it is frozen)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bias: torch.Tensor | None, weight_q: NF4Tensor) -> torch.Tensor:
        ctx.weight_q = weight_q
        return F.linear(x, dequantize_nf4(weight_q).to(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # grad (B, T, O)
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ dequantize_nf4(ctx.weight_q).to(grad.dtype)  # (B, T, I)
        if ctx.needs_input_grad[1]:
            grad_bias = grad.reshape(-1, grad.size(-1)).sum(0)  # (O,)
        return grad_x, grad_bias, None


class Linear4bit(nn.Linear):
    """A frozen linear layer whose weight (O, I) is stored in NF4 and de-quantized in every forward.

    It subclasses ``nn.Linear`` (as bitsandbytes' ``Linear4bit`` does) without an ``nn.Linear``
    weight parameter: the packed codes and scales are buffers (they move with ``.to(device)`` and
    appear in ``state_dict``; keep the model in fp32 or its float scales are cast as well) and
    ``weight`` is a read-only property returning the de-quantized matrix (assigning it raises; an
    in-place write such as ``nn.init.normal_(layer.weight)`` changes a copy, i.e. nothing). Build
    one with :meth:`from_linear`.
    """

    def __init__(self, weight_q: NF4Tensor, bias: torch.Tensor | None = None):
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate a full weight
        if not isinstance(weight_q, NF4Tensor) or len(weight_q.shape) != 2:
            raise TypeError(f"weight_q must be a 2-D NF4Tensor (O, I), got {describe(weight_q)}")
        self.out_features, self.in_features = weight_q.shape
        self.block_size, self.scale_block_size = weight_q.block_size, weight_q.scale_block_size
        self.weight_dtype = weight_q.dtype
        self.register_buffer("codes", weight_q.codes)
        self.register_buffer("absmax", weight_q.absmax)
        self.register_buffer("absmax_scale", weight_q.absmax_scale)
        self.register_buffer("absmax_mean", weight_q.absmax_mean)
        self.register_parameter("bias", None if bias is None else
                                nn.Parameter(bias.detach().clone(), requires_grad=False))

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, block_size: int = 64,
                    double_quant: bool = True) -> "Linear4bit":
        """Quantize ``linear``'s weight to NF4 (its bias is kept as it is, frozen)."""
        if not isinstance(linear, nn.Linear) or isinstance(linear, Linear4bit):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        return cls(quantize_nf4(linear.weight, block_size, double_quant=double_quant), linear.bias)

    @property
    def weight_q(self) -> NF4Tensor:
        return NF4Tensor(self.codes, self.absmax, torch.Size((self.out_features, self.in_features)),
                         self.weight_dtype, self.block_size, self.absmax_scale, self.absmax_mean,
                         self.scale_block_size)

    @property
    def weight(self) -> torch.Tensor:
        """The de-quantized weight (O, I): a new tensor on every access, writing to it changes nothing."""
        return dequantize_nf4(self.weight_q)

    @weight.setter
    def weight(self, value: torch.Tensor) -> None:
        raise AttributeError("Linear4bit's weight is stored in 4 bits and cannot be assigned: merging "
                             "a LoRA update into it would round the update to NF4 levels and unmerging "
                             "could not undo that; de-quantize first with "
                             "minillm.quant.dequantize_model(model), then merge")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (B, T, I) -> (B, T, O)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return _NF4Linear.apply(x, bias, self.weight_q)  # = F.linear(x, de-quantized weight, bias)

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` holding the de-quantized weight (and a copy of the bias)."""
        weight = dequantize_nf4(self.weight_q)
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear

    def extra_repr(self) -> str:
        bits = self.weight_q.bits_per_parameter
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, block_size={self.block_size}, "
                f"double_quant={self.absmax_scale is not None}, bits_per_parameter={bits:.3f}")


def _matches(name: str, names: Sequence[str]) -> bool:
    return any(name == n or name.endswith("." + n) for n in names)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def quantize_model(model: nn.Module, *, target: Callable[[str, nn.Module], bool] | None = None,
                   skip: Sequence[str] = ("lm_head",), block_size: int = 64,
                   double_quant: bool = True) -> nn.Module:
    """Replace ``model``'s ``nn.Linear`` layers by :class:`Linear4bit` in place and return it.

    Args:
        model: any ``nn.Module``.
        target: ``target(name, module) -> bool`` picks layers among the linear ones (default: all).
        skip: names (or ``.``-suffixes of names) left in full precision; QLoRA keeps the output
            head, and a weight tied to another module cannot be quantized without untying it.
        block_size: weights per absmax (64).
        double_quant: also quantize the absmax values (QLoRA: yes).

    Raises ValueError when no layer is chosen, or a chosen layer's weight is shared with another
    module (e.g. a tied ``lm_head``: add it to ``skip``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(skip, str):
        raise TypeError(f"skip must be a sequence of module names, got the string {skip!r}")
    users: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        for p in m.parameters(recurse=False):
            users[id(p)] = users.get(id(p), 0) + 1
    linear = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Linear) and not isinstance(m, Linear4bit)]
    chosen = [(n, m) for n, m in linear if not _matches(n, skip) and (target is None or target(n, m))]
    if not chosen:
        raise ValueError(f"no linear layer of {type(model).__name__} was chosen (skip={list(skip)}, "
                         f"target={target!r}); its linear layers are e.g. {[n for n, _ in linear][:8]}")
    for name, module in chosen:
        if users.get(id(module.weight), 0) > 1:
            raise ValueError(f"the weight of {name!r} is shared with another module (tied "
                             f"embeddings?): quantizing it would untie it; add {name!r} to skip")
    for name, module in chosen:
        _replace(model, name, Linear4bit.from_linear(module, block_size=block_size,
                                                     double_quant=double_quant))
    return model


def dequantize_model(model: nn.Module) -> nn.Module:
    """Replace every :class:`Linear4bit` by an ``nn.Linear`` with its de-quantized weight, in place
    (inside LoRA layers too, so that ``merge_and_unload`` can then add ΔW), and return ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in [(n, m) for n, m in model.named_modules() if isinstance(m, Linear4bit)]:
        _replace(model, name, module.to_linear())
    return model
