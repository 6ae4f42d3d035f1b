"""Per-tenant daily counters in JetStream KV, shared exactly by every replica.

Two things are capped per tenant and UTC day: OPRF evaluations (the matcher's
budget, docs/architecture.md promise 4) and notices queued (the notifier's
outreach limit). Both must hold across any number of replicas with no
coordinator, so the count lives in a KV bucket under
``[<prefix>.]<tenant>.<YYYYMMDD>`` and changes only by compare-and-set
(create for the day's first charge, update against the revision read
otherwise). Two replicas racing for the last units cannot both win: one write
fails on the revision, re-reads, and sees the other's charge.

How much a charge takes is the caller's rule, given the room left
(`DailyQuota.take`): the matcher takes a whole batch or nothing, or a block to
serve later calls from (and gives unused units back, `give_back`); the
notifier takes as many of a batch's notices as still fit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from breachmatch import bus

#: CAS rounds before giving up; each lost round means another charge succeeded.
MAX_ATTEMPTS = 100


class QuotaContentionError(RuntimeError):
    """Too many concurrent charges for one tenant; the caller should retry."""


@dataclass(frozen=True, slots=True)
class Allowance:
    """The outcome of one charge."""

    #: Units this charge took (0 when nothing fitted).
    granted: int
    limit: int
    #: Units the tenant may still use today, after this charge.
    remaining: int
    day: date

    @property
    def resets_at(self) -> datetime:
        return day_end(self.day)


def day_end(day: date) -> datetime:
    """When the count of ``day`` stops applying: the next UTC midnight."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)


def quota_key(tenant: str, day: date, prefix: str = "") -> str:
    key = f"{bus.tenant_token(tenant)}.{day:%Y%m%d}"
    return f"{prefix}.{key}" if prefix else key


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DailyQuota:
    def __init__(
        self, kv: KeyValue, prefix: str = "", clock: Callable[[], datetime] = _utc_now
    ) -> None:
        self._kv = kv
        self._prefix = prefix
        self._clock = clock

    def today(self) -> date:
        return self._clock().astimezone(UTC).date()

    async def take(
        self,
        tenant: str,
        limit: int,
        amount: Callable[[int], int],
        day: date | None = None,
    ) -> Allowance:
        """Charge ``amount(room)`` units to ``tenant``'s count of ``day`` (default: today).

        ``amount`` gets the room left under ``limit`` and answers how many
        units to take (0: none; never more than the room). Raises
        `QuotaContentionError` after `MAX_ATTEMPTS` lost races.
        """
        day = day or self.today()
        key = quota_key(tenant, day, self._prefix)
        for _ in range(MAX_ATTEMPTS):
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                used, revision = 0, None
            else:
                used, revision = int(entry.value or b"0"), entry.revision
            room = max(limit - used, 0)
            granted = amount(room)
            if not 0 <= granted <= room:
                raise ValueError("a charge must take between nothing and the room left")
            if granted == 0:
                return Allowance(0, limit, room, day)
            value = str(used + granted).encode()
            try:
                if revision is None:
                    await self._kv.create(key, value)
                else:
                    await self._kv.update(key, value, last=revision)
            except KeyWrongLastSequenceError:
                continue  # another charge landed first: re-read and try again
            return Allowance(granted, limit, room - granted, day)
        raise QuotaContentionError("the daily count kept losing to concurrent charges")

    async def give_back(self, tenant: str, day: date, units: int) -> int:
        """Return ``units`` taken but not used to ``tenant``'s count of ``day``; units returned.

        Nothing is returned when the day's count has expired from the bucket.
        """
        key = quota_key(tenant, day, self._prefix)
        for _ in range(MAX_ATTEMPTS):
            try:
                entry = await self._kv.get(key)
            except KeyNotFoundError:
                return 0
            used = int(entry.value or b"0")
            value = str(max(used - units, 0)).encode()
            try:
                await self._kv.update(key, value, last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return units
        raise QuotaContentionError("unused units could not be returned")


def as_many_as_fit(wanted: int) -> Callable[[int], int]:
    """A charge of up to ``wanted`` units: as many as the room allows."""
    return lambda room: min(wanted, room)
