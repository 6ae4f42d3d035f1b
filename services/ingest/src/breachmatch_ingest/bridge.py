"""Bridges between the event loop and the thread that parses a dump.

The readers are ordinary blocking iterators over a binary file; the
coordinator, the gRPC servicer and NATS live on an asyncio loop. Two bridges,
both bounded so that a fast side waits for a slow one instead of buffering a
dump in memory:

* `iterate_in_thread` runs a blocking iterator in a thread and hands its items
  to the loop (dump → chunks → NATS);
* `UploadPipe` is a read-only binary file for that thread, fed from the loop
  (gRPC upload → reader). Nothing is spooled to disk: the uploaded plaintext
  exists only in the pipe's few buffered chunks.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from breachmatch_ingest.errors import UploadAbortedError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Item(Generic[T]):
    value: T


@dataclass(frozen=True, slots=True)
class _Failure:
    error: BaseException


class _Done:
    pass


async def iterate_in_thread(
    produce: Callable[[], Iterator[T]], max_pending: int = 4
) -> AsyncGenerator[T, None]:
    """Iterate `produce()` in a daemon thread; at most `max_pending` items wait for the loop.

    An exception in the thread is re-raised here. When the consumer stops
    early and closes this generator (`contextlib.aclosing`), the thread stops
    at its next item.
    """
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[_Item[T] | _Failure | _Done] = asyncio.Queue(max_pending)
    stopped = threading.Event()

    def hand_over(item: _Item[T] | _Failure | _Done) -> bool:
        if stopped.is_set():
            return False
        asyncio.run_coroutine_threadsafe(items.put(item), loop).result()
        return True

    def run() -> None:
        try:
            for value in produce():
                if not hand_over(_Item(value)):
                    return
        except BaseException as error:  # handed to the loop, which re-raises it
            hand_over(_Failure(error))
            return
        hand_over(_Done())

    threading.Thread(target=run, name="ingest-reader", daemon=True).start()
    try:
        while True:
            got = await items.get()
            if isinstance(got, _Done):
                return
            if isinstance(got, _Failure):
                raise got.error
            yield got.value
    finally:
        stopped.set()
        # Unblock a hand-over waiting for room; the thread then sees `stopped`.
        while not items.empty():
            items.get_nowait()


_END = b""


class UploadPipe(io.RawIOBase):
    """A binary file read by a reader thread and written from the event loop.

    Loop side: `feed` each chunk (waits while `max_chunks` are buffered), then
    `finish`, or `abort` on failure. Thread side: `read`/`readinto`. When the
    reader stops early, `close_reader` makes further feeding a no-op so the
    upload can be drained without blocking.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, max_chunks: int = 8) -> None:
        super().__init__()
        self._loop = loop
        self._queue: asyncio.Queue[bytes | UploadAbortedError] = asyncio.Queue(max_chunks)
        self._current = memoryview(b"")
        self._eof = False
        self._reader_gone = False
        self.bytes_fed = 0

    # --- loop side ---------------------------------------------------------

    async def feed(self, data: bytes) -> None:
        if self._reader_gone or not data:
            return
        self.bytes_fed += len(data)
        await self._queue.put(bytes(data))

    async def finish(self) -> None:
        if not self._reader_gone:
            await self._queue.put(_END)

    def abort(self) -> None:
        """End the stream with an error the reader sees at its next read."""
        self._drain()
        self._queue.put_nowait(UploadAbortedError("upload ended before the dump was complete"))

    def close_reader(self) -> None:
        """The reader is done (or failed): drop buffered and future chunks."""
        self._reader_gone = True
        self._drain()

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    # --- thread side -------------------------------------------------------

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        while not self._current:
            if self._eof:
                return 0
            item = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result()
            if isinstance(item, UploadAbortedError):
                raise item
            if item == _END:
                self._eof = True
                return 0
            self._current = memoryview(item)
        count = min(len(buffer), len(self._current))
        buffer[:count] = self._current[:count]
        self._current = self._current[count:]
        return count
