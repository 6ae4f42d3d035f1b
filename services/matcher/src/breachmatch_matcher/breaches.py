"""Which breaches the matcher serves, rebuilt from stream BREACHES and kept current.

The stream is the source of truth (ingest publishes, operators retract), so a
matcher keeps no state of its own: at start-up it replays the stream from the
beginning with an ordered consumer, then follows it. Every replica thus serves
the same set, and a new replica is ready once it has read up to the stream's
last sequence at the time it started.

A published artifact is served only if its manifest verifies against the
operator's key and agrees with its envelope (`breachmatch.filter.verify_artifact`),
and a retraction only if it carries a valid operator signature; then an event
must be newer than what is known of its breach (`breachmatch.filter.lifecycle`):
a newer version replaces the one served, a retraction removes it, and a
replayed older manifest, a replayed retraction or a retraction of an unknown
id changes nothing. Whatever is refused is skipped, counted and logged, never
passed on, and the index keeps serving. The accepted events are also kept in stream order so
`events_after` can serve WatchBreaches: a hospital that reconnects with the
last sequence it processed gets exactly what it missed, then live events —
from one consumer per matcher instead of one per watching hospital.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import nacl.signing
from nats.js import JetStreamContext

from breachmatch import bus, logs, tracing
from breachmatch.filter import (
    Admission,
    BreachEventError,
    BreachVersions,
    Manifest,
    read_breach_event,
)
from breachmatch.v1 import breach_pb2
from breachmatch_matcher import metrics

log = logs.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ServedBreach:
    sequence: int
    artifact: breach_pb2.BreachArtifact
    manifest: Manifest


class BreachIndex:
    """Published, verified, not retracted breaches; plus the accepted event log.

    `on_withdrawn(breach_id)` is called when a served breach is retracted or
    replaced by a newer publication, so cached bodies can be dropped.
    """

    def __init__(
        self,
        js: JetStreamContext,
        verify_key: nacl.signing.VerifyKey,
        on_withdrawn: Callable[[str], None] = lambda _breach_id: None,
    ) -> None:
        self._js = js
        self._verify_key = verify_key
        self._on_withdrawn = on_withdrawn
        self._served: dict[str, ServedBreach] = {}
        self._versions = BreachVersions()
        self._events: list[tuple[int, breach_pb2.BreachEvent]] = []
        self._sequences: list[int] = []
        self._changed = asyncio.Condition()
        self._ready = asyncio.Event()
        self._closed = False
        self._replay_target = 0
        self._follower: asyncio.Task[None] | None = None
        self._subscription: Any = None

    async def start(self) -> None:
        """Replay the stream up to its current end, then keep following it.

        Returns once the replay is done; callers bound the wait with `asyncio.timeout`.
        """
        info = await self._js.stream_info(bus.STREAM_BREACHES)
        self._replay_target = int(info.state.last_seq)
        if self._replay_target == 0:
            self._ready.set()
        self._subscription = await self._js.subscribe(
            bus.BREACH_EVENTS, stream=bus.STREAM_BREACHES, ordered_consumer=True
        )
        self._follower = asyncio.create_task(self._follow(), name="breach-index")
        await self._ready.wait()
        log.info("breach index replayed", served=len(self._served), sequence=self._replay_target)

    @property
    def following(self) -> asyncio.Task[None]:
        """The task that applies stream events; it ends only when the index stops."""
        if self._follower is None:
            raise RuntimeError("the breach index has not been started")
        return self._follower

    async def _follow(self) -> None:
        async for msg in self._subscription.messages:
            metadata = msg.metadata
            with tracing.consuming(msg, bus.STREAM_BREACHES):
                self._apply(int(metadata.sequence.stream), msg.data)
            # Caught up: the last sequence at start, or nothing pending (should the
            # stream's tail have been deleted, that sequence never arrives).
            if metadata.sequence.stream >= self._replay_target or metadata.num_pending == 0:
                self._ready.set()
            async with self._changed:
                self._changed.notify_all()

    def _apply(self, sequence: int, data: bytes) -> None:
        try:
            checked = read_breach_event(data, self._verify_key)
            admission = self._versions.admit(checked)
        except BreachEventError as exc:
            self._reject(sequence, exc.reason)
            return
        if admission is Admission.DUPLICATE:
            self._reject(sequence, "duplicate")
            return
        event, breach_id = checked.event, checked.breach_id
        if checked.manifest is not None:
            previous = self._served.get(breach_id)
            self._served[breach_id] = ServedBreach(sequence, event.artifact, checked.manifest)
            if previous is not None:
                self._on_withdrawn(breach_id)
        elif self._served.pop(breach_id, None) is not None:
            self._on_withdrawn(breach_id)
        self._events.append((sequence, event))
        self._sequences.append(sequence)
        metrics.BREACHES_SERVED.set(len(self._served))

    def _reject(self, sequence: int, reason: str) -> None:
        """Count and log a refused event; the index goes on serving what it served."""
        metrics.BREACH_EVENTS_REJECTED.labels(reason).inc()
        log.warning("breach event not served", sequence=sequence, reason=reason)

    def served(self) -> list[ServedBreach]:
        """Breaches currently served, in the order they were published."""
        return sorted(self._served.values(), key=lambda served: served.sequence)

    def get(self, breach_id: str) -> ServedBreach | None:
        return self._served.get(breach_id)

    async def events_after(
        self, sequence: int
    ) -> AsyncIterator[tuple[int, breach_pb2.BreachEvent]]:
        """Accepted events with a stream sequence above `sequence`, then live ones until `close`."""
        position = bisect.bisect_right(self._sequences, sequence)
        while True:
            while position < len(self._events):
                yield self._events[position]
                position += 1
            async with self._changed:
                while not self._closed and position >= len(self._events):
                    await self._changed.wait()
            if self._closed:
                return

    async def close_watchers(self) -> None:
        """End every `events_after` stream (they finish cleanly; clients resume elsewhere)."""
        self._closed = True
        async with self._changed:
            self._changed.notify_all()

    async def stop(self) -> None:
        await self.close_watchers()
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
