"""What the notifier knows about breaches: read from stream BREACHES, kept current.

A notice states what happened, to whom and when; that comes from the breach's
signed manifest, which ingest publishes in a `BreachEvent`. Like the matcher,
the notifier keeps no copy of its own: at start-up it replays the stream with
an ordered consumer up to its last sequence, then follows it. Intake refuses
items for breaches it does not know or that were retracted, and workers look
up the breach of each notice here.

Events are checked the way every consumer checks them: a publication only if
its manifest is signed by the operator's key, a retraction only if it carries
the operator's signature (`breachmatch.filter.read_breach_event`), and either
only if it is newer than what is known of the breach
(`breachmatch.filter.lifecycle`). So a notice is always rendered from the
newest version of a breach, and a replayed old manifest or an unsigned
retraction slipped onto the stream changes nothing; it is counted and logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
        descriptions=dict(manifest.descriptions),
    )


class BreachCatalogue:
    """The newest published version of each breach, and which were retracted.

    ``on_withdrawn(breach_id)`` is called when a breach is retracted or
    replaced by a newer version, so what is held for its old body can be dropped.
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
        self._versions = BreachVersions()
        self._manifests: dict[str, Manifest] = {}
        self._ready = asyncio.Event()
        self._target = 0
        self._applied = 0
        self._progress = asyncio.Condition()
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
        """The breach's newest version, if it is published and not retracted."""
        manifest = self.manifest(breach_id)
        return None if manifest is None else breach_info(manifest)

    def manifest(self, breach_id: str) -> Manifest | None:
        """The newest version's manifest (its body and digest), unless the breach was retracted."""
        return None if self.is_retracted(breach_id) else self._manifests.get(breach_id)

    def is_retracted(self, breach_id: str) -> bool:
        standing = self._versions.get(breach_id)
        return standing is not None and standing.retracted

    def is_current(self, breach_id: str, manifest_sha256: str) -> bool:
        """Whether this manifest is the breach's newest version and not retracted."""
        standing = self._versions.get(breach_id)
        return (
            standing is not None
            and not standing.retracted
            and standing.manifest_sha256 == manifest_sha256
        )

    async def applied(self, sequence: int) -> None:
        """Wait until the event at stream `sequence` has been applied."""
        async with self._progress:
            await self._progress.wait_for(lambda: self._applied >= sequence)

    async def _follow(self) -> None:
        async for msg in self._subscription.messages:
            sequence = int(msg.metadata.sequence.stream)
            with tracing.consuming(msg, bus.STREAM_BREACHES):
                self._apply(sequence, msg.data)
            if sequence >= self._target:
                self._ready.set()
            async with self._progress:
                self._applied = sequence
                self._progress.notify_all()

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
        breach_id = checked.breach_id
        if breach_id in self._manifests:
            self._on_withdrawn(breach_id)
        if checked.manifest is not None:
            self._manifests[breach_id] = checked.manifest
        else:
            self._manifests.pop(breach_id, None)

    def _reject(self, sequence: int, reason: str) -> None:
        metrics.BREACH_EVENTS_REJECTED.labels(reason).inc()
        log.warning("breach event ignored", sequence=sequence, reason=reason)
