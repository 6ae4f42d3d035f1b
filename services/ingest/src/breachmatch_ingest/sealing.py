"""Encryption of everything ingest puts on its JetStream work queue.

A chunk on ``INGEST_CHUNK.<job>`` holds OPRF *inputs*: normalised CPR numbers,
e-mail addresses, names with birth dates. JetStream writes it to disk (and on
a cluster to three disks), and the operator promised that no plaintext
identifier is stored anywhere. So chunks, and for uniformity their results,
are sealed with XSalsa20-Poly1305 (`nacl.secret.SecretBox`) before they leave
the process.

The key is derived from the OPRF secret of the key id the chunk is evaluated
under, with BLAKE2b used as a keyed hash (a PRF, which is all a KDF needs here
since the input key is already uniform) and a personalisation string that
separates this use from any other hash of the same secret:

    queue_key = BLAKE2b-256(message = "", key = oprf_secret, person = "bm-ingest-queue")

Consequences worth knowing: anyone who can evaluate the OPRF can read the
queue (no new trust), nobody else can, and retiring a key id also makes its
leftover queue messages unreadable. No extra secret has to be distributed to
worker pods, which already hold the OPRF key ring.
"""

from __future__ import annotations

import hashlib

import nacl.exceptions
import nacl.secret

_PERSON = b"bm-ingest-queue"


class SealError(ValueError):
    """A sealed payload did not authenticate (wrong key, truncated or altered)."""


def queue_key(oprf_secret: bytes) -> bytes:
    """The 32-byte SecretBox key for queue payloads under one OPRF secret."""
    return hashlib.blake2b(
        b"", key=oprf_secret, person=_PERSON, digest_size=nacl.secret.SecretBox.KEY_SIZE
    ).digest()


class QueueCipher:
    """Seal and open queue payloads; a fresh random nonce per message."""

    def __init__(self, oprf_secret: bytes) -> None:
        self._box = nacl.secret.SecretBox(queue_key(oprf_secret))

    def seal(self, plaintext: bytes) -> bytes:
        return bytes(self._box.encrypt(plaintext))

    def open(self, sealed: bytes) -> bytes:
        try:
            return bytes(self._box.decrypt(sealed))
        except nacl.exceptions.CryptoError:
            raise SealError("queue payload does not authenticate under this key") from None
