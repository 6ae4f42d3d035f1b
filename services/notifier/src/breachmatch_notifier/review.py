"""Held notices: listing them, and recording what the operator found.

A notice is HELD when the notifier cannot know whether the channel took it —
it stopped between recording its intent and the SMTP server's answer
(`breachmatch_notifier.claims`). It is never sent again on its own. The
operator looks each one up by its Message-ID in the SMTP relay's log (Postfix
writes ``message-id=<…>`` for every message it accepted) and records the
answer::

    breachmatch-notifier held                            # one line per held notice
    breachmatch-notifier resolve MESSAGE-ID --sent       # the relay has it
    breachmatch-notifier resolve MESSAGE-ID --not-sent   # it does not

``--sent`` settles the entry as SENT. ``--not-sent`` settles it as DEAD with
a detail saying so: the hospital sees that in GetStatus, and its next
submission of the item queues it again (intake re-queues dead entries, with
the same idempotency key and so the same Message-ID). The notifier cannot
resend it by itself: the sealed contact left NATS when the request was
settled, as it does for every notice.

Both commands print tenants, breach ids, channels and Message-IDs only — a
ledger entry holds no contact data to print.
"""

from __future__ import annotations

from breachmatch_notifier.ledger import (
    ALERT_PREFIX,
    DEAD,
    HELD,
    OUTREACH_PREFIX,
    SENT,
    Ledger,
    Versioned,
)

#: What a notice resolved as not sent says to the hospital.
NOT_SENT_DETAIL = (
    "held notice checked by the operator: the relay has no such message; submit it again"
)
SENT_DETAIL = "held notice checked by the operator: the relay took it"


class ReviewError(Exception):
    """The operator's request cannot be carried out; the message says why."""


async def held(ledger: Ledger) -> list[Versioned]:
    """Every held entry, patient notices and breach alerts, oldest first."""
    found = [
        versioned
        for prefix in (OUTREACH_PREFIX, ALERT_PREFIX)
        for versioned in await ledger.scan(prefix + ".>")
        if versioned.entry.state == HELD
    ]
    return sorted(found, key=lambda versioned: versioned.entry.updated_at)


async def resolve(ledger: Ledger, message_id: str, *, sent: bool) -> Versioned:
    """Settle the held entry whose intent named ``message_id``; raises `ReviewError`."""
    wanted = message_id.strip()
    matching = [
        versioned for versioned in await held(ledger) if versioned.entry.reference == wanted
    ]
    if not matching:
        raise ReviewError(f"no held notice has Message-ID {wanted}")
    if len(matching) > 1:  # the same idempotency key in two tenants' ledgers
        raise ReviewError(f"{len(matching)} held notices share Message-ID {wanted}")
    [current] = matching
    entry = current.entry
    settled = entry.evolve(
        state=SENT if sent else DEAD,
        detail=SENT_DETAIL if sent else NOT_SENT_DETAIL,
        channel=entry.channel if sent else "",
    )
    return await ledger.replace(current, settled)


def describe(versioned: Versioned) -> str:
    """One line for an operator: when, tenant, breach, channel, Message-ID."""
    entry = versioned.entry
    return "  ".join(
        (entry.updated_at, entry.tenant, entry.breach_id, entry.channel, entry.reference)
    )
