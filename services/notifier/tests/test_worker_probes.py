"""What Prometheus scrapes from ``breachmatch-notifier worker``, which serves no gRPC API."""

from __future__ import annotations

import asyncio

from breachmatch import build
from breachmatch_notifier.probes import WorkerProbes


async def test_a_worker_serves_build_info_on_its_metrics_port(scrape, build_info_labels):
    build.BUILD_INFO.clear()  # whatever another test of this process published
    probes = WorkerProbes(health_addr=None, metrics_addr="127.0.0.1:0")
    await probes.start()
    try:
        samples = await asyncio.to_thread(scrape, probes.metrics_port)
    finally:
        await probes.stop()
    assert samples[("breachmatch_build_info", build_info_labels("notifier"))] == 1
