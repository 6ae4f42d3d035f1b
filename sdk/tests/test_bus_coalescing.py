"""`bus.CoalescingClient`: requests of tasks woken a turn or two apart share one write.

Against the real nats-server with the notifier's own certificate: twelve
tasks each send a request one turn of the event loop after the previous one.
nats-py's own client writes nearly every request out on its own; the
coalescing client, once a few are in flight, gathers them into a few writes,
and every request is still answered. A forced flush, and a request with few
others in flight, are not held back.
"""

from __future__ import annotations

import asyncio

import pytest

from breachmatch import bus
from breachmatch_dev import NatsServer

TASKS = 12


async def _staggered_writes(nats_server: NatsServer, *, coalesce: bool) -> int:
    """Socket writes it took to send ``TASKS`` requests one loop turn apart."""
    nc, js = await nats_server.connect("notifier", coalesce_writes=coalesce)
    try:
        assert isinstance(nc, bus.CoalescingClient) is coalesce
        kv = await bus.key_value(js, bus.KV_NOTIFIER_RATES)
        await kv.put("rate.coalescing-test.0", b"1")
        transport = nc._transport
        assert transport is not None
        writes = 0
        write = transport.writelines

        def counting(payload: list[bytes]) -> None:
            nonlocal writes
            writes += 1
            write(payload)

        transport.writelines = counting  # type: ignore[method-assign]

        async def request(turns: int) -> bytes | None:
            for _ in range(turns):
                await asyncio.sleep(0)
            return (await kv.get("rate.coalescing-test.0")).value

        answers = await asyncio.wait_for(
            asyncio.gather(*(request(turn) for turn in range(TASKS))), 10
        )
        assert answers == [b"1"] * TASKS
        counted = writes
        await asyncio.wait_for(nc.flush(), 5)  # a forced flush goes out at once
        return counted
    finally:
        await nc.close()


@pytest.mark.parametrize("coalesce", [False, True])
async def test_requests_a_turn_apart_share_writes_only_when_coalescing(
    nats_server: NatsServer, coalesce: bool
) -> None:
    writes = await _staggered_writes(nats_server, coalesce=coalesce)
    if coalesce:
        # The first few go out at once, the rest while those await their replies.
        assert writes <= bus.COALESCE_FROM + TASKS // bus.FLUSH_YIELDS + 1
    else:
        assert writes >= TASKS - 2  # the control: without it, nearly a write per request


async def test_a_request_with_few_others_in_flight_is_not_held_back(
    nats_server: NatsServer,
) -> None:
    """Intake's steps run one after another: none of them waits for company."""
    nc, js = await nats_server.connect("notifier", coalesce_writes=True)
    try:
        assert isinstance(nc, bus.CoalescingClient)
        kv = await bus.key_value(js, bus.KV_NOTIFIER_RATES)
        for _ in range(3):
            await kv.put("rate.coalescing-test.1", b"1")
        assert nc._kick is None  # no write was ever deferred
    finally:
        await nc.close()
