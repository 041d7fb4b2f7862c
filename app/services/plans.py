"""Plans and prices: what a key may run, how much, and what each job costs in tokens.

Defaults follow the membership levels such services sell (basic, vip, premium) and a
provider's published token prices; MJQ_PLANS and MJQ_PRICES (JSON) override them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from config.errors import ConfigError


@dataclass(frozen=True)
class Plan:
    name: str
    max_unfinished: int           # tasks not yet SUCCESS/FAILURE/CANCEL at once
    modes: tuple[str, ...]        # FAST, RELAX, TURBO
    daily_tasks: int              # tasks submitted per UTC day
    submits_per_minute: int       # shared by every API process (Redis)
    # Every /mj request of a user key, shared the same way; None = only submits are limited.
    requests_per_minute: int | None = None


# requestsPerMinute leaves room for a client polling fetch once a second for each unfinished task.
DEFAULT_PLANS = {
    "basic": Plan("basic", 3, ("FAST", "RELAX"), 200, 30, 600),
    "vip": Plan("vip", 20, ("FAST", "RELAX", "TURBO"), 2000, 60, 3000),
    "premium": Plan("premium", 50, ("FAST", "RELAX", "TURBO"), 10000, 120, 6000),
}

# Tokens per job: (FAST, RELAX); TURBO costs twice FAST.
_BIG, _SMALL = (14000, 7000), (3500, 1750)
DEFAULT_PRICES = {
    "IMAGINE": _BIG, "VARIATION": _BIG, "REROLL": _BIG, "ZOOM": _BIG, "PAN": _BIG, "BLEND": _BIG, "INPAINT": _BIG,
    "UPSCALE": _SMALL, "DESCRIBE": _SMALL, "SHORTEN": _SMALL, "SWAP_FACE": _SMALL,
}

_PLAN_SHAPE = "{name: {maxUnfinished, modes, dailyTasks, submitsPerMinute, requestsPerMinute (optional)}}"


def price(prices: dict[str, tuple[int, int]], action: str, mode: str) -> int:
    """Tokens a successful job of `action` in `mode` costs (0 when the table does not price it)."""
    fast, relax = prices.get(action, (0, 0))
    return {"FAST": fast, "TURBO": 2 * fast, "RELAX": relax}.get(mode, fast)


def _count(name: str, plan: dict[str, Any], field: str) -> int:
    value = plan[field]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"plan {name}: {field} must be a whole number >= 0, not {json.dumps(value)}")
    return value


def plans_from_json(raw: str) -> dict[str, Plan]:
    """MJQ_PLANS: {"name": {"maxUnfinished": 3, "modes": [...], "dailyTasks": 200, "submitsPerMinute": 30,
    "requestsPerMinute": 600}}; without requestsPerMinute a plan limits only its submits. Raises ConfigError."""
    if not raw.strip():
        return dict(DEFAULT_PLANS)
    try:
        data = json.loads(raw)
        return {name: Plan(name, _count(name, p, "maxUnfinished"), tuple(m.upper() for m in p["modes"]),
                           _count(name, p, "dailyTasks"), _count(name, p, "submitsPerMinute"),
                           _count(name, p, "requestsPerMinute") if "requestsPerMinute" in p else None)
                for name, p in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"MJQ_PLANS: expected {_PLAN_SHAPE}: {exc}") from None


def prices_from_json(raw: str) -> dict[str, tuple[int, int]]:
    """MJQ_PRICES: {"IMAGINE": [fast, relax], ...} merged over the defaults."""
    prices = dict(DEFAULT_PRICES)
    if not raw.strip():
        return prices
    try:
        for action, pair in json.loads(raw).items():
            fast, relax = pair
            prices[action.upper()] = (int(fast), int(relax))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"MJQ_PRICES: expected {{ACTION: [fast, relax]}}: {exc}") from None
    return prices
