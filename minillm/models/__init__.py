"""Models built in the course. Each takes one dataclass config and exposes ``config_class``."""
