"""The row memo: what each row of an export gave the last check, sealed, so a re-check skips it.

Reading and normalising 130,000 patients costs several CPU seconds, against
well under one for looking up their cached tokens, and an export changes
by a few rows between checks. So the last check's result is kept per row:

* per export (`context`: a keyed hash of the tenant, the export's format,
  ``--map`` file and facility, encoding, and the code that reads and
  normalises rows — not the file's name), a sealed *summary*: a keyed hash of the whole file (an
  unchanged file skips reading altogether), the counts a report gives, and
  a random generation id;
* per row, in file order, sealed in segments of `SEGMENT_ROWS` rows like
  the token cache (`cache_segments`): a keyed hash of the row as read
  (`row_hash`: every field normalisation or the report reads), its row
  number, the patient id as read, and per match key its kind and its keyed
  index in the token cache (`TokenCache.index_of`) — never the key itself.

A changed or new row has a hash the memo does not hold and is normalised as
in a first check; a row gone is not written back; an unchanged row costs a
hash and a dictionary lookup.

Sealing: XChaCha20-Poly1305 (libsodium via PyNaCl) under a subkey of the
cache key. A segment's associated data binds it to its export, the
summary's generation, its number and its row and key counts: a segment
altered, truncated, moved, or kept from an older generation does not open,
and its rows are normalised again (never a wrong key). The summary is bound
to its export's context; a memo written under another cache key or for
another tenant has other contexts and does not open either.

What a stolen state directory (without the cache key) shows of the memo: for
each export, how many rows and match keys it had and when it was last
written (row, key and byte counts are in clear, as the token cache's record
counts are). No identifier, patient id, path or file digest is in clear,
and the hashes that are (the context) are keyed: a CPR number has about 36
bits of entropy, so a plain hash of a row or a key could be inverted by
trying them all; a keyed one cannot without the key. With the cache key,
the memo gives the patient ids, which the export holds anyway, and keyed
hashes of the rows and keys (which the holder can test guesses against, as
with the token cache's index).
"""

from __future__ import annotations

import hashlib
import json
import marshal
import operator
import os
import sqlite3
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.utils
import numpy as np
from numpy.typing import NDArray

from breachmatch import logs
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.errors import ConfigurationError
from breachmatch.closing import Closeable
from breachmatch.records import PersonRecord

log = logs.get_logger(__name__)

#: Rows per segment, as many as the token cache's records per segment.
SEGMENT_ROWS = 4096
HASH_SIZE = 16

#: One remembered row; ``hash`` is all zero for a salvaged row (never looked up).
ROW = np.dtype([("hash", "<u8", (2,)), ("number", "<u8"), ("keys", "<u2")])
#: One match key of a row: its keyed index in the token cache and its kind (`KINDS`).
KEY = np.dtype([("index", "<u8", (2,)), ("kind", "u1")])

_AD_CONTEXT = b"breachmatch.row-memo.v1\x00"
#: Every field of a row that normalisation or the check reads (not the contact
#: details and categories, which only notices read, from a full read).
HASHED_FIELDS = (
    "cpr", "ssn", "mrn", "facility", "email", "phone", "full_name", "given_name",
    "family_name", "birth_date", "patient_id", "extra_emails", "extra_phones",
)  # fmt: skip
_FIELDS = operator.attrgetter(*HASHED_FIELDS)
_NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
_HEADER = struct.Struct("<III")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS exports (context BLOB PRIMARY KEY, sealed BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS segments ("
    " context BLOB NOT NULL, seg INTEGER NOT NULL, rows INTEGER NOT NULL,"
    " keys INTEGER NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (context, seg))",
)


@dataclass(frozen=True)
class MemoRows:
    """Rows in file order (`ROW`), their keys in the same order (`KEY`), their patient ids."""

    rows: NDArray[np.void]
    keys: NDArray[np.void]
    #: Patient id of each row as read ("" if it has none).
    ids: list[str]

    @classmethod
    def join(cls, parts: Sequence[MemoRows]) -> MemoRows:
        return cls(
            np.concatenate([p.rows for p in parts]) if parts else np.zeros(0, ROW),
            np.concatenate([p.keys for p in parts]) if parts else np.zeros(0, KEY),
            [patient_id for p in parts for patient_id in p.ids],
        )


@dataclass(frozen=True)
class Remembered:
    """What the last check of one export left: the whole file's hash, its counts, its rows."""

    file_hash: bytes
    bad_rows: int
    unknown_identifier_systems: dict[str, int]
    rows: MemoRows
    #: False if a segment did not open: its rows are missing here and read afresh.
    complete: bool = True


class RowMemo(Closeable):
    """The sealed memo of one state directory, in its own SQLite file."""

    def __init__(self, path: Path, cache_key: CacheKey, tenant: str) -> None:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._seal_key = cache_key.subkey("row-memo.seal")
        self._hash_key = cache_key.subkey("row-memo.hash")
        self._tenant = tenant.encode("utf-8")
        self._row_base = hashlib.blake2b(digest_size=HASH_SIZE, key=self._hash_key, person=b"row")
        self._db = sqlite3.connect(path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigurationError(
                f"the row memo {path} is not a database breachmatch can use ({exc}); delete "
                "it: the next check rebuilds it (every row is normalised once, nothing is "
                "evaluated again)"
            ) from exc

    def context(self, parts: Sequence[bytes]) -> bytes:
        """The keyed name of one export read one way (tenant included)."""
        hashed = hashlib.blake2b(digest_size=HASH_SIZE, key=self._hash_key, person=b"context")
        for part in (self._tenant, *parts):
            hashed.update(struct.pack("<Q", len(part)))
            hashed.update(part)
        return hashed.digest()

    def file_hash(self, path: Path) -> bytes:
        """Keyed BLAKE2b of the file's bytes: equal only for an unchanged file."""
        hashed = hashlib.blake2b(digest_size=32, key=self._hash_key, person=b"file")
        with path.open("rb") as source:
            while chunk := source.read(1 << 20):
                hashed.update(chunk)
        return hashed.digest()

    def row_hash(self, record: PersonRecord) -> bytes | None:
        """Keyed hash of every field of a row as read; None if a field is not plain text.

        ``marshal`` version 2 writes each value with its type and length and
        no back-references, so two rows hash alike only if every field is
        equal.
        """
        try:
            data = marshal.dumps(_FIELDS(record), 2)
        except ValueError:
            return None
        hashed = self._row_base.copy()
        hashed.update(data)
        return hashed.digest()

    def load(self, context: bytes) -> Remembered | None:
        """The memo of an export; None if there is none or its summary does not open."""
        row = self._db.execute(
            "SELECT sealed FROM exports WHERE context = ?", (context,)
        ).fetchone()
        if row is None:
            return None
        try:
            summary = json.loads(_open(self._seal_key, row[0], _AD_CONTEXT + b"summary" + context))
        except _RefusedError:
            log.warning("row memo summary failed to open; the export is read afresh")
            return None
        generation = bytes.fromhex(summary["generation"])
        parts: list[MemoRows] = []
        refused = 0
        segments = self._db.execute(
            "SELECT seg, rows, keys, sealed FROM segments WHERE context = ? ORDER BY seg",
            (context,),
        )
        for number, rows, keys, sealed in segments:
            try:
                parts.append(
                    _unpack(
                        _open(
                            self._seal_key,
                            sealed,
                            _segment_ad(context, generation, number, rows, keys),
                        ),
                        rows,
                        keys,
                    )
                )
            except _RefusedError:
                refused += 1
        found = sum(len(part.rows) for part in parts)
        if refused or found != summary["rows"]:
            log.warning(
                "row memo segments failed to open; their rows are read afresh",
                segments=refused,
            )
        return Remembered(
            bytes.fromhex(summary["file"]),
            summary["bad_rows"],
            summary["systems"],
            MemoRows.join(parts),
            complete=not refused and found == summary["rows"],
        )

    def store(self, context: bytes, remembered: Remembered) -> None:
        """Replace the memo of an export, in one transaction."""
        generation = nacl.utils.random(16)
        memo = remembered.rows
        key_end = np.cumsum(memo.rows["keys"], dtype=np.int64)
        summary = {
            "file": remembered.file_hash.hex(),
            "generation": generation.hex(),
            "bad_rows": remembered.bad_rows,
            "systems": remembered.unknown_identifier_systems,
            "rows": len(memo.rows),
        }
        sealed_summary = _seal(
            self._seal_key, json.dumps(summary).encode(), _AD_CONTEXT + b"summary" + context
        )
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM segments WHERE context = ?", (context,))
            for number, start in enumerate(range(0, len(memo.rows), SEGMENT_ROWS)):
                end = min(start + SEGMENT_ROWS, len(memo.rows))
                first = int(key_end[start - 1]) if start else 0
                keys = memo.keys[first : int(key_end[end - 1])]
                part = MemoRows(memo.rows[start:end], keys, memo.ids[start:end])
                ad = _segment_ad(context, generation, number, end - start, len(keys))
                sealed = _seal(self._seal_key, _pack(part), ad)
                self._db.execute(
                    "INSERT INTO segments (context, seg, rows, keys, sealed) VALUES (?,?,?,?,?)",
                    (context, number, end - start, len(keys), sealed),
                )
            self._db.execute(
                "INSERT OR REPLACE INTO exports (context, sealed) VALUES (?, ?)",
                (context, sealed_summary),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self._db.close()


class _RefusedError(Exception):
    """A sealed value that does not open under what it claims to be."""


def _pack(part: MemoRows) -> bytes:
    ids = json.dumps(part.ids, ensure_ascii=False).encode("utf-8")
    header = _HEADER.pack(len(part.rows), len(part.keys), len(ids))
    return b"".join((header, part.rows.tobytes(), part.keys.tobytes(), ids))


def _unpack(plain: bytes, rows: int, keys: int) -> MemoRows:
    """Parse a segment's plaintext, which must hold exactly the counts it was sealed with."""
    if len(plain) < _HEADER.size:
        raise _RefusedError("segment too short")
    stated_rows, stated_keys, id_bytes = _HEADER.unpack_from(plain)
    at = _HEADER.size
    rows_end = at + rows * ROW.itemsize
    keys_end = rows_end + keys * KEY.itemsize
    if (stated_rows, stated_keys) != (rows, keys) or len(plain) != keys_end + id_bytes:
        raise _RefusedError("segment size differs from its counts")
    table = np.frombuffer(plain, dtype=ROW, count=rows, offset=at)
    if int(table["keys"].sum()) != keys:
        raise _RefusedError("segment key counts differ")
    ids = json.loads(plain[keys_end:])
    if len(ids) != rows:
        raise _RefusedError("segment id count differs")
    return MemoRows(table, np.frombuffer(plain, dtype=KEY, count=keys, offset=rows_end), ids)


def _segment_ad(context: bytes, generation: bytes, number: int, rows: int, keys: int) -> bytes:
    return b"".join(
        (_AD_CONTEXT, b"segment", context, generation, struct.pack("<QII", number, rows, keys))
    )


def _seal(key: bytes, plain: bytes, data: bytes) -> bytes:
    nonce = nacl.utils.random(_NONCE_SIZE)
    return nonce + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, data, nonce, key)


def _open(key: bytes, sealed: bytes, data: bytes) -> bytes:
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                sealed[_NONCE_SIZE:], data, sealed[:_NONCE_SIZE], key
            )
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise _RefusedError("does not open") from exc
