"""Scale-out over the JetStream work queue, and resuming after kill -9, with real processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.js import JetStreamContext

from breachmatch import bus
from breachmatch.v1.breach_pb2 import BreachEvent
from breachmatch_dev import synthetic
from breachmatch_ingest.jobs import DumpIdentity, JobRecord, JobState, digest_file

from .conftest import (
    PROCESS_TIMEOUT,
    Cli,
    Kit,
    Spawned,
    breach_events,
    expected_body,
    published,
    write_dump,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_two_worker_processes_build_the_same_body_as_one_process(
    cli: Cli, js: JetStreamContext, kit: Kit, tmp_path: Path
) -> None:
    crowd = list(synthetic.crowd(400, seed=21))
    dump = write_dump(tmp_path / "dump.csv", "csv", crowd)
    single, spread = "scale-single-" + os.urandom(4).hex(), "scale-spread-" + os.urandom(4).hex()
    await cli.ingest(dump, single, "--workers", "1")

    workers = [
        await Spawned.start(
            cli, "worker", "--workers", "1", "--log-level", "debug", "--health-addr", "127.0.0.1:0"
        )
        for _ in range(2)
    ]
    for worker in workers:
        await worker.wait_for("ingest worker started")
    probe_port = (await workers[0].wait_for("probes started"))["health_port"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{probe_port}") as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=PROCESS_TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await cli.ingest(dump, spread, "--workers", "0", "--chunk-pairs", "100")
    assert [await worker.stop() for worker in workers] == [0, 0]

    # Each worker process evaluated part of the 16 chunks.
    assert all(worker.events("chunk evaluated") for worker in workers)
    assert sum(len(worker.events("chunk evaluated")) for worker in workers) >= 16
    one, two = await published(js, single, kit), await published(js, spread, kit)
    assert two.body == one.body
    assert one.body == expected_body([p.record() for p in crowd], kit.secret)


async def test_kill_9_mid_ingest_then_rerun_gives_the_uninterrupted_filter(
    cli: Cli, js: JetStreamContext, kit: Kit, breach_id: str, tmp_path: Path
) -> None:
    crowd = list(synthetic.crowd(3000, seed=31))
    dump = write_dump(tmp_path / "dump.jsonl", "jsonl", crowd)
    flags = ("--workers", "1", "--chunk-pairs", "200", "--ack-wait", "2")
    dump_sha256, dump_size = digest_file(dump)
    job_id = DumpIdentity(
        breach_id, dump_sha256, dump_size, kit.key.key_id, "auto", "", 200
    ).job_id()
    jobs = await bus.key_value(js, bus.KV_INGEST_JOBS)
    watcher = await jobs.watch(job_id)

    first = await cli.start(
        str(dump), "--breach-id", breach_id, "--title", "Kill", "--organisation", "Klinik", *flags
    )
    while True:  # until the job's checkpoint shows a chunk evaluated and collected
        entry = await watcher.updates(timeout=PROCESS_TIMEOUT)
        if entry is not None and entry.value and JobRecord.from_json(entry.value).chunks_collected:
            break
    os.killpg(first.pid, signal.SIGKILL)
    await first.wait()
    await watcher.stop()

    interrupted = JobRecord.from_json((await jobs.get(job_id)).value or b"")
    assert interrupted.state is JobState.RUNNING
    assert (
        interrupted.chunks_total is None or interrupted.chunks_collected < interrupted.chunks_total
    )
    assert await breach_events(js, breach_id) == []

    done = await cli.ingest(dump, breach_id, "--title", "Kill", *flags)
    assert '"event": "resuming job"' in done.stderr
    final = JobRecord.from_json((await jobs.get(job_id)).value or b"")
    assert (final.state, final.attempt) == (JobState.SUCCEEDED, 1)
    found = await published(js, breach_id, kit)
    assert [e.kind for e in found.events] == [BreachEvent.KIND_PUBLISHED]
    assert found.body == expected_body([p.record() for p in crowd], kit.secret)
