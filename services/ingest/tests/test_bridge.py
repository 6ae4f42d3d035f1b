"""The loop ↔ reader-thread bridges: order, back-pressure, errors and early stops."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest

from breachmatch_ingest.bridge import UploadPipe, iterate_in_thread
from breachmatch_ingest.errors import UploadAbortedError

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_items_arrive_in_order_and_a_thread_error_is_raised_on_the_loop() -> None:
    assert [x async for x in iterate_in_thread(lambda: iter(range(100)))] == list(range(100))

    def failing() -> Iterator[int]:
        yield 1
        raise KeyError("boom")

    got: list[int] = []

    async def consume() -> None:
        async for x in iterate_in_thread(failing):
            got.append(x)

    with pytest.raises(KeyError):
        await consume()
    assert got == [1]


async def test_a_consumer_that_stops_early_stops_the_producer() -> None:
    produced: list[int] = []
    finished = threading.Event()

    def counting() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            finished.set()

    async with contextlib.aclosing(iterate_in_thread(counting, max_pending=2)) as items:
        async for x in items:
            if x == 5:
                break
    assert await asyncio.to_thread(finished.wait, 10.0)
    assert len(produced) <= 5 + 1 + 2 + 2  # consumed, the break, queue, one in hand


async def test_the_pipe_delivers_every_byte_then_eof() -> None:
    pipe = UploadPipe(asyncio.get_running_loop(), max_chunks=2)
    data = bytes(range(256)) * 400
    reading = asyncio.create_task(asyncio.to_thread(pipe.read))  # read() = read all
    for start in range(0, len(data), 1000):
        await pipe.feed(data[start : start + 1000])
    await pipe.finish()
    assert await reading == data
    assert pipe.bytes_fed == len(data)


async def test_an_aborted_pipe_fails_its_reader_instead_of_ending_it() -> None:
    pipe = UploadPipe(asyncio.get_running_loop())
    await pipe.feed(b"CPR-nr.;Navn\r\n")
    first = await asyncio.to_thread(pipe.read, 5)
    pipe.abort()
    with pytest.raises(UploadAbortedError):
        await asyncio.to_thread(pipe.read)  # to the end, which never comes
    assert first == b"CPR-n"


async def test_a_reader_that_gives_up_does_not_block_the_upload() -> None:
    pipe = UploadPipe(asyncio.get_running_loop(), max_chunks=1)
    await pipe.feed(b"x")
    pipe.close_reader()  # e.g. the reader refused the format
    for _ in range(10):  # would block on the full queue without close_reader
        await asyncio.wait_for(pipe.feed(b"more"), 5.0)
    await asyncio.wait_for(pipe.finish(), 5.0)
