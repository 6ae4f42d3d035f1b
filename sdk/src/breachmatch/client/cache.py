"""The token cache: OPRF outputs per key id, sealed in segments, in one SQLite file.

OPRF outputs do not change while the operator's key id does not, so once a
patient's match keys are evaluated, every later check (the same breach
again, or a breach published next year) is a filter lookup with no OPRF work
and no budget spent. The cache is also the resume checkpoint of a first run:
each evaluated batch is committed as it completes, and a re-run evaluates
only what is missing.

A re-check asks for every token of the hospital at once, so the cache is
laid out to be read in bulk (`cache_segments`): table ``segments`` holds,
per key id, sealed segments of up to `SEGMENT_ENTRIES` tokens, one AEAD
call each. A lookup opens the key id's segments, hashes its inputs into
the keyed index, and matches all records against them with numpy
(`_match`): no per-token crypto, no per-token SQL, no per-token Python
beyond the index hash. What is stored, and why:

* ``key_id`` — rotation is explicit: segments of key ids the matcher no
  longer evaluates are deleted (`purge_except`), and only their inputs are
  evaluated again under the new key. Table ``oprf_keys`` records the
  operator-stated public key each key id's tokens were proven under
  (`use_key`); if the operator's statement for a key id ever names another
  public key, that id's tokens are deleted rather than matched.
* ``seg`` and ``entries`` — the segment's number and record count, in clear
  (a count says nothing about a patient) and bound into the seal.
* ``sealed`` — nonce ‖ XChaCha20-Poly1305 of the records (keyed index,
  output, filter tag and pad), associated data: key id, public key, number
  and count. The 64-byte output is as good as the identifier to anyone who
  can query the matcher, so it is sealed; the index is sealed too.

A segment that does not open (altered, truncated, moved to another key id or
number) is deleted and its tokens are reported missing, so they are
evaluated again: never a wrong token. Writes are SQLite transactions: a
crash mid-write leaves the segments committed before it, each whole.

A ``check`` value in the ``meta`` table (a subkey, not the key) tells a run
with the wrong ``--cache-key`` apart from an empty cache, so it fails with
an explanation instead of silently re-evaluating every patient.

A cache written by version 1 (one SecretBox row per token, table ``tokens``)
is moved into segments by the first lookup of each key id
(`cache_legacy`), without evaluating anything again.

The database is created mode 0600 and uses WAL, so a reader (a test, a
second process) sees every committed batch while a run is still going.
"""

from __future__ import annotations

import hmac
import os
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from breachmatch import logs
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.cache_legacy import LegacyRows, has_legacy_rows
from breachmatch.client.cache_segments import (
    SEGMENT_ENTRIES,
    InputIndex,
    SegmentRefusedError,
    open_segment,
    records,
    seal,
)
from breachmatch.client.errors import CacheKeyMismatchError
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.closing import Closeable
from breachmatch.filter import TokenKeys, derive_keys
from breachmatch.oprf import OUTPUT_SIZE

log = logs.get_logger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS segments ("
    " key_id TEXT NOT NULL, seg INTEGER NOT NULL, entries INTEGER NOT NULL,"
    " sealed BLOB NOT NULL, PRIMARY KEY (key_id, seg))",
    "CREATE TABLE IF NOT EXISTS oprf_keys ("
    " key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL) WITHOUT ROWID",
)


class CachedTokens:
    """What the cache holds for n inputs, in input order; see ``found``.

    The filter keys of every found input are gathered into ``keys`` at once:
    they are what a check queries with. Outputs are needed only for the
    proofs of the few matched patients, so they stay where they were opened
    (or evaluated) and `output` reads one.
    """

    def __init__(self, count: int) -> None:
        self.found = np.zeros(count, dtype=np.bool_)
        self.keys = TokenKeys(
            tag_hash=np.zeros((count, 2), dtype=np.uint64), pad=np.zeros(count, dtype=np.uint8)
        )
        self._sources: list[NDArray[np.uint8]] = []
        self._source = np.zeros(count, dtype=np.intp)
        self._row = np.zeros(count, dtype=np.intp)

    def missing(self) -> NDArray[np.intp]:
        """Positions of the inputs the cache has no token for."""
        return np.flatnonzero(~self.found)

    def fill(
        self,
        positions: NDArray[np.intp],
        outputs: NDArray[np.uint8],
        keys: TokenKeys,
        rows: NDArray[np.intp] | None = None,
    ) -> None:
        """Input ``positions[i]`` has row ``rows[i]`` (default: i) of `outputs` and `keys`."""
        if rows is None:
            rows = np.arange(len(positions))
        self.found[positions] = True
        self.keys.tag_hash[positions] = keys.tag_hash[rows]
        self.keys.pad[positions] = keys.pad[rows]
        self._source[positions] = len(self._sources)
        self._row[positions] = rows
        self._sources.append(outputs)

    def output(self, at: int) -> bytes:
        """The OPRF output of input `at`, which must be found."""
        if not self.found[at]:
            raise LookupError("the cache holds no token for this input")
        return bytes(self._sources[self._source[at]][self._row[at]])


class TokenCache(Closeable):
    def __init__(self, path: Path, cache_key: CacheKey) -> None:
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.path = path
        self._index = InputIndex(cache_key.subkey("token-index.v2"))
        self._seal_key = cache_key.subkey("token-segment")
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._check_key(cache_key.subkey("check"))
        self._legacy = LegacyRows(self._db, cache_key) if has_legacy_rows(self._db) else None
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

    def use_key(self, key: TrustedOprfKey) -> int:
        """Record `key` as what its id's tokens are proven under; returns how many tokens went.

        Tokens of the id made under another public key, or before keys were
        recorded, are deleted: they would silently never match.
        """
        row = self._db.execute(
            "SELECT public_key FROM oprf_keys WHERE key_id = ?", (key.key_id,)
        ).fetchone()
        dropped = 0
        if row is None or not hmac.compare_digest(row[0], key.public_key):
            with self._transaction():
                dropped = self._tokens_of(key.key_id)
                self._db.execute("DELETE FROM segments WHERE key_id = ?", (key.key_id,))
                if self._legacy is not None:
                    dropped += self._legacy.delete(key.key_id)
                self._db.execute(
                    "INSERT OR REPLACE INTO oprf_keys (key_id, public_key) VALUES (?, ?)",
                    (key.key_id, key.public_key),
                )
            self._forget_legacy_if_dropped()
            if dropped:
                log.warning("token cache rows of a changed oprf key dropped", rows=dropped)
        self._keys[key.key_id] = key.public_key
        return dropped

    def _check_in_use(self, key: TrustedOprfKey) -> None:
        if self._keys.get(key.key_id) != key.public_key:
            raise LookupError(f"OPRF key {key.key_id} is not in use by this cache (use_key)")

    def index_of(self, inputs: Sequence[bytes]) -> NDArray[np.uint64]:
        """The keyed index of each input (`InputIndex`): where its token is found."""
        return self._index.of(inputs)

    def lookup(
        self,
        key: TrustedOprfKey,
        inputs: Sequence[bytes],
        index: NDArray[np.uint64] | None = None,
    ) -> CachedTokens:
        """The cached token of each input under `key`; see `CachedTokens.found`.

        ``index`` is the inputs' `index_of`, if the caller has it already (a
        re-check gets it from the row memo and hashes nothing).
        """
        self._check_in_use(key)
        found = CachedTokens(len(inputs))
        if not len(inputs):
            return found
        opened: list[NDArray[np.void]] = []
        refused: list[int] = []
        segments = self._db.execute(
            "SELECT seg, entries, sealed FROM segments WHERE key_id = ?", (key.key_id,)
        )
        for number, entries, sealed in segments:
            try:
                opened.append(
                    open_segment(
                        self._seal_key, sealed, key.key_id, key.public_key, number, entries
                    )
                )
            except SegmentRefusedError:
                refused.append(number)
        if opened:
            table = np.concatenate(opened)
            wanted = self._index.of(inputs) if index is None else index
            positions, rows = _match(wanted, table["index"])
            found.fill(positions, table["output"], TokenKeys(table["tag"], table["pad"]), rows)
        if refused:
            self._drop_segments(key.key_id, refused)
        if self._legacy is not None:
            self._move_legacy(key, inputs, found)
        return found

    def _drop_segments(self, key_id: str, numbers: list[int]) -> None:
        with self._transaction():
            self._db.executemany(
                "DELETE FROM segments WHERE key_id = ? AND seg = ?",
                [(key_id, number) for number in numbers],
            )
        log.warning(
            "token cache segments failed to open; deleted, their tokens are evaluated again",
            segments=len(numbers),
        )

    def _move_legacy(
        self, key: TrustedOprfKey, inputs: Sequence[bytes], found: CachedTokens
    ) -> None:
        """Move this key id's version-1 rows into segments (see `cache_legacy`)."""
        assert self._legacy is not None
        missing = found.missing()
        moved = self._legacy.find(key, [inputs[at] for at in missing.tolist()])
        positions = missing[list(moved)]
        outputs = output_array(list(moved.values()))
        keys = derive_keys(outputs)
        with self._transaction():
            if len(positions):
                self._write(key, self._index.of([inputs[at] for at in positions]), outputs, keys)
            self._legacy.delete(key.key_id)
        self._forget_legacy_if_dropped()
        found.fill(positions, outputs, keys)
        log.info("token cache rows moved into segments", rows=len(positions))

    def _forget_legacy_if_dropped(self) -> None:
        if self._legacy is not None and not has_legacy_rows(self._db):
            self._legacy = None

    def put_many(
        self,
        key: TrustedOprfKey,
        inputs: Sequence[bytes],
        outputs: Sequence[bytes] | NDArray[np.uint8],
    ) -> TokenKeys:
        """Store one verified batch in a single transaction (the resume checkpoint).

        Returns the filter keys of the outputs, derived to be sealed with them,
        so the caller need not hash them again.
        """
        self._check_in_use(key)
        array = output_array(outputs)
        if len(array) != len(inputs):
            raise ValueError("as many outputs as inputs are needed")
        keys = derive_keys(array)
        with self._transaction():
            self._write(key, self._index.of(inputs), array, keys)
        log.debug("tokens cached", rows=len(array))
        return keys

    def _write(
        self,
        key: TrustedOprfKey,
        index: NDArray[np.uint64],
        outputs: NDArray[np.uint8],
        keys: TokenKeys,
    ) -> None:
        """Append segments of the tokens (inside the caller's transaction)."""
        row = self._db.execute(
            "SELECT coalesce(max(seg), -1) + 1 FROM segments WHERE key_id = ?", (key.key_id,)
        ).fetchone()
        number = int(row[0])
        for start in range(0, len(outputs), SEGMENT_ENTRIES):
            part = slice(start, start + SEGMENT_ENTRIES)
            rows = records(
                index[part], outputs[part], TokenKeys(keys.tag_hash[part], keys.pad[part])
            )
            sealed = seal(self._seal_key, rows, key.key_id, key.public_key, number)
            self._db.execute(
                "INSERT INTO segments (key_id, seg, entries, sealed) VALUES (?, ?, ?, ?)",
                (key.key_id, number, len(rows), sealed),
            )
            number += 1

    def purge_except(self, valid_key_ids: Collection[str]) -> int:
        """Delete the tokens of every key id not in `valid_key_ids`; returns how many went."""
        marks = ",".join("?" * len(valid_key_ids))
        valid = tuple(valid_key_ids)
        with self._transaction():
            row = self._db.execute(
                f"SELECT coalesce(sum(entries), 0) FROM segments WHERE key_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
                valid,
            ).fetchone()
            self._db.execute(
                f"DELETE FROM segments WHERE key_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
                valid,
            )
            self._db.execute(
                f"DELETE FROM oprf_keys WHERE key_id NOT IN ({marks})",  # noqa: S608 (placeholders only)
                valid,
            )
            purged = int(row[0])
            if self._legacy is not None:
                purged += self._legacy.delete_except(valid)
        self._forget_legacy_if_dropped()
        for key_id in set(self._keys) - set(valid):
            del self._keys[key_id]
        return purged

    def count(self, key_id: str | None = None) -> int:
        """Tokens stored (of one key id), version-1 rows not yet moved included."""
        legacy = 0 if self._legacy is None else self._legacy.count(key_id)
        return self._tokens_of(key_id) + legacy

    def _tokens_of(self, key_id: str | None) -> int:
        if key_id is None:
            row = self._db.execute("SELECT coalesce(sum(entries), 0) FROM segments").fetchone()
        else:
            row = self._db.execute(
                "SELECT coalesce(sum(entries), 0) FROM segments WHERE key_id = ?", (key_id,)
            ).fetchone()
        return int(row[0])

    def _transaction(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def close(self) -> None:
        self._db.close()


def _match(
    wanted: NDArray[np.uint64], held: NDArray[np.uint64]
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """(input position, record row) of every pair whose 128-bit index values are equal.

    Both sides are sorted by their first index word (the records are sorted
    only within each segment), so the search runs forward through memory on
    both; a candidate counts only if the second word agrees too. Equal first
    words among the inputs (one input asked twice, or a 2^-64 coincidence)
    take the general path, which pairs each record with every input of its
    first word.
    """
    order = np.argsort(wanted[:, 0], kind="stable")
    first, second = wanted[order, 0], wanted[order, 1]
    by_held = np.argsort(held[:, 0])
    held_first, held_second = held[by_held, 0], held[by_held, 1]
    low = np.searchsorted(first, held_first, side="left")
    if not np.any(first[1:] == first[:-1]):
        at = np.minimum(low, len(first) - 1)
        rows = np.flatnonzero((first[at] == held_first) & (second[at] == held_second))
        return order[at[rows]], by_held[rows]
    spans = np.searchsorted(first, held_first, side="right") - low
    rows = np.repeat(np.arange(len(held_first)), spans)
    starts = np.cumsum(spans) - spans
    at = np.repeat(low - starts, spans) + np.arange(len(rows))
    same = second[at] == held_second[rows]
    return order[at[same]], by_held[rows[same]]


def output_array(outputs: Sequence[bytes] | NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Outputs as an (n, 64) uint8 array, each length checked."""
    if isinstance(outputs, np.ndarray):
        if outputs.dtype != np.uint8 or outputs.ndim != 2 or outputs.shape[1] != OUTPUT_SIZE:
            raise ValueError(f"OPRF output array must be uint8 of shape (n, {OUTPUT_SIZE})")
        return outputs
    if any(len(output) != OUTPUT_SIZE for output in outputs):
        raise ValueError(f"every OPRF output is {OUTPUT_SIZE} bytes long")
    return np.frombuffer(b"".join(outputs), dtype=np.uint8).reshape(-1, OUTPUT_SIZE)
