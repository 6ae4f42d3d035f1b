"""Operations: SIGTERM drains an in-flight call, and health follows NATS connectivity."""

from __future__ import annotations

import asyncio
import json

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from breachmatch import oprf, tls
from breachmatch.v1 import matcher_pb2

RPC_TIMEOUT = 20.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _wait_for_status(health_port: int, wanted: int) -> None:
    """Follow grpc.health.v1 Watch on the plaintext port until `wanted` is reported."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT
        )
        async for reply in watch:
            if reply.status == wanted:
                watch.cancel()
                return
    raise AssertionError("health watch ended without the expected status")


async def test_sigterm_drains_the_call_in_flight_and_exits_zero(
    matcher_files, nats_url, spawn_matcher, connect, key_info
):
    process = await spawn_matcher(matcher_files.config(nats_url, workers=1, drain_seconds=15))
    stub = connect(process.grpc_port, "mt-drain")
    key_id = (await key_info(stub)).current_key_id
    _, elements = oprf.blind_batch([b"drain:%d" % i for i in range(64)])

    call = stub.Evaluate(timeout=RPC_TIMEOUT)
    await call.write(
        matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements, batch_id=1)
    )
    assert (await call.read()).batch_id == 1

    process.terminate()
    await _wait_for_status(process.health_port, NOT_SERVING)

    # New calls are turned away while draining ...
    late = connect(process.grpc_port, "mt-drain")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await key_info(late)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    # ... while the call that was in flight goes on to completion ...
    await call.write(
        matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements, batch_id=2)
    )
    second = await call.read()
    assert (second.batch_id, len(second.evaluated_elements)) == (2, 64)
    await call.done_writing()
    assert await call.code() == grpc.StatusCode.OK

    # ... and then the process exits cleanly.
    assert await process.exit_code() == 0
    assert any('"matcher stopped"' in line for line in process.output)


async def test_not_serving_while_nats_is_down(matcher_files, fresh_nats_server, start_matcher):
    await fresh_nats_server.provision("ingest")
    app = await start_matcher(matcher_files.config(fresh_nats_server.url, workers=1))
    await _wait_for_status(app.service.health_port, SERVING)
    fresh_nats_server.kill9()
    await _wait_for_status(app.service.health_port, NOT_SERVING)
    await asyncio.to_thread(fresh_nats_server.restart)
    await _wait_for_status(app.service.health_port, SERVING)


def _retrying(line: dict[str, object], attempts: int) -> bool:
    return (
        line.get("event") == "cannot reach NATS; retrying" and line["failed_attempts"] == attempts
    )


async def test_a_nats_outage_is_a_few_log_lines_and_the_matcher_recovers(
    matcher_files, fresh_nats_server, spawn_matcher, connect, key_info, evaluate
):
    """The real process: NOT_SERVING while NATS is gone, one line per doubling of failed
    reconnects (no traceback), SERVING and evaluating again once NATS is back."""
    await fresh_nats_server.provision("ingest")  # the matcher waits for ingest's streams
    process = await spawn_matcher(matcher_files.config(fresh_nats_server.url, workers=1))
    before = len(process.output)
    fresh_nats_server.kill9()
    await _wait_for_status(process.health_port, NOT_SERVING)
    # 16 failed reconnects (about 8 s of outage) ...
    last = await process.wait_for_line(lambda line: _retrying(line, 16))
    during = process.output[before : last + 1]
    # ... are five "retrying" lines (attempts 1, 2, 4, 8, 16), one "lost the
    # connection" and one health change: no line per attempt, no traceback.
    assert len(during) <= 8, "".join(during)
    assert not [line for line in during if "Traceback" in line or '"exception"' in line]
    assert all(fresh_nats_server.url in line for line in during if "retrying" in line)

    await asyncio.to_thread(fresh_nats_server.restart)
    await _wait_for_status(process.health_port, SERVING)
    await process.wait_for_line(lambda line: line.get("event") == "connected to NATS again")
    stub = connect(process.grpc_port, "mt-health")
    key_id = (await key_info(stub)).current_key_id
    _, elements = oprf.blind_batch([b"after the outage"])
    request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements, batch_id=1)
    (reply,) = await evaluate(stub, [request])  # charges the budget in NATS KV
    assert len(reply.evaluated_elements) == 1
    process.terminate()
    assert await process.exit_code() == 0


async def test_json_logs_stay_json_when_grpc_core_has_something_to_say(
    matcher_files, nats_url, spawn_matcher, monkeypatch
):
    """A foreign certificate and a plaintext client make gRPC's C core log handshake
    failures of its own; with --log-format json every line must still be one JSON object."""
    monkeypatch.delenv("GRPC_VERBOSITY", raising=False)  # the command must see to it itself
    process = await spawn_matcher(matcher_files.config(nats_url, workers=1))
    target = f"localhost:{process.grpc_port}"
    foreign = tls.channel_credentials(tls.TlsFiles.from_dir(matcher_files.pki.foreign_dir))
    for channel in (
        grpc.aio.secure_channel(target, foreign),
        grpc.aio.insecure_channel(target),
    ):
        async with channel:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(channel.channel_ready(), 2.0)
    process.terminate()
    assert await process.exit_code() == 0
    not_json = []
    for line in process.output:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not_json == []
