"""Running the notifier: refusing bad configuration, health, drain, metrics."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import prometheus_client
from grpc_health.v1 import health_pb2, health_pb2_grpc

from breachmatch import bus
from breachmatch.tls import TlsFiles, channel_credentials
from breachmatch.v1 import outreach_pb2_grpc
from breachmatch.v1.outreach_pb2 import SubmitOutreachRequest
from breachmatch_dev.nats_server import free_port
from breachmatch_notifier.app import NotifierApp
from breachmatch_notifier.ledger import QUEUED, SENT
from breachmatch_notifier.notice import PACKAGED_TEMPLATES

from .conftest import EVENT_TIMEOUT, Harness, Patient

BREACH = "alles-2025"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CLOSED = -1  # the health stream ended (its server stopped)
PATIENTS = [
    Patient(ref=f"OPS-{n}", name=f"Lone Madsen {chr(65 + n)}", email=f"lone.madsen{n}@example.dk")
    for n in range(1, 3)
]


def run_cli(harness: Harness, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*harness.notifier_command, *args],
        env=harness.worker_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_refuses_to_start_with_a_template_that_lacks_a_required_element(
    harness: Harness, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(PACKAGED_TEMPLATES, templates)
    body = templates / "_body.da.txt"
    body.write_text(
        "".join(line for line in body.read_text().splitlines(True) if "t.advice" not in line)
    )
    refused = run_cli(harness, "worker", BREACHMATCH_NOTIFIER_TEMPLATE_DIR=str(templates))
    assert refused.returncode == 2
    assert "refusing to start: templates" in refused.stderr
    assert "lacks what the person should do" in refused.stderr
    # Nothing was connected to: start-up stopped before NATS.
    assert "breach catalogue replayed" not in refused.stderr


def test_refuses_to_start_without_a_channel_or_its_key(harness: Harness) -> None:
    no_channel = run_cli(harness, "worker", BREACHMATCH_SMTP_HOST="")
    assert no_channel.returncode == 2
    assert "no channel configured" in no_channel.stderr
    no_key = run_cli(harness, "worker", BREACHMATCH_NOTIFIER_SECRET_KEY=None)
    assert no_key.returncode == 2
    assert "--notifier-secret-key is required" in no_key.stderr


async def test_serve_command_delivers_and_stops_cleanly_on_sigterm(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    grpc_port, health_port = free_port(), free_port()
    env = harness.worker_env(
        BREACHMATCH_TLS_DIR=str(harness.pki.service_dir("notifier")),
        BREACHMATCH_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        BREACHMATCH_HEALTH_ADDR=f"127.0.0.1:{health_port}",
    )
    log_path = harness.root / "serve.log"
    with log_path.open("wb") as log:
        server = await asyncio.create_subprocess_exec(
            *harness.notifier_command, "serve", env=env, stdout=log, stderr=log
        )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="breachmatch.v1.Outreach"),
                wait_for_ready=True,
                timeout=EVENT_TIMEOUT,
            )
            async for response in watch:
                if response.status == SERVING:
                    break
        files = TlsFiles.from_dir(harness.pki.tenant_dir("hospital-a"))
        async with grpc.aio.secure_channel(
            f"localhost:{grpc_port}", channel_credentials(files)
        ) as channel:
            stub = outreach_pb2_grpc.OutreachStub(channel)
            request = SubmitOutreachRequest(items=[harness.item(PATIENTS[0], BREACH)])
            response = await stub.SubmitOutreach(request, timeout=EVENT_TIMEOUT)
        assert [receipt.accepted for receipt in response.receipts] == [True]
        (entry,) = (await harness.settled(BREACH, 1)).values()
        assert entry.state == SENT
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), EVENT_TIMEOUT) == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
    assert "notifier stopped" in log_path.read_text()


async def watch_health(port: int) -> tuple[grpc.aio.Channel, asyncio.Queue[int]]:
    """A plaintext health Watch whose statuses arrive on the queue."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    statuses: asyncio.Queue[int] = asyncio.Queue()

    async def follow() -> None:
        stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        try:
            async for response in stream:
                await statuses.put(response.status)
        except grpc.aio.AioRpcError:
            await statuses.put(CLOSED)

    asyncio.get_running_loop().create_task(follow())
    return channel, statuses


async def next_status(statuses: asyncio.Queue[int], *wanted: int) -> None:
    async with asyncio.timeout(EVENT_TIMEOUT):
        while await statuses.get() not in wanted:
            pass


async def test_health_is_not_serving_while_nats_is_down(harness: Harness) -> None:
    server = await harness.start_app()
    worker = await harness.start_app(intake=False)
    assert server.service is not None
    assert worker.probes is not None
    watches = [
        await watch_health(server.service.health_port),
        await watch_health(worker.probes.health_port),
    ]
    for _, statuses in watches:
        await next_status(statuses, SERVING)
    harness.nats.kill9()
    for _, statuses in watches:
        await next_status(statuses, NOT_SERVING)
    harness.nats.start()
    for _, statuses in watches:
        await next_status(statuses, SERVING)
    for channel, _ in watches:
        await channel.close(None)


async def test_drain_finishes_the_send_in_flight_and_fetches_no_more(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    harness.smtp.hold_after(0)
    app = await harness.start_app(workers_per_process=1)
    assert app.service is not None
    items = [harness.item(patient, BREACH) for patient in PATIENTS]
    await harness.stub(app).SubmitOutreach(SubmitOutreachRequest(items=items), timeout=20)
    await harness.smtp.wait_until(lambda sink: sink.rcpt_seen == 1)
    channel, statuses = await watch_health(app.service.health_port)
    await next_status(statuses, SERVING)

    stopping = asyncio.create_task(app.stop())
    # NOT_SERVING (or the health port closing) shows the drain has begun; the
    # held send keeps it from finishing.
    await next_status(statuses, NOT_SERVING, CLOSED)
    assert not stopping.done()
    harness.smtp.release.set()
    await asyncio.wait_for(stopping, EVENT_TIMEOUT)
    await channel.close(None)

    entries = {entry.idempotency_key: entry for entry in await harness.ledger.entries("hospital-a")}
    assert sorted(entry.state for entry in entries.values()) == [QUEUED, SENT]
    (sent,) = [entry for entry in entries.values() if entry.state == SENT]
    assert [m["X-Breachmatch-Idempotency-Key"] for m in harness.smtp.messages] == [
        sent.idempotency_key
    ]
    # The other request was never fetched: it waits on the queue for the next worker.
    assert (await harness.js.stream_info(bus.STREAM_OUTREACH)).state.messages == 1


async def test_metrics_count_sends_per_channel_and_the_queue(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    before = prometheus_client.REGISTRY.get_sample_value(
        "breachmatch_notifier_notices_sent_total", {"channel": "email"}
    )
    app: NotifierApp = await harness.start_app(metrics_addr="127.0.0.1:0")
    assert app.service is not None
    await harness.stub(app).SubmitOutreach(
        SubmitOutreachRequest(items=[harness.item(PATIENTS[0], BREACH)]), timeout=20
    )
    await harness.settled(BREACH, 1)
    url = f"http://127.0.0.1:{app.service.metrics_port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        exposition = await response.text()
    sent = prometheus_client.REGISTRY.get_sample_value(
        "breachmatch_notifier_notices_sent_total", {"channel": "email"}
    )
    assert sent == (before or 0) + 1
    assert f'breachmatch_notifier_notices_sent_total{{channel="email"}} {sent}' in exposition
    assert "breachmatch_notifier_queue_depth " in exposition
