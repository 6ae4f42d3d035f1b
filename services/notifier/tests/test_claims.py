"""Claims on ledger entries, against the real nats-server (`breachmatch_notifier.claims`).

Two workers racing for one entry: exactly one claims it, and the other finds
the claim running. A claim whose lease has lapsed is fenced off by its
successor: the old holder can neither record an intent nor settle. An intent
without an outcome is held, never claimed again — and only its own holder may
still turn it into SENT. A NATS restart while the holder writes its outcome
neither loses nor repeats the write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from breachmatch import bus, keys
from breachmatch_notifier.claims import Claim, ClaimLostError, Verdict, assess, hold_orphan
from breachmatch_notifier.ledger import (
    CLAIMED,
    DEAD,
    HELD,
    QUEUED,
    SENT,
    Ledger,
    LedgerEntry,
    Versioned,
    ref_key_for,
)

from .conftest import HOSPITAL, Harness, LogEvents

BREACH = "alles-2025"
LEASE = 60.0
PATIENCE = 5.0
MESSAGE_ID = "<7d0c3c5e-0d7e-5a51-9a57-2f1e0c8b9a10@rigshospitalet.example.dk>"


@pytest.fixture
async def rival(harness: Harness) -> AsyncIterator[Ledger]:
    """The ledger as a second worker sees it: its own NATS connection."""
    nc, js = await harness.nats.connect("notifier", "rival-worker")
    secret = keys.load_sealing_secret_key(harness.operator.notifier_secret_key)
    try:
        yield Ledger(await bus.key_value(js, bus.KV_OUTREACH_LEDGER), ref_key_for(secret))
    finally:
        await nc.close()


async def queued(ledger: Ledger, patient_ref: str) -> Versioned:
    ref = ledger.patient_ref(HOSPITAL, patient_ref, BREACH)
    key = ledger.outreach_key(HOSPITAL, BREACH, ref)
    created = await ledger.create(key, LedgerEntry.new(HOSPITAL, BREACH, ref, f"k-{patient_ref}"))
    assert created is not None
    return created


async def read(ledger: Ledger, key: str) -> Versioned:
    found = await ledger.get(key)
    assert found is not None
    return found


async def test_two_workers_racing_for_one_entry_exactly_one_claims_it(
    harness: Harness, rival: Ledger
) -> None:
    for number in range(20):
        key = (await queued(harness.ledger, f"P-{number}")).key
        mine, theirs = await read(harness.ledger, key), await read(rival, key)
        assert mine.revision == theirs.revision
        outcomes = await asyncio.gather(
            Claim.take(harness.ledger, mine, lease=LEASE, patience=PATIENCE, attempts=1),
            Claim.take(rival, theirs, lease=LEASE, patience=PATIENCE, attempts=1),
            return_exceptions=True,
        )
        claims = [outcome for outcome in outcomes if isinstance(outcome, Claim)]
        lost = [outcome for outcome in outcomes if isinstance(outcome, ClaimLostError)]
        assert (len(claims), len(lost)) == (1, 1), outcomes
        winner, found = claims[0].entry, lost[0].latest
        assert found is not None
        assert found.entry == winner
        assert (winner.state, winner.attempts) == (CLAIMED, 1)
        # Whoever reads it next sees the claim running and backs off.
        assert assess((await read(rival, key)).entry, time.time()) is Verdict.BUSY


async def test_a_lapsed_claim_is_fenced_off_by_its_successor(
    harness: Harness, rival: Ledger
) -> None:
    key = (await queued(harness.ledger, "P-1")).key
    stale = await Claim.take(
        harness.ledger, await read(harness.ledger, key), lease=0.0, patience=PATIENCE
    )
    seen = await read(rival, key)
    assert assess(seen.entry, time.time()) is Verdict.CLAIMABLE  # no intent: safe to take over
    successor = await Claim.take(rival, seen, lease=LEASE, patience=PATIENCE)
    assert successor.entry.holder != stale.entry.holder

    with pytest.raises(ClaimLostError):
        await stale.commit("email", MESSAGE_ID)  # so the stale holder never sends
    assert not await stale.settle(DEAD, detail="the stale holder's verdict")
    await stale.release("the stale holder gives up")  # and cannot un-claim it either

    await successor.commit("email", MESSAGE_ID)
    assert await successor.settle(SENT, channel="email")
    final = (await read(harness.ledger, key)).entry
    assert (final.state, final.holder, final.channel) == (SENT, successor.entry.holder, "email")


async def test_an_intent_without_an_outcome_is_held_and_only_its_holder_may_clear_it(
    harness: Harness, rival: Ledger
) -> None:
    key = (await queued(harness.ledger, "P-1")).key
    earlier = await Claim.take(
        harness.ledger, await read(harness.ledger, key), lease=0.0, patience=PATIENCE
    )
    holder = await Claim.take(
        harness.ledger, await read(harness.ledger, key), lease=0.0, patience=PATIENCE
    )
    await holder.commit("email", MESSAGE_ID)  # ... and then it falls silent

    seen = await read(rival, key)
    assert assess(seen.entry, time.time()) is Verdict.ORPHANED
    held = await hold_orphan(rival, seen, patience=PATIENCE)
    assert (held.entry.state, held.entry.reference) == (HELD, MESSAGE_ID)
    assert MESSAGE_ID in held.entry.detail
    assert assess(held.entry, time.time()) is Verdict.SETTLED  # nobody claims it again

    # An earlier, lapsed claim's late success does not clear it: it knows nothing of this send.
    assert not await earlier.settle(SENT, channel="digital_post")
    assert (await read(rival, key)).entry.state == HELD

    # Its own holder heard the server's 250 after all: that it may record.
    assert await holder.settle(SENT, channel="email")
    final = (await read(rival, key)).entry
    assert (final.state, final.channel, final.holder) == (SENT, "email", holder.entry.holder)


async def test_a_refused_message_after_the_intent_goes_back_to_the_claim(
    harness: Harness,
) -> None:
    key = (await queued(harness.ledger, "P-1")).key
    claim = await Claim.take(
        harness.ledger, await read(harness.ledger, key), lease=LEASE, patience=PATIENCE
    )
    await claim.commit("email", MESSAGE_ID)
    await claim.withdraw()
    found = (await read(harness.ledger, key)).entry
    assert (found.state, found.reference, found.holder) == (CLAIMED, "", claim.entry.holder)
    await claim.release("attempt 1 failed: server refused the message (554)")
    found = (await read(harness.ledger, key)).entry
    assert (found.state, found.holder) == (QUEUED, "")
    assert assess(found, time.time()) is Verdict.CLAIMABLE


async def test_a_nats_restart_mid_settle_neither_loses_nor_repeats_the_write(
    harness: Harness, log_events: LogEvents
) -> None:
    key = (await queued(harness.ledger, "P-1")).key
    claim = await Claim.take(
        harness.ledger, await read(harness.ledger, key), lease=LEASE, patience=PATIENCE
    )
    await claim.commit("email", MESSAGE_ID)
    before = (await read(harness.ledger, key)).revision

    harness.nats.kill9()
    settling = asyncio.create_task(claim.settle(SENT, channel="email"))
    await log_events.wait_for("ledger write failed; retrying")
    harness.nats.start()  # same port and store: the client reconnects
    assert await asyncio.wait_for(settling, 30)

    found = await read(harness.ledger, key)
    assert found.entry.state == SENT
    assert found.revision == before + 1  # one write, not one per retry
