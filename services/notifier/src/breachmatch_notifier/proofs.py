"""Proofs of match: a notice goes out only for a person the hospital shows is in the breach.

Without this, a hospital certificate could make the notifier send a notice
in the hospital's name to any address, saying whatever the hospital claimed
was exposed. Now each sealed contact carries a `MatchProof`: the RFC 9497 OPRF
output (token) of the patient's strongest matched key and that key's kind.
The notifier derives the token's tag hash, and the proof holds only if

* the tag is in the breach's filter (the verified body the matcher serves), and
* the tag hash's first 64-bit word is in the breach's proof index
  (`breachmatch.filter.proofs`: the filter alone keeps only ~40 + log2 N bits
  of the hash, which grinding random tokens reaches in ~2^40 hashes; with the
  index, 104 bits must match, ~2^104 / N tries).

Then the entry's label, decrypted with the token's pad, gives the exposure
categories for the notice — the hospital's claim is no longer read — and the
key's kind gives its strength (CPR/SSN/MRN strong, the others medium).

Why a valid proof means the hospital holds a leaked identifier: a token is
the PRF value of an identifier under the operator's OPRF key, which only the
matcher (and the ingest job) hold; a hospital gets tokens only by having the
matcher evaluate blinded identifiers it knows, each charged to its daily
budget. Finding a token of an entry without its identifier means forging the
PRF or the 104-bit search above. What the proof does *not* show is that the
contact address belongs to that identifier's owner: the hospital is the
controller of its own patient records and could mis-file an address either
way. That is bounded instead: a proven entry backs one notice per breach and
tenant, an address gets one notice per breach and tenant (`reservations`), and a
tenant's notices per day are capped (`breachmatch.quota`). The kind is the
hospital's statement too (the token cannot show which kind of key it came
from), so the strength it gives is informational: it decides nothing here.

What the notifier learns that it did not before: one token per notice. It is
a pseudonym of one identifier of a person whose name and address the
notifier is being given anyway; with it the notifier learns the person is in
this breach (which the notice says) and the exposed categories (which the
notice lists). The token cannot be turned back into the identifier without
the OPRF key, and every other breach it could be looked up in was built by
the operator's ingest from the leaked records themselves. The token lives in
memory while the proof is checked — here at intake and again in the worker
that opens the contact — and is never stored: reservations key the proven
entry by an HMAC of its tag hash under the notifier's own key.

Filter bodies and proof indexes come from the object store ``breach-filters``
(the breach's manifest, from the signed event, says which body and digest),
are fetched once into a private directory (`breachmatch.objects`) and checked
against the manifest before use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from breachmatch import logs
from breachmatch.filter import (
    NOT_FOUND,
    ArtifactError,
    BreachFilter,
    FilterFormatError,
    Manifest,
    ProofIndex,
    derive_keys,
    proof_object_name,
    proven_labels,
)
from breachmatch.filter.layout import proof_index_size
from breachmatch.identifiers import KeyKind, Strength
from breachmatch.objects import LocalCopies
from breachmatch.oprf import OUTPUT_SIZE
from breachmatch.records import Category
from breachmatch.v1.outreach_pb2 import MatchProof, OutreachReceipt

log = logs.get_logger(__name__)

Refusal = OutreachReceipt.Refusal


class ProofRefusal(Exception):
    """The proof does not hold; ``refusal`` is the receipt's code, the message names the rule."""

    def __init__(self, refusal: Refusal.ValueType, detail: str) -> None:
        super().__init__(detail)
        self.refusal = refusal
        self.detail = detail


class BreachUnprovableError(RuntimeError):
    """The breach's body or proof index is missing or not the manifest's: no proof can hold.

    A breach published before proof indexes existed needs publishing again.
    """


#: Decoded filter blocks kept per breach: notices come one proof at a time, and
#: decoding the proof's block was most of a check. 32 default-sized blocks
#: (2^14 buckets, ~9 bytes an entry) hold ~5 MB and cover a 500k-entry breach.
CACHED_BLOCKS = 32


@dataclass(frozen=True, slots=True)
class ProvenMatch:
    """What a valid proof establishes about one notice."""

    kind: KeyKind
    #: `Category` names from the proven entry's label.
    categories: tuple[str, ...]
    #: The proven entry's 128-bit tag hash (reservations key it under an HMAC; never stored).
    entry: bytes

    @property
    def strength(self) -> Strength:
        return self.kind.strength


@dataclass(frozen=True)
class _Artifacts:
    body_sha256: str
    #: The body's and the proof index's object names (both hold the body's digest).
    body_name: str
    index_name: str
    body: BreachFilter
    index: ProofIndex

    def close(self) -> None:
        self.body.close()
        self.index.close()


def read_proof(proof: MatchProof | None) -> tuple[KeyKind, bytes]:
    """The proof's kind and token, or `ProofRefusal` (NO_PROOF, INVALID_PROOF)."""
    if proof is None or not (proof.key_kind or proof.token):
        raise ProofRefusal(Refusal.REFUSAL_NO_PROOF, "proof: missing; every notice needs one")
    try:
        kind = KeyKind(proof.key_kind)
    except ValueError:
        raise ProofRefusal(Refusal.REFUSAL_INVALID_PROOF, "proof.key_kind: unknown") from None
    if len(proof.token) != OUTPUT_SIZE:
        raise ProofRefusal(
            Refusal.REFUSAL_INVALID_PROOF, f"proof.token: must be {OUTPUT_SIZE} bytes"
        )
    return kind, proof.token


class ProofChecker:
    """Checks proofs against local copies of each breach's body and proof index."""

    def __init__(self, store: ObjectStore, parent: Path | None = None) -> None:
        self._copies = LocalCopies(store, "breachmatch-notifier-", parent)
        self._open: dict[str, _Artifacts] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def check(self, manifest: Manifest, proof: MatchProof | None) -> ProvenMatch:
        """What ``proof`` proves about ``manifest``'s breach.

        Raises `ProofRefusal` when it proves nothing, `BreachUnprovableError`
        when the breach cannot be checked, and NATS errors when the object
        store cannot be reached (try again).
        """
        (outcome,) = await self.check_many(manifest, [proof])
        if isinstance(outcome, ProofRefusal):
            raise outcome
        return outcome

    async def check_many(
        self, manifest: Manifest, proofs: Sequence[MatchProof | None]
    ) -> list[ProvenMatch | ProofRefusal]:
        """`check` for many proofs of one breach at once, in order.

        One lookup for all: each filter block is decoded once however many
        tokens fall in it (a batch of 500 costs about what a few single
        checks do). Raises only what concerns the breach.
        """
        parsed: list[tuple[KeyKind, bytes] | ProofRefusal] = []
        for proof in proofs:
            try:
                parsed.append(read_proof(proof))
            except ProofRefusal as refusal:
                parsed.append(refusal)
        readable = [found for found in parsed if not isinstance(found, ProofRefusal)]
        if not readable:
            return [found for found in parsed if isinstance(found, ProofRefusal)]
        artifacts = await self._artifacts(manifest)
        keys = derive_keys([token for _, token in readable])
        labels = proven_labels(artifacts.body, artifacts.index, keys).tolist()
        checked = iter(zip(readable, labels, keys.tag_hash, strict=True))
        outcomes: list[ProvenMatch | ProofRefusal] = []
        for found in parsed:
            if isinstance(found, ProofRefusal):
                outcomes.append(found)
                continue
            (kind, _), label, entry = next(checked)
            if label == NOT_FOUND:
                outcomes.append(
                    ProofRefusal(
                        Refusal.REFUSAL_INVALID_PROOF,
                        "proof: the token matches no entry of this breach",
                    )
                )
            else:
                outcomes.append(ProvenMatch(kind, tuple(Category(label).names()), entry.tobytes()))
        return outcomes

    def forget(self, breach_id: str) -> None:
        """Drop what is held for a retracted or replaced breach."""
        artifacts = self._open.pop(breach_id, None)
        if artifacts is not None:
            artifacts.close()
            self._copies.forget(artifacts.body_name)
            self._copies.forget(artifacts.index_name)

    def close(self) -> None:
        for breach_id in list(self._open):
            self.forget(breach_id)
        self._copies.close()

    async def _artifacts(self, manifest: Manifest) -> _Artifacts:
        breach_id = manifest.breach_id
        async with self._locks.setdefault(breach_id, asyncio.Lock()):
            held = self._open.get(breach_id)
            if held is not None and held.body_sha256 == manifest.body_sha256:
                return held
            if held is not None:
                self.forget(breach_id)
            artifacts = await self._fetch(manifest)
            self._open[breach_id] = artifacts
            log.info("breach proof artifacts ready", breach_id=breach_id)
            return artifacts

    async def _fetch(self, manifest: Manifest) -> _Artifacts:
        sha = manifest.body_sha256
        index_name = proof_object_name(manifest)
        try:
            body_path = await self._copies.path(
                manifest.body_object,
                f"{sha}.body",
                lambda digest: digest.verify(manifest.body_size, manifest.body_sha256),
            )
            index_path = await self._copies.path(
                index_name,
                f"{sha}.proofs",
                lambda digest: _check_size(digest.size, proof_index_size(manifest.entry_count)),
            )
        except NotFoundError:
            raise BreachUnprovableError(
                f"breach {manifest.breach_id} has no proof index: the operator must publish "
                "it again"
            ) from None
        except ArtifactError as exc:
            raise BreachUnprovableError(
                f"breach {manifest.breach_id}: stored artifacts differ from its manifest ({exc})"
            ) from None
        body = index = None
        try:
            body = await asyncio.to_thread(
                BreachFilter.open, body_path, manifest, cached_blocks=CACHED_BLOCKS
            )
            index = await asyncio.to_thread(ProofIndex.open, index_path, manifest.entry_count)
        except ArtifactError as exc:
            for opened in (body, index):
                if opened is not None:
                    opened.close()
            raise BreachUnprovableError(
                f"breach {manifest.breach_id}: stored artifacts differ from its manifest ({exc})"
            ) from None
        return _Artifacts(sha, manifest.body_object, index_name, body, index)


def _check_size(size: int, expected: int) -> None:
    if size != expected:
        raise FilterFormatError(f"proof index is {size} bytes, the manifest implies {expected}")
