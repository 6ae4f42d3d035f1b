"""Pipelined VOPRF evaluation: blind, send, verify and finalize, checkpoint — never idle.

Every batch the matcher answers carries an RFC 9497 proof that each element
was evaluated under the key id's operator-stated public key. The batch is
verified before anything of it is used: a batch whose proof fails ends the
run with `UnverifiableEvaluationError` ("matcher returned an unverifiable
evaluation for key K"), is recorded in the hospital's audit log, and none of
its tokens reaches ``on_batch`` (so none is cached).

The client's share (blind, verify, finalize — Python glue around libsodium)
and the matcher's (two scalar multiplications per element, plus the round
trip) overlap:

* inputs are cut into batches; ``streams`` Evaluate streams run at once (the
  matcher answers one stream's batches in order, so several streams are what
  lets it use several cores), each keeping up to ``STREAM_DEPTH`` batches
  between sending and checkpointing, and blinding its next batch meanwhile;
* blinding and finalizing run as jobs on bytes (`breachmatch.oprf_worker`)
  in worker processes for large runs, since the work is Python glue that
  holds the GIL (`breachmatch.client.workers`);
* each verified and finalized batch is handed to ``on_batch`` on the calling
  thread as soon as it is ready — the token cache commits it there, which is also the
  checkpoint an interrupted run resumes from. A batch's slot is freed only
  then, so an interruption wastes at most ``streams × STREAM_DEPTH`` batches.

Failures: UNAVAILABLE and DEADLINE_EXCEEDED are retried with bounded
exponential backoff (the counter resets whenever a round made progress) and
only the unfinished batches are sent again, freshly blinded.
RESOURCE_EXHAUSTED becomes `BudgetExhaustedError` naming what remains;
FAILED_PRECONDITION or NOT_FOUND (the key id was retired or is unknown)
becomes `KeyRetiredError`, for the caller to refresh its key info and start
over under the new key.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from breachmatch import oprf, oprf_worker
from breachmatch.client.audit import SecurityAudit
from breachmatch.client.connection import is_retryable
from breachmatch.client.errors import (
    BudgetExhaustedError,
    KeyRetiredError,
    RpcFailedError,
    UnverifiableEvaluationError,
)
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.client.matcher import MatcherClient
from breachmatch.client.retry import Backoff
from breachmatch.client.workers import OprfWorkers, start_workers
from breachmatch.oprf import ELEMENT_SIZE, OUTPUT_SIZE, SCALAR_SIZE
from breachmatch.v1 import matcher_pb2

#: Batches a stream may have between sending and checkpointing: one at the matcher,
#: one queued behind it there, one being finalized here.
STREAM_DEPTH = 3
#: Trailing metadata key where the matcher states the remaining daily budget.
BUDGET_REMAINING_KEY = "breachmatch-budget-remaining"

#: Receives each finished batch: its inputs and their OPRF outputs (n × 64 bytes), in order.
OnBatch = Callable[[Sequence[bytes], NDArray[np.uint8]], None]


@dataclass(frozen=True)
class PipelineOptions:
    batch_size: int = 1024
    streams: int = 2
    #: Processes for blinding and finalizing; 0 means one per core.
    workers: int = 0
    backoff: Backoff = field(default_factory=Backoff)
    #: Stream deadline: a fixed allowance plus this much per element sent.
    deadline_base: float = 30.0
    deadline_per_element: float = 0.005

    def deadline(self, elements: int) -> float:
        return self.deadline_base + self.deadline_per_element * elements


class OprfPipeline:
    def __init__(
        self, matcher: MatcherClient, options: PipelineOptions, audit: SecurityAudit
    ) -> None:
        self._matcher = matcher
        self._options = options
        self._audit = audit

    def run(self, key: TrustedOprfKey, inputs: Sequence[bytes], on_batch: OnBatch) -> int:
        """Evaluate every input under `key`, verified; returns the elements sent to the matcher."""
        sent = 0
        retry = 0
        remaining = inputs
        workers = self._options.workers or os.cpu_count() or 1
        pool = start_workers(workers, len(inputs))
        try:
            while remaining:
                attempt = _Round(self._matcher, pool, key, remaining, self._options)
                error = attempt.run(on_batch)
                sent += attempt.sent
                if error is None:
                    break
                if attempt.progressed:
                    retry = 0
                if isinstance(error, UnverifiableEvaluationError):
                    self._audit.record(
                        "unverifiable_evaluation",
                        matcher=self._matcher.endpoint.address,
                        key_id=key.key_id,
                        batch_elements=attempt.refused_elements,
                    )
                self._raise_unless_retryable(error, key.key_id, retry)
                time.sleep(self._options.backoff.delay(retry))
                retry += 1
                remaining = attempt.unfinished()
        finally:
            pool.close()
        return sent

    def _raise_unless_retryable(self, error: BaseException, key_id: str, retry: int) -> None:
        if not isinstance(error, grpc.RpcError):
            raise error
        code = error.code()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            remaining = _budget_remaining(error)
            left = "an unknown number of" if remaining is None else str(remaining)
            raise BudgetExhaustedError(
                f"this hospital's daily evaluation budget at the matcher is used up: {left} "
                f"evaluations remain today (matcher: {error.details()}). Everything evaluated "
                "so far is cached; run the same command again after the budget resets, or ask "
                "the operator to raise it — the next run evaluates only what is missing",
                remaining,
            ) from None
        if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
            raise KeyRetiredError(
                f"the matcher no longer evaluates under OPRF key id {key_id}"
            ) from None
        if is_retryable(error) and retry + 1 < self._options.backoff.attempts:
            return
        raise self._matcher.explain(error) from None


def _budget_remaining(error: grpc.RpcError) -> int | None:
    trailers: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == BUDGET_REMAINING_KEY:
            try:
                return int(value)
            except ValueError:
                return None
    return None


class _Round:
    """One try at a set of inputs: all streams until each ends or fails."""

    def __init__(
        self,
        matcher: MatcherClient,
        pool: OprfWorkers,
        key: TrustedOprfKey,
        inputs: Sequence[bytes],
        options: PipelineOptions,
    ) -> None:
        size = options.batch_size
        self._matcher = matcher
        self._pool = pool
        self._key = key
        self._batches = [inputs[start : start + size] for start in range(0, len(inputs), size)]
        #: Each batch's inputs as one blob (`oprf_worker.pack_inputs`), made when it is blinded.
        self._packed: dict[int, bytes] = {}
        self._deadline = options.deadline(len(inputs))
        self._streams = max(1, min(options.streams, len(self._batches)))
        self._todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for index in range(len(self._batches)):
            self._todo.put(index)
        self._finished: queue.SimpleQueue[tuple[int, Future[bytes], threading.Semaphore] | None] = (
            queue.SimpleQueue()
        )
        self._completed: set[int] = set()
        self._errors: list[BaseException] = []
        self._calls: list[Any] = []
        self._lock = threading.Lock()
        self.sent = 0
        #: Elements in the batch whose proof failed (0 while none did).
        self.refused_elements = 0

    @property
    def progressed(self) -> bool:
        return bool(self._completed)

    def unfinished(self) -> list[bytes]:
        return [
            data
            for index, batch in enumerate(self._batches)
            if index not in self._completed
            for data in batch
        ]

    def run(self, on_batch: OnBatch) -> BaseException | None:
        """Run the streams; hand each finalized batch to `on_batch` on this thread."""
        threads = [
            threading.Thread(target=self._stream, name=f"evaluate-{n}", daemon=True)
            for n in range(self._streams)
        ]
        for thread in threads:
            thread.start()
        try:
            open_streams = len(threads)
            while open_streams:
                item = self._finished.get()
                if item is None:
                    open_streams -= 1
                    continue
                index, finalizing, window = item
                try:
                    if self.refused_elements:
                        continue  # after one unprovable batch, nothing more from this matcher
                    batch = self._batches[index]
                    outputs = np.frombuffer(finalizing.result(), dtype=np.uint8)
                    on_batch(batch, outputs.reshape(len(batch), OUTPUT_SIZE))
                    self._completed.add(index)
                except oprf.OprfError:  # VerifyError, or any batch that cannot be finalized
                    self.refused_elements = len(self._batches[index])
                    self._errors.append(
                        UnverifiableEvaluationError(
                            "matcher returned an unverifiable evaluation for key "
                            f"{self._key.key_id}: its proof does not show that the batch of "
                            f"{len(self._batches[index])} elements was evaluated under the "
                            "operator-stated public key. No token of that batch was kept; "
                            "the refusal is recorded in the state directory's audit.jsonl"
                        )
                    )
                    self._cancel_calls()
                finally:
                    window.release()
        finally:
            self._cancel_calls()
            for thread in threads:
                thread.join()
        return self._worst_error()

    def _cancel_calls(self) -> None:
        with self._lock:
            for call in self._calls:
                call.cancel()

    def _worst_error(self) -> BaseException | None:
        """A non-retryable error wins over a retryable one; None if nothing failed."""
        if len(self._completed) == len(self._batches):
            return None  # whatever failed, another stream finished its work
        for error in self._errors:
            if isinstance(error, UnverifiableEvaluationError):
                return error  # whatever else failed, this must be seen
        for error in self._errors:
            if not isinstance(error, grpc.RpcError) or not is_retryable(error):
                return error
        if self._errors:
            return self._errors[0]
        return RpcFailedError("the matcher ended an Evaluate stream before answering every batch")

    def _next_blinding(self) -> tuple[int, Future[bytes]] | None:
        """The next batch to send, being blinded: blinds then blinded elements, one blob."""
        try:
            index = self._todo.get_nowait()
        except queue.Empty:
            return None
        packed = self._packed[index] = oprf_worker.pack_inputs(self._batches[index])
        return index, self._pool.submit(oprf_worker.BLIND, packed)

    def _stream(self) -> None:
        window = threading.Semaphore(STREAM_DEPTH)
        stopped = threading.Event()
        #: Batch id -> the blob its blinding answered (what finalizing needs back).
        pending: dict[int, bytes] = {}

        def requests() -> Iterator[matcher_pb2.EvaluateRequest]:
            try:
                upcoming = self._next_blinding()
                while upcoming is not None:
                    index, blinding = upcoming
                    blinds_then_blinded = blinding.result()
                    upcoming = self._next_blinding()
                    window.acquire()
                    if stopped.is_set():
                        return
                    pending[index] = blinds_then_blinded
                    count = len(self._batches[index])
                    blinded = oprf_worker.split(
                        blinds_then_blinded[SCALAR_SIZE * count :], ELEMENT_SIZE
                    )
                    with self._lock:
                        self.sent += count
                    yield matcher_pb2.EvaluateRequest(
                        key_id=self._key.key_id, blinded_elements=blinded, batch_id=index
                    )
            except Exception as exc:  # surfaced by the round, not lost inside gRPC
                self._errors.append(exc)

        call = None
        try:
            with self._lock:
                call = self._matcher.evaluate(requests(), self._deadline)
                self._calls.append(call)
            for response in call:
                self._accept(response, pending, window)
            if pending:
                raise RpcFailedError(
                    "the matcher ended an Evaluate stream before answering every batch"
                )
        except Exception as exc:  # every failure is the round's to judge
            self._errors.append(exc)
        finally:
            stopped.set()
            window.release()
            if call is not None:
                call.cancel()
            self._finished.put(None)

    def _accept(
        self,
        response: matcher_pb2.EvaluateResponse,
        pending: dict[int, bytes],
        window: threading.Semaphore,
    ) -> None:
        blinded = pending.pop(response.batch_id, None)
        if blinded is None or response.key_id != self._key.key_id:
            raise RpcFailedError("the matcher answered a batch this client did not send")
        evaluated = response.evaluated_elements
        if len(evaluated) != len(self._batches[response.batch_id]):
            raise RpcFailedError("the matcher answered a batch with the wrong number of elements")
        finalizing: Future[bytes]
        try:
            job = oprf_worker.finalize_request(
                self._key.public_key,
                response.proof,
                blinded,
                evaluated,
                self._packed[response.batch_id],
            )
        except oprf.OprfError as exc:  # an element of the wrong size: the batch is refused
            finalizing = Future()
            finalizing.set_exception(exc)
        else:
            finalizing = self._pool.submit(oprf_worker.FINALIZE, job)
        self._finished.put((response.batch_id, finalizing, window))
