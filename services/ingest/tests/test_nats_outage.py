"""A nats-server killed and restarted mid-ingest: the CLI rides it out, with a real server.

Before `outage`, the first JetStream request to time out while the server was
away failed the job (exit 1), though nothing was lost and a re-run resumed it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from breachmatch import bus
from breachmatch.v1.breach_pb2 import BreachEvent
from breachmatch_dev import NatsServer, synthetic
from breachmatch_ingest.jobs import DumpIdentity, JobRecord, JobState, digest_file

from .conftest import PROCESS_TIMEOUT, Cli, Kit, Spawned, expected_body, published, write_dump

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_nats_restart_mid_ingest_is_ridden_out(
    cli: Cli, fresh_nats_server: NatsServer, kit: Kit, breach_id: str, tmp_path: Path
) -> None:
    crowd = list(synthetic.crowd(4000, seed=41))
    dump = write_dump(tmp_path / "dump.csv", "csv", crowd)
    flags = ("--workers", "1", "--chunk-pairs", "200", "--ack-wait", "2")
    dump_sha256, dump_size = digest_file(dump)
    job_id = DumpIdentity(
        breach_id, dump_sha256, dump_size, kit.key.key_id, "auto", "", 200
    ).job_id()
    nc, js = await fresh_nats_server.connect("ingest", "outage-test")
    await bus.ensure_owned(js, "ingest")
    jobs = await bus.key_value(js, bus.KV_INGEST_JOBS)
    watcher = await jobs.watch(job_id)

    running = await Spawned.start(
        cli, str(dump), "--breach-id", breach_id, "--title", "Outage", "--organisation", "Klinik",
        *flags, BREACHMATCH_NATS_URL=fresh_nats_server.url,
    )  # fmt: skip
    while True:  # until the job's checkpoint shows a chunk evaluated and collected
        entry = await watcher.updates(timeout=PROCESS_TIMEOUT)
        if entry is not None and entry.value and JobRecord.from_json(entry.value).chunks_collected:
            break
    await watcher.stop()
    await nc.close()

    fresh_nats_server.kill9()
    await running.wait_for("lost the connection to NATS")
    # The outage's length: longer than a JetStream request's timeout, so requests fail.
    await asyncio.sleep(5.0)
    await asyncio.to_thread(fresh_nats_server.start)

    await asyncio.wait_for(running.process.wait(), PROCESS_TIMEOUT)
    assert await running.stop() == 0, "".join(running.raw[-20:])
    assert running.events("connected to NATS again")
    assert not running.events("ingest job failed")
    nc, js = await fresh_nats_server.connect("ingest", "outage-check")
    try:
        jobs = await bus.key_value(js, bus.KV_INGEST_JOBS)
        final = JobRecord.from_json((await jobs.get(job_id)).value or b"")
        assert (final.state, final.attempt) == (JobState.SUCCEEDED, 1)
        found = await published(js, breach_id, kit)
        assert [e.kind for e in found.events] == [BreachEvent.KIND_PUBLISHED]
        assert found.body == expected_body([p.record() for p in crowd], kit.secret)
    finally:
        await nc.close()
