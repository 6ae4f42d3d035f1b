"""Pull workers: a durable consumer's messages handled concurrently, fetched in batches.

Outreach requests and breach alerts are both worked off this way. One fetch
loop per process asks JetStream for as many messages as it has free slots
(at most ``size`` in flight) and hands each to its own task, so while one
notice waits for the SMTP server or the ledger the others go on: their NATS
requests share the one connection, pipelined, instead of each waiting its
turn, and a fetch brings many messages for one round trip. A message is
either waiting (nothing to lose if the loop is cancelled: JetStream
redelivers anything a cancelled fetch received after ``ack_wait``) or being
handled (its task is left to finish it). That is what makes a graceful
drain possible: `stop` cancels the fetch, lets the running tasks complete
their send — up to a grace period — and only then returns.

Each message is settled on its own (ack, nak or term): a batch is only how
messages arrive, so one that fails is retried alone and never holds back or
repeats the others.

While messages keep coming, the loop waits until a quarter of the slots
(at most ``batch``) are free before it fetches again, so a busy worker asks
JetStream for several messages per round trip rather than for each one that a
finished delivery makes room for.

The log tells what became of the messages in one ``messages settled`` line
(``messages=412 sent_email=410 held=1 retrying=1``, the words the handler
returns) each time the worker runs out of work and at least every
`SUMMARY_SECONDS` while it does not — not a line per notice, whose rendering
cost about as much CPU as a ledger write, and which at hundreds of notices a
second would bury the warnings that need an operator. Each notice's own record
is its ledger entry and status events; a warning (a retry, a hold, a dead
letter) is still logged with its notice's context, and never an identifier.

`keep_alive` sends ``in_progress`` while a slow send runs, so a live worker's
message is not redelivered to another one; a crashed worker stops sending it
and its message comes back after ``ack_wait``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
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
#: Most messages asked for in one fetch (one round trip).
DEFAULT_BATCH = 32
#: Longest a busy worker goes without its summary line.
SUMMARY_SECONDS = 10.0


#: The outcome counted for a message whose handler raised (or was cancelled while draining).
FAILED = "failed"
#: The outcome counted for a handler that logs its own outcomes and returns none.
HANDLED = "handled"


class Handler(Protocol):
    async def handle(self, msg: Msg) -> str | None:
        """Settle ``msg`` (ack, nak or term) and name the outcome for the summary line (a
        word such as ``sent_email``; None: `HANDLED`). Raising leaves it to be redelivered."""


class _Tally:
    """Outcomes since the last summary line; logs one when told the work ran out, or when
    `SUMMARY_SECONDS` have passed."""

    def __init__(self) -> None:
        self._since = time.monotonic()
        self._outcomes: collections.Counter[str] = collections.Counter()

    def settled(self, outcome: str, *, idle: bool) -> None:
        self._outcomes[outcome] += 1
        now = time.monotonic()
        if idle or now - self._since >= SUMMARY_SECONDS:
            seconds = round(now - self._since, 3)
            total = self._outcomes.total()
            log.info("messages settled", messages=total, seconds=seconds, **self._outcomes)
            self._since, self._outcomes = now, collections.Counter()


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
    """``size`` messages in flight at most, each on its own task; fetches of up to ``batch``."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        consumer: ConsumerConfig,
        handler: Handler,
        size: int,
        retry_delay: float,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        if not consumer.durable_name:
            raise ValueError("consumer: a durable name is required")
        if size < 0 or batch < 1:
            raise ValueError("size: must not be negative; batch: must be at least 1")
        self._js = js
        self._stream = stream
        self._consumer = consumer
        self._durable = consumer.durable_name
        self._handler = handler
        self._size = size
        self._batch = batch
        self._retry_delay = retry_delay
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(size)
        #: Free slots the loop waits for before it fetches again.
        self._refill = min(batch, max(1, size // 4))
        self._tally = _Tally()
        self._fetcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[str]] = set()

    async def start(self) -> None:
        """Create (or update) the consumer and start fetching (unless ``size`` is 0)."""
        await self._js.add_consumer(self._stream, self._consumer)
        if not self._size:
            return
        subscription = await self._js.pull_subscribe_bind(
            durable=self._durable, stream=self._stream
        )
        self._fetcher = asyncio.create_task(self._fetch(subscription), name=self._durable)

    async def stop(self, grace: float) -> None:
        """Stop fetching, let in-flight messages finish for up to ``grace`` seconds."""
        self._stopping.set()
        if self._fetcher is not None:
            self._fetcher.cancel()
            await asyncio.gather(self._fetcher, return_exceptions=True)
        if not self._running:
            return
        running = set(self._running)
        _, late = await asyncio.wait(running, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        if late:
            log.warning("drain grace ran out; unfinished messages come back", tasks=len(late))

    async def _fetch(self, subscription: JetStreamContext.PullSubscription) -> None:
        try:
            while not self._stopping.is_set():
                free = 0
                try:
                    while free < self._refill or (free < self._batch and not self._slots.locked()):
                        await self._slots.acquire()  # past `_refill`: free, returns at once
                        free += 1
                except BaseException:
                    for _ in range(free):
                        self._slots.release()
                    raise
                try:
                    messages = await subscription.fetch(free, timeout=FETCH_TIMEOUT)
                except TimeoutError:  # nats-py raises its own and, for batches, asyncio's
                    messages = []
                except Exception as exc:  # NATS unreachable (or a client bug): wait, ask again
                    # Whatever it is, this loop must not end: it is every worker of the process.
                    log.warning("fetch failed", error=type(exc).__name__)
                    messages = []
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self._retry_delay)
                except BaseException:
                    for _ in range(free):
                        self._slots.release()
                    raise
                for _ in range(free - len(messages)):
                    self._slots.release()
                for msg in messages:
                    task = asyncio.create_task(self._handle(msg))
                    self._running.add(task)
                    task.add_done_callback(self._finished)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def _finished(self, task: asyncio.Task[str]) -> None:
        self._running.discard(task)
        self._slots.release()
        failed = task.cancelled() or task.exception() is not None
        self._tally.settled(FAILED if failed else task.result(), idle=not self._running)

    async def _handle(self, msg: Msg) -> str:
        try:
            with tracing.consuming(msg, self._stream):
                return await self._handler.handle(msg) or HANDLED
        except Exception as exc:  # a failure of ours, not the message's: let it come back
            log.error("message handling failed; it will be redelivered", error=type(exc).__name__)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self._retry_delay)
            return FAILED
