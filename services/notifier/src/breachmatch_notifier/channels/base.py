"""What every delivery channel promises, and how it reports failure.

A channel either delivers or says which kind of failure it met, because the
worker acts differently on each: a *permanent* failure (the address cannot be
used) means "try the next channel, never retry this one"; a *transient* one
(server down, timeout, rate-limited) means "retry the whole delivery later";
an *unknown outcome* (cut off after the point of no return) means "do not
send again: hold it for review" (`breachmatch_notifier.claims`). Error
messages name the channel and the reason only: contact details never go into
an exception, since exceptions end up in logs and status events.

A channel whose provider recognises a repeat of the same message id
(``deduplicates``) may simply be sent again after a crash. One that cannot
must call ``intent.commit`` right before its point of no return and must not
send when that raises; after a commit, a permanent or transient error asserts
that the provider did *not* take the message, and anything it cannot be sure
of is raised as `DeliveryOutcomeUnknownError`.
"""

from __future__ import annotations

import abc
import re
import uuid
from dataclasses import dataclass
from typing import Protocol

from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.notice import TEMPLATE_FILES, Notice

EMAIL = "email"
SMS = "sms"
DIGITAL_POST = "digital_post"
DRY_RUN = "dry_run"

#: The contact field each channel addresses by; a channel is skipped when it is
#: empty. The dry-run channel needs none.
ADDRESS_FIELD: dict[str, str | None] = {
    EMAIL: "email",
    SMS: "phone",
    DIGITAL_POST: "cpr",
    DRY_RUN: None,
}

_MESSAGE_NAMESPACE = uuid.UUID("8f0d6c1e-3b5a-5d4e-9c41-6a2f0b7e1d93")
_MAX_KEY_LENGTH = 200
#: Printable ASCII without spaces (0x21-0x7e): one regex, not a Python loop per character
#: (intake checks every item's key; the loop cost about 6% of its CPU).
_KEY_CHARACTERS = re.compile(r"[\x21-\x7e]+")


class DeliveryError(Exception):
    """A channel could not deliver; ``reason`` never holds contact data."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"{channel}: {reason}")
        self.channel = channel
        self.reason = reason


class PermanentDeliveryError(DeliveryError):
    """This address on this channel will not work: do not retry, try the next channel."""


class TransientDeliveryError(DeliveryError):
    """Delivery may work later (server down, timeout, throttled): retry the delivery."""


class DeliveryOutcomeUnknownError(DeliveryError):
    """Cut off after the point of no return: the provider may or may not have the notice."""


class SendIntent(Protocol):
    """Where a channel records that it is about to hand over a notice it cannot take back."""

    async def commit(self, channel: str, reference: str) -> None:
        """Record the intent (``reference``: the channel's message id); raise to forbid the send."""

    async def withdraw(self) -> None:
        """The channel refused after the commit, so nothing went out (a no-op without one)."""


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Where a notice went.

    ``reference`` is the channel's own handle (Message-ID, outbox file name,
    message UUID) for tracing; ``failed_channels`` lists the channels that
    failed permanently before this one succeeded.
    """

    channel: str
    idempotency_key: str
    reference: str
    failed_channels: tuple[str, ...] = ()


def message_uuid(idempotency_key: str) -> uuid.UUID:
    """A message id that is the same on every retry of the same notice.

    Channels derive their message ids from it (e-mail Message-ID, MeMo
    MessageUUID, outbox file name), so a retry after a crash is recognisable as
    the same message instead of a second one. The key is checked because it
    goes into mail headers: only printable ASCII without spaces is accepted.
    """
    if not idempotency_key or len(idempotency_key) > _MAX_KEY_LENGTH:
        raise ValueError(f"idempotency_key: must be 1 to {_MAX_KEY_LENGTH} characters")
    if not _KEY_CHARACTERS.fullmatch(idempotency_key):
        raise ValueError("idempotency_key: must be printable ASCII without spaces")
    return uuid.uuid5(_MESSAGE_NAMESPACE, idempotency_key)


class Channel(abc.ABC):
    """One way of getting a notice to a person."""

    #: Whether the provider drops a repeat of a message id it has already taken.
    deduplicates: bool = False
    #: The notice parts (`notice.TEMPLATE_FILES` keys) this channel sends: only
    #: these are rendered, by the dispatcher before the channel is tried.
    parts: tuple[str, ...] = tuple(TEMPLATE_FILES)

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    async def send(
        self, notice: Notice, contact: ContactDetails, idempotency_key: str, intent: SendIntent
    ) -> DeliveryResult:
        """Deliver once; raise `PermanentDeliveryError`, `TransientDeliveryError` or
        `DeliveryOutcomeUnknownError` (see the module docstring for ``intent``)."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not a forgotten body
        """Release connections; channels holding none need not override this."""
