"""The token cache: OPRF outputs per key id, encrypted at rest, in one SQLite file.

OPRF outputs do not change while the operator's key id does not, so once a
patient's match keys are evaluated, every later check (the same breach
again, or a breach published next year) is a filter lookup with no OPRF work
and no budget spent. The cache is also the resume checkpoint of a first run:
each evaluated batch is committed as it completes, and a re-run evaluates
only what is missing.

What is stored, per row, and why:

* ``key_id`` — rotation is explicit: rows of key ids the matcher no longer
  evaluates are deleted (`purge_except`), and only their inputs are evaluated
  again under the new key. Next to the tokens, table ``oprf_keys`` records the
  operator-stated public key each key id's tokens were proven under
  (`use_key`); if the operator's statement for a key id ever names another
  public key, that id's tokens are deleted rather than matched.
* ``idx`` = HMAC-SHA256(index subkey, OPRF input) — never the input itself:
  the file must not be a list of the hospital's CPR numbers and e-mails.
* ``sealed`` = SecretBox(seal subkey, output ‖ idx ‖ public key ‖ key_id) —
  the 64-byte output is as good as the identifier to anyone who can query the
  matcher, so it is encrypted; binding the row's own index, public key and
  key id into the plaintext means rows swapped or copied between positions or
  keys are detected and treated as missing instead of yielding a wrong token.

A ``check`` value in the ``meta`` table (a subkey, not the key) tells a run
with the wrong ``--cache-key`` apart from an empty cache, so it fails with
an explanation instead of silently re-evaluating every patient.

The database is created mode 0600 and uses WAL, so a reader (a test, a
second process) sees every committed batch while a run is still going.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType

import nacl.exceptions
import nacl.secret

from breachmatch import logs
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.errors import CacheKeyMismatchError
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.oprf import OUTPUT_SIZE

log = logs.get_logger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS tokens ("
    " key_id TEXT NOT NULL, idx BLOB NOT NULL, sealed BLOB NOT NULL,"
    " PRIMARY KEY (key_id, idx)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS oprf_keys ("
    " key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL) WITHOUT ROWID",
)


class TokenCache:
    def __init__(self, path: Path, cache_key: CacheKey) -> None:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.path = path
        self._index_key = cache_key.subkey("token-index")
        self._box = nacl.secret.SecretBox(cache_key.subkey("token-seal"))
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._check_key(cache_key.subkey("check"))
        self._keys: dict[str, bytes] = {}

    def _check_key(self, check: bytes) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE name = 'check'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta (name, value) VALUES ('check', ?)", (check,))
        elif not hmac.compare_digest(row[0], check):
            raise CacheKeyMismatchError(
                f"the token cache {self.path} was written with a different cache key: pass "
                "the key file it was created with (--cache-key), or delete the cache to start "
                "over (every patient is then evaluated again)"
            )

    def _index(self, data: bytes) -> bytes:
        return hmac.digest(self._index_key, data, hashlib.sha256)

    def use_key(self, key: TrustedOprfKey) -> int:
        """Record `key` as what its id's tokens are proven under; returns how many rows went.

        Rows of the id made under another public key, or before keys were
        recorded, are deleted: they would silently never match.
        """
        row = self._db.execute(
            "SELECT public_key FROM oprf_keys WHERE key_id = ?", (key.key_id,)
        ).fetchone()
        dropped = 0
        if row is None or not hmac.compare_digest(row[0], key.public_key):
            with self._transaction():
                dropped = self._db.execute(
                    "DELETE FROM tokens WHERE key_id = ?", (key.key_id,)
                ).rowcount
                self._db.execute(
                    "INSERT OR REPLACE INTO oprf_keys (key_id, public_key) VALUES (?, ?)",
                    (key.key_id, key.public_key),
                )
            if dropped:
                log.warning("token cache rows of a changed oprf key dropped", rows=dropped)
        self._keys[key.key_id] = key.public_key
        return dropped

    def _binding_suffix(self, key: TrustedOprfKey) -> bytes:
        if self._keys.get(key.key_id) != key.public_key:
            raise LookupError(f"OPRF key {key.key_id} is not in use by this cache (use_key)")
        return key.public_key + key.key_id.encode("utf-8")

    def get_many(self, key: TrustedOprfKey, inputs: Sequence[bytes]) -> list[bytes | None]:
        """The cached output of each input under `key`, None where there is none."""
        suffix = self._binding_suffix(key)
        rows = dict(
            self._db.execute("SELECT idx, sealed FROM tokens WHERE key_id = ?", (key.key_id,))
        )
        found: list[bytes | None] = []
        unusable = 0
        for data in inputs:
            idx = self._index(data)
            sealed = rows.get(idx)
            output = None if sealed is None else self._open(sealed, idx + suffix)
            if sealed is not None and output is None:
                unusable += 1
            found.append(output)
        if unusable:
            log.warning("token cache rows failed to decrypt; evaluating them again", rows=unusable)
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

    def put_many(
        self, key: TrustedOprfKey, inputs: Sequence[bytes], outputs: Sequence[bytes]
    ) -> None:
        """Store one verified batch in a single transaction (the resume checkpoint)."""
        suffix = self._binding_suffix(key)
        rows = []
        for data, output in zip(inputs, outputs, strict=True):
            idx = self._index(data)
            rows.append((key.key_id, idx, bytes(self._box.encrypt(output + idx + suffix))))
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO tokens (key_id, idx, sealed) VALUES (?, ?, ?)", rows
            )
        log.debug("tokens cached", rows=len(rows))

    def purge_except(self, valid_key_ids: Collection[str]) -> int:
        """Delete the rows of every key id not in `valid_key_ids`; returns how many went."""
        marks = ",".join("?" * len(valid_key_ids))
        with self._transaction():
            cursor = self._db.execute(
                f"DELETE FROM tokens WHERE key_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
                tuple(valid_key_ids),
            )
            self._db.execute(
                f"DELETE FROM oprf_keys WHERE key_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
                tuple(valid_key_ids),
            )
        for key_id in set(self._keys) - set(valid_key_ids):
            del self._keys[key_id]
        return cursor.rowcount

    def count(self, key_id: str | None = None) -> int:
        if key_id is None:
            row = self._db.execute("SELECT count(*) FROM tokens").fetchone()
        else:
            row = self._db.execute(
                "SELECT count(*) FROM tokens WHERE key_id = ?", (key_id,)
            ).fetchone()
        return int(row[0])

    def _transaction(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> TokenCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
