"""The token bucket, driven by a fake clock: no real waiting anywhere."""

from __future__ import annotations

import asyncio

import pytest

from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels import Dispatcher, DryRunChannel, DryRunLog, TokenBucket
from breachmatch_notifier.notice import Notice

from .conftest import RecordingIntent


class FakeClock:
    """A clock that only moves when the bucket sleeps on it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def bucket(clock: FakeClock, rate: float, burst: float | None = None) -> TokenBucket:
    return TokenBucket(rate, burst=burst, clock=clock, sleep=clock.sleep)


async def test_burst_passes_at_once_then_the_rate_applies() -> None:
    clock = FakeClock()
    limiter = bucket(clock, rate=2.0, burst=3)
    for _ in range(3):
        await limiter.acquire()
    assert clock.sleeps == []
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(0.5)]
    await limiter.acquire()
    assert sum(clock.sleeps) == pytest.approx(1.0)


async def test_idle_time_refills_but_never_beyond_the_burst() -> None:
    clock = FakeClock()
    limiter = bucket(clock, rate=10.0, burst=2)
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    clock.now += 60  # a long pause saves up only `burst` tokens
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert limiter.wait_time() == pytest.approx(0.1)


async def test_concurrent_waiters_are_spread_at_the_rate() -> None:
    clock = FakeClock()
    limiter = bucket(clock, rate=4.0, burst=1)
    started = clock.now
    await asyncio.wait_for(asyncio.gather(*(limiter.acquire() for _ in range(9))), timeout=5)
    # one from the burst, eight more at four a second
    assert clock.now - started == pytest.approx(2.0)
    assert len(clock.sleeps) == 8


async def test_fractional_rates_work() -> None:
    clock = FakeClock()
    limiter = bucket(clock, rate=0.5)
    await limiter.acquire()
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(2.0)]


def test_default_burst_is_one_second_of_tokens() -> None:
    assert TokenBucket(20).capacity == 20
    assert TokenBucket(0.2).capacity == 1


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (1, 0.5)])
def test_nonsense_limits_are_refused(rate: float, burst: float | None) -> None:
    with pytest.raises(ValueError, match=r"rate_per_second|burst"):
        TokenBucket(rate, burst=burst)


async def test_dispatcher_waits_for_the_channels_bucket() -> None:
    clock = FakeClock()
    log = DryRunLog()
    dispatcher = Dispatcher({"sms": DryRunChannel(log, "sms")}, {"sms": bucket(clock, rate=1.0)})
    notice = Notice(
        language="da",
        sender="Rigshospitalet",
        subject="s",
        text="t",
        html="h",
        sms_text="x",
        digital_post_text="d",
    )
    for n in range(3):
        await dispatcher.deliver(
            notice, ContactDetails(phone="+4520304050"), f"key-{n}", RecordingIntent()
        )
    assert log.counts() == {"sms": 3}
    assert sum(clock.sleeps) == pytest.approx(2.0)
