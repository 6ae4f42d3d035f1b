"""Mapping files: overrides, validation, and errors that never repeat a value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from breachmatch.columns import ColumnMapping, ColumnPlan, MappingError
from breachmatch.records import Category


def _write(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "mapping.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    return path


def test_mapping_file_overrides_and_extends_the_synonyms(tmp_path: Path) -> None:
    mapping = ColumnMapping.load(
        _write(
            tmp_path,
            {
                "columns": {
                    "Kundenr": "patient_id",
                    "Journal": "mrn",
                    "patients.column_3": "cpr",
                    "Fritekst 2": "category:free_text",
                    "telefon": "ignore",
                },
                "facility": "Testklinikken",
            },
        )
    )
    headers = ["Kundenr", "Journal", "column_3", "Fritekst 2", "TELEFON", "E-mail"]
    plan = ColumnPlan.for_headers(headers, mapping, table="patients")
    record = plan.record(["K-7", "J-1", "0101801234", "x", "+45 11223344", "a@example.dk"])
    assert record.patient_id == "K-7"
    assert (record.mrn, record.facility) == ("J-1", "Testklinikken")
    assert record.cpr == "0101801234"
    assert record.phone is None  # "telefon" matched "TELEFON" by its key and is ignored
    assert record.email == "a@example.dk"  # not listed: synonyms still apply
    assert record.categories == Category.CONTACT | Category.NATIONAL_ID | Category.FREE_TEXT
    assert [d.source for d in plan.decisions] == [
        "mapping",
        "mapping",
        "mapping",
        "mapping",
        "ignored",
        "auto",
    ]


def test_table_qualified_entries_apply_to_that_table_only(tmp_path: Path) -> None:
    mapping = ColumnMapping.load(_write(tmp_path, {"columns": {"visits.column_2": "cpr"}}))
    assert (
        ColumnPlan.for_headers(["column_1", "column_2"], mapping, "visits")
        .record(["1", "0101801234"])
        .cpr
        == "0101801234"
    )
    other = ColumnPlan.for_headers(["column_1", "column_2"], mapping, "other")
    assert not other.maps_anything


def test_auto_false_maps_only_the_listed_columns(tmp_path: Path) -> None:
    mapping = ColumnMapping.load(_write(tmp_path, {"columns": {"CPR": "cpr"}, "auto": False}))
    plan = ColumnPlan.for_headers(["CPR", "E-mail"], mapping)
    record = plan.record(["0101801234", "a@example.dk"])
    assert (record.cpr, record.email) == ("0101801234", None)
    assert plan.unmapped == ("E-mail",)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "top level must be a JSON object"),
        ({"colums": {}}, "unknown key 'colums'"),
        ({"columns": []}, "'columns' must be an object"),
        ({"columns": {"Navn": 3}}, "columns['Navn']: target must be a string"),
        ({"columns": {"Navn": "fullname"}}, "columns['Navn']: unknown target"),
        ({"columns": {"Navn": "category:labs"}}, "columns['Navn']: unknown category"),
        ({"columns": {" ": "cpr"}}, "empty header name"),
        ({"facility": ""}, "'facility' must be a non-empty string"),
        ({"auto": "yes"}, "'auto' must be true or false"),
    ],
)
def test_invalid_mapping_files_name_the_bad_key(
    tmp_path: Path, document: object, message: str
) -> None:
    with pytest.raises(MappingError, match="mapping file") as raised:
        ColumnMapping.load(_write(tmp_path, document))
    assert message in str(raised.value)


def test_errors_never_repeat_values_from_a_wrong_file(tmp_path: Path) -> None:
    # A patient export passed as a mapping file by mistake.
    wrong = {"columns": {"Testesen": "010180-1234"}}
    with pytest.raises(MappingError) as raised:
        ColumnMapping.load(_write(tmp_path, wrong))
    assert "010180-1234" not in str(raised.value)
    keyed_by_cpr = {"columns": {"0101801234": "cpr"}}
    mapping = ColumnMapping.load(_write(tmp_path, keyed_by_cpr))  # valid, if odd
    assert "0101801234" in mapping.columns
    with pytest.raises(MappingError) as raised:
        ColumnMapping.load(_write(tmp_path, {"0101801234": 1}))
    assert "0101801234" not in str(raised.value)


def test_unreadable_files_are_reported_without_their_content(tmp_path: Path) -> None:
    path = tmp_path / "mapping.json"
    path.write_text('{"columns": {"Navn": "010180-1234"', encoding="utf-8")
    with pytest.raises(MappingError, match=r"not valid JSON \(line 1, column") as raised:
        ColumnMapping.load(path)
    assert "010180" not in str(raised.value)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MappingError, match="not UTF-8"):
        ColumnMapping.load(path)
