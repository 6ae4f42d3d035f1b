"""The runtime every breachmatch gRPC service shares.

Matcher, notifier and ingest differ in what they serve, not in how they run:
each listens for mTLS gRPC (caller = client certificate, admitted per method
by `AuthInterceptor`), answers grpc.health.v1 both there and on a plaintext
port for Kubernetes' native gRPC probes, offers server reflection, exposes
Prometheus metrics over HTTP, reports NOT_SERVING while NATS is unreachable,
and on SIGTERM stops taking new calls, reports NOT_SERVING and drains the
calls in flight before exiting. Writing that once keeps the three services
consistent and their own modules about their own job.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from breachmatch import build, grpc_tracing, logs, tls

log = logs.get_logger(__name__)

_REQUEST_ID_HEADER = "x-request-id"

#: Health service name for liveness probes: SERVING from start until drain,
#: whatever NATS does. The overall status ("") is readiness: it also reports
#: NOT_SERVING while NATS is unreachable, which should take the pod out of
#: rotation, not get it restarted.
LIVENESS = "liveness"

if TYPE_CHECKING:  # grpc-stubs makes the interceptor generic; the runtime class is not
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


@dataclass(frozen=True)
class ServerConfig:
    grpc_addr: str
    tls_dir: Path
    health_addr: str | None = None
    metrics_addr: str | None = None
    max_message_bytes: int = 8 * 1024 * 1024
    drain_seconds: float = 20.0


class RequestContextInterceptor(_Interceptor):
    """Bind method and request id to the log context of each call, and log its end.

    The request id comes from the caller's ``x-request-id`` metadata when
    present (so a hospital can correlate), else a fresh one. Installed after
    `AuthInterceptor`, whose wrapper runs first and sets the caller.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        metadata = dict(details.invocation_metadata or ())
        request_id = str(metadata.get(_REQUEST_ID_HEADER) or uuid.uuid4().hex[:16])
        method = details.method
        logs.bind(request_id=request_id, method=method)
        return await continuation(details)


class Service:
    """One gRPC service process: build it, add servicers to `.server`, then `run()`."""

    def __init__(
        self,
        name: str,
        config: ServerConfig,
        interceptors: Sequence[_Interceptor] = (),
    ) -> None:
        self.name = name
        self.config = config
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
        ]
        self.server = grpc.aio.server(
            interceptors=[
                RequestContextInterceptor(),
                grpc_tracing.TracingInterceptor(),  # before auth: refusals are traced too
                tls.AuthInterceptor(),
                *interceptors,
            ],
            options=options,
        )
        self.health = HealthServicer()
        self._health_server: grpc.aio.Server | None = None
        self._service_names: list[str] = []
        self._stopping = asyncio.Event()
        self.bound_port = 0
        self.health_port = 0
        self.metrics_port = 0

    async def start(self, service_names: Sequence[str]) -> None:
        """Bind ports and start; `service_names` are the full names for health/reflection."""
        self._service_names = list(service_names)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self._service_names, reflection.SERVICE_NAME, health.SERVICE_NAME], self.server
        )
        creds = tls.server_credentials(tls.TlsFiles.from_dir(self.config.tls_dir))
        self.bound_port = self.server.add_secure_port(self.config.grpc_addr, creds)
        await self.server.start()
        if self.config.health_addr:
            # Probes cannot present client certificates; this port serves
            # grpc.health.v1 only, with the same servicer, in plaintext.
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(self.config.health_addr)
            await self._health_server.start()
        if self.config.metrics_addr:
            host, _, port = self.config.metrics_addr.rpartition(":")
            server, _thread = prometheus_client.start_http_server(int(port), addr=host or "0.0.0.0")  # noqa: S104
            self.metrics_port = server.server_port
            build.publish_build_info(self.name)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.set_serving(True)
        log.info(
            "service started",
            grpc_port=self.bound_port,
            health_port=self.health_port,
            metrics_port=self.metrics_port,
        )

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving and not self._stopping.is_set()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self._service_names):
            await self.health.set(name, status)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def wait_for_stop(self) -> None:
        await self._stopping.wait()

    def request_stop(self) -> None:
        self._stopping.set()

    async def drain(self) -> None:
        """NOT_SERVING first (so load balancers stop routing), then finish in-flight calls."""
        self._stopping.set()
        await self.set_serving(False)
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.NOT_SERVING)
        started = time.monotonic()
        await self.server.stop(self.config.drain_seconds)
        if self._health_server is not None:
            await self._health_server.stop(0)
        log.info("service drained", seconds=round(time.monotonic() - started, 3))


async def watch_nats_health(
    service: Service, connected: Callable[[], bool], interval: float = 1.0
) -> None:
    """Flip health to NOT_SERVING while NATS is unreachable, back when it returns."""
    last: bool | None = None
    while not service.stopping:
        now = connected()
        if now != last:
            await service.set_serving(now)
            if last is not None:
                log.warning("nats connectivity changed", connected=now)
            last = now
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(service.wait_for_stop(), interval)
