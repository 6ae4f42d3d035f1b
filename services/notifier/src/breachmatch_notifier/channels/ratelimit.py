"""Per-channel rate limits: an asyncio token bucket.

SMTP relays and SMS gateways throttle or blacklist senders that burst, and a
breach can mean tens of thousands of notices at once; the bucket spreads them
out at the rate the provider allows, with a small burst. The clock and the
sleep function are injectable so the bucket can be tested with a fake clock,
without real waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Float refills can land a hair under a whole token; without slack the waiter
# would sleep again for a vanishing interval.
_SLACK = 1e-9


class TokenBucket:
    """``rate_per_second`` tokens a second, at most ``burst`` saved up.

    `acquire` waits its turn: callers are served in arrival order (the lock is
    held while waiting), so one slow channel cannot starve a caller forever.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError("rate_per_second: must be positive")
        self.rate = rate_per_second
        self.capacity = burst if burst is not None else max(1.0, rate_per_second)
        if self.capacity < 1:
            raise ValueError("burst: must be at least 1")
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._lock = asyncio.Lock()

    def try_acquire(self) -> bool:
        """Take a token if one is there now."""
        self._refill()
        if self._tokens >= 1 - _SLACK:
            self._tokens = max(0.0, self._tokens - 1)
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token will be there (0 when one is there now)."""
        self._refill()
        return max(0.0, (1 - self._tokens) / self.rate)

    async def acquire(self) -> None:
        """Wait until a token is there, then take it."""
        async with self._lock:
            while not self.try_acquire():
                await self._sleep(self.wait_time())

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
        self._updated = now
