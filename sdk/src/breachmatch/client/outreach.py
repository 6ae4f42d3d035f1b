"""Patient notices: sealed contact details to the notifier, and their delivery status.

Contact details leave the hospital only inside a `nacl.public.SealedBox` to
the notifier's public key, so the operator's intake, queue and ledger carry
ciphertext; only a notifier worker opens it, and drops it after delivery.
The CPR number goes in only when Digital Post (which addresses by CPR) is
among the channels.

Each item's idempotency key is ``HMAC-SHA256(outreach subkey of the cache
key, "outreach|" + tenant + "|" + patient_id + "|" + breach_id)`` in hex: the
same for every resubmission of the same notice, so the notifier's ledger
queues it once; and keyed, so the notifier cannot recover patient ids from it.

Items are submitted breach by breach. The notifier refuses a batch naming a
breach that was retracted (or that it does not know) as a whole; the SDK
then leaves that breach out, says so in `SubmitSummary.refused`, and goes on
with the other breaches — one withdrawn breach never keeps the patients of
the others from being told.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Sequence
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

CHANNELS = ("email", "sms", "digital_post", "dry_run")
DEFAULT_CHANNELS = ("email", "sms", "digital_post")
#: Items per SubmitOutreach call.
SUBMIT_BATCH = 500
_DEADLINE = 30.0


def idempotency_key(cache_key: CacheKey, tenant: str, patient_id: str, breach_id: str) -> str:
    message = f"outreach|{tenant}|{patient_id}|{breach_id}".encode()
    return hmac.new(cache_key.subkey("outreach-idempotency"), message, hashlib.sha256).hexdigest()


def contact_details(
    record: PersonRecord, match: Match, channels: Sequence[str]
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
        categories=list(match.categories),
    )


def seal(details: outreach_pb2.ContactDetails, notifier_key: nacl.public.PublicKey) -> bytes:
    return bytes(nacl.public.SealedBox(notifier_key).encrypt(details.SerializeToString()))


@dataclass(frozen=True)
class OutreachPlan:
    items: tuple[outreach_pb2.OutreachItem, ...]
    #: Matches left out because the patient is no longer in the export.
    missing_patients: int
    #: Matches left out by the strength policy (medium-only, for review).
    below_strength: int


def plan_outreach(
    result: CheckResult,
    patients: PatientSet,
    *,
    tenant: str,
    cache_key: CacheKey,
    notifier_key: nacl.public.PublicKey,
    channels: Sequence[str],
    min_strength: Strength,
) -> OutreachPlan:
    """One sealed item per match the policy selects."""
    known = patients.by_id()
    items = []
    missing = below = 0
    for match in result.matches:
        if min_strength is Strength.STRONG and not match.is_strong:
            below += 1
            continue
        patient = known.get(match.patient_id)
        if patient is None:
            missing += 1
            continue
        items.append(
            outreach_pb2.OutreachItem(
                patient_ref=match.patient_id,
                breach_id=match.breach_id,
                idempotency_key=idempotency_key(
                    cache_key, tenant, match.patient_id, match.breach_id
                ),
                sealed_contact=seal(contact_details(patient.record, match, channels), notifier_key),
            )
        )
    return OutreachPlan(tuple(items), missing, below)


@dataclass(frozen=True)
class SubmitSummary:
    accepted: int
    already_submitted: int
    #: Breaches the notifier refused, and why ("retracted", "unknown"); their items were not sent.
    refused: dict[str, str] = field(default_factory=dict)
    #: Items of refused breaches that were not sent.
    not_sent: int = 0


class OutreachClient:
    def __init__(self, channel: grpc.Channel, endpoint: Endpoint, backoff: Backoff) -> None:
        self._stub = outreach_pb2_grpc.OutreachStub(channel)
        self._endpoint = endpoint
        self._backoff = backoff

    def submit(self, items: Sequence[outreach_pb2.OutreachItem]) -> SubmitSummary:
        """Submit breach by breach, in batches; resubmitting is safe (idempotency keys)."""
        by_breach: dict[str, list[outreach_pb2.OutreachItem]] = {}
        for item in items:
            by_breach.setdefault(item.breach_id, []).append(item)
        accepted = already = not_sent = 0
        refused: dict[str, str] = {}
        for breach_id, breach_items in by_breach.items():
            for start in range(0, len(breach_items), SUBMIT_BATCH):
                batch = breach_items[start : start + SUBMIT_BATCH]
                state, receipts = self._submit_batch(batch)
                if state is not None:
                    refused[breach_id] = state
                    not_sent += len(breach_items) - start
                    break
                accepted += sum(receipt.accepted for receipt in receipts)
                already += sum(not receipt.accepted for receipt in receipts)
        return SubmitSummary(accepted, already, refused, not_sent)

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
