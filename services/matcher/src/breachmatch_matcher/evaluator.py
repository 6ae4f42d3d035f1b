"""Blind evaluation on all cores, behind an awaitable call.

The matcher's hot path is, per received element, one scalar multiplication
under the key and one for the batch proof's composite (RFC 9497 VOPRF); a
single Python process would leave all but one core idle. `Evaluator` keeps a
long-lived pool of worker processes (started once, so no request pays for
process start-up) and hands each batch to `voprf.blind_evaluate_batch_parallel`,
which validates every element, splits large batches across the pool and
proves the whole batch once.

The blocking fan-out runs on a small thread pool sized like the process pool,
so the event loop keeps serving other calls, and the matcher never uses more
CPU for evaluation than ``workers`` cores: with ``workers=1`` there is no
process pool at all and a batch runs on one dispatch thread (libsodium is
called through ctypes, which releases the GIL).

Workers are spawned (not forked: forking a process that runs gRPC and NATS
threads is unsafe) and ignore SIGINT/SIGTERM: shutting them down is the
parent's job, after its in-flight calls have drained.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from breachmatch import voprf


def _ignore_termination_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _ready() -> None:
    """A task that does nothing: running it proves a worker has started."""


class Evaluator:
    """Evaluate blinded elements under a secret key with up to `workers` cores."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._processes: ProcessPoolExecutor | None = None
        if self.workers > 1:
            self._processes = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_termination_signals,
            )
        self._dispatch = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="oprf-dispatch"
        )

    async def start(self) -> None:
        """Spawn the worker processes now rather than on the first request.

        The pool starts a new process for each submission while none is idle,
        so ``workers`` simultaneous submissions start all of them.
        """
        if self._processes is None:
            return
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._processes, _ready) for _ in range(self.workers))
        )

    async def blind_evaluate(
        self, secret: bytes, public_key: bytes, elements: Sequence[bytes]
    ) -> tuple[list[bytes], bytes]:
        """BlindEvaluate every element, in order, and prove the batch: (elements, proof).

        Raises `oprf.InvalidElementError` (with the element's index in the
        batch) when any element is not a canonical, non-identity encoding.
        """
        call = functools.partial(
            voprf.blind_evaluate_batch_parallel,
            secret,
            public_key,
            elements,
            self._processes,
            self.workers,
        )
        return await asyncio.get_running_loop().run_in_executor(self._dispatch, call)

    def close(self) -> None:
        """Wait for running batches, then stop the threads and worker processes."""
        self._dispatch.shutdown(wait=True)
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=True)
