"""The outreach ledger on a real JetStream KV bucket: keys, create-if-absent, CAS."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import nacl.public
import pytest
from nats.js.kv import KeyValue

from breachmatch import bus
from breachmatch_dev import NatsServer
from breachmatch_notifier.ledger import (
    SENT,
    Ledger,
    LedgerConflictError,
    LedgerEntry,
    ref_key_for,
)

PATIENT_REF = "MRN-0042-RH"


@pytest.fixture
async def kv(nats_server: NatsServer) -> AsyncIterator[KeyValue]:
    nc, js = await nats_server.connect("notifier", "ledger-tests")
    yield await bus.key_value(js, bus.KV_OUTREACH_LEDGER)
    await nc.close()


@pytest.fixture
def ledger(kv: KeyValue) -> Ledger:
    return Ledger(kv, ref_key_for(nacl.public.PrivateKey.generate()))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_keys_are_keyed_safe_tokens_without_the_patient_ref(ledger: Ledger) -> None:
    ref = ledger.patient_ref("hospital-a", PATIENT_REF, "alles-2025")
    key = ledger.outreach_key("hospital-a", "alles-2025", ref)
    assert PATIENT_REF.lower() not in key.lower()
    assert key == f"outreach.hospital-a.alles-2025.{ref}"
    # Tenant and breach are part of the reference: the same patient ref elsewhere is another key.
    assert ledger.patient_ref("hospital-b", PATIENT_REF, "alles-2025") != ref
    assert ledger.patient_ref("hospital-a", PATIENT_REF, "other-2025") != ref
    # Keyed: another notifier key gives another reference for the same patient.
    other = Ledger(ledger._kv, ref_key_for(nacl.public.PrivateKey.generate()))
    assert other.patient_ref("hospital-a", PATIENT_REF, "alles-2025") != ref
    # Ids with KV syntax in them still make one valid key segment each.
    odd = ledger.outreach_key("Region Syd.Hospital", "breach.v2", ref)
    assert odd.count(".") == 3
    assert " " not in odd


async def test_create_is_if_absent_and_replace_is_compare_and_set(ledger: Ledger) -> None:
    tenant, breach = unique("t"), unique("b")
    ref = ledger.patient_ref(tenant, PATIENT_REF, breach)
    key = ledger.outreach_key(tenant, breach, ref)
    first = await ledger.create(key, LedgerEntry.new(tenant, breach, ref, "key-1"))
    assert first is not None
    assert await ledger.create(key, LedgerEntry.new(tenant, breach, ref, "key-2")) is None

    current = await ledger.get(key)
    assert current is not None
    assert current.entry.idempotency_key == "key-1"
    sent = await ledger.replace(current, current.entry.evolve(state=SENT, channel="email"))
    with pytest.raises(LedgerConflictError):
        await ledger.replace(current, current.entry.evolve(attempts=9))
    settled = await ledger.get(key)
    assert settled is not None
    assert settled.revision == sent.revision
    assert settled.entry.state == SENT
    assert settled.entry.terminal


async def test_entries_are_per_tenant_and_breach_and_hold_no_patient_ref(
    ledger: Ledger, kv: KeyValue
) -> None:
    tenant, other_tenant = unique("t"), unique("t")
    breach, other_breach = unique("b"), unique("b")
    keys: dict[tuple[str, str, str], str] = {}
    for owner, breach_id, patient in (
        (tenant, breach, "MRN-100001"),
        (tenant, breach, "MRN-100002"),
        (tenant, other_breach, "MRN-100001"),
        (other_tenant, breach, "MRN-100001"),
    ):
        ref = ledger.patient_ref(owner, patient, breach_id)
        keys[owner, breach_id, patient] = uuid.uuid4().hex
        entry = LedgerEntry.new(owner, breach_id, ref, keys[owner, breach_id, patient])
        assert await ledger.create(ledger.outreach_key(owner, breach_id, ref), entry)

    assert len(await ledger.entries(tenant)) == 3
    one_breach = await ledger.entries(tenant, breach)
    assert {entry.idempotency_key for entry in one_breach} == {
        keys[tenant, breach, "MRN-100001"],
        keys[tenant, breach, "MRN-100002"],
    }
    assert await ledger.entries(unique("nobody")) == []
    for entry in one_breach:
        stored = await kv.get(ledger.outreach_key(tenant, breach, entry.ref))
        assert b"MRN-" not in (stored.value or b"")
