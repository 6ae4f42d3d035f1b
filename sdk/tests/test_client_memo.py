"""The row memo: a re-check normalises only changed rows and reads exactly what a full read does.

Every test compares the memo's result with a full read of the same file
(`read_patients`, as before the memo) and counts the rows normalised with
a spy around the real `match_keys`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from breachmatch.client import memo_read, row_memo
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.cache_segments import InputIndex
from breachmatch.client.errors import ConfigurationError, StaleMemoError
from breachmatch.client.key_index import Hasher, PatientKeys, patient_keys
from breachmatch.client.memo_read import read_keys
from breachmatch.client.patients import read_patients
from breachmatch.client.row_memo import RowMemo
from breachmatch.records import PersonRecord
from breachmatch_dev import dumps, synthetic

TENANT = "memo-hospital"


@pytest.fixture
def key() -> CacheKey:
    return CacheKey(os.urandom(32))


@pytest.fixture
def people() -> list[synthetic.Person]:
    return list(synthetic.people(40, seed=3))


def _write(path: Path, people: list[synthetic.Person], extra: str = "") -> Path:
    with path.open("wb") as out:
        dumps.write_hospital_csv(people, out)
    if extra:
        with path.open("a", encoding="utf-8") as out:
            out.write(extra)
    return path


def _view(keys: PatientKeys) -> tuple[object, ...]:
    """Everything a check reads of `keys`, independent of the order keys are held in."""
    index = keys.keys
    owners = sorted(
        (keys.ids[patient], kind.value, index.index[at].tobytes())
        for at in range(index.count)
        for patient, kind, _ in index.owners_of(at)
    )
    return (
        list(keys.ids),
        keys.bad_rows,
        keys.without_keys,
        keys.unnamed,
        keys.unknown_identifier_systems,
        index.count,
        owners,
    )


def _full(path: Path, key: CacheKey) -> tuple[object, ...]:
    return _view(patient_keys(read_patients(path), _hasher(key)))


def _hasher(key: CacheKey) -> Hasher:
    return InputIndex(key.subkey("token-index.v2")).of


def _memo_read(path: Path, state: Path, key: CacheKey, tenant: str = TENANT) -> PatientKeys:
    with RowMemo(state / "row-memo.sqlite", key, tenant) as memo:
        return read_keys(path, memo, _hasher(key))


def _segments(state: Path) -> Iterator[tuple[int, int, bytes]]:
    with sqlite3.connect(state / "row-memo.sqlite") as db:
        yield from db.execute("SELECT seg, rows, sealed FROM segments ORDER BY seg")


def _set_segment(state: Path, number: int, sealed: bytes) -> None:
    with sqlite3.connect(state / "row-memo.sqlite") as db:
        db.execute("UPDATE segments SET sealed = ? WHERE seg = ?", (sealed, number))


def test_an_unchanged_export_is_not_read_or_normalised_again(
    tmp_path: Path, key: CacheKey, people, normalised
):
    export = _write(tmp_path / "p.csv", people)
    first = _memo_read(export, tmp_path, key)
    assert normalised[0] == len(people)
    again = _memo_read(export, tmp_path, key)
    assert normalised[0] == len(people)
    assert _view(first) == _view(again) == _full(export, key)
    with pytest.raises(StaleMemoError):  # nothing came from a read: every key is remembered
        again.keys.inputs[0]


def test_an_export_under_a_new_name_is_found_in_the_memo(
    tmp_path: Path, key: CacheKey, people, normalised
):
    """A daily export written as patients-<date>.csv is still the same patients."""
    _memo_read(_write(tmp_path / "patients-2026-11-29.csv", people), tmp_path, key)
    before = normalised[0]
    today = _write(tmp_path / "patients-2026-11-30.csv", people)
    result = _memo_read(today, tmp_path, key)
    assert normalised[0] == before
    assert result.path == today
    assert _view(result) == _full(today, key)


@pytest.mark.parametrize("change", ["edit", "add", "remove", "reorder"])
def test_a_changed_export_normalises_only_its_new_rows_and_reads_as_a_full_read(
    tmp_path: Path, key: CacheKey, people, normalised, change: str
):
    export = _write(tmp_path / "p.csv", people)
    _memo_read(export, tmp_path, key)
    before = normalised[0]
    if change == "edit":
        people[7] = dataclasses.replace(people[7], email="changed@example.org")
        fresh = 1
    elif change == "add":
        people += list(synthetic.people(3, seed=3, start=100))
        fresh = 3
    elif change == "remove":
        del people[5:9]
        fresh = 0
    else:
        people.reverse()
        fresh = 0
    _write(export, people)
    result = _memo_read(export, tmp_path, key)
    assert normalised[0] - before == fresh
    assert _view(result) == _full(export, key)
    assert _view(_memo_read(export, tmp_path, key)) == _full(export, key)
    assert normalised[0] - before == fresh  # and the memo was rewritten to the new file


def test_shared_ids_unnamed_and_blank_rows_merge_as_in_a_full_read(
    tmp_path: Path, key: CacheKey, people, normalised
):
    twin = dataclasses.replace(people[1], email="second.address@example.org", phone="")
    extra = (
        f"{people[1].patient_id},,,,,{twin.email},,,da\n"  # a second row of patient 1
        ",0101701234,Ida,Holm,1970-01-01,ida.holm@example.org,,,da\n"  # no patient id
        ",,,,,,,,\n"  # blank
        "P-nokeys,,,,,,,Vej 9,da\n"  # a patient with no identifier
    )
    export = _write(tmp_path / "p.csv", people, extra)
    full = _full(export, key)
    assert _view(_memo_read(export, tmp_path, key)) == full
    assert _view(_memo_read(export, tmp_path, key)) == full
    people[20] = dataclasses.replace(people[20], phone="12345678")
    _write(export, people, extra)
    assert _view(_memo_read(export, tmp_path, key)) == _full(export, key)
    assert _full(export, key)[3] == 1  # one unnamed
    assert _full(export, key)[2] == 1  # one without keys


def test_salvaged_bad_rows_count_and_match_as_in_a_full_read(tmp_path: Path, key: CacheKey):
    export = tmp_path / "p.ndjson"
    good = [
        {"patient_id": f"J{n}", "cpr": f"01017{n}1234", "email": f"j{n}@example.org"}
        for n in range(5)
    ]
    lines = [json.dumps(row) for row in good]
    lines.insert(2, '{"patient_id": "J-bad", "cpr": "0202801234", "email": "bad@example.org"')
    export.write_text("\n".join(lines) + "\n")
    full = _full(export, key)
    assert full[1] == 1  # the broken line is a bad row, salvaged
    assert _view(_memo_read(export, tmp_path, key)) == full
    assert _view(_memo_read(export, tmp_path, key)) == full
    export.write_text("\n".join([*lines, json.dumps({"patient_id": "J9", "cpr": "0303801234"})]))
    assert _view(_memo_read(export, tmp_path, key)) == _full(export, key)


def test_a_tampered_segment_costs_exactly_its_rows(
    tmp_path: Path, key: CacheKey, people, normalised, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(row_memo, "SEGMENT_ROWS", 8)
    export = _write(tmp_path / "p.csv", people)
    _memo_read(export, tmp_path, key)
    number, rows, sealed = list(_segments(tmp_path))[2]
    altered = bytearray(sealed)
    altered[len(altered) // 2] ^= 0x01
    _set_segment(tmp_path, number, bytes(altered))
    before = normalised[0]
    assert _view(_memo_read(export, tmp_path, key)) == _full(export, key)
    assert normalised[0] - before == rows == 8


def test_moved_and_replayed_segments_are_refused(
    tmp_path: Path, key: CacheKey, people, normalised, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(row_memo, "SEGMENT_ROWS", 8)
    export = _write(tmp_path / "p.csv", people)
    _memo_read(export, tmp_path, key)
    segments = list(_segments(tmp_path))
    # Swapped: each opens only at its own number.
    _set_segment(tmp_path, 0, segments[1][2])
    _set_segment(tmp_path, 1, segments[0][2])
    before = normalised[0]
    assert _view(_memo_read(export, tmp_path, key)) == _full(export, key)
    assert normalised[0] - before == 16
    # Replayed from an older generation of the same export: refused as well.
    old = list(_segments(tmp_path))[3][2]
    people[0] = dataclasses.replace(people[0], email="new@example.org")
    _write(export, people)
    _memo_read(export, tmp_path, key)
    _set_segment(tmp_path, 3, old)
    before = normalised[0]
    assert _view(_memo_read(export, tmp_path, key)) == _full(export, key)
    assert normalised[0] - before == 8


def test_a_memo_of_another_cache_key_or_tenant_is_not_used(
    tmp_path: Path, key: CacheKey, people, normalised
):
    export = _write(tmp_path / "p.csv", people)
    _memo_read(export, tmp_path, key)
    before = normalised[0]
    assert _view(_memo_read(export, tmp_path, key, "another-hospital")) == _full(export, key)
    assert normalised[0] - before == len(people)
    other = CacheKey(os.urandom(32))
    before = normalised[0]
    assert _view(_memo_read(export, tmp_path, other)) == _full(export, other)
    assert normalised[0] - before == len(people)


def test_a_memo_of_other_code_or_another_mapping_is_not_used(
    tmp_path: Path, key: CacheKey, people, normalised, monkeypatch: pytest.MonkeyPatch
):
    export = _write(tmp_path / "p.csv", people)
    _memo_read(export, tmp_path, key)
    monkeypatch.setattr(memo_read, "code_digest", lambda: b"other normalisation rules")
    before = normalised[0]
    _memo_read(export, tmp_path, key)
    assert normalised[0] - before == len(people)
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"columns": {"phone": "phone"}}))
    before = normalised[0]
    with RowMemo(tmp_path / "row-memo.sqlite", key, TENANT) as memo:
        read_keys(export, memo, _hasher(key), mapping_file=mapping)
    assert normalised[0] - before == len(people)


def test_every_field_a_check_reads_is_hashed():
    """A field added to the record must be hashed, or rows differing in it would alias."""
    never_read_by_a_check = {"address", "language", "categories"}
    fields = {field.name for field in dataclasses.fields(PersonRecord)}
    assert set(row_memo.HASHED_FIELDS) == fields - never_read_by_a_check


def test_row_hashes_tell_apart_values_moved_between_fields(tmp_path: Path, key: CacheKey):
    with RowMemo(tmp_path / "m.sqlite", key, TENANT) as memo:
        hashes = {
            memo.row_hash(PersonRecord(cpr="12", ssn=None)),
            memo.row_hash(PersonRecord(cpr="1", ssn="2")),
            memo.row_hash(PersonRecord(cpr=None, ssn="12")),
            memo.row_hash(PersonRecord(cpr="12", ssn="")),
            memo.row_hash(PersonRecord(extra_emails=["a", "b"])),
            memo.row_hash(PersonRecord(extra_emails=["ab"])),
        }
    assert len(hashes) == 6


def test_the_memo_holds_no_identifier_or_plain_hash_in_clear(tmp_path: Path, key: CacheKey, people):
    """Scan every file of the memo (database, WAL, shared memory) for the export's values."""
    export = _write(tmp_path / "p.csv", people)
    with RowMemo(tmp_path / "row-memo.sqlite", key, TENANT) as memo:
        read_keys(export, memo, _hasher(key))
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("row-memo.sqlite*"))
    assert stat.S_IMODE((tmp_path / "row-memo.sqlite").stat().st_mode) == 0o600
    assert len(raw) > 40 * 64  # something was written
    for person in people:
        for value in (
            person.patient_id, person.cpr, person.email, person.phone, person.given_name,
            person.family_name, person.birth_date.isoformat(),
        ):  # fmt: skip
            assert value.encode() not in raw
    windows = {raw[at : at + 16] for at in range(len(raw) - 15)}
    for key_input in (k.oprf_input() for p in read_patients(export).patients for k in p.keys):
        assert key_input not in raw
        assert hashlib.sha256(key_input).digest()[:16] not in windows
        assert hashlib.blake2b(key_input, digest_size=16).digest() not in windows
    assert b"p.csv" not in raw


def test_a_memo_file_that_is_not_a_database_is_refused_with_what_to_do(
    tmp_path: Path, key: CacheKey
):
    (tmp_path / "row-memo.sqlite").write_bytes(b"not a database, " * 100)
    with pytest.raises(ConfigurationError, match="delete it: the next check rebuilds it"):
        RowMemo(tmp_path / "row-memo.sqlite", key, TENANT)
