"""Checking a hospital's patients against breaches: the matching itself.

The order of a check is chosen so that nothing is spent on a breach that
will be refused and nothing sensitive leaves the hospital:

1. key info from the matcher; the operator key is compared with the pin and
   every OPRF key's public key must be in a statement the pinned key signed
   (`key_trust`); cache rows of key ids the matcher no longer evaluates, or
   made under another public key, are deleted;
2. each selected breach is verified, compared with the newest version of it
   this installation has seen (an older or retracted version is refused:
   `breachmatch.client.versions`), and downloaded (or found in the state
   directory) — before any OPRF budget is spent on it;
3. the patients' distinct match keys (identical OPRF inputs shared by several
   patients are evaluated once) get their OPRF outputs under every key id
   needed — the current one, so the next breach is checked from the cache,
   and each breach's own — from the cache or the matcher, every evaluated
   batch proven under the key's stated public key;
4. each filter is queried with the outputs of *its* key id (tokens of another
   key are refused), and the matched entries are folded back into patients:
   kinds, strength, categories.

`Checker.prove` redoes step 4 for the matches a hospital notifies, keeping the
token of each patient's strongest matched key: the proof of match the
notifier checks against the same filter.

If the matcher retires a key while this runs, the check refreshes its key
info and goes on under the new key (bounded); what was cached stays valid.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import nacl.signing
import numpy as np

from breachmatch.client.audit import SecurityAudit
from breachmatch.client.breaches import BreachStore, StoredBreach, verify_served
from breachmatch.client.cache import TokenCache
from breachmatch.client.errors import (
    ArtifactRefusedError,
    BreachNotServedError,
    ClientError,
    KeyRetiredError,
)
from breachmatch.client.evaluate import OprfPipeline, PipelineOptions
from breachmatch.client.key_index import KIND_NUMBER, KINDS, KeyIndex, PatientKeys, patient_keys
from breachmatch.client.key_trust import TrustedOprfKey, trusted_oprf_keys
from breachmatch.client.matcher import KeyInfo, MatcherClient
from breachmatch.client.patients import PatientSet
from breachmatch.client.pinning import pinned_operator_key
from breachmatch.client.results import BreachSummary, CheckResult, Match
from breachmatch.client.state import StateDir
from breachmatch.client.tokens import TokenSource
from breachmatch.client.versions import SeenBreaches
from breachmatch.filter import NOT_FOUND, BreachEventError, TokenKeys
from breachmatch.identifiers import KeyKind, Strength
from breachmatch.records import Category
from breachmatch.v1.breach_pb2 import BreachArtifact
from breachmatch.v1.outreach_pb2 import MatchProof

#: Key refreshes tolerated in one check (each after the matcher retired a key mid-run).
MAX_KEY_REFRESHES = 3


@dataclass(frozen=True)
class KeyedTokens:
    """Filter lookup keys derived from the outputs of one OPRF key, and which key that is."""

    key: TrustedOprfKey
    keys: TokenKeys


@dataclass(frozen=True)
class _Keys:
    """Key info as served, and what of it the pinned operator key vouches for."""

    info: KeyInfo
    verify_key: nacl.signing.VerifyKey
    trusted: dict[str, TrustedOprfKey]


def match_breach(
    breach: StoredBreach, tokens: KeyedTokens, patients: PatientKeys
) -> tuple[list[Match], BreachSummary]:
    """Query one verified filter with tokens of its own key and fold hits into patients.

    The fold is vectorised: the owners of every matched key at once, sorted
    by patient, each patient's kinds (a bit per kind) and categories OR-ed
    together; Python objects are made only for the matched patients.
    """
    manifest = breach.manifest
    if manifest.oprf_key_id != tokens.key.key_id:
        raise ArtifactRefusedError(
            f"breach {manifest.breach_id} was built under OPRF key id {manifest.oprf_key_id}, "
            f"not {tokens.key.key_id}: its filter cannot be matched against these tokens"
        )
    with breach.open() as body:
        labels = body.lookup_labels(tokens.keys)
    matched = np.flatnonzero(labels != NOT_FOUND)
    patient, kind, which = patients.keys.owner_pairs(matched)
    order = np.argsort(patient, kind="stable")
    patient = patient[order]
    first = np.flatnonzero(np.diff(patient, prepend=-1)) if len(patient) else patient
    kinds = np.left_shift(1, kind[order].astype(np.int64))
    categories = labels[matched][which][order].astype(np.int64)
    if len(first):
        kinds = np.bitwise_or.reduceat(kinds, first)
        categories = np.bitwise_or.reduceat(categories, first)
    matches = [
        _match(patients.ids[number], manifest.breach_id, mask, label)
        for number, mask, label in zip(
            patient[first].tolist(), kinds.tolist(), categories.tolist(), strict=True
        )
    ]
    strong = sum(m.is_strong for m in matches)
    summary = BreachSummary(
        breach_id=manifest.breach_id,
        title=manifest.title,
        organisation=manifest.organisation,
        breach_date=manifest.breach_date.isoformat(),
        oprf_key_id=manifest.oprf_key_id,
        patients_checked=len(patients.ids),
        patients_matched=len(matches),
        strong=strong,
        medium=len(matches) - strong,
        categories={
            name: int(np.count_nonzero(categories & bit)) for name, bit in Category.legend().items()
        },
    )
    return matches, summary


def _match(patient_id: str, breach_id: str, kinds: int, categories: int) -> Match:
    matched_keys, strength = _kinds(kinds)
    return Match(
        patient_id=patient_id,
        breach_id=breach_id,
        matched_keys=matched_keys,
        strength=strength,
        categories=_category_names(categories),
    )


@functools.cache
def _kinds(mask: int) -> tuple[tuple[str, ...], str]:
    """(kind names in `KeyKind` order, strength) of a set of kinds, one bit per `KINDS` number."""
    kinds = [kind for number, kind in enumerate(KINDS) if mask >> number & 1]
    strength = Strength.MEDIUM
    if any(kind.strength is Strength.STRONG for kind in kinds):
        strength = Strength.STRONG
    return tuple(kind.value for kind in kinds), strength.value


@functools.cache
def _category_names(label: int) -> tuple[str, ...]:
    return tuple(Category(label).names())


class Checker:
    """One hospital's view of one matcher: runs checks with a shared cache and state."""

    def __init__(
        self,
        *,
        matcher: MatcherClient,
        cache: TokenCache,
        pipeline: PipelineOptions,
        progress: bool,
        state: StateDir,
        tenant: str,
        operator_key: Path | None,
        notice: Callable[[str], None],
        audit: SecurityAudit,
    ) -> None:
        self._audit = audit
        self._matcher = matcher
        self._cache = cache
        self._pipeline = pipeline
        self._progress = progress
        self._state = state
        self._tenant = tenant
        self._operator_key = operator_key
        self._notice = notice

    def check(self, patients: PatientKeys, breach_ids: Sequence[str] | None) -> CheckResult:
        """Check `patients` against the named breaches, or every served one if None."""
        keys = self._key_info()
        store = BreachStore(self._state.breaches, self._matcher, keys.verify_key)
        current = self._current(self._select(breach_ids), keys.verify_key, breach_ids)
        breaches = self._usable(
            keys.info, [store.fetch(artifact) for artifact in current], breach_ids
        )
        tokens, evaluations = self._token_keys(keys, breaches, patients.keys)
        matches: list[Match] = []
        summaries: list[BreachSummary] = []
        for breach in breaches:
            found, summary = match_breach(breach, tokens[breach.manifest.oprf_key_id], patients)
            matches.extend(found)
            summaries.append(summary)
        return CheckResult(
            tenant=self._tenant,
            patients_file=str(patients.path),
            generated_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            patients_checked=len(patients.ids),
            bad_rows=patients.bad_rows,
            patients_without_keys=patients.without_keys,
            match_keys=patients.keys.count,
            evaluations=evaluations,
            matches=tuple(matches),
            summaries=tuple(summaries),
        )

    def prove(
        self, patients: PatientSet, matches: Sequence[Match]
    ) -> dict[tuple[str, str], MatchProof]:
        """The proof of match of each (patient id, breach id) that still holds.

        The proof is the token of the patient's strongest key found in the
        breach (by kind: CPR before SSN, MRN, e-mail, phone, name and birth
        date), looked up again now: a patient whose data changed since the
        check, or a breach that is no longer served, gets none. Tokens come
        from the cache; only keys it lacks are evaluated (and proven).
        """
        keys = self._key_info()
        store = BreachStore(self._state.breaches, self._matcher, keys.verify_key)
        served = {artifact.breach_id: artifact for artifact in self._matcher.list_breaches()}
        wanted = sorted({match.breach_id for match in matches} & set(served))
        breaches = self._usable(keys.info, [store.fetch(served[b]) for b in wanted], None)
        ids = {match.patient_id for match in matches}
        subset = PatientSet(
            patients.path, tuple(p for p in patients.patients if p.patient_id in ids), 0
        )
        index = patient_keys(subset, self._cache.index_of).keys
        tokens = self._token_source(keys.info)
        proofs: dict[tuple[str, str], MatchProof] = {}
        for breach in breaches:
            key = keys.trusted[breach.manifest.oprf_key_id]
            cached, _ = tokens.tokens(key, index)
            with breach.open() as body:
                labels = body.lookup_labels(cached.keys)
            best: dict[int, tuple[KeyKind, bytes]] = {}
            matched = np.flatnonzero(labels != NOT_FOUND)
            for at in matched[np.argsort(index.first[matched], kind="stable")].tolist():
                for patient, kind, _ in index.owners_of(at):
                    held = best.get(patient)
                    if held is None or KIND_NUMBER[kind] < KIND_NUMBER[held[0]]:
                        best[patient] = (kind, cached.output(at))
            for patient, (kind, token) in best.items():
                found = (subset.patients[patient].patient_id, breach.manifest.breach_id)
                proofs[found] = MatchProof(key_kind=kind.value, token=token)
        return proofs

    def _key_info(self) -> _Keys:
        """Key info, pinned and verified; the cache follows the keys it names."""
        info = self._matcher.key_info()
        verify_key = pinned_operator_key(
            info.operator_verify_key, self._operator_key, self._state.operator_pin, self._notice
        )
        trusted = trusted_oprf_keys(info, verify_key, self._audit, self._matcher.endpoint.address)
        purged = self._cache.purge_except(info.valid_key_ids)
        if purged:
            self._notice(
                f"The operator rotated its OPRF key: {purged} cached tokens of retired key ids "
                "were deleted; those match keys are evaluated again under the new key."
            )
        changed = sum(self._cache.use_key(key) for key in trusted.values())
        if changed:
            self._notice(
                f"{changed} cached tokens were made under a public key the operator no longer "
                "states for their key id; they were deleted and are evaluated again."
            )
        return _Keys(info, verify_key, trusted)

    def _usable(
        self, info: KeyInfo, breaches: list[StoredBreach], asked: Sequence[str] | None
    ) -> list[StoredBreach]:
        """Breaches whose key the matcher still evaluates; the others are named.

        A breach asked for by id is an error if it cannot be checked; with
        ``--all`` the rest are still checked and the stale ones listed.
        """
        stale = sorted(
            b.manifest.breach_id
            for b in breaches
            if b.manifest.oprf_key_id not in info.valid_key_ids
        )
        if not stale:
            return breaches
        message = (
            f"breach {', '.join(stale)} was built under an OPRF key the matcher no longer "
            "evaluates; ask the operator to publish it again under the current key"
        )
        if asked is not None:
            raise ClientError(message)
        self._notice(f"{message} (not checked)")
        return [b for b in breaches if b.manifest.breach_id not in stale]

    def _current(
        self,
        served: list[BreachArtifact],
        verify_key: nacl.signing.VerifyKey,
        asked: Sequence[str] | None,
    ) -> list[BreachArtifact]:
        """The served breaches that are the newest versions seen; older ones are named.

        A breach asked for by id is an error if the matcher serves an old or
        retracted version of it; with ``--all`` the rest are still checked.
        """
        seen = SeenBreaches.open(self._state.breach_versions)
        current = []
        for artifact in served:
            manifest = verify_served(artifact, verify_key)
            digest = hashlib.sha256(artifact.manifest).hexdigest()
            try:
                seen.admit_served(manifest, digest)
            except BreachEventError:
                known = seen.get(manifest.breach_id)
                assert known is not None  # only a known breach can be refused
                self._audit.record(
                    "breach version refused",
                    breach_id=manifest.breach_id,
                    served_version=manifest.version,
                    known_version=known.version,
                    retracted=int(known.retracted),
                    matcher=self._matcher.endpoint.address,
                )
                state = "was retracted" if known.retracted else "is the newest"
                message = (
                    f"the matcher serves breach {manifest.breach_id} as version "
                    f"{manifest.version}, but version {known.version} {state} (seen before by "
                    "this installation): an old or replayed version is refused. Tell the operator"
                )
                if asked is not None:
                    raise ArtifactRefusedError(message) from None
                self._notice(f"{message} (not checked)")
                continue
            current.append(artifact)
        return current

    def _token_source(self, info: KeyInfo) -> TokenSource:
        """Cache plus pipeline, with batches no larger than the matcher accepts."""
        options = self._pipeline
        if info.max_batch_size:
            options = replace(options, batch_size=min(options.batch_size, info.max_batch_size))
        return TokenSource(
            self._cache, OprfPipeline(self._matcher, options, self._audit), self._progress
        )

    def _select(self, breach_ids: Sequence[str] | None) -> list[BreachArtifact]:
        served = self._matcher.list_breaches()
        if breach_ids is None:
            return served
        by_id = {artifact.breach_id: artifact for artifact in served}
        unknown = [breach_id for breach_id in breach_ids if breach_id not in by_id]
        if unknown:
            raise BreachNotServedError(
                f"the matcher serves no breach {', '.join(unknown)} "
                f"(it serves {len(served)}: run 'breachmatch check --all' or pick from "
                f"{', '.join(sorted(by_id)) or 'none'})"
            )
        return [by_id[breach_id] for breach_id in dict.fromkeys(breach_ids)]

    def _token_keys(
        self, keys: _Keys, breaches: Sequence[StoredBreach], index: KeyIndex
    ) -> tuple[dict[str, KeyedTokens], int]:
        """Token keys per needed key id, evaluating (verified) what the cache lacks."""
        evaluations = 0
        for _ in range(MAX_KEY_REFRESHES):
            tokens = self._token_source(keys.info)
            needed = sorted({keys.info.current_key_id} | {b.manifest.oprf_key_id for b in breaches})
            found: dict[str, KeyedTokens] = {}
            try:
                for key_id in needed:
                    key = keys.trusted[key_id]
                    token_keys, sent = tokens.keys(key, index)
                    evaluations += sent
                    found[key_id] = KeyedTokens(key, token_keys)
            except KeyRetiredError:
                self._notice("The matcher retired an OPRF key during this check; refreshing.")
                keys = self._key_info()
                self._usable(keys.info, list(breaches), asked=())  # raises if a breach went stale
                continue
            return found, evaluations
        raise ClientError("the matcher kept retiring OPRF keys during this check; try again later")
