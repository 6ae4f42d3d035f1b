"""What the notifier knows about breaches: read from stream BREACHES, kept current.

A notice states what happened, to whom and when; that comes from the breach's
signed manifest, which ingest publishes in a `BreachEvent`. Like the matcher,
the notifier keeps no copy of its own: at start-up it replays the stream with
an ordered consumer up to its last sequence, then follows it. Intake refuses
items for breaches it does not know or that were retracted, and workers look
up the breach of each notice here.

With the operator's verify key configured, a manifest is used only if its
signature verifies (`breachmatch.filter.verify_artifact`); without it the
manifest is parsed (canonical form checked) but not authenticated — the
stream is writable only by the operator's services, but verifying costs little
and is the configuration to run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import nacl.signing
from nats.js import JetStreamContext

from breachmatch import bus, logs
from breachmatch.filter import (
    BreachEventError,
    Manifest,
    read_breach_event,
)
from breachmatch_notifier import metrics
from breachmatch_notifier.notice import BreachInfo

log = logs.get_logger(__name__)


def breach_info(manifest: Manifest) -> BreachInfo:
    return BreachInfo(
        breach_id=manifest.breach_id,
        title=manifest.title,
        organisation=manifest.organisation,
        breach_date=manifest.breach_date,
        added_date=manifest.added_date,
        description=manifest.description,
    )


class BreachCatalogue:
    """Published breaches by id, and the ids that were retracted.

    ``on_withdrawn(breach_id)`` is called when a breach is retracted or
    republished, so what is held for its old body can be dropped.
    """

    def __init__(
        self,
        js: JetStreamContext,
        verify_key: nacl.signing.VerifyKey | None,
        on_withdrawn: Callable[[str], None] = lambda _breach_id: None,
    ) -> None:
        self._js = js
        self._verify_key = verify_key
        self._on_withdrawn = on_withdrawn
        self._manifests: dict[str, Manifest] = {}
        self._retracted: set[str] = set()
        self._ready = asyncio.Event()
        self._target = 0
        self._subscription: Any = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self, replay_seconds: float) -> None:
        """Replay the stream up to its current end (within ``replay_seconds``), then follow it."""
        info = await self._js.stream_info(bus.STREAM_BREACHES)
        self._target = int(info.state.last_seq)
        if self._target == 0:
            self._ready.set()
        self._subscription = await self._js.subscribe(
            bus.BREACH_EVENTS, stream=bus.STREAM_BREACHES, ordered_consumer=True
        )
        self._follower = asyncio.create_task(self._follow(), name="breach-catalogue")
        await asyncio.wait_for(self._ready.wait(), replay_seconds)
        log.info("breach catalogue replayed", published=len(self._manifests))

    async def stop(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)

    def get(self, breach_id: str) -> BreachInfo | None:
        """The breach, if it is published and not retracted."""
        manifest = self.manifest(breach_id)
        return None if manifest is None else breach_info(manifest)

    def manifest(self, breach_id: str) -> Manifest | None:
        """The breach's manifest (its body and digest), if it is published and not retracted."""
        return None if breach_id in self._retracted else self._manifests.get(breach_id)

    def is_retracted(self, breach_id: str) -> bool:
        return breach_id in self._retracted

    async def _follow(self) -> None:
        async for msg in self._subscription.messages:
            sequence = int(msg.metadata.sequence.stream)
            self._apply(sequence, msg.data)
            if sequence >= self._target:
                self._ready.set()

    def _apply(self, sequence: int, data: bytes) -> None:
        try:
            checked = read_breach_event(data, self._verify_key)
        except BreachEventError as exc:
            self._reject(sequence, exc.reason)
            return
        breach_id = checked.breach_id
        if breach_id in self._manifests:
            self._on_withdrawn(breach_id)
        if checked.manifest is not None:
            self._manifests[breach_id] = checked.manifest
        else:
            self._retracted.add(breach_id)

    def _reject(self, sequence: int, reason: str) -> None:
        metrics.BREACH_EVENTS_REJECTED.labels(reason).inc()
        log.warning("breach event ignored", sequence=sequence, reason=reason)
