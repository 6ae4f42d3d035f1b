"""How jobs fail: rejected chunks, no workers, no keys — recorded, explained, nothing published."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from breachmatch import bus
from breachmatch.keys import load_signing_key
from breachmatch_dev import synthetic
from breachmatch_ingest import queue
from breachmatch_ingest.coordinator import Coordinator, CoordinatorSettings
from breachmatch_ingest.errors import ChunkFailedError, IngestError, JobStalledError, NoKeysError
from breachmatch_ingest.jobs import JobState, JobStore, random_job_id
from breachmatch_ingest.metadata import BreachInfo
from breachmatch_ingest.payloads import ChunkId
from breachmatch_ingest.pipeline import read_dump

from .conftest import PROCESS_TIMEOUT, Kit, breach_events, write_dump

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_chunk_a_worker_cannot_open_is_answered_with_a_reason(
    js: JetStreamContext, kit: Kit, local_worker: None
) -> None:
    job_id = random_job_id()
    answers: asyncio.Queue[queue.ResultMessage] = asyncio.Queue()

    async def collect(msg: Msg) -> None:
        await answers.put(queue.read_result(msg))

    await bus.ensure_streams(js, bus.STREAM_INGEST_CHUNKS, bus.STREAM_INGEST_RESULTS)
    sub = await js.subscribe(queue.result_subject(job_id), cb=collect, ordered_consumer=True)
    await queue.publish_chunk(js, ChunkId(job_id, 1, 0), kit.key.key_id, b"\x00" * 80)
    await queue.publish_chunk(js, ChunkId(job_id, 1, 1), "no-such-key", b"\x00" * 80)
    got = [await asyncio.wait_for(answers.get(), PROCESS_TIMEOUT) for _ in range(2)]
    await sub.unsubscribe()
    await queue.purge_job(js, job_id)
    assert {(a.chunk.index, a.error, a.sealed) for a in got} == {
        (0, "undecryptable", b""),
        (1, "unknown_key", b""),
    }


@pytest.fixture
def failing_job(
    js: JetStreamContext, kit: Kit, breach_id: str
) -> Callable[..., Awaitable[IngestError]]:
    """Run a job that must fail; check its record and that nothing was published."""

    async def run(dump: Path, stall_timeout: float = 30.0, key_id: str = "") -> IngestError:
        jobs = await JobStore.open(js)
        settings = CoordinatorSettings(chunk_pairs=100, stall_timeout=stall_timeout)
        coordinator = Coordinator(js, jobs, load_signing_key(kit.files.signing_key), settings)
        key = replace(kit.key, key_id=key_id) if key_id else kit.key
        info = BreachInfo(breach_id=breach_id, title="Failing")
        start = await coordinator.begin(random_job_id(), info, key)
        with pytest.raises(IngestError) as failed:
            await coordinator.run(start, info, key, lambda: read_dump(dump))
        record = await jobs.get(start.record.job_id)
        assert record is not None
        assert (record.state, record.error) == (JobState.FAILED, str(failed.value))
        assert await breach_events(js, breach_id) == []
        return failed.value

    return run


async def test_a_rejected_chunk_fails_the_job_with_its_reason(
    failing_job: Callable[..., Awaitable[IngestError]], local_worker: None, tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(10)))
    error = await failing_job(dump, key_id="k-not-in-the-workers-ring")
    assert isinstance(error, ChunkFailedError)
    assert "unknown_key" in str(error)


async def test_without_workers_a_job_stalls_and_says_so(
    failing_job: Callable[..., Awaitable[IngestError]], tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(5)))
    error = await failing_job(dump, stall_timeout=0.5)
    assert isinstance(error, JobStalledError)
    assert "workers" in str(error)


async def test_a_dump_without_identifiers_fails_instead_of_publishing_an_empty_filter(
    failing_job: Callable[..., Awaitable[IngestError]], tmp_path: Path
) -> None:
    dump = tmp_path / "notes.csv"
    dump.write_text("Journal;Medicin\r\nKontrol;Metformin\r\nSamtale;\r\n", encoding="utf-8")
    error = await failing_job(dump)
    assert isinstance(error, NoKeysError)
    assert "--inspect" in str(error)
