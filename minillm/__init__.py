"""minillm: small, readable building blocks for a course that builds language models from scratch.

Import what you need from the submodules (``minillm.train``, ``minillm.data``, ``minillm.models``...);
importing ``minillm`` itself is cheap and has no side effects.
"""

__version__ = "0.1.0"

from .device import autocast_dtype, describe_device, pick_device, seed_everything  # noqa: E402,F401
from .settings import quick_mode, scaled  # noqa: E402,F401
