"""The shared service runtime: health on both ports, reflection, metrics, drain."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from breachmatch import tls
from breachmatch.server import LIVENESS, ServerConfig, Service, watch_nats_health

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _plain_health(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(reply.status)


async def test_service_runtime_end_to_end(dev_pki):
    config = ServerConfig(
        grpc_addr="127.0.0.1:0",
        tls_dir=dev_pki.service_dir("matcher"),
        health_addr="127.0.0.1:0",
        metrics_addr="127.0.0.1:0",
        drain_seconds=2,
    )
    service = Service("test", config)
    await service.start(["breachmatch.v1.Matcher"])
    try:
        assert await _plain_health(service.health_port) == SERVING
        creds = tls.channel_credentials(tls.TlsFiles.from_dir(dev_pki.tenant_dir("hospital-a")))
        async with grpc.aio.secure_channel(f"localhost:{service.bound_port}", creds) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            names = [s.name async for r in replies for s in r.list_services_response.service]
        assert "breachmatch.v1.Matcher" in names
        assert "grpc.health.v1.Health" in names
        url = f"http://127.0.0.1:{service.metrics_port}/metrics"
        metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert b"python_info" in metrics

        # NATS down → NOT_SERVING, NATS back → SERVING, seen by a probe's Watch.
        connected = {"up": False}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.health_port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
            seen = [(await watch.read()).status]
            watcher = asyncio.create_task(
                watch_nats_health(service, lambda: connected["up"], interval=0.01)
            )
            seen.append((await watch.read()).status)
            # Readiness dropped with NATS; liveness must not (no restart loop).
            liveness = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=LIVENESS), timeout=5
            )
            connected["up"] = True
            seen.append((await watch.read()).status)
            watch.cancel()
        assert seen == [SERVING, NOT_SERVING, SERVING]
        assert liveness.status == SERVING
    finally:
        await service.drain()
    await asyncio.wait_for(watcher, 5)
    assert service.stopping
