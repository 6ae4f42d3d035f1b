"""What an operator's Prometheus scrapes from a running matcher: build info, budgets."""

from __future__ import annotations

import asyncio
import platform
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from breachmatch import oprf
from breachmatch.v1 import matcher_pb2
from breachmatch_matcher.budget import block_for


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_build_info_and_budget_gauges_are_scraped(matcher, connect, key_info, evaluate):
    tenant, limit = "mt-metrics", 10_000_000  # the default budget of the test tenants file
    stub = connect(matcher.port, tenant)
    key_id = (await key_info(stub)).current_key_id
    _, elements = oprf.blind_batch([b"metrics:%d" % i for i in range(3)])
    request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements)
    assert len((await evaluate(stub, [request]))[0].evaluated_elements) == 3

    samples = await asyncio.to_thread(_scrape, matcher.service.metrics_port)
    build_labels = (
        ("git_sha", "unknown"),
        ("python", platform.python_version()),
        ("service", "matcher"),
        ("version", "0.1.0"),
    )
    assert samples[("breachmatch_build_info", build_labels)] == 1
    labels = (("tenant", tenant),)
    assert samples[("breachmatch_matcher_budget_limit", labels)] == limit
    assert samples[("breachmatch_matcher_budget_remaining", labels)] == limit - 3
    # One block taken from the shared count, three elements of it used.
    assert samples[("breachmatch_matcher_budget_reserved", labels)] == block_for(limit) - 3
