"""Danish Digital Post: a MeMo-style XML message dropped into an outbox directory.

The notifier does not speak to Digital Post itself; a Digital Post gateway
(the operator's or the region's) drains the outbox. The outbox *is* the
delivery hand-off, so it must be on a volume that gateway reads and empties:
a file left there is an undelivered letter, and it holds the recipient's CPR
number (Digital Post addresses by CPR), which is why files are created
owner-only (0600) and why nothing else may keep them.

Files are written atomically — a temporary file in the same directory, fsync,
then a rename over the final name (``Path.replace`` is ``os.replace``) — so the
gateway never picks up half a letter. The file name and the MeMo MessageUUID
both come from the idempotency key, so a retry overwrites its own earlier
file instead of queueing a second letter, and Digital Post refuses a second
message with a MessageUUID it has already delivered: the channel deduplicates,
so it needs no recorded intent and is simply written again after a crash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID
from xml.etree import ElementTree

from breachmatch.identifiers import IdentifierError, normalise_cpr
from breachmatch.v1.outreach_pb2 import ContactDetails
from breachmatch_notifier.channels.base import (
    DIGITAL_POST,
    Channel,
    DeliveryResult,
    PermanentDeliveryError,
    SendIntent,
    TransientDeliveryError,
    message_uuid,
)
from breachmatch_notifier.notice import Notice

MEMO_NAMESPACE = "https://DigitalPost.dk/MeMo-1"
ElementTree.register_namespace("memo", MEMO_NAMESPACE)


@dataclass(frozen=True, slots=True)
class DigitalPostConfig:
    outbox: Path
    #: The sending authority's id (CVR); None leaves it to the gateway.
    sender_id: str | None = None
    sender_id_type: str = "CVR"


class DigitalPostChannel(Channel):
    deduplicates = True
    parts = ("subject", "digital_post_text")

    def __init__(self, config: DigitalPostConfig, name: str = DIGITAL_POST) -> None:
        super().__init__(name)
        self._config = config

    async def send(
        self, notice: Notice, contact: ContactDetails, idempotency_key: str, intent: SendIntent
    ) -> DeliveryResult:
        try:
            cpr = normalise_cpr(contact.cpr)
        except IdentifierError as exc:
            raise PermanentDeliveryError(self.name, f"CPR number unusable ({exc})") from None
        uuid = message_uuid(idempotency_key)
        document = memo_message(notice, cpr, uuid, self._config)
        path = self._config.outbox / f"{uuid}.xml"
        try:
            await asyncio.to_thread(write_atomically, path, document)
        except OSError as exc:
            raise TransientDeliveryError(
                self.name, f"cannot write to the outbox ({type(exc).__name__})"
            ) from None
        return DeliveryResult(
            channel=self.name, idempotency_key=idempotency_key, reference=path.name
        )


def memo_message(notice: Notice, cpr: str, uuid: UUID, config: DigitalPostConfig) -> bytes:
    """The MeMo-style XML for one letter (header: UUID, sender, recipient, label)."""

    def sub(parent: ElementTree.Element, tag: str, text: str | None = None) -> ElementTree.Element:
        element = ElementTree.SubElement(parent, f"{{{MEMO_NAMESPACE}}}{tag}")
        if text is not None:
            element.text = text
        return element

    message = ElementTree.Element(f"{{{MEMO_NAMESPACE}}}Message", {"memoVersion": "1.1"})
    header = sub(message, "MessageHeader")
    sub(header, "messageType", "DIGITALPOST")
    sub(header, "messageUUID", str(uuid))
    sub(header, "label", notice.subject)
    sub(header, "mandatory", "false")
    sub(header, "legalNotification", "false")
    sender = sub(header, "Sender")
    if config.sender_id:
        sub(sender, "senderID", config.sender_id)
        sub(sender, "idType", config.sender_id_type)
    sub(sender, "label", notice.sender)
    recipient = sub(header, "Recipient")
    sub(recipient, "recipientID", cpr)
    sub(recipient, "idType", "CPR")
    body = sub(message, "MessageBody")
    sub(body, "createdDateTime", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    document = sub(body, "MainDocument")
    sub(document, "label", notice.subject)
    attachment = sub(document, "File")
    sub(attachment, "encodingFormat", "text/plain")
    sub(attachment, "filename", "notice.txt")
    sub(attachment, "language", notice.language)
    encoded = base64.b64encode(notice.digital_post_text.encode("utf-8")).decode("ascii")
    sub(attachment, "content", encoded)
    xml: bytes = ElementTree.tostring(message, encoding="utf-8", xml_declaration=True)
    return xml


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one.

    The temporary file starts with a dot and ends in ``.tmp``: gateways must
    ignore such names. mkstemp creates it 0600.
    """
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        Path(temporary).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary).unlink()
        raise
    # Make the rename itself durable before reporting the letter handed off.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
