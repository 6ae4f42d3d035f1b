"""Reading a version-1 token cache (one sealed row per token) once, to move it into segments.

Version 1 stored each token in table ``tokens`` as ``idx`` = HMAC-SHA256 of
the input and ``sealed`` = SecretBox(output ‖ idx ‖ public key ‖ key id).
Its index cannot be converted into the segments' BLAKE2b index without the
inputs, so the move happens when the inputs are at hand: the first lookup of
a key id after the upgrade finds what segments lack here, moves it into
segments and deletes that key id's old rows in the same transaction
(`TokenCache.lookup`). Rows of inputs that lookup did not ask for (patients
no longer in the export) are deleted with the rest: they are evaluated
again if those patients come back. Moving costs one SecretBox open per row,
once; rebuilding instead would spend the hospital's evaluation budget on
every patient again.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Collection, Sequence

import nacl.exceptions
import nacl.secret

from breachmatch.client.cache_key import CacheKey
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.oprf import OUTPUT_SIZE


def has_legacy_rows(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tokens'")
    return row.fetchone() is not None


class LegacyRows:
    """The version-1 rows of one cache file."""

    def __init__(self, db: sqlite3.Connection, cache_key: CacheKey) -> None:
        self._db = db
        self._index_key = cache_key.subkey("token-index")
        self._box = nacl.secret.SecretBox(cache_key.subkey("token-seal"))

    def count(self, key_id: str | None = None) -> int:
        if key_id is None:
            row = self._db.execute("SELECT count(*) FROM tokens").fetchone()
        else:
            row = self._db.execute(
                "SELECT count(*) FROM tokens WHERE key_id = ?", (key_id,)
            ).fetchone()
        return int(row[0])

    def find(self, key: TrustedOprfKey, inputs: Sequence[bytes]) -> dict[int, bytes]:
        """Output per position in `inputs` of every row that opens with its binding."""
        rows = dict(
            self._db.execute("SELECT idx, sealed FROM tokens WHERE key_id = ?", (key.key_id,))
        )
        if not rows:
            return {}
        suffix = key.public_key + key.key_id.encode("utf-8")
        found: dict[int, bytes] = {}
        for position, data in enumerate(inputs):
            idx = hmac.digest(self._index_key, data, hashlib.sha256)
            sealed = rows.get(idx)
            output = None if sealed is None else self._open(sealed, idx + suffix)
            if output is not None:
                found[position] = output
        return found

    def _open(self, sealed: bytes, binding: bytes) -> bytes | None:
        try:
            plain = self._box.decrypt(sealed)
        except nacl.exceptions.CryptoError:
            return None
        if len(plain) != OUTPUT_SIZE + len(binding) or not hmac.compare_digest(
            plain[OUTPUT_SIZE:], binding
        ):
            return None
        return plain[:OUTPUT_SIZE]

    def delete(self, key_id: str) -> int:
        """Delete a key id's rows, and the table once empty (inside the caller's transaction)."""
        deleted = self._db.execute("DELETE FROM tokens WHERE key_id = ?", (key_id,)).rowcount
        self._drop_if_empty()
        return deleted

    def delete_except(self, valid_key_ids: Collection[str]) -> int:
        marks = ",".join("?" * len(valid_key_ids))
        deleted = self._db.execute(
            f"DELETE FROM tokens WHERE key_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
            tuple(valid_key_ids),
        ).rowcount
        self._drop_if_empty()
        return deleted

    def _drop_if_empty(self) -> None:
        if self._db.execute("SELECT 1 FROM tokens LIMIT 1").fetchone() is None:
            self._db.execute("DROP TABLE tokens")
