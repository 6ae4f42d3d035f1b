"""The token cache and its key: sealed segments, keyed index, rotation-aware, crash-safe."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import nacl.secret
import numpy as np
import pytest

from breachmatch import oprf
from breachmatch.client.cache import TokenCache
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.cache_segments import SEGMENT_ENTRIES
from breachmatch.client.errors import CacheKeyMismatchError, ConfigurationError
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.filter import derive_keys

INPUTS = [f"breachmatch:v1:cpr:{i:010d}".encode() for i in range(50)]
OUTPUTS = [os.urandom(64) for _ in range(50)]
#: Enough tokens for three segments, the last one partial.
MANY = 2 * SEGMENT_ENTRIES + 100
MANY_INPUTS = [f"breachmatch:v1:email:p{i}@hosp.example".encode() for i in range(MANY)]
MANY_OUTPUTS = [hashlib.blake2b(data, digest_size=64).digest() for data in MANY_INPUTS]


def _key(key_id: str) -> TrustedOprfKey:
    return TrustedOprfKey(key_id, oprf.random_key_pair()[1])


K1, K2, OLD, GRACE, NEW = (_key(name) for name in ("k1", "k2", "old", "grace", "new"))


def _open(path: Path, key: CacheKey, *keys: TrustedOprfKey) -> TokenCache:
    cache = TokenCache(path, key)
    for used in keys:
        cache.use_key(used)
    return cache


def _outputs(cache: TokenCache, key: TrustedOprfKey, inputs: list[bytes]) -> list[bytes | None]:
    """The cached output of each input, None where the cache has none."""
    found = cache.lookup(key, inputs)
    return [found.output(at) if hit else None for at, hit in enumerate(found.found.tolist())]


def _sql(path: Path, statement: str, parameters: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement on the cache file behind the cache's back (committed)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        return list(db.execute(statement, parameters))


def _segments(path: Path) -> list[tuple[str, int, int, bytes]]:
    return _sql(path, "SELECT key_id, seg, entries, sealed FROM segments ORDER BY key_id, seg")


@pytest.fixture
def key(tmp_path: Path) -> CacheKey:
    return CacheKey.load_or_create(tmp_path / "cache.key")


def test_key_file_is_created_owner_only_and_reused(tmp_path: Path):
    path = tmp_path / "keys" / "cache.key"
    first = CacheKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(bytes.fromhex(path.read_text())) == 32
    again = CacheKey.load_or_create(path)
    assert first.subkey("x") == again.subkey("x")


def test_subkeys_are_independent_per_purpose(key: CacheKey):
    assert key.subkey("token-index.v2") != key.subkey("token-segment")
    assert len(key.subkey("token-index.v2")) == 32


def test_raw_32_byte_key_files_are_accepted(tmp_path: Path):
    path = tmp_path / "raw.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    assert len(CacheKey.load_or_create(path).subkey("a")) == 32


def test_key_file_readable_by_others_is_refused(tmp_path: Path):
    path = tmp_path / "open.key"
    path.write_text(os.urandom(32).hex())
    path.chmod(0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        CacheKey.load_or_create(path)


def test_malformed_key_file_names_the_flag(tmp_path: Path):
    path = tmp_path / "short.key"
    path.write_text("abcd")
    path.chmod(0o600)
    with pytest.raises(ConfigurationError, match="--cache-key"):
        CacheKey.load_or_create(path)


def test_round_trip_and_missing_entries(tmp_path: Path, key: CacheKey):
    with _open(tmp_path / "t.sqlite", key, K1, K2) as cache:
        cache.put_many(K1, INPUTS[:30], OUTPUTS[:30])
        found = _outputs(cache, K1, INPUTS)
        assert found[:30] == OUTPUTS[:30]
        assert found[30:] == [None] * 20
        assert _outputs(cache, K2, INPUTS[:3]) == [None] * 3
        assert cache.count("k1") == 30


def test_lookup_returns_the_filter_keys_of_each_output(tmp_path: Path, key: CacheKey):
    """A re-check hashes nothing: the tag hash and pad come sealed with the token."""
    shuffled = list(range(MANY))
    np.random.default_rng(3).shuffle(shuffled)
    asked = [MANY_INPUTS[at] for at in shuffled]
    with _open(tmp_path / "t.sqlite", key, K1) as cache:
        written = cache.put_many(K1, MANY_INPUTS, MANY_OUTPUTS)
        found = cache.lookup(K1, asked)
    expected = derive_keys([MANY_OUTPUTS[at] for at in shuffled])
    assert found.found.all()
    assert np.array_equal(found.keys.tag_hash, expected.tag_hash)
    assert np.array_equal(found.keys.pad, expected.pad)
    assert np.array_equal(written.tag_hash, derive_keys(MANY_OUTPUTS).tag_hash)
    assert [found.output(at) for at in range(MANY)] == [MANY_OUTPUTS[at] for at in shuffled]
    assert [entries for _, _, entries, _ in _segments(tmp_path / "t.sqlite")] == [
        SEGMENT_ENTRIES,
        SEGMENT_ENTRIES,
        100,
    ]


def test_an_input_asked_twice_gets_its_token_twice(tmp_path: Path, key: CacheKey):
    with _open(tmp_path / "t.sqlite", key, K1) as cache:
        cache.put_many(K1, INPUTS[:3], OUTPUTS[:3])
        twice = [INPUTS[1], INPUTS[0], INPUTS[1], INPUTS[7]]
        assert _outputs(cache, K1, twice) == [OUTPUTS[1], OUTPUTS[0], OUTPUTS[1], None]


def test_tokens_are_only_read_and_written_under_a_key_in_use(tmp_path: Path, key: CacheKey):
    with TokenCache(tmp_path / "t.sqlite", key) as cache:
        with pytest.raises(LookupError, match="k1"):
            cache.put_many(K1, INPUTS[:1], OUTPUTS[:1])
        cache.use_key(K1)
        with pytest.raises(LookupError, match="k1"):  # same id, another public key
            cache.lookup(TrustedOprfKey("k1", K2.public_key), INPUTS[:1])


def test_outputs_of_the_wrong_size_are_refused_before_anything_is_written(
    tmp_path: Path, key: CacheKey
):
    with _open(tmp_path / "t.sqlite", key, K1) as cache:
        with pytest.raises(ValueError, match="64 bytes"):
            cache.put_many(K1, INPUTS[:2], [OUTPUTS[0], OUTPUTS[1][:63]])
        with pytest.raises(ValueError, match="as many outputs"):
            cache.put_many(K1, INPUTS[:3], OUTPUTS[:2])
        assert cache.count() == 0


def test_tokens_of_a_key_id_restated_with_another_public_key_are_dropped(
    tmp_path: Path, key: CacheKey
):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, INPUTS, OUTPUTS)
    restated = TrustedOprfKey("k1", K2.public_key)
    with TokenCache(path, key) as cache:
        assert cache.use_key(restated) == len(INPUTS)
        assert _outputs(cache, restated, INPUTS) == [None] * len(INPUTS)
        assert cache.count("k1") == 0
    with TokenCache(path, key) as cache:
        assert cache.use_key(restated) == 0  # recorded now: nothing more to drop


def test_rows_written_before_keys_were_recorded_are_dropped(tmp_path: Path, key: CacheKey):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, INPUTS[:4], OUTPUTS[:4])
    _sql(path, "DELETE FROM oprf_keys")
    with TokenCache(path, key) as cache:
        assert cache.use_key(K1) == 4


def test_cache_files_hold_no_input_output_or_index_in_clear(tmp_path: Path, key: CacheKey):
    """Scan every file of the cache (database, WAL, shared memory) for what it protects."""
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, MANY_INPUTS, MANY_OUTPUTS)
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("t.sqlite*"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Every input holds both strings: neither occurs, so no input occurs in any form.
    assert b"hosp.example" not in raw
    assert b"breachmatch:v1" not in raw
    windows = {raw[at : at + 16] for at in range(len(raw) - 15)}
    keys = derive_keys(MANY_OUTPUTS)
    index_key = key.subkey("token-index.v2")
    for at, (data, output) in enumerate(zip(MANY_INPUTS, MANY_OUTPUTS, strict=True)):
        assert output[:16] not in windows
        assert output[48:] not in windows
        assert keys.tag_hash[at].tobytes() not in windows
        assert hashlib.blake2b(data, digest_size=16, key=index_key).digest() not in windows


def test_entries_survive_reopening_with_the_same_key(tmp_path: Path, key: CacheKey):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, INPUTS, OUTPUTS)
    with _open(path, key, K1) as cache:
        assert _outputs(cache, K1, INPUTS) == OUTPUTS


def test_another_cache_key_is_refused_with_advice(tmp_path: Path, key: CacheKey):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, INPUTS, OUTPUTS)
    other = CacheKey(os.urandom(32))
    with pytest.raises(CacheKeyMismatchError, match="--cache-key"):
        TokenCache(path, other)


def test_rotation_purges_exactly_the_retired_key_ids(tmp_path: Path, key: CacheKey):
    with _open(tmp_path / "t.sqlite", key, OLD, GRACE, NEW) as cache:
        cache.put_many(OLD, INPUTS, OUTPUTS)
        cache.put_many(GRACE, INPUTS[:10], OUTPUTS[:10])
        cache.put_many(NEW, INPUTS[:5], OUTPUTS[:5])
        assert cache.purge_except({"grace", "new"}) == len(INPUTS)
        assert (cache.count("old"), cache.count("grace"), cache.count("new")) == (0, 10, 5)
        assert _outputs(cache, NEW, INPUTS[:5]) == OUTPUTS[:5]


def test_one_altered_byte_refuses_exactly_its_segment(tmp_path: Path, key: CacheKey):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, MANY_INPUTS, MANY_OUTPUTS)
    _, number, entries, sealed = _segments(path)[1]
    altered = bytearray(sealed)
    altered[len(altered) // 2] ^= 0x01
    _sql(path, "UPDATE segments SET sealed = ? WHERE seg = ?", (bytes(altered), number))
    with _open(path, key, K1) as cache:
        found = _outputs(cache, K1, MANY_INPUTS)
        assert found.count(None) == entries
        assert all(
            output is None or output == expected
            for output, expected in zip(found, MANY_OUTPUTS, strict=True)
        )
        # The refused segment is gone: its tokens are evaluated and written again.
        assert cache.count("k1") == MANY - entries
        assert [seg for _, seg, _, _ in _segments(path)] == [0, 2]


def test_moved_renumbered_or_recounted_segments_are_refused(tmp_path: Path, key: CacheKey):
    """A segment copied to another key id or number, or with another count, never opens."""
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1, K2) as cache:
        cache.put_many(K1, INPUTS[:10], OUTPUTS[:10])
        cache.put_many(K1, INPUTS[10:20], OUTPUTS[10:20])
    (_, _, _, first), (_, _, _, second) = _segments(path)
    _sql(path, "INSERT INTO segments VALUES ('k2', 0, 10, ?)", (first,))
    _sql(path, "UPDATE segments SET sealed = ? WHERE key_id = 'k1' AND seg = 0", (second,))
    _sql(path, "UPDATE segments SET entries = 9 WHERE key_id = 'k1' AND seg = 1")
    with _open(path, key, K1, K2) as cache:
        assert _outputs(cache, K2, INPUTS[:20]) == [None] * 20
        assert _outputs(cache, K1, INPUTS[:20]) == [None] * 20
        assert cache.count() == 0


def _write_version_1(path: Path, key: CacheKey, oprf_key: TrustedOprfKey) -> None:
    """A cache as version 1 of the SDK wrote it: one SecretBox row per token."""
    index_key = key.subkey("token-index")
    box = nacl.secret.SecretBox(key.subkey("token-seal"))
    suffix = oprf_key.public_key + oprf_key.key_id.encode()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID")
        db.execute("INSERT INTO meta VALUES ('check', ?)", (key.subkey("check"),))
        db.execute(
            "CREATE TABLE tokens (key_id TEXT NOT NULL, idx BLOB NOT NULL, sealed BLOB NOT NULL,"
            " PRIMARY KEY (key_id, idx)) WITHOUT ROWID"
        )
        db.execute("CREATE TABLE oprf_keys (key_id TEXT PRIMARY KEY, public_key BLOB NOT NULL)")
        db.execute("INSERT INTO oprf_keys VALUES (?, ?)", (oprf_key.key_id, oprf_key.public_key))
        for data, output in zip(INPUTS, OUTPUTS, strict=True):
            idx = hmac.digest(index_key, data, hashlib.sha256)
            sealed = bytes(box.encrypt(output + idx + suffix))
            db.execute("INSERT INTO tokens VALUES (?, ?, ?)", (oprf_key.key_id, idx, sealed))


def test_a_version_1_cache_is_moved_into_segments_on_first_lookup(tmp_path: Path, key: CacheKey):
    path = tmp_path / "t.sqlite"
    _write_version_1(path, key, K1)
    altered = hmac.digest(key.subkey("token-index"), INPUTS[0], hashlib.sha256)
    _sql(path, "UPDATE tokens SET sealed = zeroblob(120) WHERE idx = ?", (altered,))
    with _open(path, key, K1) as cache:
        assert cache.count("k1") == len(INPUTS)
        found = _outputs(cache, K1, INPUTS[:40])
        # The altered row is not moved (it is evaluated again); the others are.
        assert found == [None, *OUTPUTS[1:40]]
        assert cache.count("k1") == 39  # rows nobody asked for went with the old table
    assert _sql(path, "SELECT count(*) FROM sqlite_master WHERE name = 'tokens'") == [(0,)]
    with _open(path, key, K1) as cache:
        assert _outputs(cache, K1, INPUTS[:40]) == found


_WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from pathlib import Path
    from breachmatch.client.cache import TokenCache
    from breachmatch.client.cache_key import CacheKey
    from breachmatch.client.key_trust import TrustedOprfKey

    path, secret, public = Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
    key = TrustedOprfKey("k1", public)
    with TokenCache(path, CacheKey(secret)) as cache:
        cache.use_key(key)
        for batch in range(10**6):
            inputs = [f"in:{batch}:{i}".encode() for i in range(1000)]
            outputs = [hashlib.blake2b(d, digest_size=64).digest() for d in inputs]
            cache.put_many(key, inputs, outputs)
    """
)


def test_a_writer_killed_mid_write_leaves_only_whole_correct_segments(tmp_path: Path):
    """kill -9 at a random moment: every token found afterwards is the right one."""
    path, secret = tmp_path / "t.sqlite", os.urandom(32)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), secret.hex(), K1.public_key.hex()]
    )
    key = CacheKey(secret)
    try:
        deadline = time.monotonic() + 60
        with TokenCache(path, key) as watcher:
            while watcher.count() < 5000 and time.monotonic() < deadline:
                time.sleep(0.01)  # polls the other process's commits: nothing to wait on
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    with _open(path, key, K1) as cache:
        written = cache.count("k1")
        assert written >= 5000
        asked = [
            f"in:{batch}:{i}".encode() for batch in range(written // 1000 + 2) for i in range(1000)
        ]
        found = _outputs(cache, K1, asked)
    hits = [(data, output) for data, output in zip(asked, found, strict=True) if output is not None]
    assert len(hits) == written
    assert all(output == hashlib.blake2b(data, digest_size=64).digest() for data, output in hits)
