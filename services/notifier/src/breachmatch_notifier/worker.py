"""Pull workers: N tasks fetching one message at a time from a durable consumer.

Outreach requests and breach alerts are both worked off this way. One
message per fetch and per task keeps the accounting simple: a message is
either being waited for (nothing to lose if the task is cancelled — JetStream
redelivers anything a cancelled fetch received after ``ack_wait``) or being
handled (the task is left to finish it). That is what makes a graceful drain
possible: `stop` cancels the idle tasks, lets the busy ones complete their
send — up to a grace period — and only then returns.

`keep_alive` sends ``in_progress`` while a slow send runs, so a live worker's
message is not redelivered to another one; a crashed worker stops sending it
and its message comes back after ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from breachmatch import logs, tracing

log = logs.get_logger(__name__)

#: How long one fetch waits for a message before it asks again.
FETCH_TIMEOUT = 5.0


class Handler(Protocol):
    async def handle(self, msg: Msg) -> None:
        """Settle ``msg`` (ack, nak or term); raising leaves it to be redelivered."""


@contextlib.asynccontextmanager
async def keep_alive(msg: Msg, interval: float) -> AsyncIterator[None]:
    """Tell JetStream every ``interval`` seconds that ``msg`` is still being worked on."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await msg.in_progress()
            except nats.errors.Error as exc:
                log.warning("in-progress signal failed", error=type(exc).__name__)

    beating = asyncio.create_task(beat())
    try:
        yield
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


class PullWorkers:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        consumer: ConsumerConfig,
        handler: Handler,
        size: int,
        retry_delay: float,
    ) -> None:
        if not consumer.durable_name:
            raise ValueError("consumer: a durable name is required")
        self._js = js
        self._stream = stream
        self._consumer = consumer
        self._durable = consumer.durable_name
        self._handler = handler
        self._size = size
        self._retry_delay = retry_delay
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._idle: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Create (or update) the consumer and start the tasks, each with its own subscription."""
        await self._js.add_consumer(self._stream, self._consumer)
        for number in range(self._size):
            subscription = await self._js.pull_subscribe_bind(
                durable=self._durable, stream=self._stream
            )
            self._tasks.append(
                asyncio.create_task(self._run(subscription), name=f"{self._durable}-{number}")
            )

    async def stop(self, grace: float) -> None:
        """Stop fetching, let in-flight messages finish for up to ``grace`` seconds."""
        self._stopping.set()
        for task in self._idle:
            task.cancel()
        if not self._tasks:
            return
        _, late = await asyncio.wait(self._tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if late:
            log.warning("drain grace ran out; unfinished messages come back", tasks=len(late))

    async def _run(self, subscription: JetStreamContext.PullSubscription) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            while not self._stopping.is_set():
                self._idle.add(task)
                try:
                    messages = await subscription.fetch(1, timeout=FETCH_TIMEOUT)
                except nats.errors.TimeoutError:
                    continue
                except nats.errors.Error as exc:  # NATS unreachable: wait, then ask again
                    log.warning("fetch failed", error=type(exc).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self._retry_delay)
                    continue
                finally:
                    self._idle.discard(task)
                for msg in messages:
                    await self._handle(msg)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        try:
            with tracing.consuming(msg, self._stream):
                await self._handler.handle(msg)
        except Exception as exc:  # a failure of ours, not the message's: let it come back
            log.error("message handling failed; it will be redelivered", error=type(exc).__name__)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._retry_delay)
