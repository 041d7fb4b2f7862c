"""Which gateway process holds an account: a Redis lease per account with a fencing token.

`acquire` is SET NX PX in a script that also takes the next value of the account's fence
counter, so every holder has a token larger than any before it; the lease value is
`<holder>|<token>`. `renew` extends it only while the value is still ours, and the event
stream's append checks the same value (workers/drivers/discord_events.py), so a holder that
was paused past its TTL can neither renew nor publish: exactly one process speaks for the
account. A holder that dies stops renewing; after the TTL any other gateway process takes
the account at its next poll.

Why hand-written: redis-py's Lock has no fencing token; this is three short scripts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from redis import Redis

from workers.drivers.discord_events import owner_key

_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
local value = ARGV[1] .. '|' .. token
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Lease:
    account_id: str
    value: str  # "<holder>|<token>": what the stream's append compares

    @property
    def token(self) -> int:
        return int(self.value.rsplit("|", 1)[1])


class Ownership:
    """Leases of one gateway process (`holder`, e.g. host/pid) with a TTL of `ttl_ms` milliseconds."""

    def __init__(self, redis: Redis, holder: str, ttl_ms: int) -> None:
        self.redis = redis
        self.holder = holder
        self.ttl_ms = ttl_ms
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def acquire(self, account_id: str) -> Lease | None:
        """The account's lease when no one holds it, else None."""
        key = owner_key(account_id)
        value = self._acquire(keys=[key, f"{key}-fence"], args=[self.holder, self.ttl_ms])
        if not value:
            return None
        return Lease(account_id, value.decode() if isinstance(value, bytes) else str(value))

    def renew(self, lease: Lease) -> bool:
        """Extend the lease by the TTL; False when it is no longer ours (expired or taken over)."""
        return bool(self._renew(keys=[owner_key(lease.account_id)], args=[lease.value, self.ttl_ms]))

    def release(self, lease: Lease) -> None:
        """Give the account up at once (a clean shutdown), so another process takes it without waiting."""
        self._release(keys=[owner_key(lease.account_id)], args=[lease.value])

    def holder_of(self, account_id: str) -> str | None:
        value = cast("bytes | None", self.redis.get(owner_key(account_id)))
        return value.decode() if value is not None else None
