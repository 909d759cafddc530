"""minillm: small, readable building blocks for a course that builds language models from scratch.

Import what you need from the submodules (``minillm.train``, ``minillm.data``, ``minillm.models``...).
Importing ``minillm`` is cheap: the names below are loaded on first use, so ``import minillm.data``
does not pull in torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "autocast_dtype": "device", "describe_device": "device", "pick_device": "device",
    "seed_everything": "device", "quick_mode": "settings", "scaled": "settings",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'minillm' has no attribute {name!r}")
