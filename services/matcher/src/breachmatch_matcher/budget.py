"""Per-tenant daily evaluation budgets, shared exactly by every matcher replica.

A hospital that may query any identifier could enumerate a breach (or the CPR
space) through the OPRF; the budget caps how many elements it can have
evaluated per UTC day (docs/architecture.md, promise 4). The count is a
`breachmatch.quota.DailyQuota` in the JetStream KV bucket `bus.KV_BUDGETS`
under ``<tenant>.<YYYYMMDD>``, changed only by compare-and-set (create for
the day's first charge, update against the revision read otherwise). Two
replicas racing for the last elements cannot both win: one write fails on
the revision, re-reads, and sees the other's charge. Batches are all or
nothing — a batch that does not fit is refused whole and the remaining
allowance is reported, so a client can send exactly that many.

**Reserved blocks.** One compare-and-set per call turns a storm of small
calls (1,200 concurrent one-element batches) into CAS retries and then
UNAVAILABLE. So a replica takes budget from the shared count in blocks (one
CAS per block) and charges calls against its local reserve; calls for one
tenant wait for one refill instead of racing each other. The count in KV is
therefore "evaluated or reserved", never less than what was evaluated, so
the limit holds exactly. What is reserved and unused goes back to the shared
count when the reserve has been held `hold_seconds` (a replica gone quiet
does not strand it), when a batch is refused (so the reported remainder is
what the tenant really has), and when the replica stops. A replica that is
killed loses its unused reserve for the rest of that UTC day: at most one
block, which is why blocks are small against the limit (`block_for`) and not
taken at all near it, where every call is charged exactly as before.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import nats.errors
from nats.js.kv import KeyValue

from breachmatch import logs
from breachmatch.quota import DailyQuota, day_end, quota_key
from breachmatch.quota import QuotaContentionError as BudgetContentionError
from breachmatch.tenants import Tenants
from breachmatch_matcher import metrics

__all__ = ["BudgetContentionError", "BudgetDecision", "BudgetLedger", "block_for", "budget_key"]

log = logs.get_logger(__name__)

#: Largest block a replica reserves at once (a batch larger than this is reserved whole).
MAX_BLOCK = 512
#: A block is at most this fraction of the daily limit, so a killed replica loses little.
BLOCK_FRACTION = 64
#: Below this many blocks of room left, no block is reserved: each call is charged exactly.
EXACT_BELOW_BLOCKS = 4
#: Seconds a reserve is held before its unused part goes back to the shared count.
HOLD_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    granted: bool
    limit: int
    #: Elements the tenant may still have evaluated today after this decision.
    remaining: int
    day: date

    @property
    def resets_at(self) -> datetime:
        return day_end(self.day)


@dataclass(slots=True)
class _Reserve:
    """Budget this replica took from the shared count and has not used yet."""

    day: date
    units: int = 0
    #: `time.monotonic()` after which the unused units go back.
    until: float = 0.0
    #: Room left in the shared count at the last refill (for the remaining allowance).
    room: int = 0


def budget_key(tenant: str, day: date) -> str:
    return quota_key(tenant, day)


def block_for(limit: int) -> int:
    """Elements reserved per refill for a tenant with daily `limit` (1: no reserving)."""
    return max(1, min(MAX_BLOCK, limit // BLOCK_FRACTION))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BudgetLedger:
    """Charges evaluations against each tenant's daily limit from the tenants file."""

    def __init__(
        self,
        kv: KeyValue,
        tenants: Tenants,
        clock: Callable[[], datetime] = _utc_now,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        self._quota = DailyQuota(kv, clock=clock)
        self._tenants = tenants
        self._hold = hold_seconds
        self._reserves: dict[str, _Reserve] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._returner: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin returning reserves that were held `hold_seconds` (call inside the loop)."""
        self._returner = asyncio.create_task(self._return_expired())

    async def close(self) -> None:
        """Return every unused reserve to the shared count (a replica stopping)."""
        if self._returner is not None:
            self._returner.cancel()
            await asyncio.gather(self._returner, return_exceptions=True)
        for tenant in list(self._reserves):
            async with self._locks[tenant]:
                try:
                    await self._give_back(tenant)
                except (nats.errors.Error, TimeoutError, BudgetContentionError) as error:
                    # Lost for today, as if this replica had been killed (see module doc).
                    log.warning("unused budget not returned", error=type(error).__name__)

    async def charge(self, tenant: str, count: int) -> BudgetDecision:
        """Charge `count` elements to today's budget if they fit, else refuse them all."""
        async with self._locks[tenant]:
            decision = await self._charge(tenant, count)
            reserve = self._reserves.get(tenant)
        metrics.BUDGET_LIMIT.labels(tenant).set(decision.limit)
        metrics.BUDGET_REMAINING.labels(tenant).set(decision.remaining)
        metrics.BUDGET_RESERVED.labels(tenant).set(reserve.units if reserve else 0)
        return decision

    async def _charge(self, tenant: str, count: int) -> BudgetDecision:
        """`charge`, with the tenant's lock held."""
        limit = self._tenants.get(tenant).daily_budget
        day = self._quota.today()
        reserve = self._reserves.get(tenant)
        if reserve is None or reserve.day != day:  # yesterday's reserve counts for nothing
            reserve = self._reserves[tenant] = _Reserve(day)
        if count <= reserve.units:
            reserve.units -= count
            return BudgetDecision(True, limit, reserve.room + reserve.units, day)
        taken, room = await self._take(tenant, day, count - reserve.units, limit)
        if not taken:
            # Refused: what this replica holds goes back, so the remainder reported
            # is the tenant's whole allowance, not this replica's share of it.
            held = await self._give_back(tenant)
            return BudgetDecision(False, limit, room + held, day)
        if reserve.units == 0:
            reserve.until = time.monotonic() + self._hold
        reserve.units += taken - count
        reserve.room = room - taken
        return BudgetDecision(True, limit, reserve.room + reserve.units, day)

    async def _take(self, tenant: str, day: date, need: int, limit: int) -> tuple[int, int]:
        """Move between `need` and a block from the shared count into this replica's hands.

        Returns (taken, room before): taken is 0 when `need` does not fit.
        """
        block = block_for(limit)

        def amount(room: int) -> int:
            if need > room:
                return 0
            near_the_limit = room < EXACT_BELOW_BLOCKS * block
            return need if near_the_limit else min(room, max(need, block))

        allowance = await self._quota.take(tenant, limit, amount, day)
        return allowance.granted, allowance.granted + allowance.remaining

    async def _give_back(self, tenant: str) -> int:
        """Return `tenant`'s unused reserve to the shared count; the units returned.

        Called with the tenant's lock held. If NATS fails, the reserve is kept
        (and the error raised): it is still this replica's to use or return.
        """
        reserve = self._reserves.get(tenant)
        if reserve is None or reserve.units == 0:
            self._reserves.pop(tenant, None)
            return 0
        returned = await self._quota.give_back(tenant, reserve.day, reserve.units)
        del self._reserves[tenant]
        return returned

    async def _return_expired(self) -> None:
        """Every half hold period, give back reserves held for a whole one."""
        while True:
            await asyncio.sleep(self._hold / 2)
            now = time.monotonic()
            for tenant, reserve in list(self._reserves.items()):
                if reserve.until > now:
                    continue
                async with self._locks[tenant]:
                    if self._reserves.get(tenant) is not reserve:
                        continue  # used up or refused meanwhile
                    try:
                        await self._give_back(tenant)
                    except (nats.errors.Error, TimeoutError, BudgetContentionError) as error:
                        # Kept, and tried again next round.
                        log.warning("unused budget not returned yet", error=type(error).__name__)
