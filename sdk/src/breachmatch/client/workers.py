"""Where the client's OPRF jobs run: worker processes for large checks, threads for small ones.

A job is one bytes blob in and one out (`breachmatch.oprf_worker`), and
`submit` hands back a Future of the answer, so the pipeline neither knows
nor cares which of the two runs it:

* `ProcessWorkers` — ``python -m breachmatch.oprf_worker`` processes fed
  through pipes, one feeding thread each taking jobs from one queue (so a
  free worker takes the next job). A worker imports only the OPRF modules,
  not the calling script or the CLI, so starting one costs tens of
  milliseconds of CPU rather than half a second, and needs no
  ``if __name__ == "__main__"`` guard in the caller. It ends with its parent
  however the parent ends — killed outright too — because its stdin then
  ends (`breachmatch.oprf_worker.serve`); nothing polls for that.
* `InlineWorkers` — the same jobs on two threads of this process (libsodium
  releases the GIL in its calls): below a few thousand keys, starting
  processes costs more than it saves.

A worker that dies or answers out of frame breaks the pool: that job and
every later one fail with `WorkerFailedError` (an internal error, exit 70),
as multiprocessing's BrokenProcessPool would.
"""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Protocol

from breachmatch import oprf, oprf_worker, voprf
from breachmatch.closing import Closeable

#: How long `close` waits for a worker to exit on its own before killing it.
_EXIT_SECONDS = 5.0


class WorkerFailedError(RuntimeError):
    """An OPRF worker process died or broke the protocol: the pool cannot go on."""


class OprfWorkers(Protocol):
    def submit(self, op: int, payload: bytes) -> Future[bytes]:
        """Run one `oprf_worker` job; the Future holds its answer or its error."""

    def close(self) -> None:
        """Release the workers once the jobs they have taken are done."""


class InlineWorkers(Closeable):
    """Jobs on two threads of this process."""

    def __init__(self) -> None:
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="oprf")

    def submit(self, op: int, payload: bytes) -> Future[bytes]:
        return self._threads.submit(oprf_worker.run_job, op, payload)

    def close(self) -> None:
        self._threads.shutdown(wait=True)


class ProcessWorkers(Closeable):
    """Jobs on `processes` worker processes, fed over their stdin and stdout."""

    def __init__(self, processes: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[bytes], int, bytes] | None] = queue.SimpleQueue()
        self._broken: str | None = None
        self._processes = [
            subprocess.Popen(
                # -P: never import from the caller's working directory.
                [sys.executable, "-P", "-m", oprf_worker.__name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # Its own process group: a terminal's Ctrl-C reaches the parent
                # only, which finishes or abandons the jobs and closes the pool.
                process_group=0,
            )
            for _ in range(processes)
        ]
        self._feeders = [
            threading.Thread(target=self._feed, args=(process,), name="oprf-feed", daemon=True)
            for process in self._processes
        ]
        for feeder in self._feeders:
            feeder.start()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def submit(self, op: int, payload: bytes) -> Future[bytes]:
        future: Future[bytes] = Future()
        self._jobs.put((future, op, payload))
        return future

    def close(self) -> None:
        """Cancel the jobs no worker has taken yet, finish the others, end the workers."""
        with contextlib.suppress(queue.Empty):
            while (job := self._jobs.get_nowait()) is not None:
                job[0].cancel()
        for _ in self._feeders:
            self._jobs.put(None)
        for feeder in self._feeders:
            feeder.join()
        for process in self._processes:
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            try:
                process.wait(_EXIT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _feed(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        while (job := self._jobs.get()) is not None:
            future, op, payload = job
            if not future.set_running_or_notify_cancel():
                continue
            if self._broken is not None:
                future.set_exception(WorkerFailedError(self._broken))
                continue
            try:
                future.set_result(_exchange(process.stdin, process.stdout, op, payload))
            except WorkerFailedError as exc:
                self._broken = str(exc)
                future.set_exception(exc)
            except oprf.OprfError as exc:
                future.set_exception(exc)


def _exchange(jobs: IO[bytes], answers: IO[bytes], op: int, payload: bytes) -> bytes:
    """Send one job and read its answer; a job's own failure is raised as it was raised."""
    try:
        jobs.write(oprf_worker.frame(op, payload))
        jobs.flush()
        answer = oprf_worker.read_frame(answers)
    except (OSError, EOFError):
        answer = None
    if answer is None:
        raise WorkerFailedError("an OPRF worker process ended unexpectedly")
    status, body = answer
    if status == oprf_worker.STATUS_OK:
        return body
    if status == oprf_worker.STATUS_UNVERIFIABLE:
        raise voprf.VerifyError(body.decode())
    if status == oprf_worker.STATUS_OPRF_ERROR:
        raise oprf.OprfError(body.decode())
    raise WorkerFailedError(f"an OPRF worker failed with {body.decode(errors='replace')}")


def start_workers(processes: int, jobs: int) -> OprfWorkers:
    """Processes when there are enough jobs to pay for starting them, else threads."""
    if processes > 1 and jobs >= oprf.PARALLEL_THRESHOLD:
        return ProcessWorkers(processes)
    return InlineWorkers()
