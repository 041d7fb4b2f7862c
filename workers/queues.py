"""Queue names: the one place they are spelled."""
from __future__ import annotations

FAST = "mj.fast"
NORMAL = "mj.normal"
WEBHOOKS = "mj.webhooks"
MAINTENANCE = "mj.maintenance"
ALL = (FAST, NORMAL, WEBHOOKS, MAINTENANCE)

# FAST and TURBO share the fast pool; RELAX runs on the separate normal pool.
_QUEUE_OF_MODE = {"FAST": FAST, "TURBO": FAST, "RELAX": NORMAL}


def queue_for_mode(mode: str) -> str:
    """The Celery queue that runs jobs of `mode` (FAST, TURBO or RELAX)."""
    return _QUEUE_OF_MODE[mode]
