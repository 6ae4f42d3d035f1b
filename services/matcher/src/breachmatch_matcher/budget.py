"""Per-tenant daily evaluation budgets, shared exactly by every matcher replica.

A hospital that may query any identifier could enumerate a breach (or the CPR
space) through the OPRF; the budget caps how many elements it can have
evaluated per UTC day (DESIGN.md, promise 4). The count lives in the JetStream
KV bucket `bus.KV_BUDGETS` under ``<tenant>.<YYYYMMDD>`` and is changed only by
compare-and-set (create for the day's first charge, update against the
revision read otherwise). Two replicas racing for the last elements cannot
both win: one write fails on the revision, re-reads, and sees the other's
charge. Batches are all or nothing — a batch that does not fit is refused
whole and the remaining allowance is reported, so a client can send exactly
that many.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from breachmatch import bus
from breachmatch.tenants import Tenants

#: CAS rounds before giving up; each lost round means another charge succeeded.
MAX_ATTEMPTS = 100


class BudgetContentionError(RuntimeError):
    """Too many concurrent charges for one tenant; the caller should retry."""


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    granted: bool
    limit: int
    #: Elements the tenant may still have evaluated today after this decision.
    remaining: int
    day: date

    @property
    def resets_at(self) -> datetime:
        return datetime.combine(self.day + timedelta(days=1), time(), tzinfo=UTC)


def budget_key(tenant: str, day: date) -> str:
    return f"{bus.tenant_token(tenant)}.{day:%Y%m%d}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class BudgetLedger:
    """Charges evaluations against each tenant's daily limit from the tenants file."""

    def __init__(
        self,
        kv: KeyValue,
        tenants: Tenants,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._kv = kv
        self._tenants = tenants
        self._clock = clock

    async def charge(self, tenant: str, count: int) -> BudgetDecision:
        """Charge `count` elements to today's budget if they fit, else refuse them all."""
        limit = self._tenants.get(tenant).daily_budget
        day = self._clock().astimezone(UTC).date()
        key = budget_key(tenant, day)
        for _ in range(MAX_ATTEMPTS):
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                used, revision = 0, None
            else:
                used, revision = int(entry.value or b"0"), entry.revision
            if used + count > limit:
                return BudgetDecision(False, limit, max(limit - used, 0), day)
            if count == 0:
                return BudgetDecision(True, limit, limit - used, day)
            value = str(used + count).encode()
            try:
                if revision is None:
                    await self._kv.create(key, value)
                else:
                    await self._kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                continue  # another charge landed first: re-read and try again
            return BudgetDecision(True, limit, limit - used - count, day)
        raise BudgetContentionError("budget update kept losing to concurrent charges")
