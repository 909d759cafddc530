"""What one training step costs in memory and time: precision, gradient accumulation, checkpointing.

A training step holds four kinds of memory: the parameters, their gradients, the optimizer state
(AdamW: two moments per parameter) and the *activations* that autograd saves in the forward pass
for the backward pass. The first three are read off the tensors themselves. The activations are
counted with :func:`torch.autograd.graph.saved_tensors_hooks`: every tensor saved for backward goes
through the pack hook, and each storage is counted once (a view shares its base's storage), the
parameters excepted (they are counted as parameters). That count is the same on every device; on
CUDA the allocator's peak (``torch.cuda.max_memory_allocated``) is reported next to it, because it
also sees temporaries, workspaces and the recomputation inside a checkpointed block.

Three knobs trade memory for time (Micikevicius et al., 2018, "Mixed precision training"; Chen et
al., 2016, "Training deep nets with sublinear memory cost"):

- ``precision``: ``"fp32"``; ``"bf16"`` (autocast: matmuls and their saved outputs in bfloat16,
  weights and optimizer in fp32); ``"fp16"`` (autocast to float16 plus a
  :class:`torch.amp.GradScaler`, because small gradients underflow to zero in fp16, see
  :func:`gradient_underflow`).
- ``micro_batches`` m: the same global batch split into m micro-batches whose gradients add up
  (gradient accumulation): about 1/m of the activations alive at once, the same update.
- ``checkpointing``: each Transformer block keeps only its input and recomputes its insides during
  backward (``model.gradient_checkpointing_enable()``): activations shrink to about one (B, T, C)
  tensor per block, for about one extra forward pass of time.

Shape letters: B global batch, T tokens, C channels, m micro-batches.
"""

from __future__ import annotations

import copy
import statistics
from contextlib import nullcontext
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .device import autocast as autocast_ctx
from .train import lm_loss, make_optimizer
from .validation import check_bool, check_choice, check_float, check_int, describe

__all__ = ["PRECISIONS", "StepSetting", "StepMeasurement", "SavedTensorCounter", "UnderflowDemo",
           "split_batch", "make_scaler", "train_step", "state_bytes", "sweep", "measure_step", "format_table",
           "plot_efficiency", "relative_time", "gradient_underflow", "default_settings"]

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # name → autocast dtype
MB = 1e6


@dataclass(frozen=True)
class StepSetting:
    """How one training step is run; the global batch stays the same in every setting."""

    precision: str = "fp32"  # "fp32", "bf16" (autocast) or "fp16" (autocast + GradScaler)
    micro_batches: int = 1  # m: the global batch split into m micro-batches (gradient accumulation)
    checkpointing: bool = False  # activation checkpointing of every block

    def __post_init__(self) -> None:
        check_choice("precision", self.precision, tuple(PRECISIONS))
        check_int("micro_batches", self.micro_batches, low=1)
        check_bool("checkpointing", self.checkpointing)

    @property
    def label(self) -> str:
        """A short name for tables and plots, e.g. ``"bf16 ckpt m=4"``."""
        return " ".join([self.precision] + (["ckpt"] if self.checkpointing else [])
                        + ([f"m={self.micro_batches}"] if self.micro_batches > 1 else []))


def default_settings(micro_batches: Sequence[int] = (1, 4)) -> list[StepSetting]:
    """fp32 / bf16 / fp16 × checkpointing off/on × each of ``micro_batches``, fp32 first."""
    return [StepSetting(p, m, c) for p in PRECISIONS for c in (False, True) for m in micro_batches]


class SavedTensorCounter:
    """Counts the bytes of tensors autograd saves for backward while the ``with`` block runs.

    Each storage is counted once (views of one tensor share it), and storages in ``exclude`` (the
    parameters: they exist anyway) are skipped. The hooks stay attached to the saved tensors, so
    the backward pass may run after the block ends.

    >>> with SavedTensorCounter(exclude=model.parameters()) as saved:
    ...     loss = lm_loss(model, batch)
    >>> saved.nbytes
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()):
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: set[int] = set()
        self.nbytes = 0  # bytes of distinct storages saved for backward
        self.by_dtype: dict[torch.dtype, int] = {}  # the same bytes, split by dtype
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta":
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr and ptr not in self._seen and ptr not in self._exclude:
                self._seen.add(ptr)
                self.nbytes += storage.nbytes()
                self.by_dtype[t.dtype] = self.by_dtype.get(t.dtype, 0) + storage.nbytes()
        return t  # saved as is: counting changes nothing

    def __enter__(self) -> "SavedTensorCounter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def _storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of the distinct storages of ``tensors`` (a tied matrix once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes of the parameters, their gradients (where set) and the optimizer's state tensors."""
    params = list(model.parameters())
    opt = [] if optimizer is None else [t for state in optimizer.state.values()
                                        for t in state.values() if isinstance(t, torch.Tensor)]
    return {"parameters": _storage_bytes(params),
            "gradients": _storage_bytes(p.grad for p in params if p.grad is not None),
            "optimizer": _storage_bytes(opt)}


def split_batch(batch: Any, micro_batches: int) -> list[Any]:
    """A tensor or tuple/list of tensors, each (B, ...), as ``micro_batches`` equal parts along B."""
    micro_batches = check_int("micro_batches", micro_batches, low=1)
    tensors = [batch] if isinstance(batch, torch.Tensor) else batch
    if not isinstance(tensors, (tuple, list)) or not tensors or not all(
            isinstance(t, torch.Tensor) and t.dim() >= 1 for t in tensors):
        raise TypeError(f"batch must be a tensor or a tuple/list of tensors of shape (B, ...), got "
                        f"{describe(batch)}")
    B = tensors[0].size(0)
    if any(t.size(0) != B for t in tensors):
        raise ValueError(f"every tensor of the batch must have the same batch size B, got "
                         f"{[tuple(t.shape) for t in tensors]}")
    if B % micro_batches:
        raise ValueError(f"micro_batches={micro_batches} must divide the batch size B={B}: equal "
                         f"micro-batches make the accumulated gradient equal the full batch's")
    parts = [t.chunk(micro_batches) for t in tensors]  # m × (B/m, ...) each
    if isinstance(batch, torch.Tensor):
        return list(parts[0])
    return [type(batch)(p[i] for p in parts) for i in range(micro_batches)]


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError(f"{type(model).__name__} has no parameters: nothing to train")
    return p.device


def _check_checkpointing(model: nn.Module) -> None:
    if not callable(getattr(model, "gradient_checkpointing_enable", None)):
        raise TypeError(f"checkpointing=True needs a model with gradient_checkpointing_enable() "
                        f"(GPT, LlamaForCausalLM), got {type(model).__name__}")


def _set_checkpointing(model: nn.Module, on: bool) -> None:
    if on:
        _check_checkpointing(model)
        model.gradient_checkpointing_enable()
    elif callable(getattr(model, "gradient_checkpointing_disable", None)):
        model.gradient_checkpointing_disable()  # a model without the method has it off already


def make_scaler(setting: StepSetting, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A fresh :class:`torch.amp.GradScaler` for fp16 on ``device``, else None."""
    if setting.precision != "fp16":
        return None
    try:
        return torch.amp.GradScaler(torch.device(device).type)
    except (RuntimeError, ValueError) as err:  # a device type GradScaler does not know
        raise RuntimeError(f"precision='fp16' needs torch.amp.GradScaler on {device}, which this "
                           f"torch ({torch.__version__}) refused: {err}") from err


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Any,
               setting: StepSetting = StepSetting(), *,
               scaler: torch.amp.GradScaler | None = None, loss_fn: Callable = lm_loss,
               count_activations: bool = False) -> tuple[float, int | None]:
    """One optimizer step on ``batch`` run as ``setting`` says; returns (loss, activation bytes).

    The loss is the mean over micro-batches (each micro-batch's loss is divided by m before its
    backward, so the summed gradients equal the full batch's). Activation bytes are those saved for
    backward by one micro-batch (the most of any), counted only if ``count_activations``.
    ``setting.checkpointing`` is applied to the model and left so. fp16 needs ``scaler`` (see
    :func:`make_scaler`).
    """
    if not isinstance(setting, StepSetting):
        raise TypeError(f"setting must be a StepSetting, got {describe(setting)}")
    if (setting.precision == "fp16") != (scaler is not None):
        raise ValueError(f"precision={setting.precision!r} needs "
                         f"{'a GradScaler' if setting.precision == 'fp16' else 'scaler=None'}: "
                         f"only fp16 scales its loss, got scaler={describe(scaler)}")
    device = _model_device(model)
    _set_checkpointing(model, setting.checkpointing)
    micro = split_batch(batch, setting.micro_batches)
    m = setting.micro_batches
    total, peak = 0.0, 0
    for part in micro:
        counter = SavedTensorCounter(exclude=model.parameters()) if count_activations else None
        with autocast_ctx(device, PRECISIONS[setting.precision]), (counter or nullcontext()):
            loss = loss_fn(model, part) / m
        (scaler.scale(loss) if scaler is not None else loss).backward()
        total += float(loss.detach())
        if counter is not None:
            peak = max(peak, counter.nbytes)
        del loss  # frees this micro-batch's graph before the next forward
    if scaler is not None:
        scaler.step(optimizer)  # unscales; skips the step if a gradient overflowed
        scaler.update()
    else:
        optimizer.step()
    return total, (peak if count_activations else None)


@dataclass
class StepMeasurement:
    """One row of a sweep: the memory and time of one training step under ``setting``."""

    setting: StepSetting
    activation_bytes: int  # saved for backward by one micro-batch's forward (parameters excluded)
    parameter_bytes: int
    gradient_bytes: int  # after the backward pass, before zero_grad
    optimizer_bytes: int  # AdamW's moments (and step counters)
    step_seconds: list[float] = field(default_factory=list)  # each timed step, in round order
    loss: float = float("nan")  # the last step's loss
    cuda_peak_bytes: int | None = None  # torch.cuda.max_memory_allocated over the timed steps

    @property
    def label(self) -> str:
        return self.setting.label

    @property
    def total_bytes(self) -> int:
        """Parameters + gradients + optimizer state + activations."""
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes

    @property
    def seconds(self) -> float:
        """Median seconds per step."""
        return statistics.median(self.step_seconds) if self.step_seconds else float("nan")


def sweep(model: nn.Module, batch: Any, settings: Sequence[StepSetting] | None = None, *,
          rounds: int = 3, warmup: int = 1, loss_fn: Callable = lm_loss,
          optimizer_fn: Callable[[nn.Module], torch.optim.Optimizer] | None = None,
          progress: bool = False) -> list[StepMeasurement]:
    """Measure one training step of ``model`` on ``batch`` in each of ``settings``.

    Args:
        model: a module whose ``loss_fn(model, batch)`` is the loss; for ``checkpointing=True`` a
            GPT or LlamaForCausalLM. A deep copy is trained (the given model is left unchanged),
            one copy and one optimizer for all settings, so every setting sees the same weights
            and the same optimizer-state size.
        batch: ``(x, y)`` of shape (B, T) each (or what ``loss_fn`` takes), B divisible by every
            setting's ``micro_batches``.
        settings: default :func:`default_settings` (12 of them).
        rounds: timed steps per setting. Round r runs every setting once, in reverse order on odd
            rounds, so a noisy neighbour or a clock change hits all settings alike.
        warmup: untimed steps per setting first; the first one also counts the activations.
        optimizer_fn: builds the optimizer from the model copy; default AdamW (``make_optimizer``,
            lr 1e-4).
        progress: show a tqdm bar over the steps.
    """
    settings = default_settings() if settings is None else list(settings)
    if not settings or not all(isinstance(s, StepSetting) for s in settings):
        raise TypeError(f"settings must be a non-empty list of StepSetting, got {describe(settings)}")
    rounds = check_int("rounds", rounds, low=1)
    warmup = check_int("warmup", warmup, low=1)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {describe(model)}")
    for s in settings:  # fail before any work: bad splits, no checkpointing support
        split_batch(batch, s.micro_batches)
        if s.checkpointing:
            _check_checkpointing(model)
    model = copy.deepcopy(model).train()
    device = _model_device(model)
    cuda = device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    optimizer = optimizer_fn(model) if optimizer_fn is not None else make_optimizer(model, 1e-4)
    scalers = [make_scaler(s, device) for s in settings]
    rows: list[StepMeasurement] = []

    from tqdm.auto import tqdm

    bar = tqdm(total=len(settings) * (warmup + rounds), desc="steps", disable=not progress)
    for s, scaler in zip(settings, scalers):
        _, act = train_step(model, optimizer, batch, s, scaler=scaler, loss_fn=loss_fn,
                            count_activations=True)
        sizes = state_bytes(model, optimizer)  # gradients are still set: before zero_grad
        optimizer.zero_grad(set_to_none=True)
        for _ in range(warmup - 1):
            train_step(model, optimizer, batch, s, scaler=scaler, loss_fn=loss_fn)
            optimizer.zero_grad(set_to_none=True)
        bar.update(warmup)
        rows.append(StepMeasurement(s, act, sizes["parameters"], sizes["gradients"],
                                    sizes["optimizer"]))
    for r in range(rounds):
        order = range(len(settings)) if r % 2 == 0 else reversed(range(len(settings)))
        for i in order:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            sync()
            t = time.perf_counter()
            loss, _ = train_step(model, optimizer, batch, settings[i], scaler=scalers[i],
                                 loss_fn=loss_fn)
            optimizer.zero_grad(set_to_none=True)
            sync()
            rows[i].step_seconds.append(time.perf_counter() - t)
            rows[i].loss = loss
            if cuda:
                peak = torch.cuda.max_memory_allocated(device)
                rows[i].cuda_peak_bytes = max(rows[i].cuda_peak_bytes or 0, peak)
            bar.update(1)
    bar.close()
    # one optimizer serves every setting; read its state at the end, when it surely exists (an
    # fp16 warm-up step whose gradients overflowed is skipped and creates none)
    for row in rows:
        row.optimizer_bytes = state_bytes(model, optimizer)["optimizer"]
    return rows


def measure_step(model: nn.Module, batch: Any, setting: StepSetting = StepSetting(),
                 **kwargs: Any) -> StepMeasurement:
    """:func:`sweep` over one setting."""
    return sweep(model, batch, [setting], **kwargs)[0]


def _baseline(rows: Sequence[StepMeasurement]) -> StepMeasurement:
    """The plain fp32 step (m=1, no checkpointing) if measured, else the first row."""
    return next((r for r in rows if r.setting == StepSetting()), rows[0])


def relative_time(row: StepMeasurement, baseline: StepMeasurement) -> float:
    """Step time of ``row`` over ``baseline``'s: the median of per-round ratios when both were timed
    in the same rounds, else the ratio of their medians."""
    if len(row.step_seconds) == len(baseline.step_seconds) and row.step_seconds:
        return statistics.median(a / b for a, b in zip(row.step_seconds, baseline.step_seconds))
    return row.seconds / baseline.seconds


def format_table(rows: Sequence[StepMeasurement], *, markdown: bool = True) -> str:
    """The sweep as a table: memory in MB (activations, parameters + gradients + optimizer, total,
    the CUDA peak where measured), then step time relative to the plain fp32 step and in ms."""
    rows = list(rows)
    if not rows or not all(isinstance(r, StepMeasurement) for r in rows):
        raise TypeError(f"rows must be a non-empty list of StepMeasurement, got {describe(rows)}")
    base = _baseline(rows)
    cuda = any(r.cuda_peak_bytes is not None for r in rows)
    head = ["setting", "activations MB", "params+grads+optim MB", "total MB"]
    head += ["CUDA peak MB"] if cuda else []
    head += [f"time vs {base.label}", "step ms"]
    body = []
    for r in rows:
        line = [r.label, f"{r.activation_bytes / MB:.1f}",
                f"{(r.total_bytes - r.activation_bytes) / MB:.1f}", f"{r.total_bytes / MB:.1f}"]
        if cuda:
            line.append("—" if r.cuda_peak_bytes is None else f"{r.cuda_peak_bytes / MB:.1f}")
        line += [f"{relative_time(r, base):.2f}x", f"{r.seconds * 1e3:.0f}"]
        body.append(line)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def fmt(cells: list[str]) -> str:
        text = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return ("| " + " | ".join(text) + " |") if markdown else "  ".join(text)

    rule = ("|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
            if markdown else "-" * len(fmt(head)))
    return "\n".join([fmt(head), rule] + [fmt(b) for b in body])


def plot_efficiency(rows: Sequence[StepMeasurement], axes=None):
    """Two panels: total memory against relative step time (one labelled point per setting), and
    each setting's memory split into parameters, gradients, optimizer state and activations.
    Returns the two Axes."""
    import matplotlib.pyplot as plt

    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(13, 0.35 * len(rows) + 3.5))
    ax, bx = axes
    base = _baseline(rows)
    colors = {"fp32": "tab:blue", "bf16": "tab:orange", "fp16": "tab:green"}
    for r in rows:
        x, y = relative_time(r, base), r.total_bytes / MB
        ax.scatter(x, y, s=60, color=colors[r.setting.precision],
                   marker="s" if r.setting.checkpointing else "o")
        ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    times = [relative_time(r, base) for r in rows]
    if max(times) / min(times) > 5:  # e.g. fp16 on a CPU without fp16 matmul units
        ax.set_xscale("log")
    ax.set_xlabel(f"step time relative to {base.label}")
    ax.set_ylabel("memory of one step (MB)")
    ax.set_title("memory vs time (square: checkpointing)")
    ax.grid(alpha=0.3)
    parts = [("parameters", "parameter_bytes"), ("gradients", "gradient_bytes"),
             ("optimizer", "optimizer_bytes"), ("activations", "activation_bytes")]
    left = [0.0] * len(rows)
    labels = [r.label for r in rows]
    for name, attr in parts:
        width = [getattr(r, attr) / MB for r in rows]
        bx.barh(labels, width, left=left, label=name)
        left = [a + b for a, b in zip(left, width)]
    bx.invert_yaxis()
    bx.set_xlabel("MB")
    bx.set_title("where the memory goes")
    bx.legend(loc="lower right", fontsize=8)
    return ax, bx


@dataclass
class UnderflowDemo:
    """Why fp16 training needs a loss scale (see :func:`gradient_underflow`)."""

    value: float  # a small gradient value
    in_fp16: float  # ... rounded to float16 (0.0: it underflowed)
    in_bf16: float  # ... rounded to bfloat16 (8 exponent bits, like fp32: it survives)
    fp16_smallest: float  # the smallest positive float16 (a subnormal, 2^-24)
    loss_factor: float  # the loss was multiplied by this before backward (small gradients)
    zero_fraction: dict[str, float]  # precision → share of gradient entries that are exactly 0


def gradient_underflow(model: nn.Module | None = None, batch: Any = None, *,
                       loss_factor: float = 1e-3, value: float = 1e-8,
                       loss_scale: float = 2.0 ** 16, loss_fn: Callable = lm_loss) -> UnderflowDemo:
    """The numbers behind fp16's grad scaler: small gradients become 0 in fp16, not in bf16.

    Runs one backward pass of ``loss_factor · loss`` (gradients as small as a big model's) under
    fp32, bf16 autocast, fp16 autocast, and fp16 autocast with the loss multiplied by
    ``loss_scale`` first and the gradients divided by it afterwards (what GradScaler does), and
    reports the share of parameter-gradient entries that came out exactly zero. Default model: a
    tiny GPT (2 layers, width 32) on a fixed random batch of (8, 32) tokens.
    """
    loss_factor = check_float("loss_factor", loss_factor, low=0, low_inclusive=False)
    value = check_float("value", value)
    loss_scale = check_float("loss_scale", loss_scale, low=1)
    if model is None:
        from .models.gpt import GPT, GPTConfig

        gen = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = GPT(GPTConfig.tiny())
        if batch is None:
            ids = torch.randint(65, (8, 33), generator=gen)
            batch = (ids[:, :-1], ids[:, 1:])
    if batch is None:
        raise ValueError("batch must be given with a model of your own")
    model = copy.deepcopy(model).train()
    device = _model_device(model)
    zero = {}
    for name, dtype, scale in (("fp32", None, 1.0), ("bf16", torch.bfloat16, 1.0),
                               ("fp16", torch.float16, 1.0),
                               ("fp16 + loss scale", torch.float16, loss_scale)):
        model.zero_grad(set_to_none=True)
        with autocast_ctx(device, dtype):
            loss = loss_fn(model, batch) * loss_factor
        (loss * scale).backward()
        grads = torch.cat([p.grad.flatten() / scale for p in model.parameters() if p.grad is not None])
        zero[name] = float((grads == 0).float().mean())
    small = torch.tensor(value)
    return UnderflowDemo(value=value, in_fp16=float(small.half()), in_bf16=float(small.bfloat16()),
                         fp16_smallest=float(torch.finfo(torch.float16).smallest_normal) * 2.0 ** -10,
                         loss_factor=loss_factor, zero_fraction=zero)
