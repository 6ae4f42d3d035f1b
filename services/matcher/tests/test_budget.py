"""Daily budgets: exact under concurrency, in one process and across two matcher processes."""

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
from breachmatch_matcher.budget import BudgetLedger, budget_key
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
