"""Patient notices: sealed contact details to the notifier, and their delivery status.

Contact details leave the hospital only inside a `nacl.public.SealedBox` to
the notifier's public key, so the operator's intake, queue and ledger carry
ciphertext; only the notifier opens it (intake to check it, a worker to
deliver), and drops it after delivery. The CPR number goes in only when
Digital Post (which addresses by CPR) is among the channels.

Each sealed contact carries a proof of match (`Checker.prove`): the token of
the patient's strongest key found in the breach. The notifier refuses a
notice without one, and reads the exposed categories from the breach entry
the token proves — the hospital no longer states them.

Nothing the notifier stores names a patient: the item's ``patient_ref`` is
``HMAC-SHA256(outreach-ref subkey of the cache key, "outreach-ref|" + tenant +
"|" + patient_id)`` in hex (`opaque_ref`), and its idempotency key is
``HMAC-SHA256(outreach subkey, "outreach|" + tenant + "|" + patient_id + "|" +
breach_id)`` — the same for every resubmission of the same notice, so the
notifier's ledger queues it once. In Danish exports the patient id is often
the CPR number; keyed under the hospital's secret, neither can be reversed by
hashing candidate numbers. `status` maps both back from what `notify` recorded.

Items are submitted breach by breach. The notifier refuses a batch naming a
breach that was retracted (or that it does not know) as a whole; the SDK
then leaves that breach out, says so in `SubmitSummary.refused_breaches`, and
goes on with the other breaches — one withdrawn breach never keeps the
patients of the others from being told. Within a batch, the notifier refuses
single items (no valid proof, a used proof or address, a broken notice rule,
the daily limit): those are `SubmitSummary.refused`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import nacl.public

from breachmatch import refusals
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.connection import Endpoint, call_unary, explain, is_retryable
from breachmatch.client.patients import PatientSet
from breachmatch.client.results import CheckResult, Match
from breachmatch.client.retry import Backoff, call_with_retries
from breachmatch.identifiers import Strength
from breachmatch.records import PersonRecord
from breachmatch.v1 import outreach_pb2, outreach_pb2_grpc

_REFUSAL = outreach_pb2.OutreachReceipt.Refusal
_NOT_REFUSED = _REFUSAL.REFUSAL_UNSPECIFIED

CHANNELS = ("email", "sms", "digital_post", "dry_run")
DEFAULT_CHANNELS = ("email", "sms", "digital_post")
#: Items per SubmitOutreach call.
SUBMIT_BATCH = 500
_DEADLINE = 30.0


def idempotency_key(cache_key: CacheKey, tenant: str, patient_id: str, breach_id: str) -> str:
    message = f"outreach|{tenant}|{patient_id}|{breach_id}".encode()
    return hmac.new(cache_key.subkey("outreach-idempotency"), message, hashlib.sha256).hexdigest()


def opaque_ref(cache_key: CacheKey, tenant: str, patient_id: str) -> str:
    """What the notifier knows a patient by: 64 hex digits only this hospital can map back."""
    message = f"outreach-ref|{tenant}|{patient_id}".encode()
    return hmac.new(cache_key.subkey("outreach-ref"), message, hashlib.sha256).hexdigest()


def contact_details(
    record: PersonRecord, proof: outreach_pb2.MatchProof, channels: Sequence[str]
) -> outreach_pb2.ContactDetails:
    name = record.full_name or " ".join(
        part for part in (record.given_name, record.family_name) if part
    )
    return outreach_pb2.ContactDetails(
        name=name,
        email=record.email or "",
        phone=record.phone or "",
        cpr=(record.cpr or "") if "digital_post" in channels else "",
        postal_address=record.address or "",
        language=record.language or "",
        channels=list(channels),
        proof=proof,
    )


def seal(details: outreach_pb2.ContactDetails, notifier_key: nacl.public.PublicKey) -> bytes:
    return bytes(nacl.public.SealedBox(notifier_key).encrypt(details.SerializeToString()))


@dataclass(frozen=True)
class OutreachPlan:
    items: tuple[outreach_pb2.OutreachItem, ...]
    #: Patient id of each item, in item order (the items carry opaque refs only).
    patient_ids: tuple[str, ...]
    #: Matches left out because the patient is no longer in the export.
    missing_patients: int
    #: Matches left out by the strength policy (medium-only, for review).
    below_strength: int
    #: Matches left out because they no longer hold (the patient's data changed,
    #: or the breach is no longer served): there is nothing to prove them with.
    unproven: int = 0


def selected(result: CheckResult, min_strength: Strength) -> list[Match]:
    """The matches the strength policy lets through."""
    return [m for m in result.matches if min_strength is Strength.MEDIUM or m.is_strong]


def plan_outreach(
    result: CheckResult,
    patients: PatientSet,
    proofs: Mapping[tuple[str, str], outreach_pb2.MatchProof],
    *,
    tenant: str,
    cache_key: CacheKey,
    notifier_key: nacl.public.PublicKey,
    channels: Sequence[str],
    min_strength: Strength,
) -> OutreachPlan:
    """One sealed item per match the policy selects and ``proofs`` (`Checker.prove`) proves."""
    known = patients.by_id()
    chosen = selected(result, min_strength)
    items = []
    patient_ids = []
    missing = unproven = 0
    for match in chosen:
        patient = known.get(match.patient_id)
        if patient is None:
            missing += 1
            continue
        proof = proofs.get((match.patient_id, match.breach_id))
        if proof is None:
            unproven += 1
            continue
        contact = contact_details(patient.record, proof, channels)
        items.append(
            outreach_pb2.OutreachItem(
                patient_ref=opaque_ref(cache_key, tenant, match.patient_id),
                breach_id=match.breach_id,
                idempotency_key=idempotency_key(
                    cache_key, tenant, match.patient_id, match.breach_id
                ),
                sealed_contact=seal(contact, notifier_key),
            )
        )
        patient_ids.append(match.patient_id)
    below = len(result.matches) - len(chosen)
    return OutreachPlan(tuple(items), tuple(patient_ids), missing, below, unproven)


@dataclass(frozen=True)
class Refused:
    """An item the notifier refused: nothing of it was queued."""

    patient_id: str
    breach_id: str
    #: "no_proof", "invalid_proof", "proof_used", "contact_rejected",
    #: "duplicate_address", "rate_limited", "unreadable_contact".
    reason: str
    detail: str


@dataclass(frozen=True)
class SubmitSummary:
    accepted: int
    already_submitted: int
    #: Items the notifier refused one by one (nothing of them was queued).
    refused: tuple[Refused, ...] = ()
    #: Breaches the notifier refused, and why ("retracted", "unknown", "unprovable");
    #: their items were not sent.
    refused_breaches: dict[str, str] = field(default_factory=dict)
    #: Items of refused breaches that were not sent.
    not_sent: int = 0


class OutreachClient:
    def __init__(self, channel: grpc.Channel, endpoint: Endpoint, backoff: Backoff) -> None:
        self._stub = outreach_pb2_grpc.OutreachStub(channel)
        self._endpoint = endpoint
        self._backoff = backoff

    def submit(self, plan: OutreachPlan) -> SubmitSummary:
        """Submit breach by breach, in batches; resubmitting is safe (idempotency keys)."""
        by_breach: dict[str, list[int]] = {}
        for at, item in enumerate(plan.items):
            by_breach.setdefault(item.breach_id, []).append(at)
        accepted = already = not_sent = 0
        refused: list[Refused] = []
        refused_breaches: dict[str, str] = {}
        for breach_id, positions in by_breach.items():
            for start in range(0, len(positions), SUBMIT_BATCH):
                batch = positions[start : start + SUBMIT_BATCH]
                state, receipts = self._submit_batch([plan.items[at] for at in batch])
                if state is not None:
                    refused_breaches[breach_id] = state
                    not_sent += len(positions) - start
                    break
                for at, receipt in zip(batch, receipts, strict=True):
                    if receipt.refusal != _NOT_REFUSED:
                        reason = _REFUSAL.Name(receipt.refusal).removeprefix("REFUSAL_").lower()
                        refused.append(
                            Refused(plan.patient_ids[at], breach_id, reason, receipt.detail)
                        )
                    elif receipt.accepted:
                        accepted += 1
                    else:
                        already += 1
        return SubmitSummary(accepted, already, tuple(refused), refused_breaches, not_sent)

    def _submit_batch(
        self, batch: Sequence[outreach_pb2.OutreachItem]
    ) -> tuple[str | None, list[outreach_pb2.OutreachReceipt]]:
        """(None, receipts), or (the breach's state, []) when the notifier refused its breach."""
        request = outreach_pb2.SubmitOutreachRequest(items=batch)
        try:
            response = call_with_retries(
                lambda: self._stub.SubmitOutreach(request, timeout=_DEADLINE),
                self._backoff,
                is_retryable,
            )
        except grpc.RpcError as error:
            state = refusals.breach_state(error)
            if state is None:
                raise explain(error, self._endpoint) from None
            return state, []
        return None, list(response.receipts)

    def status(
        self, breach_id: str | None = None, idempotency_keys: Iterable[str] = ()
    ) -> list[outreach_pb2.OutreachStatus]:
        request = outreach_pb2.GetStatusRequest(
            breach_id=breach_id or "", idempotency_keys=list(idempotency_keys)
        )
        response = call_unary(
            self._stub.GetStatus, request, self._endpoint, self._backoff, _DEADLINE
        )
        return list(response.statuses)


def state_name(status: outreach_pb2.OutreachStatus) -> str:
    """ "queued", "sent", … from the proto enum."""
    name = outreach_pb2.OutreachStatus.State.Name(status.state)
    return name.removeprefix("STATE_").lower()
