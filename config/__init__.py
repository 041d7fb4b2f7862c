"""Configuration: `Settings.from_env()` reads every option once, strictly."""
from __future__ import annotations

from config.errors import ConfigError, MjqError
from config.settings import MODES, Settings, options

__all__ = ["ConfigError", "MjqError", "MODES", "Settings", "options"]
