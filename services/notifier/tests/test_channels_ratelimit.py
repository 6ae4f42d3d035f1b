"""The shared rate limit, against the real nats-server's KV bucket, on a clock held still.

Two `SharedRateLimit`s on two connections stand for two replicas. The clock
only moves when a limiter sleeps (to the start of the window it waits for), so
what each window granted is exact and nothing really waits.
"""

from __future__ import annotations

import asyncio
import collections
import math
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.js.api import StorageType
from nats.js.kv import KeyValue

from breachmatch import bus
from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_dev import NatsServer
from breachmatch_notifier.channels import Dispatcher, DryRunChannel, DryRunLog, SharedRateLimit
from breachmatch_notifier.notice import Notice

from .conftest import RecordingIntent


class HeldClock:
    """Wall time that moves only when a limiter sleeps: to the end of its sleep."""

    def __init__(self) -> None:
        self.now = 1_000_000.25
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        target = self.now + seconds
        await asyncio.sleep(0)  # let the other replica run, as a real sleep would
        self.now = max(self.now, target)


@pytest.fixture
async def buckets(nats_server: NatsServer) -> AsyncIterator[list[KeyValue]]:
    """The rate bucket as two notifier replicas see it (two connections)."""
    connections = [await nats_server.connect("notifier") for _ in range(2)]
    yield [await bus.key_value(js, bus.KV_NOTIFIER_RATES) for _, js in connections]
    for nc, _ in connections:
        await nc.close()


def channel() -> str:
    """A channel name of this test's own, so tests never share counters."""
    return f"test_{uuid.uuid4().hex[:12]}"


async def counts(kv: KeyValue, limit: SharedRateLimit) -> dict[int, int]:
    """Window index -> notices the bucket counted in it, for ``limit``'s channel."""
    found = {}
    prefix = f"rate.{limit.channel}."
    for key in [key for key in await kv.keys() if key.startswith(prefix)]:
        entry = await kv.get(key)
        found[int(key.rsplit(".", 1)[1])] = int(entry.value or b"0")
    return found


async def test_two_replicas_together_stay_within_each_windows_allowance(
    buckets: list[KeyValue],
) -> None:
    clock = HeldClock()
    name = channel()
    replicas = [SharedRateLimit(kv, name, 10, clock=clock, sleep=clock.sleep) for kv in buckets]
    granted: collections.Counter[int] = collections.Counter()
    served: collections.Counter[int] = collections.Counter()

    async def send(replica: int) -> None:
        limit = replicas[replica]
        await limit.acquire()
        granted[math.floor(clock() / limit.window)] += 1
        served[replica] += 1

    await asyncio.wait_for(asyncio.gather(*(send(n % 2) for n in range(50))), 20)

    assert served == {0: 25, 1: 25}
    assert max(granted.values()) <= 10  # never more than the allowance in one window ...
    assert len(granted) >= 5  # ... so 50 notices took five windows at least
    counted = await counts(buckets[0], replicas[0])
    assert set(granted) <= set(counted)
    for window, sent in granted.items():
        assert sent <= counted[window] <= 10  # a grant may go unused; never over-counted
    assert counted[min(counted)] == 10  # the first window was used to the full


async def test_a_slow_rate_allows_one_notice_per_longer_window(buckets: list[KeyValue]) -> None:
    clock = HeldClock()
    limit = SharedRateLimit(buckets[0], channel(), 0.5, clock=clock, sleep=clock.sleep)
    assert (limit.window, limit.allowance) == (2.0, 1)
    started = clock()
    for _ in range(3):
        await limit.acquire()
    assert clock() - started >= 4.0 - 0.25  # the first in this window, two more after it
    assert sorted((await counts(buckets[0], limit)).values()) == [1, 1, 1]


async def test_the_dispatcher_holds_a_channel_to_its_shared_limit(
    buckets: list[KeyValue],
) -> None:
    clock = HeldClock()
    log = DryRunLog()
    limit = SharedRateLimit(buckets[0], channel(), 1, clock=clock, sleep=clock.sleep)
    dispatcher = Dispatcher({"sms": DryRunChannel(log, "sms")})
    dispatcher.limit({"sms": limit})
    notice = Notice(
        language="da",
        sender="Rigshospitalet",
        subject="s",
        text="t",
        html="h",
        sms_text="x",
        digital_post_text="d",
    )
    started = clock()
    for n in range(3):
        await dispatcher.deliver(
            notice, ContactDetails(phone="+4520304050"), f"key-{n}", RecordingIntent()
        )
    assert log.counts() == {"sms": 3}
    assert clock.sleeps == 2
    assert clock() - started == pytest.approx(2.0 - 0.25)


async def test_the_bucket_forgets_its_counters_and_keeps_them_in_memory(
    buckets: list[KeyValue],
) -> None:
    status = await buckets[0].status()
    assert status.ttl == 60
    assert status.stream_info.config.storage == StorageType.MEMORY


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
async def test_nonsense_rates_are_refused(buckets: list[KeyValue], rate: float) -> None:
    with pytest.raises(ValueError, match="rate_per_second"):
        SharedRateLimit(buckets[0], "email", rate)
