"""The chunk work queue on JetStream: subjects, headers, dedup ids, consumers.

Coordinator and workers share nothing but these messages:

* a chunk goes to ``INGEST_CHUNK.<job>`` (work-queue stream
  ``INGEST_CHUNKS``), sealed (`sealing`), with dedup id
  ``<job>:<attempt>:<index>`` and the OPRF key id in a header;
* a worker's answer goes to ``INGEST_RESULT.<job>`` (stream
  ``INGEST_RESULTS``) with the same dedup id, sealed too, or with an error
  reason code and no payload when the chunk cannot be evaluated.

The attempt number is part of the dedup id because a job that finished (or
failed) and is run again must be able to enqueue the same chunk indexes
inside the streams' one-day duplicate window; within one attempt, re-sending
a chunk after a crash is a no-op, which is what makes resuming cheap.

All workers bind the one durable pull consumer `bus.CONSUMER_INGEST_WORKERS`
with explicit acks: a worker that dies mid-chunk simply never acks, and the
chunk is redelivered to another worker after ``ack_wait``. Long chunks are
kept alive with ``in_progress``; redelivery is bounded by ``max_deliver`` so
a chunk that kills every worker cannot loop forever (the coordinator then
reports the job as stalled).
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from breachmatch import bus
from breachmatch_ingest.payloads import ChunkId

KEY_ID_HEADER = "Bm-Key-Id"
ATTEMPT_HEADER = "Bm-Attempt"
INDEX_HEADER = "Bm-Chunk"
ERROR_HEADER = "Bm-Error"
_DEDUP_HEADER = "Nats-Msg-Id"


class QueueMessageError(ValueError):
    """A queue message lacks the headers that say which chunk it is."""


def chunk_subject(job_id: str) -> str:
    return bus.subject_for(bus.INGEST_CHUNK, job_id)


def result_subject(job_id: str) -> str:
    return bus.subject_for(bus.INGEST_RESULT, job_id)


def _headers(chunk: ChunkId) -> dict[str, str]:
    return {
        _DEDUP_HEADER: chunk.dedup_id,
        ATTEMPT_HEADER: str(chunk.attempt),
        INDEX_HEADER: str(chunk.index),
    }


async def publish_chunk(js: JetStreamContext, chunk: ChunkId, key_id: str, sealed: bytes) -> None:
    headers = _headers(chunk) | {KEY_ID_HEADER: key_id}
    await js.publish(
        chunk_subject(chunk.job_id), sealed, stream=bus.STREAM_INGEST_CHUNKS, headers=headers
    )


async def publish_result(
    js: JetStreamContext, chunk: ChunkId, sealed: bytes = b"", error: str = ""
) -> None:
    """A worker's answer: a sealed result, or (``error`` set) a reason code and no payload."""
    headers = _headers(chunk) | ({ERROR_HEADER: error} if error else {})
    await js.publish(
        result_subject(chunk.job_id), sealed, stream=bus.STREAM_INGEST_RESULTS, headers=headers
    )


@dataclass(frozen=True, slots=True)
class QueuedChunk:
    """A chunk message as a worker sees it."""

    chunk: ChunkId
    key_id: str
    sealed: bytes


@dataclass(frozen=True, slots=True)
class ResultMessage:
    """A result message as the coordinator sees it."""

    chunk: ChunkId
    sealed: bytes
    error: str


def _chunk_id(msg: Msg) -> ChunkId:
    headers = msg.headers or {}
    job_id = msg.subject.rpartition(".")[2]
    try:
        return ChunkId(job_id, int(headers[ATTEMPT_HEADER]), int(headers[INDEX_HEADER]))
    except (KeyError, ValueError):
        raise QueueMessageError("queue message without a valid chunk identity") from None


def read_chunk(msg: Msg) -> QueuedChunk:
    key_id = (msg.headers or {}).get(KEY_ID_HEADER, "")
    if not key_id:
        raise QueueMessageError("chunk message without an OPRF key id")
    return QueuedChunk(_chunk_id(msg), key_id, msg.data)


def read_result(msg: Msg) -> ResultMessage:
    return ResultMessage(_chunk_id(msg), msg.data, (msg.headers or {}).get(ERROR_HEADER, ""))


def worker_consumer_config(ack_wait: float, max_deliver: int) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=bus.CONSUMER_INGEST_WORKERS,
        name=bus.CONSUMER_INGEST_WORKERS,
        filter_subject=bus.INGEST_CHUNK + ".>",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
    )


async def bind_worker_queue(
    js: JetStreamContext, ack_wait: float, max_deliver: int
) -> JetStreamContext.PullSubscription:
    """Create or update the shared worker consumer, then bind a pull subscription to it."""
    await bus.ensure_streams(js, bus.STREAM_INGEST_CHUNKS, bus.STREAM_INGEST_RESULTS)
    await js.add_consumer(bus.STREAM_INGEST_CHUNKS, worker_consumer_config(ack_wait, max_deliver))
    return await js.pull_subscribe_bind(
        durable=bus.CONSUMER_INGEST_WORKERS, stream=bus.STREAM_INGEST_CHUNKS
    )


async def purge_job(js: JetStreamContext, job_id: str) -> None:
    """Drop whatever a job left on the queue: its results and any unconsumed chunks.

    Results are keyed tag hashes, not identifiers, but once the filter is
    published they have no use, and a store that keeps less leaks less.
    """
    await js.purge_stream(bus.STREAM_INGEST_RESULTS, subject=result_subject(job_id))
    await js.purge_stream(bus.STREAM_INGEST_CHUNKS, subject=chunk_subject(job_id))
