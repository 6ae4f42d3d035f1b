"""`Client`: the Python API, one method per CLI command::

    with Client("matcher.example:443", tls_dir="/etc/breachmatch/tls") as client:
        result = client.check("patients.csv")           # every served breach
        for match in result.matches:
            print(match.patient_id, match.breach_id, match.strength, match.categories)
        client.notify(result)                           # sealed notices, idempotent

Construction checks the TLS files and the state directory and loads (or
creates) the cache key, so a misconfiguration fails before any work.
Connections are opened on first use. Methods are synchronous; each may be
called from any thread (the token cache is opened per call), but not from
several at once.

Large first checks blind and finalize in worker processes that import only
the OPRF modules (`breachmatch.client.workers`), never the calling script.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import nacl.exceptions
import nacl.public
import nacl.signing

from breachmatch import logs
from breachmatch.client.audit import SecurityAudit
from breachmatch.client.breaches import forget_breach
from breachmatch.client.cache import TokenCache
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.check import Checker
from breachmatch.client.connection import Endpoint, load_identity, open_channel
from breachmatch.client.errors import BreachNotServedError, ConfigurationError, StaleMemoError
from breachmatch.client.evaluate import PipelineOptions
from breachmatch.client.key_index import Hasher, PatientKeys
from breachmatch.client.key_trust import trusted_notifier_key
from breachmatch.client.matcher import MatcherClient
from breachmatch.client.memo_read import read_keys
from breachmatch.client.outreach import (
    DEFAULT_CHANNELS,
    OutreachClient,
    OutreachPlan,
    SubmitSummary,
    opaque_ref,
    plan_outreach,
    selected,
)
from breachmatch.client.patients import PatientSet, read_patients
from breachmatch.client.pinning import pinned_operator_key
from breachmatch.client.results import CheckResult
from breachmatch.client.retry import Backoff
from breachmatch.client.row_memo import RowMemo
from breachmatch.client.state import StateDir, default_state_dir
from breachmatch.client.submitted import SubmittedNotices
from breachmatch.client.versions import SeenBreaches
from breachmatch.client.watch import BreachWatch
from breachmatch.closing import Closeable
from breachmatch.filter import BreachEventError, check_breach_event
from breachmatch.identifiers import Strength
from breachmatch.keys import load_sealing_public_key
from breachmatch.v1 import breach_pb2, outreach_pb2

log = logs.get_logger(__name__)

PathLike = Path | str


def _log_notice(message: str) -> None:
    log.warning("breachmatch notice", notice=message)


@dataclass(frozen=True)
class PatientSource:
    """Where the patients are and how to read them (--patients/--format/--map/--encoding)."""

    path: Path
    format: str = "auto"
    mapping: Path | None = None
    facility: str | None = None
    #: Text encoding of the export (--encoding); None: sniffed.
    encoding: str | None = None

    def read(self, only: Collection[str] | None = None) -> PatientSet:
        """The export's patients; with ``only``, just those ids (see `read_patients`)."""
        return read_patients(
            self.path, self.format, self.mapping, self.facility, self.encoding, only
        )

    def read_keys(self, memo: RowMemo, hasher: Hasher, *, remembered: bool = True) -> PatientKeys:
        """What a check needs of the export, normalising only rows the memo lacks."""
        return read_keys(
            self.path,
            memo,
            hasher,
            format=self.format,
            mapping_file=self.mapping,
            facility=self.facility,
            encoding=self.encoding,
            remembered=remembered,
        )


@dataclass(frozen=True)
class NotifyResult:
    plan: OutreachPlan
    submitted: SubmitSummary


class Client(Closeable):
    def __init__(
        self,
        matcher: str,
        tls_dir: PathLike,
        *,
        state_dir: PathLike | None = None,
        cache_key: PathLike | None = None,
        operator_key: PathLike | None = None,
        notifier: str | None = None,
        notifier_key: PathLike | None = None,
        pipeline: PipelineOptions | None = None,
        backoff: Backoff | None = None,
        progress: bool = False,
        notice: Callable[[str], None] = _log_notice,
    ) -> None:
        self._tls_dir = Path(tls_dir)
        self._identity = load_identity(self._tls_dir)
        self.state = StateDir.open(Path(state_dir) if state_dir else default_state_dir())
        self._cache_key = CacheKey.load_or_create(
            self.state.cache_key_path(Path(cache_key) if cache_key else None)
        )
        self._operator_key = Path(operator_key) if operator_key else None
        self._notifier_key = Path(notifier_key) if notifier_key else None
        self._backoff = backoff or Backoff()
        self._pipeline = pipeline or PipelineOptions(backoff=self._backoff)
        self._progress = progress
        self._notice = notice
        self._matcher_endpoint = Endpoint("matcher", matcher, "--matcher", self._tls_dir)
        self._notifier_endpoint = Endpoint("notifier", notifier or "", "--notifier", self._tls_dir)
        self._audit = SecurityAudit(self.state.audit_log)
        self._channels: list[grpc.Channel] = []
        self._matcher: MatcherClient | None = None
        self._outreach: OutreachClient | None = None

    @property
    def tenant(self) -> str:
        """This hospital's tenant id: the name in its client certificate's hospital URI SAN."""
        return self._identity.tenant

    def _matcher_client(self) -> MatcherClient:
        if self._matcher is None:
            channel = open_channel(self._matcher_endpoint, self._identity)
            self._channels.append(channel)
            self._matcher = MatcherClient(channel, self._matcher_endpoint, self._backoff)
        return self._matcher

    def _outreach_client(self) -> OutreachClient:
        if self._outreach is None:
            channel = open_channel(self._notifier_endpoint, self._identity)
            self._channels.append(channel)
            self._outreach = OutreachClient(channel, self._notifier_endpoint, self._backoff)
        return self._outreach

    # --- check --------------------------------------------------------------

    def check(
        self,
        patients: PathLike | PatientSource,
        breach_ids: Sequence[str] | None = None,
    ) -> CheckResult:
        """Check the patients against the named breaches (None: every served breach)."""
        source = patients if isinstance(patients, PatientSource) else PatientSource(Path(patients))
        with (
            TokenCache(self.state.token_cache, self._cache_key) as cache,
            RowMemo(self.state.row_memo, self._cache_key, self.tenant) as memo,
        ):
            patient_keys = source.read_keys(memo, cache.index_of)
            self._notice_unread(patient_keys)
            try:
                return self._checker(cache).check(patient_keys, breach_ids)
            except StaleMemoError:
                patient_keys = source.read_keys(memo, cache.index_of, remembered=False)
                return self._checker(cache).check(patient_keys, breach_ids)

    def _notice_unread(self, patients: PatientKeys) -> None:
        """Say what of the export a check cannot use, and how to map it."""
        if patients.unnamed:
            self._notice(
                f"{patients.unnamed} patients have no patient id and are named by row "
                '(row-<n>); map your id column with --map, e.g. {"columns": {"Patientnr": '
                '"patient_id"}}'
            )
        if patients.unknown_identifier_systems:
            systems = patients.unknown_identifier_systems
            named = ", ".join(f"{system} ({count})" for system, count in systems.items())
            self._notice(
                "Patients carry identifiers in systems breachmatch does not know, which are "
                f"not used (Patients per system: {named}). If one holds CPR, "
                'SSN or MRN numbers, map it with --map, e.g. {"fhir": {"identifier_systems": '
                '{"<system>": "mrn"}}}'
            )

    def _checker(self, cache: TokenCache) -> Checker:
        return Checker(
            matcher=self._matcher_client(),
            cache=cache,
            pipeline=self._pipeline,
            progress=self._progress,
            state=self.state,
            tenant=self.tenant,
            operator_key=self._operator_key,
            notice=self._notice,
            audit=self._audit,
        )

    # --- outreach -------------------------------------------------------------

    def notify(
        self,
        result: CheckResult,
        patients: PathLike | PatientSource | None = None,
        *,
        channels: Sequence[str] = DEFAULT_CHANNELS,
        min_strength: Strength = Strength.STRONG,
    ) -> NotifyResult:
        """Submit a sealed notice for each match the strength policy selects."""
        if result.tenant != self.tenant:
            raise ConfigurationError(
                f"these results were produced by tenant {result.tenant}, but this client "
                f"certificate is tenant {self.tenant}: use the --tls-dir of {result.tenant}"
            )
        if patients is None:
            source = PatientSource(Path(result.patients_file))
        elif isinstance(patients, PatientSource):
            source = patients
        else:
            source = PatientSource(Path(patients))
        # The sealing key first: an untrusted one stops everything before any other work.
        notifier_key = self._notifier_public_key()
        patient_set = source.read(only={m.patient_id for m in selected(result, min_strength)})
        proofs = self.prove(result, patient_set, min_strength)
        plan = plan_outreach(
            result,
            patient_set,
            proofs,
            tenant=self.tenant,
            cache_key=self._cache_key,
            notifier_key=notifier_key,
            channels=channels,
            min_strength=min_strength,
        )
        SubmittedNotices(self.state.submitted_notices).record(plan)
        return NotifyResult(plan, self._outreach_client().submit(plan))

    def prove(
        self, result: CheckResult, patients: PatientSet, min_strength: Strength = Strength.STRONG
    ) -> dict[tuple[str, str], outreach_pb2.MatchProof]:
        """The proof of match `notify` sends for each selected (patient id, breach id).

        See `Checker.prove`; a match that no longer holds has none.
        """
        with TokenCache(self.state.token_cache, self._cache_key) as cache:
            return self._checker(cache).prove(patients, selected(result, min_strength))

    def _notifier_public_key(self) -> nacl.public.PublicKey:
        """The key to seal contact records to: given out of band, or stated by the operator.

        A key the matcher serves is used only inside a statement the pinned
        operator key signed (`key_trust`): otherwise a fake matcher could
        collect every sealed record.
        """
        if self._notifier_key is not None:
            try:
                return load_sealing_public_key(self._notifier_key)
            except (OSError, ValueError, nacl.exceptions.CryptoError) as exc:
                raise ConfigurationError(
                    f"--notifier-key {self._notifier_key} is not an X25519 public key in hex"
                ) from exc
        matcher = self._matcher_client()
        info = matcher.key_info()
        verify_key = pinned_operator_key(
            info.operator_verify_key, self._operator_key, self.state.operator_pin, self._notice
        )
        return trusted_notifier_key(info, verify_key, self._audit, matcher.endpoint.address)

    def status(self, breach_id: str | None = None) -> list[outreach_pb2.OutreachStatus]:
        """Delivery status of this hospital's notices (of one breach, or all).

        The notifier does not know patient ids, only opaque refs and
        idempotency keys; ids are filled in from the record `notify` keeps in
        the state directory (a notice submitted from elsewhere shows none).
        """
        statuses = self._outreach_client().status(breach_id)
        by_key = SubmittedNotices(self.state.submitted_notices).patient_ids()
        by_ref = {
            opaque_ref(self._cache_key, self.tenant, patient_id): patient_id
            for patient_id in set(by_key.values())
        }
        for status in statuses:
            status.patient_ref = by_key.get(status.idempotency_key) or by_ref.get(
                status.patient_ref, ""
            )
        return statuses

    # --- watch ----------------------------------------------------------------

    def watch(
        self,
        patients: PathLike | PatientSource,
        on_result: Callable[[CheckResult], None],
        *,
        stop: threading.Event | None = None,
        notify: Callable[[CheckResult], object] | None = None,
        max_events: int = 0,
    ) -> None:
        """Check every breach published after the last one handled, as it is published.

        The patient export is re-read for each breach, so new and changed
        patients are picked up; known ones come from the token cache.
        `notify` (e.g. ``lambda r: client.notify(r)``) runs after `on_result`.
        Returns when `stop` is set or after `max_events` events (0: never).
        """
        source = patients if isinstance(patients, PatientSource) else PatientSource(Path(patients))
        matcher = self._matcher_client()
        info = matcher.key_info()
        verify_key = pinned_operator_key(
            info.operator_verify_key, self._operator_key, self.state.operator_pin, self._notice
        )
        seen = SeenBreaches.open(self.state.breach_versions)
        watch = BreachWatch(matcher, self.state.watch_cursor, stop or threading.Event())
        for handled, (sequence, event) in enumerate(watch.events(), start=1):
            self._on_event(sequence, event, verify_key, seen, source, on_result, notify)
            watch.commit(sequence)
            if max_events and handled >= max_events:
                return

    def _on_event(
        self,
        sequence: int,
        event: breach_pb2.BreachEvent,
        verify_key: nacl.signing.VerifyKey,
        seen: SeenBreaches,
        source: PatientSource,
        on_result: Callable[[CheckResult], None],
        notify: Callable[[CheckResult], object] | None,
    ) -> None:
        """Act on one breach event — only if it is signed and newer than what was seen.

        A refused event (unsigned, forged, replayed, for an unknown breach) is
        named and skipped: it never stops the watch and never touches the state.
        """
        try:
            checked = check_breach_event(event, verify_key)
            seen.admit(checked)
        except BreachEventError as exc:
            # The event's breach id is not recorded: it is unchecked input.
            self._audit.record(
                "breach event refused",
                sequence=sequence,
                reason=exc.reason,
                matcher=self._matcher_endpoint.address,
            )
            self._notice(
                f"breach event {sequence} ignored ({exc.reason}): it is not signed by "
                "the operator key, or older than what this installation has seen"
            )
            return
        breach_id = checked.breach_id
        if checked.retraction is not None:
            self._notice(
                f"breach {breach_id} was retracted by the operator "
                f"(version {checked.retraction.version}): {checked.retraction.reason}"
            )
            forget_breach(self.state.breaches, breach_id)
            return
        try:
            result = self.check(source, [breach_id])
        except BreachNotServedError:
            self._notice(f"breach {breach_id} is no longer served; skipped")
            return
        on_result(result)
        if notify is not None:
            notify(result)

    # --- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        self._matcher = None
        self._outreach = None
