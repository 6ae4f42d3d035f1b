"""Which breach events move a breach forward: versions, corrections, retractions, replays.

Every consumer of breach events — the matcher, the notifier, the hospital SDK
— keeps, per breach id, the newest version it has seen and whether that was
a retraction (`Standing`), and admits an event only if it is newer:

* a publication of version *v* supersedes what is known when *v* is higher
  (a correction; or a re-publication after a retraction of an older
  version). The same version with the same manifest bytes is a duplicate;
  anything else — an older version, the same version with other bytes, or
  any version up to a retracted one — is refused as a replay;
* a retraction of version *v* withdraws the breach when *v* is at least the
  newest version known (a consumer may have missed the publication it
  names). A retraction of an older version is a replay and refused; one for
  an id never published is refused as unknown, so it cannot plant state.

Signatures are checked before this (`breachmatch.filter.events`): this module
decides only *order*. It holds no I/O, so the services keep it in memory
(rebuilt by replaying the stream) and the SDK persists it in its state
directory (`breachmatch.client.versions`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from breachmatch.filter.events import BreachEventError, CheckedBreachEvent
from breachmatch.filter.manifest import Manifest


class Admission(StrEnum):
    #: Newer than what was known: apply it.
    NEW = "new"
    #: Exactly what was known already (a redelivery): applying it again changes nothing.
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Standing:
    """What a consumer knows of one breach id."""

    version: int
    retracted: bool
    #: SHA-256 of the signed manifest of `version` ("" once retracted).
    manifest_sha256: str


class BreachVersions:
    """The newest `Standing` per breach id; admits only events that move it forward."""

    def __init__(self, known: Mapping[str, Standing] | None = None) -> None:
        self._known: dict[str, Standing] = dict(known or {})

    def get(self, breach_id: str) -> Standing | None:
        return self._known.get(breach_id)

    def items(self) -> Iterator[tuple[str, Standing]]:
        return iter(sorted(self._known.items()))

    def admit(self, checked: CheckedBreachEvent) -> Admission:
        """Record `checked` if it is newer; `BreachEventError` (reason label) if it is not."""
        if checked.manifest is not None:
            return self._publication(checked.breach_id, checked.version, checked.manifest_sha256)
        return self._retraction(checked.breach_id, checked.version)

    def admit_served(self, manifest: Manifest, manifest_sha256: str) -> Admission:
        """`admit` for a manifest a matcher serves (not an event): the same rules."""
        return self._publication(manifest.breach_id, manifest.version, manifest_sha256)

    def _publication(self, breach_id: str, version: int, digest: str) -> Admission:
        known = self._known.get(breach_id)
        if known is not None and version <= known.version:
            if version == known.version and not known.retracted:
                if digest == known.manifest_sha256:
                    return Admission.DUPLICATE
                raise BreachEventError("conflicting_version")
            raise BreachEventError("replayed_publication")
        self._known[breach_id] = Standing(version, retracted=False, manifest_sha256=digest)
        return Admission.NEW

    def _retraction(self, breach_id: str, version: int) -> Admission:
        known = self._known.get(breach_id)
        if known is None:
            raise BreachEventError("unknown_breach")
        if version < known.version:
            raise BreachEventError("replayed_retraction")
        if known.retracted and version == known.version:
            return Admission.DUPLICATE
        self._known[breach_id] = Standing(version, retracted=True, manifest_sha256="")
        return Admission.NEW
