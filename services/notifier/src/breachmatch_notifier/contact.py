"""Opening a sealed contact: only the notifier's secret key can, and only in memory.

Intake opens it to check the item (name, addresses, proof of match) and drops
it; a worker opens it again to deliver the notice. Neither keeps it: what is
queued and stored stays the sealed box.
"""

from __future__ import annotations

import nacl.exceptions
import nacl.public
from google.protobuf.message import DecodeError

from breachmatch.v1.outreach_pb2 import ContactDetails


class ContactError(ValueError):
    """The sealed contact cannot be used; the message says why, never what it holds."""


def open_contact(
    box: nacl.public.SealedBox[nacl.public.PrivateKey], sealed: bytes
) -> ContactDetails:
    try:
        plain = box.decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise ContactError("sealed contact does not open with the notifier's key") from None
    try:
        return ContactDetails.FromString(plain)
    except DecodeError:
        raise ContactError("sealed contact is not a ContactDetails message") from None
