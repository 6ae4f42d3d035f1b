"""Health and metrics endpoints for the processes that serve no gRPC API.

``worker`` pods and ``ingest`` Jobs serve nothing, but Kubernetes still
probes them (gRPC health on the plaintext health port) and Prometheus still
scrapes them. `serve` gets both from `breachmatch.server.Service`; these two
commands get the same endpoints here, without the mTLS API port. A worker is
healthy while it runs: it holds no traffic that readiness could route away.
"""

from __future__ import annotations

import grpc.aio
import prometheus_client
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from breachmatch import build, logs

log = logs.get_logger(__name__)


class Probes:
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
            await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        if self._metrics_addr:
            host, _, port = self._metrics_addr.rpartition(":")
            server, _thread = prometheus_client.start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104
            self.metrics_port = server.server_port
            build.publish_build_info("ingest")
        if self._health_addr or self._metrics_addr:
            log.info("probes started", health_port=self.health_port, metrics=self._metrics_addr)

    async def stop(self) -> None:
        if self._server is not None:
            await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            await self._server.stop(0)
