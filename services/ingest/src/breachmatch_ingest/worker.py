"""Ingest workers: turn queued chunks of OPRF inputs into filter keys.

A worker is a loop over the shared pull consumer (`queue.bind_worker_queue`)
and a process pool: each chunk is opened, evaluated under the OPRF key its
header names, hashed into the filter's tag hashes and label pads, sealed and
sent back, all inside one pool process (`evaluate_chunk`), so the event loop
only moves bytes and keeps the chunk alive with ``in_progress`` while it waits.
One chunk per pool process at a time: a whole chunk per process keeps every
core busy without splitting chunks into slices and merging them again.

The answer is published *before* the chunk is acked. A crash between the two
makes JetStream redeliver the chunk, the result is computed again and its
publication is dropped as a duplicate — at-least-once evaluation, exactly-once
results.

CLI ``ingest`` runs a worker beside its coordinator (``--workers N``),
``breachmatch-ingest worker`` runs one alone, ``serve`` runs one beside the
gRPC service; any number of them on any machines share the same queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import numpy as np
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from breachmatch import bus, logs, oprf, tracing
from breachmatch.filter import derive_keys
from breachmatch.keys import KeyRing, KeyRingError, RetiredKeyError
from breachmatch_ingest import metrics, queue
from breachmatch_ingest.outage import transient
from breachmatch_ingest.payloads import (
    ChunkId,
    ChunkResult,
    PayloadError,
    decode_chunk,
    encode_result,
)
from breachmatch_ingest.sealing import QueueCipher, SealError

log = logs.get_logger(__name__)

#: How long one fetch waits for a chunk before the loop checks for a stop.
FETCH_TIMEOUT = 0.25


@dataclass(frozen=True)
class WorkerSettings:
    oprf_key_dir: Path
    #: Chunks evaluated at once; the pool should have this many processes.
    slots: int
    ack_wait: float = 30.0
    max_deliver: int = 5


def _ignore_interrupts() -> None:
    """Pool processes leave Ctrl-C to the parent, which finishes its chunks and stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def pool_for(slots: int) -> Iterator[ProcessPoolExecutor]:
    """A pool of `slots` processes, all forked now.

    Call it before the event loop, NATS or any thread starts: a forked child
    then copies a quiet, single-threaded process (already holding every
    module `evaluate_chunk` needs), so it is ready in milliseconds, whereas a
    spawned one would import the whole CLI again (about a second each).
    """
    pool = ProcessPoolExecutor(
        max_workers=slots,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_ignore_interrupts,
    )
    try:
        # With "fork", the first submit starts every process of the pool.
        pool.submit(int).result()
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def evaluate_chunk(secret: bytes, chunk: ChunkId, sealed: bytes) -> bytes:
    """Open, evaluate, derive filter keys, seal — in a pool process.

    The 64-byte OPRF outputs exist only inside this function; what leaves it is
    the sealed result (tag hashes, pads, labels).
    """
    cipher = QueueCipher(secret)
    inputs, labels = decode_chunk(chunk, cipher.open(sealed))
    keys = derive_keys(oprf.evaluate_batch(secret, inputs))
    result = ChunkResult(keys=keys, labels=np.frombuffer(labels, dtype=np.uint8))
    return cipher.seal(encode_result(chunk, result))


def _rejection(error: Exception) -> str | None:
    """The reason code for a chunk that can never be evaluated, or None if `error` is ours."""
    if isinstance(error, SealError):
        return "undecryptable"
    if isinstance(error, PayloadError):
        return "malformed_chunk"
    if isinstance(error, oprf.OprfError):
        return "oprf_input"
    if isinstance(error, RetiredKeyError):
        return "retired_key"
    if isinstance(error, KeyRingError):
        return "unknown_key"
    return None


class ChunkWorker:
    """Consume chunks until `stop` is set; finish the chunks in hand, then return."""

    def __init__(self, js: JetStreamContext, settings: WorkerSettings, pool: Executor) -> None:
        self._js = js
        self._settings = settings
        self._pool = pool

    async def run(self, stop: asyncio.Event) -> None:
        sub = await queue.bind_worker_queue(
            self._js, self._settings.ack_wait, self._settings.max_deliver
        )
        slots = asyncio.Semaphore(self._settings.slots)
        log.info("ingest worker started", slots=self._settings.slots)
        try:
            async with asyncio.TaskGroup() as group:
                while not stop.is_set():
                    await slots.acquire()
                    try:
                        msgs = await sub.fetch(1, timeout=FETCH_TIMEOUT)
                    except Exception as error:
                        slots.release()
                        if not transient(error):
                            raise
                        if not isinstance(error, TimeoutError):  # NATS away: nats-py reconnects
                            await asyncio.sleep(FETCH_TIMEOUT)
                        continue
                    group.create_task(self._handle_then_release(msgs[0], slots))
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        log.info("ingest worker stopped")

    async def _handle_then_release(self, msg: Msg, slots: asyncio.Semaphore) -> None:
        try:
            with tracing.consuming(msg, bus.STREAM_INGEST_CHUNKS):
                await self._handle(msg)
        finally:
            slots.release()

    async def _handle(self, msg: Msg) -> None:
        try:
            queued = queue.read_chunk(msg)
        except queue.QueueMessageError:
            # Without an identity there is nobody to answer; drop it for good.
            log.warning("chunk message without identity dropped")
            metrics.CHUNKS.labels(outcome="dropped").inc()
            await msg.term()
            return
        keep_alive = asyncio.create_task(self._keep_alive(msg))
        error = ""
        try:
            sealed = await self._evaluate(queued)
        except Exception as failure:
            reason = _rejection(failure)
            if reason is None:
                raise
            sealed, error = b"", reason
        finally:
            keep_alive.cancel()
        chunk = queued.chunk
        try:
            await queue.publish_result(self._js, chunk, sealed=sealed, error=error)
            # A rejected chunk would be rejected again anywhere: terminate, don't redeliver.
            await (msg.term() if error else msg.ack())
        except nats.errors.Error:
            # NATS is unreachable for now; unacked, the chunk comes back after ack_wait.
            log.warning("chunk answer not sent", job_id=chunk.job_id, chunk=chunk.index)
            metrics.CHUNKS.labels(outcome="unanswered").inc()
            return
        if error:
            log.warning("chunk rejected", job_id=chunk.job_id, chunk=chunk.index, reason=error)
        else:
            log.debug("chunk evaluated", job_id=chunk.job_id, chunk=chunk.index)
        metrics.CHUNKS.labels(outcome=error or "evaluated").inc()

    async def _evaluate(self, queued: queue.QueuedChunk) -> bytes:
        # The key ring is read per chunk so a rotated key is picked up without a restart.
        secret = KeyRing.load(self._settings.oprf_key_dir).secret_for(queued.key_id)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, evaluate_chunk, secret, queued.chunk, queued.sealed
        )

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell JetStream the chunk is still being worked on, three times per ack_wait."""
        while True:
            await asyncio.sleep(self._settings.ack_wait / 3)
            with contextlib.suppress(nats.errors.Error):  # a lost beat means a redelivery
                await msg.in_progress()
