"""The root error of mjq lives here so that config/ needs nothing from app/ or workers/."""
from __future__ import annotations


class MjqError(Exception):
    """Root of every error mjq raises on purpose."""


class ConfigError(MjqError):
    """Raised when an environment variable holds a value mjq cannot use; the message names it."""
