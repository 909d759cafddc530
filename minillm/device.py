"""Device, precision and seeding: one place that decides where and how models run.

``pick_device`` prefers CUDA, then Apple MPS, then the CPU. ``autocast_dtype`` decides the mixed
precision dtype for *training*: bfloat16 on CUDA GPUs and CPUs with native bf16 support (AVX512-BF16
or AMX, about 2x faster than fp32 training there), float16 on older CUDA GPUs, none elsewhere.
Small-batch generation should stay in fp32 on the CPU (bf16 decoding is slower there), which is why
autocast lives in the training loop and not in the models.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .validation import check_int


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True if this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        if torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return True
    except (AttributeError, RuntimeError):  # private API: fall back to the CPU flags
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def check_device(name: str, value: torch.device | str) -> torch.device:
    """A device that exists here: ``"cpu"``, ``"cuda"``/``"cuda:N"`` (N < the GPU count) or ``"mps"``.

    Raises TypeError for something that is not a device or a string, ValueError for an unknown
    kind, or a kind this machine lacks (no silent fallback: asking for CUDA on a CPU-only machine is
    an error, not a CPU run that looks like a GPU run).
    """
    if isinstance(value, bool) or not isinstance(value, (str, torch.device)):
        raise TypeError(f"{name} must be a device name such as 'cpu' or 'cuda', or a torch.device, "
                        f"got {value!r} of type {type(value).__name__}")
    try:
        dev = torch.device(value)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cuda", "mps", "cpu"):
        raise ValueError(f"unknown device {str(value)!r} for {name}: expected 'cuda', 'mps' or 'cpu'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(value)!r} was requested for {name} but CUDA is not "
                             "available here; use 'cpu' (or pick_device() to choose automatically)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(value)!r} was requested for {name} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {str(value)!r} was requested for {name} but Apple MPS is not "
                         "available here; use 'cpu' (or pick_device() to choose automatically)")
    return dev


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``prefer`` or ``$MINILLM_DEVICE`` if given, else CUDA → MPS → CPU.

    Args:
        prefer: "cuda", "mps", "cpu" (or "cuda:1", ...). A preferred device that is not available
            raises ValueError rather than silently falling back.
    """
    if prefer is not None:
        return check_device("prefer", prefer)
    env = os.environ.get("MINILLM_DEVICE")
    if env:
        return check_device("$MINILLM_DEVICE", env)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device | str) -> torch.dtype | None:
    """The mixed-precision dtype for training on ``device``, or None for plain fp32."""
    device = check_device("device", device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else None
    return None  # MPS autocast is still patchy across torch versions: stay in fp32


def autocast(device: torch.device | str, dtype: torch.dtype | None | str = "auto"):
    """A context manager for mixed precision on ``device``; a no-op when ``dtype`` is None.

    ``dtype="auto"`` uses :func:`autocast_dtype`.
    """
    device = check_device("device", device)
    if not (dtype is None or isinstance(dtype, torch.dtype) or (isinstance(dtype, str) and dtype == "auto")):
        raise TypeError(f"dtype must be 'auto', None or a torch dtype, got {dtype!r}")
    if dtype == "auto":
        dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices) so a rerun reproduces; returns a torch Generator."""
    seed = check_int("seed", seed, low=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds CUDA and MPS
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class DeviceReport:
    """What :func:`describe_device` found, with the reasons, printable as a short table."""

    device: torch.device
    autocast: torch.dtype | None
    reasons: tuple[str, ...]
    torch_version: str
    threads: int

    def __str__(self) -> str:
        amp = str(self.autocast).replace("torch.", "") if self.autocast else "none (fp32)"
        lines = [
            f"device      : {self.device}",
            f"autocast    : {amp}",
            f"torch       : {self.torch_version}  ({self.threads} CPU threads)",
        ]
        lines += [f"  - {r}" for r in self.reasons]
        return "\n".join(lines)


def describe_device(device: torch.device | str | None = None) -> DeviceReport:
    """Report which device and precision minillm picks here, and why. Print the result."""
    dev = pick_device(device)
    reasons = []
    if os.environ.get("MINILLM_DEVICE") and device is None:
        reasons.append(f"MINILLM_DEVICE={os.environ['MINILLM_DEVICE']} forces the device")
    if torch.cuda.is_available():
        reasons.append(f"CUDA available: {torch.cuda.get_device_name(0)}")
    else:
        reasons.append("CUDA not available")
    reasons.append("Apple MPS available" if _mps_available() else "Apple MPS not available")
    if dev.type == "cpu":
        cpu = platform.processor() or platform.machine()
        bf16 = "has" if cpu_supports_bf16() else "lacks"
        reasons.append(f"CPU {cpu} {bf16} native bfloat16 (AVX512-BF16/AMX)")
    return DeviceReport(dev, autocast_dtype(dev), tuple(reasons), torch.__version__,
                        torch.get_num_threads())
