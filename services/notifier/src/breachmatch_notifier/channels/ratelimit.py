"""Per-channel rate limits shared by every notifier replica: window counters in JetStream KV.

SMTP relays and SMS gateways throttle or blacklist a sender that exceeds the
rate it was granted, and that rate is the deployment's, not one process's:
with the worker Deployment scaled out (the HPA adds replicas under load), a
limit each process kept to itself would let the replicas together send that
rate times their number. So the count lives in the notifier's own KV bucket
(`bus.KV_NOTIFIER_RATES`, which only the notifier's NATS user may read or
write), one key per channel and time window::

    rate.<channel>.<window>    ->  notices granted in that window (ASCII digits)

A window is one second of the wall clock (``floor(unix time)``), or ``1/rate``
seconds for a rate under one a second, and allows ``floor(rate × window)``
notices. A process takes grants by compare-and-set on the key's revision
(create when absent), so however many replicas race, the grants of one window
never add up to more than its allowance. The bucket's entries expire
(``max_age``), so it holds only the last minute's counters.

One KV round trip per notice would cost as much as the notice's ledger write,
so a process asks for as many grants at once as it has deliveries waiting (at
most an eighth of the allowance, so a busy replica cannot take a whole
window from the others) and hands them out locally; a grant not used within its
window is dropped — the limit errs low, never high.

The windows are fixed, so up to two windows' allowance may go out within one
second across a window boundary — the way providers count a per-second quota
— and replicas compare wall clocks: skew between them shifts a replica's
windows by that much (keep them on NTP). The counts themselves are exact.

A NATS error while taking a grant is raised to the caller before anything is
sent (the worker gives the notice back and retries it later). Clock and sleep
are injectable so tests can hold a window still.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

RATE_PREFIX = "rate"
#: Most of a window's allowance one process takes in a single grant.
_CHUNK_SHARE = 1 / 8
# A float product such as 0.1 × 10 can land a hair under the whole number it means.
_SLACK = 1e-9


class SharedRateLimit:
    """At most ``rate_per_second`` notices a second on ``channel``, over every replica."""

    def __init__(
        self,
        kv: KeyValue,
        channel: str,
        rate_per_second: float,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not (rate_per_second > 0 and math.isfinite(rate_per_second)):
            raise ValueError("rate_per_second: must be a positive number")
        self.channel = channel
        self.rate = rate_per_second
        #: Seconds per window: one, or long enough that a slow rate allows one notice.
        self.window = 1.0 if rate_per_second >= 1 else 1 / rate_per_second
        #: Notices per window, over all replicas.
        self.allowance = max(1, math.floor(rate_per_second * self.window + _SLACK))
        self._chunk = max(1, math.ceil(self.allowance * _CHUNK_SHARE))
        self._kv = kv
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._held_window = -1
        self._held = 0

    async def acquire(self) -> None:
        """Wait until a notice may go out on this channel, and count it."""
        self._waiting += 1
        try:
            async with self._lock:  # callers are served in arrival order
                while True:
                    index = self._index()
                    if index != self._held_window:
                        self._held_window, self._held = index, 0
                    if self._held:
                        self._held -= 1
                        return
                    granted = await self._take(index, min(self._waiting, self._chunk))
                    if granted and self._index() == index:
                        self._held = granted - 1
                        return
                    if not granted:  # the window is used up: wait for the next
                        await self._sleep(max(0.0, (index + 1) * self.window - self._clock()))
        finally:
            self._waiting -= 1

    def key(self, index: int) -> str:
        return f"{RATE_PREFIX}.{self.channel}.{index}"

    def _index(self) -> int:
        return math.floor(self._clock() / self.window)

    async def _take(self, index: int, wanted: int) -> int:
        """Count up to ``wanted`` more notices in window ``index``; how many it could."""
        key = self.key(index)
        while self._index() == index:
            try:
                found = await self._kv.get(key)
            except KeyNotFoundError:
                granted = min(wanted, self.allowance)
                try:
                    await self._kv.create(key, str(granted).encode())
                except KeyWrongLastSequenceError:  # another replica created it first
                    continue
                return granted
            used = int(found.value or b"0")
            granted = min(wanted, self.allowance - used)
            if granted <= 0:
                return 0
            try:
                await self._kv.update(key, str(used + granted).encode(), last=found.revision)
            except KeyWrongLastSequenceError:  # another replica counted meanwhile: read again
                continue
            return granted
        return 0


def shared_rate_limits(
    kv: KeyValue, rates: Mapping[str, float], channels: tuple[str, ...]
) -> dict[str, SharedRateLimit]:
    """A shared limit for every configured channel that has a rate."""
    return {
        name: SharedRateLimit(kv, name, rate) for name, rate in rates.items() if name in channels
    }
