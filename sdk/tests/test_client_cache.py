"""The token cache and its key: encrypted at rest, keyed by HMAC, rotation-aware."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from breachmatch import oprf
from breachmatch.client.cache import TokenCache
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.errors import CacheKeyMismatchError, ConfigurationError
from breachmatch.client.key_trust import TrustedOprfKey

INPUTS = [f"breachmatch:v1:cpr:{i:010d}".encode() for i in range(50)]
OUTPUTS = [os.urandom(64) for _ in range(50)]


def _key(key_id: str) -> TrustedOprfKey:
    return TrustedOprfKey(key_id, oprf.random_key_pair()[1])


K1, K2, OLD, GRACE, NEW = (_key(name) for name in ("k1", "k2", "old", "grace", "new"))


def _open(path: Path, key: CacheKey, *keys: TrustedOprfKey) -> TokenCache:
    cache = TokenCache(path, key)
    for used in keys:
        cache.use_key(used)
    return cache


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
    assert key.subkey("token-index") != key.subkey("token-seal")
    assert len(key.subkey("token-index")) == 32


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
        found = cache.get_many(K1, INPUTS)
        assert found[:30] == OUTPUTS[:30]
        assert found[30:] == [None] * 20
        assert cache.get_many(K2, INPUTS[:3]) == [None] * 3
        assert cache.count("k1") == 30


def test_tokens_are_only_read_and_written_under_a_key_in_use(tmp_path: Path, key: CacheKey):
    with TokenCache(tmp_path / "t.sqlite", key) as cache:
        with pytest.raises(LookupError, match="k1"):
            cache.put_many(K1, INPUTS[:1], OUTPUTS[:1])
        cache.use_key(K1)
        with pytest.raises(LookupError, match="k1"):  # same id, another public key
            cache.get_many(TrustedOprfKey("k1", K2.public_key), INPUTS[:1])


def test_tokens_of_a_key_id_restated_with_another_public_key_are_dropped(
    tmp_path: Path, key: CacheKey
):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, INPUTS, OUTPUTS)
    restated = TrustedOprfKey("k1", K2.public_key)
    with TokenCache(path, key) as cache:
        assert cache.use_key(restated) == len(INPUTS)
        assert cache.get_many(restated, INPUTS) == [None] * len(INPUTS)
        assert cache.count("k1") == 0
    with TokenCache(path, key) as cache:
        assert cache.use_key(restated) == 0  # recorded now: nothing more to drop


def test_rows_written_before_keys_were_recorded_are_dropped(tmp_path: Path, key: CacheKey):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, INPUTS[:4], OUTPUTS[:4])
    db = sqlite3.connect(path)
    db.execute("DELETE FROM oprf_keys")
    db.commit()
    db.close()
    with TokenCache(path, key) as cache:
        assert cache.use_key(K1) == 4


def test_database_is_owner_only_and_holds_neither_inputs_nor_outputs(tmp_path: Path, key: CacheKey):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, INPUTS, OUTPUTS)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("t.sqlite*"))
    for data, output in zip(INPUTS, OUTPUTS, strict=True):
        assert data not in raw
        assert data.split(b":")[-1] not in raw
        assert output not in raw


def test_entries_survive_reopening_with_the_same_key(tmp_path: Path, key: CacheKey):
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1) as cache:
        cache.put_many(K1, INPUTS, OUTPUTS)
    with _open(path, key, K1) as cache:
        assert cache.get_many(K1, INPUTS) == OUTPUTS


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
        assert cache.count("old") == 0
        assert cache.count("grace") == 10
        assert cache.count("new") == 5


def test_swapped_or_moved_rows_are_treated_as_missing(tmp_path: Path, key: CacheKey):
    """A row copied onto another input or key id must not yield someone else's token."""
    path = tmp_path / "t.sqlite"
    with _open(path, key, K1, K2) as cache:
        cache.put_many(K1, INPUTS[:2], OUTPUTS[:2])
    db = sqlite3.connect(path)
    (first, second) = [row[0] for row in db.execute("SELECT idx FROM tokens ORDER BY idx")]
    sealed = dict(db.execute("SELECT idx, sealed FROM tokens"))
    db.execute("UPDATE tokens SET sealed = ? WHERE idx = ?", (sealed[second], first))
    db.execute("INSERT INTO tokens VALUES ('k2', ?, ?)", (second, sealed[second]))
    db.commit()
    db.close()
    with _open(path, key, K1, K2) as cache:
        found = cache.get_many(K1, INPUTS[:2])
        assert found.count(None) == 1
        assert cache.count("k2") == 1  # still there: it fails to open, it is not dropped
        assert cache.get_many(K2, INPUTS[:2]) == [None, None]
