"""Daily budgets: exact under concurrency, storms and a kill, in one and across two processes."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime
from typing import Any

import grpc
import grpc.aio
import pytest

from breachmatch import bus, oprf
from breachmatch.tenants import Tenant, Tenants
from breachmatch.v1 import matcher_pb2
from breachmatch_matcher.budget import BudgetLedger, block_for, budget_key
from breachmatch_matcher.budget_status import LIMIT_KEY, REMAINING_KEY, RESETS_AT_KEY


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str:
    metadata: Any = error.trailing_metadata()  # grpc.aio.Metadata: (key, value) pairs
    values = [str(value) for name, value in metadata if name == key]
    assert len(values) == 1
    return values[0]


async def test_two_ledgers_share_one_budget_exactly(nats_server):
    """Two NATS connections (as two replicas), 8 concurrent chargers, limit 500."""
    tenant = f"ledger-{random.randrange(1 << 30)}"
    tenants = Tenants(known={tenant: Tenant(tenant, daily_budget=500)})
    connections = [await nats_server.connect("matcher", f"replica-{i}") for i in range(2)]
    ledgers = [
        BudgetLedger(await bus.key_value(js, bus.KV_BUDGETS), tenants) for _, js in connections
    ]

    async def charger(index: int) -> int:
        rng = random.Random(index)
        ledger = ledgers[index % 2]
        granted = 0
        size = rng.randint(1, 9)
        while True:
            decision = await ledger.charge(tenant, size)
            if decision.granted:
                granted += size
                size = rng.randint(1, 9)
            elif decision.remaining:
                size = decision.remaining
            else:
                return granted

    granted = await asyncio.gather(*(charger(i) for i in range(8)))
    assert sum(granted) == 500
    kv = await bus.key_value(connections[0][1], bus.KV_BUDGETS)
    entry = await kv.get(budget_key(tenant, datetime.now(UTC).date()))
    assert entry.value == b"500"
    for nc, _ in connections:
        await nc.drain()


async def test_tenant_ids_that_are_not_plain_tokens_get_their_own_budget(js):
    """Certificate names may hold dots and spaces; each still maps to one valid, own KV key."""
    odd, plain = "Hospital A. (Øst)", "Hospital-A"
    tenants = Tenants(known={t: Tenant(t, daily_budget=10) for t in (odd, plain)})
    ledger = BudgetLedger(await bus.key_value(js, bus.KV_BUDGETS), tenants)
    assert (await ledger.charge(odd, 10)).granted
    assert not (await ledger.charge(odd, 1)).granted
    assert (await ledger.charge(plain, 10)).granted
    assert budget_key(odd, date(2025, 1, 2)) != budget_key(plain, date(2025, 1, 2))


async def test_refusal_reports_the_remaining_allowance(matcher, connect, key_info, evaluate):
    stub = connect(matcher.port, "mt-budget")  # daily budget 100
    key_id = (await key_info(stub)).current_key_id
    _, elements = oprf.blind_batch([b"budget:%d" % i for i in range(60)])

    def request(count: int) -> matcher_pb2.EvaluateRequest:
        return matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements[:count])

    granted = await evaluate(stub, [request(60)])
    assert len(granted[0].evaluated_elements) == 60

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await evaluate(stub, [request(41)])
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "41 elements refused, 40 of 100 remain" in (error.details() or "")
    assert _trailer(error, REMAINING_KEY) == "40"
    assert _trailer(error, LIMIT_KEY) == "100"
    assert _trailer(error, RESETS_AT_KEY).endswith("T00:00:00Z")

    exact = await evaluate(stub, [request(40)])
    assert len(exact[0].evaluated_elements) == 40


async def _caller(evaluate, stub, key_id: str, pool: list[bytes], seed: int):
    """Ask for random batches until refused with nothing left; (granted, final status)."""
    rng = random.Random(seed)
    granted = 0
    size = rng.randint(1, len(pool))
    while True:
        request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=pool[:size])
        try:
            responses = await evaluate(stub, [request])
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            remaining = int(_trailer(error, REMAINING_KEY))
            if remaining == 0:
                return granted, error.code()
            size = remaining  # exactly what is left: granted unless another caller wins
        else:
            granted += len(responses[0].evaluated_elements)
            size = rng.randint(1, len(pool))


async def test_budget_is_exact_across_two_matcher_processes(
    matcher_files, nats_url, spawn_matcher, connect, key_info, evaluate
):
    """8 concurrent callers against 2 `breachmatch-matcher serve` processes, budget 1000."""
    tenant = "mt-budget-procs"
    config = matcher_files.config(nats_url, workers=1)
    processes = await asyncio.gather(spawn_matcher(config), spawn_matcher(config))
    stubs = [connect(process.grpc_port, tenant) for process in processes]
    key_id = (await key_info(stubs[0])).current_key_id
    _, pool = oprf.blind_batch([b"procs:%d" % i for i in range(37)])

    results = await asyncio.gather(
        *(_caller(evaluate, stubs[i % 2], key_id, pool, seed=i) for i in range(8))
    )
    assert sum(granted for granted, _ in results) == 1000
    assert {status for _, status in results} == {grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_a_storm_of_one_element_calls_is_served_and_counted_exactly(
    matcher_files, nats_url, spawn_matcher, connect, key_info, js
):
    """Issue 14: 1,200 concurrent one-element Evaluate calls over 2 matcher processes got
    468 UNAVAILABLE from compare-and-set retries. Reserved blocks: none, and once both
    processes have stopped (returning what they reserved) the count is exactly 1,200."""
    tenant = "mt-storm"  # default budget, 10 million: the blocks are full size
    config = matcher_files.config(nats_url, workers=1)
    processes = await asyncio.gather(spawn_matcher(config), spawn_matcher(config))
    stubs = [connect(process.grpc_port, tenant) for process in processes]
    key_id = (await key_info(stubs[0])).current_key_id
    _, (element,) = oprf.blind_batch([b"storm"])
    request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=[element])

    async def one(index: int) -> grpc.StatusCode:
        call: Any = stubs[index % 2].Evaluate(iter([request]), timeout=120)
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    codes = await asyncio.gather(*(one(i) for i in range(1200)))
    assert {code.name: codes.count(code) for code in set(codes)} == {"OK": 1200}
    for process in processes:
        process.terminate()
    assert [await process.exit_code() for process in processes] == [0, 0]
    kv = await bus.key_value(js, bus.KV_BUDGETS)
    assert (await kv.get(budget_key(tenant, datetime.now(UTC).date()))).value == b"1200"


async def test_budget_stays_exact_when_a_replica_is_killed(
    matcher_files, nats_url, spawn_matcher, connect, key_info, evaluate, js
):
    """2 processes share a budget of 2,000; one is killed -9 while holding a reserve. No
    element beyond the limit is ever granted, and the killed replica's unused reserve —
    at most one block — is all that is lost, for the rest of the day."""
    tenant, limit = "mt-budget-kill", 2000
    config = matcher_files.config(nats_url, workers=1)
    doomed, survivor = await asyncio.gather(spawn_matcher(config), spawn_matcher(config))
    doomed_stub, survivor_stub = (connect(p.grpc_port, tenant) for p in (doomed, survivor))
    key_id = (await key_info(survivor_stub)).current_key_id
    _, pool = oprf.blind_batch([b"kill:%d" % i for i in range(7)])
    granted = 0
    for index in range(40):  # both replicas reserve a block and use part of it
        for stub in (doomed_stub, survivor_stub):
            count = 1 + index % len(pool)
            request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=pool[:count])
            granted += len((await evaluate(stub, [request]))[0].evaluated_elements)
    await doomed.kill()
    results = await asyncio.gather(
        *(_caller(evaluate, survivor_stub, key_id, pool, seed=i) for i in range(4))
    )
    granted += sum(n for n, _ in results)
    kv = await bus.key_value(js, bus.KV_BUDGETS)
    counted = int((await kv.get(budget_key(tenant, datetime.now(UTC).date()))).value or b"")
    assert counted == limit  # the shared count never passes the limit
    assert granted <= limit
    assert limit - granted <= block_for(limit)  # lost: the killed replica's unused reserve
    survivor.terminate()
    assert await survivor.exit_code() == 0


async def test_an_idle_replicas_reserve_goes_back_to_the_shared_count(nats_server):
    """Replica A reserves a block for one element and goes quiet; within its hold period
    the unused part returns, and replica B can have the whole rest of the budget."""
    tenant = f"ledger-{random.randrange(1 << 30)}"
    limit = 64 * 100  # blocks of 100
    tenants = Tenants(known={tenant: Tenant(tenant, daily_budget=limit)})
    connections = [await nats_server.connect("matcher", f"replica-{i}") for i in range(2)]
    a, b = [
        BudgetLedger(await bus.key_value(js, bus.KV_BUDGETS), tenants, hold_seconds=0.5)
        for _, js in connections
    ]
    a.start()
    assert (await a.charge(tenant, 1)).granted
    kv = await bus.key_value(connections[0][1], bus.KV_BUDGETS)
    key = budget_key(tenant, datetime.now(UTC).date())
    assert (await kv.get(key)).value == str(block_for(limit)).encode()  # one CAS, one block
    watcher = await kv.watch(key)
    async with asyncio.timeout(30):
        while (update := await watcher.updates(timeout=30)) is None or update.value != b"1":
            pass
    await watcher.stop()
    assert (await b.charge(tenant, limit - 1)).granted
    assert not (await b.charge(tenant, 1)).granted
    await a.close()
    for nc, _ in connections:
        await nc.drain()
