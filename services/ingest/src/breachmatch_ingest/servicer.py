"""The gRPC ``Ingest`` service: upload a dump, follow its job, retract a breach.

Callers are operator tools holding an *operator* certificate of the
operator's CA (`breachmatch.authz` refuses hospitals and services before any
handler here runs); the caller is logged with every upload and retraction.

``Upload`` parses the dump *while it streams*: the first message carries the
metadata, every further message a slice of bytes, and an empty chunk marks
the end. The marker is required because grpcio ends a server's request
stream the same way whether the client finished or its connection was cut;
without it a truncated dump would be published as if it were whole. The
bytes go through a bounded
in-memory `UploadPipe` into the reader thread — no temporary file ever holds
the plaintext, and a slow reader slows the upload down instead of filling
memory. The call returns the job id once the last byte is in; the job goes on
(OPRF evaluation by the workers, publication) in the background, and
``GetJob`` reports its state and report.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import nacl.signing
from nats.js import JetStreamContext

from breachmatch import logs
from breachmatch.columns import ColumnMapping, MappingError
from breachmatch.filter import RetractionFormatError, is_breach_id
from breachmatch.keys import KeyRing, KeyRingError, OprfKey
from breachmatch.readers import FORMATS
from breachmatch.v1 import ingest_pb2, ingest_pb2_grpc
from breachmatch_ingest.bridge import UploadPipe
from breachmatch_ingest.coordinator import Coordinator, JobStart
from breachmatch_ingest.errors import describe
from breachmatch_ingest.jobs import JobState, JobStore, is_job_id, random_job_id
from breachmatch_ingest.metadata import BreachInfo, MetadataError
from breachmatch_ingest.pipeline import DumpItem, read_dump
from breachmatch_ingest.publish import (
    PublishContentionError,
    RetractOutcome,
    UnknownBreachError,
    retract_breach,
)

log = logs.get_logger(__name__)

SERVICE_NAME = "breachmatch.v1.Ingest"

_STATES = {
    JobState.RUNNING: ingest_pb2.Job.STATE_RUNNING,
    JobState.SUCCEEDED: ingest_pb2.Job.STATE_SUCCEEDED,
    JobState.FAILED: ingest_pb2.Job.STATE_FAILED,
}

_Context = grpc.aio.ServicerContext[Any, Any]


class _UploadRefused(Exception):
    """The upload broke the protocol; its job fails and the call ends INVALID_ARGUMENT."""


class IngestServicer(ingest_pb2_grpc.IngestServicer):
    def __init__(
        self,
        js: JetStreamContext,
        jobs: JobStore,
        coordinator: Coordinator,
        oprf_key_dir: Path,
        signing_key: nacl.signing.SigningKey,
    ) -> None:
        self._js = js
        self._jobs = jobs
        self._coordinator = coordinator
        self._oprf_key_dir = oprf_key_dir
        self._signing_key = signing_key
        self._running: set[asyncio.Task[None]] = set()

    async def Upload(
        self, request_iterator: AsyncIterator[ingest_pb2.UploadRequest], context: _Context
    ) -> ingest_pb2.UploadResponse:
        first = await anext(request_iterator, None)
        if first is None or not first.HasField("header"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first message is a header")
        header = first.header
        info, mapping = await self._checked_header(header, context)
        try:
            key = KeyRing.load(self._oprf_key_dir).current
        except KeyRingError:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no current OPRF key")
        pipe = UploadPipe(asyncio.get_running_loop())
        start = await self._coordinator.begin(random_job_id(), info, key)
        # No await between the record's creation and its run (see Coordinator.begin).
        self._track(self._run(start, info, key, pipe, header.format or "auto", mapping))
        job_id = start.record.job_id
        ended = False
        try:
            log.info("upload started", job_id=job_id)  # the caller is bound by AuthInterceptor
            async for request in request_iterator:
                if ended or request.HasField("header"):
                    raise _UploadRefused("after the header come chunks, then one empty chunk")
                if not request.chunk:
                    ended = True
                await pipe.feed(request.chunk)
            if not ended:
                raise _UploadRefused("the upload ended without its end marker (an empty chunk)")
        except BaseException as error:
            pipe.abort()
            if isinstance(error, _UploadRefused):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            raise
        await pipe.finish()
        log.info("upload complete", job_id=job_id, bytes=pipe.bytes_fed)
        return ingest_pb2.UploadResponse(job_id=job_id)

    async def _checked_header(
        self, header: ingest_pb2.UploadHeader, context: _Context
    ) -> tuple[BreachInfo, ColumnMapping | None]:
        try:
            info = BreachInfo.from_proto(header.metadata)
            info.check()
            if header.format and header.format not in FORMATS:
                raise MetadataError(f"format must be one of {', '.join(FORMATS)}")
            mapping = (
                ColumnMapping.from_document(json.loads(header.mapping)) if header.mapping else None
            )
        except (MetadataError, MappingError) as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "mapping is not JSON")
        return info, mapping

    def _track(self, job: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(job)
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self,
        start: JobStart,
        info: BreachInfo,
        key: OprfKey,
        pipe: UploadPipe,
        format: str,
        mapping: ColumnMapping | None,
    ) -> None:
        loop = asyncio.get_running_loop()

        def items() -> Iterator[DumpItem]:
            try:
                yield from read_dump(io.BufferedReader(pipe), format, mapping)
            finally:
                # If the reader stops early the rest of the upload must not block on it.
                loop.call_soon_threadsafe(pipe.close_reader)

        try:
            # A failure is logged by the coordinator and kept in the job record for GetJob.
            with contextlib.suppress(Exception):
                await self._coordinator.run(start, info, key, items)
        except asyncio.CancelledError:
            # An uploaded dump cannot be resumed (its bytes are gone): say so.
            stopped = "the ingest service stopped before the job finished; upload it again"
            current = await self._jobs.get(start.record.job_id) or start.record
            await self._jobs.save(replace(current, state=JobState.FAILED, error=stopped))
            raise

    async def GetJob(
        self, request: ingest_pb2.GetJobRequest, context: _Context
    ) -> ingest_pb2.GetJobResponse:
        if not is_job_id(request.job_id):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "job_id must be the 32 hex digits Upload returned"
            )
        record = await self._jobs.get(request.job_id)
        if record is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such job")
        job = ingest_pb2.Job(
            job_id=record.job_id,
            breach_id=record.breach_id,
            state=_STATES[record.state],
            report=record.report.to_proto(),
            error=record.error,
            version=record.version,
        )
        return ingest_pb2.GetJobResponse(job=job)

    async def RetractBreach(
        self, request: ingest_pb2.RetractBreachRequest, context: _Context
    ) -> ingest_pb2.RetractBreachResponse:
        if not is_breach_id(request.breach_id) or not request.reason.strip():
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "a valid breach_id and a reason are needed"
            )
        try:
            outcome = await retract_breach(
                self._js, request.breach_id, request.reason, self._signing_key
            )
        except UnknownBreachError as error:
            await context.abort(grpc.StatusCode.NOT_FOUND, describe(error))
        except RetractionFormatError as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except PublishContentionError as error:
            await context.abort(grpc.StatusCode.ABORTED, describe(error))
        log.info(
            "retraction requested",
            breach_id=request.breach_id,
            already=outcome is RetractOutcome.ALREADY_RETRACTED,
        )
        return ingest_pb2.RetractBreachResponse()

    async def stop(self) -> None:
        """Cancel jobs still running (at shutdown); their records say they failed."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
