"""The token cache's unit of storage: a sealed segment of up to a few thousand tokens.

A re-check needs every cached token of the hospital at once, so the cache
is read in bulk: one AEAD call (XChaCha20-Poly1305, libsodium via PyNaCl)
opens a whole segment, and its plaintext is a packed array of fixed-width
records that numpy reads in place (`RECORD`):

* ``index`` — keyed BLAKE2b-128 of the OPRF input (`InputIndex`), never the
  input: whoever opens the cache must not get a list of CPR numbers and
  e-mails from it;
* ``output`` — the 64-byte OPRF output, the token a proof of match carries;
* ``tag`` and ``pad`` — what a breach filter uses of the output
  (`breachmatch.filter.TokenKeys`), kept so a re-check hashes nothing again.

Records are sorted by index within a segment; the re-check's vectorised
search (`TokenCache.lookup`) sorts all of them once more by their first word.

The associated data binds a segment to the OPRF key id, the public key the
operator stated for it, the segment's number and its record count: a segment
moved to another key id or position, truncated, or altered in one byte does
not open (`SegmentRefusedError`), and its tokens are evaluated again rather
than used — never a wrong token.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import nacl.bindings
import nacl.exceptions
import nacl.utils
import numpy as np
from numpy.typing import NDArray

from breachmatch.filter import TokenKeys
from breachmatch.oprf import OUTPUT_SIZE

#: Records per segment: large enough that the per-segment cost (one AEAD call, a
#: few numpy calls, one SQLite row) vanishes, small enough that a checkpoint of
#: the first check (one evaluated batch) is one segment.
SEGMENT_ENTRIES = 4096
INDEX_SIZE = 16

#: One cached token. Packed (no padding), little-endian on every host.
RECORD = np.dtype(
    [
        ("index", "<u8", (2,)),
        ("output", "u1", (OUTPUT_SIZE,)),
        ("tag", "<u8", (2,)),
        ("pad", "u1"),
    ]
)

_AD_CONTEXT = b"breachmatch.token-segment.v2\x00"
_NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES


class SegmentRefusedError(Exception):
    """A segment that does not open under its key id, position and size."""


class InputIndex:
    """Keyed BLAKE2b-128 of OPRF inputs: where a token is found without its input.

    BLAKE2b keyed (RFC 7693) rather than HMAC-SHA256: a third of the cost per
    input, and 128 bits keep collisions among even 10^9 cached inputs below 2^-68.
    """

    def __init__(self, key: bytes) -> None:
        self._base = hashlib.blake2b(digest_size=INDEX_SIZE, key=key)

    def of(self, inputs: Sequence[bytes]) -> NDArray[np.uint64]:
        """The index of each input as an (n, 2) array of little-endian words."""
        digests = bytearray()
        base = self._base
        for data in inputs:
            hashed = base.copy()
            hashed.update(data)
            digests += hashed.digest()
        return np.frombuffer(bytes(digests), dtype="<u8").reshape(-1, 2).astype(np.uint64)


def records(
    index: NDArray[np.uint64], outputs: NDArray[np.uint8], keys: TokenKeys
) -> NDArray[np.void]:
    """Records of one segment, sorted by index."""
    rows = np.empty(len(index), dtype=RECORD)
    rows["index"] = index
    rows["output"] = outputs
    rows["tag"] = keys.tag_hash
    rows["pad"] = keys.pad
    return rows[np.lexsort((index[:, 1], index[:, 0]))]


def seal(key: bytes, rows: NDArray[np.void], key_id: str, public_key: bytes, number: int) -> bytes:
    """nonce ‖ ciphertext of the records, bound to key id, public key, number and count."""
    nonce = nacl.utils.random(_NONCE_SIZE)
    data = _associated(key_id, public_key, number, len(rows))
    sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        rows.tobytes(), data, nonce, key
    )
    return nonce + sealed


def open_segment(
    key: bytes, sealed: bytes, key_id: str, public_key: bytes, number: int, entries: int
) -> NDArray[np.void]:
    """The records of a sealed segment; `SegmentRefusedError` if it is not what it claims."""
    data = _associated(key_id, public_key, number, entries)
    try:
        plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            sealed[_NONCE_SIZE:], data, sealed[:_NONCE_SIZE], key
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise SegmentRefusedError("segment does not open") from exc
    if len(plain) != entries * RECORD.itemsize:
        raise SegmentRefusedError("segment size differs from its record count")
    return np.frombuffer(plain, dtype=RECORD)


def _associated(key_id: str, public_key: bytes, number: int, entries: int) -> bytes:
    name = key_id.encode("utf-8")
    return b"".join(
        (
            _AD_CONTEXT,
            struct.pack("<H", len(name)),
            name,
            struct.pack("<H", len(public_key)),
            public_key,
            struct.pack("<QI", number, entries),
        )
    )
