"""Health and metrics for ``breachmatch-notifier worker``, which serves no gRPC API.

`serve` gets both from `breachmatch.server.Service`. A worker-only process
has no mTLS port for that runtime to wrap, but a scheduler still needs to
know whether it is alive and connected, and Prometheus still scrapes it. So
this starts just the plaintext grpc.health.v1 port (SERVING while NATS is
reachable, NOT_SERVING while it is not and from the start of shutdown) and
the metrics HTTP endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import grpc.aio
import prometheus_client
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from breachmatch import build, logs

log = logs.get_logger(__name__)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class WorkerProbes:
    def __init__(self, health_addr: str | None, metrics_addr: str | None) -> None:
        self._health_addr = health_addr
        self._metrics_addr = metrics_addr
        self._health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self.health_port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        if self._health_addr:
            self._server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
            self.health_port = self._server.add_insecure_port(self._health_addr)
            await self._server.start()
        if self._metrics_addr:
            host, _, port = self._metrics_addr.rpartition(":")
            server, _thread = prometheus_client.start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104
            self.metrics_port = server.server_port
            build.publish_build_info("notifier")
        log.info(
            "worker probes started", health_port=self.health_port, metrics_port=self.metrics_port
        )

    async def watch_nats(
        self, connected: Callable[[], bool], until: asyncio.Event, interval: float = 1.0
    ) -> None:
        """Report SERVING while ``connected()``, until ``until`` is set."""
        last: bool | None = None
        while not until.is_set():
            now = connected()
            if now != last:
                await self._health.set("", _SERVING if now else _NOT_SERVING)
                last = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(until.wait(), interval)
        await self._health.set("", _NOT_SERVING)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)
