"""What an operator's Prometheus scrapes from a running matcher: build info, budgets."""

from __future__ import annotations

import asyncio

from breachmatch import oprf
from breachmatch.v1 import matcher_pb2
from breachmatch_matcher.budget import block_for


async def test_build_info_and_budget_gauges_are_scraped(
    matcher, connect, key_info, evaluate, scrape, build_info_labels
):
    tenant, limit = "mt-metrics", 10_000_000  # the default budget of the test tenants file
    stub = connect(matcher.port, tenant)
    key_id = (await key_info(stub)).current_key_id
    _, elements = oprf.blind_batch([b"metrics:%d" % i for i in range(3)])
    request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements)
    assert len((await evaluate(stub, [request]))[0].evaluated_elements) == 3

    samples = await asyncio.to_thread(scrape, matcher.service.metrics_port)
    assert samples[("breachmatch_build_info", build_info_labels("matcher"))] == 1
    labels = (("tenant", tenant),)
    assert samples[("breachmatch_matcher_budget_limit", labels)] == limit
    assert samples[("breachmatch_matcher_budget_remaining", labels)] == limit - 3
    # One block taken from the shared count, three elements of it used.
    assert samples[("breachmatch_matcher_budget_reserved", labels)] == block_for(limit) - 3
