"""The synthetic generator: unique identifiers by construction, every shape reads back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from breachmatch.identifiers import (
    MatchKey,
    match_keys,
    normalise_cpr,
    normalise_email,
    normalise_name_dob,
    normalise_phone,
)
from breachmatch.readers import open_records
from breachmatch.records import PersonRecord
from breachmatch_dev.dumps import HEALTH_DATA, SHAPES, SUFFIX, write_leak
from breachmatch_dev.synthetic import (
    CAPACITY,
    FAMILY_NAMES,
    GIVEN_NAMES,
    crowd,
    expected_matches,
    leak_rows,
    people,
)


def test_the_alles_scale_population_has_no_shared_or_filler_identifier() -> None:
    everyone = list(people(142_000, seed=2025))
    cprs = {normalise_cpr(p.cpr) for p in everyone}  # raises on a filler or a bad date
    phones = {normalise_phone(p.phone) for p in everyone}
    emails = {p.email.casefold() for p in everyone}
    triples = {(p.given_name, p.family_name, p.birth_date) for p in everyone}
    assert len(cprs) == len(phones) == len(emails) == len(triples) == len(everyone)
    assert all(p.cpr[6:] != "0000" for p in everyone)
    assert len({p.patient_id for p in everyone}) == len(everyone)
    # Distinct triples are distinct name_dob keys as long as no two names fold alike.
    folded = {
        normalise_name_dob(given_name=g, family_name=f, full_name=None, birth_date="1980-01-01")
        for g in GIVEN_NAMES
        for f in FAMILY_NAMES
    }
    assert len(folded) == len(GIVEN_NAMES) * len(FAMILY_NAMES)
    assert all(normalise_email(p.email) == p.email for p in everyone[:5000])


def test_windows_of_one_population_are_disjoint_and_reproducible() -> None:
    first = list(people(500, seed=3))
    second = list(people(500, seed=3, start=500))
    assert list(people(500, seed=3)) == first
    assert not {p.cpr for p in first} & {p.cpr for p in second}
    assert not {p.phone for p in first} & {p.phone for p in second}
    with pytest.raises(ValueError, match="distinct people"):
        next(people(2, start=CAPACITY - 1))


def test_the_truth_has_one_match_per_leaked_patient_and_none_for_outsiders() -> None:
    leak = leak_rows(300, 120, 80, seed=5)
    truth = expected_matches(leak)
    assert len(leak.rows) == 200
    assert len(truth) == 120
    hospital = {p.patient_id for p in leak.hospital}
    assert {m.patient_id for m in truth} <= hospital
    assert {m.strength for m in truth} == {"strong", "medium"}
    assert all((m.strength == "strong") == ("cpr" in m.matched_keys) for m in truth)
    no_health = expected_matches(leak, health=False)
    assert all(set(m.categories) <= {"contact", "national_id"} for m in no_health)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_reads_back_to_each_rows_keys_and_categories(shape: str, tmp_path: Path) -> None:
    leak = leak_rows(150, 100, 50, seed=11)
    path = tmp_path / f"leak{SUFFIX[shape]}"
    assert write_leak(leak.rows, path, shape) == len(leak.rows)
    with open_records(path) as stream:
        records, bad = stream.read_all()
    assert bad == []
    health = HEALTH_DATA[shape]
    found = [(_keys(record), record.categories) for record in records]
    expected = [
        (_keys(row.record(health=health)), row.categories(health=health)) for row in leak.rows
    ]
    assert found == expected
    assert [{key.kind.value for key in keys} for keys, _ in found] == [
        row.keys for row in leak.rows
    ]


def test_crowd_rows_carry_every_key() -> None:
    rows = list(crowd(50, seed=9))
    assert all(len(_keys(row.record())) == 4 for row in rows)


def _keys(record: PersonRecord) -> frozenset[MatchKey]:
    return frozenset(match_keys(record).keys)
