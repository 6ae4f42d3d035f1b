"""The coordinator: one dump in, one published breach filter out.

It streams the dump in a reader thread (`bridge.iterate_in_thread`), which
computes match keys, cuts chunks (`pipeline`) and seals them; the loop
publishes each chunk to the work queue and checkpoints the job in KV. At the
same time it collects the workers' results from ``INGEST_RESULT.<job>`` and
adds them to the `FilterWriter`. The writer's output depends only on the set
of pairs, not on their order or batching, so results are added as they
arrive and a run with any number of workers gives a byte-identical body.

Once every chunk is in: finish the body, publish it as the breach's next
version (`publish.publish_artifact`: signed, idempotent, a no-op when nothing
changed), mark the job SUCCEEDED with the version, and drop
the job's queue leftovers. On resume (same job id, job still RUNNING), chunks
below the checkpoint are not enqueued again and results already on the
stream are replayed into the writer — only the missing OPRF work is redone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, TypeVar

import nacl.signing
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from breachmatch import bus, logs, tracing
from breachmatch.filter import FilterWriter
from breachmatch.keys import OprfKey
from breachmatch.reachability import UnreachableError
from breachmatch_ingest import metrics, queue
from breachmatch_ingest.bridge import iterate_in_thread
from breachmatch_ingest.errors import ChunkFailedError, JobStalledError, NoKeysError, describe
from breachmatch_ingest.jobs import JobRecord, JobState, JobStore
from breachmatch_ingest.metadata import BreachInfo, today
from breachmatch_ingest.outage import through_outage
from breachmatch_ingest.payloads import ChunkId, decode_result, encode_chunk
from breachmatch_ingest.pipeline import DEFAULT_CHUNK_PAIRS, DumpItem, chunks_of
from breachmatch_ingest.publish import Publication, publish_artifact
from breachmatch_ingest.report import Report
from breachmatch_ingest.sealing import QueueCipher

log = logs.get_logger(__name__)

#: What the reader thread iterates: the records (and bad rows) of one dump.
Items = Callable[[], Iterable[DumpItem]]
T = TypeVar("T")
#: How a checkpoint saves: `Coordinator._through`.
_Through = Callable[[str, Callable[[], Awaitable[JobRecord]]], Awaitable[JobRecord]]


@dataclass(frozen=True)
class CoordinatorSettings:
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS
    #: Fail the job when no result arrives for this long while chunks are outstanding.
    stall_timeout: float = 600.0


@dataclass(frozen=True)
class JobStart:
    record: JobRecord
    resumed: bool


@dataclass(frozen=True)
class JobOutcome:
    record: JobRecord
    publication: Publication
    resumed: bool


@dataclass(frozen=True, slots=True)
class _Sealed:
    """A chunk ready to publish (``sealed`` empty when the checkpoint says it already was)."""

    index: int
    sealed: bytes
    report: dict[str, Any]


class _Checkpoint:
    """The job record, updated by both halves of the coordinator and saved on every change."""

    def __init__(self, jobs: JobStore, record: JobRecord, through: _Through) -> None:
        self._jobs = jobs
        self._through = through
        self.record = record

    async def update(self, **changes: Any) -> None:
        """Change the record and save it, through a NATS outage (`outage`)."""
        # Replace before awaiting: the other half may update while this save is in flight,
        # and a retried save writes the record as it is then, never an older one.
        self.record = replace(self.record, **changes)
        await self._through("the ingest job store", lambda: self._jobs.save(self.record))

    async def fail(self, error: str) -> None:
        """Mark the job FAILED with one try: a job that cannot reach NATS stays RUNNING."""
        self.record = replace(self.record, state=JobState.FAILED, error=error)
        await self._jobs.save(self.record)


class _Collector:
    """Results of one job attempt into the filter writer, once per chunk index."""

    def __init__(self, attempt: int, cipher: QueueCipher, checkpoint: _Checkpoint) -> None:
        self._attempt = attempt
        self._cipher = cipher
        self._checkpoint = checkpoint
        self.writer = FilterWriter()
        self.seen: set[int] = set()
        self.total: int | None = None
        #: A worker's reason code for a chunk it could not evaluate.
        self.failure: str = ""
        #: NATS was away for longer than the bound while a result was being collected.
        self.error: UnreachableError | None = None
        self.progress = asyncio.Event()

    @property
    def complete(self) -> bool:
        return self.total is not None and len(self.seen) >= self.total

    async def on_message(self, msg: Msg) -> None:
        # The subscription would swallow an exception raised here; record it instead.
        try:
            await self._add(queue.read_result(msg))
        except UnreachableError as error:  # NATS away for longer than the bound
            self.error = error
        except Exception as error:
            self.failure = describe(error)
        self.progress.set()

    async def _add(self, result: queue.ResultMessage) -> None:
        chunk = result.chunk
        if chunk.attempt != self._attempt or chunk.index in self.seen:
            return  # an older attempt's leftover, or a duplicate delivery
        if result.error:
            self.failure = result.error
            return
        decoded = decode_result(chunk, self._cipher.open(result.sealed))
        self.writer.add_keys(decoded.keys, decoded.labels)
        self.seen.add(chunk.index)
        await self._checkpoint.update(chunks_collected=len(self.seen))

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error
        if self.failure:
            raise ChunkFailedError(f"a worker could not evaluate a chunk ({self.failure})")

    async def wait(self, stall_timeout: float) -> None:
        """Until every chunk is in; raise on a failed chunk or when nothing moves."""
        while not self.complete:
            self.raise_if_failed()
            try:
                await asyncio.wait_for(self.progress.wait(), stall_timeout)
            except TimeoutError:
                raise JobStalledError(
                    f"no chunk result for {stall_timeout:.0f} s; are ingest workers running?"
                ) from None
            self.progress.clear()
        self.raise_if_failed()


class Coordinator:
    def __init__(
        self,
        js: JetStreamContext,
        jobs: JobStore,
        signing_key: nacl.signing.SigningKey,
        settings: CoordinatorSettings,
    ) -> None:
        self._js = js
        self._jobs = jobs
        self._signing_key = signing_key
        self._settings = settings

    async def _through(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` through a NATS outage; an outage is a stall, with the same bound."""
        return await through_outage(self._js, what, attempt, self._settings.stall_timeout)

    async def begin(self, job_id: str, info: BreachInfo, key: OprfKey) -> JobStart:
        """Register (or find, to resume) job `job_id`; after this, its record is in KV."""
        await bus.ensure_streams(
            self._js, bus.STREAM_INGEST_CHUNKS, bus.STREAM_INGEST_RESULTS, bus.STREAM_BREACHES
        )
        record, resumed = await self._jobs.next_attempt(
            job_id, info.breach_id, key.key_id, today().isoformat()
        )
        if not resumed:
            await queue.purge_job(self._js, job_id)  # leftovers of an earlier attempt
            # Saved last: once the record exists, nothing is awaited before `run`
            # can be scheduled, so a RUNNING record always has a run behind it.
            record = await self._jobs.save(record)
        return JobStart(record, resumed)

    async def run(
        self, start: JobStart, info: BreachInfo, key: OprfKey, items: Items
    ) -> JobOutcome:
        """Run a begun job to a published filter; on failure the record says why, then raise."""
        if key.secret is None or key.key_id != start.record.key_id:
            raise ValueError("the job must run under the OPRF key it was begun with")
        logs.bind(job_id=start.record.job_id, breach_id=info.breach_id)
        log.info("ingest job started", attempt=start.record.attempt, resumed=start.resumed)
        checkpoint = _Checkpoint(self._jobs, start.record, self._through)
        metrics.RUNNING_JOBS.inc()
        try:
            # One trace for the job: its chunks, the workers' answers, the breach event.
            with tracing.span("ingest job"):
                publication = await self._run(checkpoint, info, key, key.secret, items)
        except UnreachableError as error:
            # NATS stayed away past the bound: the record stays RUNNING, so that
            # the next run resumes the job instead of starting it again.
            metrics.JOBS.labels(state=JobState.FAILED.value).inc()
            log.error("ingest job interrupted; run it again to resume", error=str(error))
            raise
        except Exception as error:
            # Best effort: when NATS itself is gone the record stays RUNNING,
            # which is right, since the next run can then resume it.
            with contextlib.suppress(Exception):
                await checkpoint.fail(describe(error))
                # A failed job is only ever started again as a new attempt.
                await queue.purge_job(self._js, start.record.job_id)
            metrics.JOBS.labels(state=JobState.FAILED.value).inc()
            log.error("ingest job failed", error=describe(error))
            raise
        finally:
            metrics.RUNNING_JOBS.dec()
        metrics.JOBS.labels(state=JobState.SUCCEEDED.value).inc()
        return JobOutcome(checkpoint.record, publication, start.resumed)

    async def _run(
        self, checkpoint: _Checkpoint, info: BreachInfo, key: OprfKey, secret: bytes, items: Items
    ) -> Publication:
        started = time.monotonic()
        record = checkpoint.record
        cipher = QueueCipher(secret)
        collector = _Collector(record.attempt, cipher, checkpoint)
        results = await self._js.subscribe(
            queue.result_subject(record.job_id), cb=collector.on_message, ordered_consumer=True
        )
        try:
            report = await self._enqueue(checkpoint, key.key_id, cipher, items, collector)
            collector.total = checkpoint.record.chunks_total
            collector.progress.set()
            await collector.wait(self._settings.stall_timeout)
        finally:
            await results.unsubscribe()
        # The body of a large dump is hundreds of MB (its proof index 8 bytes an entry):
        # they go to files, not to memory, and are written off the event loop so
        # NATS keeps hearing from this client.
        with tempfile.TemporaryFile() as body, tempfile.TemporaryFile() as proof_index:
            summary = await asyncio.to_thread(collector.writer.finish, body, proof_index)
            added = date.fromisoformat(record.added_date)
            draft = info.manifest_for(summary, key.key_id, added)
            publication = await self._through(
                "the breach store",
                lambda: publish_artifact(self._js, draft, body, proof_index, self._signing_key),
            )
        report.entries = summary.entry_count
        report.elapsed_seconds = time.monotonic() - started
        await checkpoint.update(
            state=JobState.SUCCEEDED,
            report=report,
            body_sha256=summary.body_sha256,
            version=publication.version,
        )
        await self._through("the work queue", lambda: queue.purge_job(self._js, record.job_id))
        log.info(
            "ingest job finished",
            publication=publication.outcome.value,
            version=publication.version,
            rows=report.rows_read,
            entries=report.entries,
            seconds=round(report.elapsed_seconds, 2),
        )
        return publication

    async def _enqueue(
        self,
        checkpoint: _Checkpoint,
        key_id: str,
        cipher: QueueCipher,
        items: Items,
        collector: _Collector,
    ) -> Report:
        """Read the whole dump, publishing the chunks the checkpoint does not cover.

        Stops early when a chunk already failed: the job cannot succeed then.
        """
        record = checkpoint.record
        already = record.chunks_enqueued
        report = Report()

        def sealed_chunks() -> Iterator[_Sealed]:
            for chunk in chunks_of(items(), report, self._settings.chunk_pairs):
                chunk_id = ChunkId(record.job_id, record.attempt, chunk.index)
                sealed = (
                    cipher.seal(encode_chunk(chunk_id, chunk.inputs, bytes(chunk.labels)))
                    if chunk.index >= already
                    else b""
                )
                yield _Sealed(chunk.index, sealed, report.to_dict())

        count = 0
        async with contextlib.aclosing(iterate_in_thread(sealed_chunks)) as ready_chunks:
            async for ready in ready_chunks:
                collector.raise_if_failed()
                count = ready.index + 1
                if ready.sealed:
                    chunk_id = ChunkId(record.job_id, record.attempt, ready.index)
                    publish = functools.partial(
                        queue.publish_chunk, self._js, chunk_id, key_id, ready.sealed
                    )
                    await self._through("the work queue", publish)
                    await checkpoint.update(
                        chunks_enqueued=count, report=Report.from_dict(ready.report)
                    )
        metrics.ROWS.inc(report.rows_read)
        if count == 0:
            raise NoKeysError(
                "the dump yielded no match keys; check the column mapping with --inspect"
            )
        await checkpoint.update(chunks_total=count, chunks_enqueued=count, report=report)
        return report
