"""JSON documents (streamed arrays, object documents) and JSON lines."""

from __future__ import annotations

import io
import json

from breachmatch.readers import RawRow, RecordStream, open_records
from breachmatch.records import Category, PersonRecord

PATIENTS = [
    {
        "patient": {
            "name": {"first": "Anne", "last": "TESTESEN"},
            "cpr": "0101801234",
            "contact": {"email": "ANNE@EXAMPLE.DK", "phones": ["+45 11 22 33 44", "55667788"]},
        },
        "journal": {"entries": [{"text": "kontrol"}, {"text": "blodprøve"}]},
        "medicin": None,
    },
    {"patient": {"name": {"first": "Bo", "last": "Bæk"}, "cpr": "020280-2345"}, "medicin": ""},
]


def _open(data: bytes, format: str = "auto") -> RecordStream:
    return open_records(io.BytesIO(data), format)


def _check_patients(records: list[PersonRecord]) -> None:
    anne, bo = records
    assert (anne.given_name, anne.family_name) == ("Anne", "TESTESEN")
    assert anne.cpr == "0101801234"
    assert anne.email == "ANNE@EXAMPLE.DK"
    assert (anne.phone, anne.extra_phones) == ("+45 11 22 33 44", ["55667788"])
    assert anne.categories == Category.CONTACT | Category.NATIONAL_ID | Category.MEDICAL_HISTORY
    assert bo.family_name == "Bæk"
    assert bo.categories == Category.NATIONAL_ID


def test_nested_array_document_is_flattened_to_dotted_paths() -> None:
    with _open(json.dumps(PATIENTS, indent=2, ensure_ascii=False).encode()) as stream:
        records, bad = stream.read_all()
        assert stream.format == "json"
    assert not bad
    _check_patients(records)


def test_raw_rows_carry_the_dotted_paths() -> None:
    with _open(json.dumps(PATIENTS).encode()) as stream:
        rows = [row for row in stream.raw_rows() if isinstance(row, RawRow)]
    assert rows[0].as_dict()["patient.contact.phones.1"] == "55667788"
    assert rows[0].as_dict()["journal.entries.1.text"] == "blodprøve"
    assert rows[0].as_dict()["medicin"] is None


def test_json_lines_with_nested_objects() -> None:
    lines = "\n".join(json.dumps(p, ensure_ascii=False) for p in PATIENTS) + "\n\n"
    with _open(lines.encode()) as stream:
        records, bad = stream.read_all()
        assert stream.format == "jsonl"
    assert not bad
    _check_patients(records)


def test_json_lines_bad_lines_are_counted_and_skipped() -> None:
    lines = b'{"cpr": "0101801234"}\n{"cpr": \n[1, 2]\n"text"\n{"cpr": "0202802345"}\n'
    with _open(lines) as stream:
        records, bad = stream.read_all()
        assert stream.stats.bad_rows == {"json_syntax": 1, "json_not_object": 2}
    assert [r.cpr for r in records] == ["0101801234", "0202802345"]
    assert [b.row for b in bad] == [2, 3, 4]


def test_object_document_streams_every_array_member() -> None:
    document = {
        "meta": {"exported": "2025-01-01", "count": 3},
        "patients": PATIENTS,
        "staff": [{"navn": "Dr. Test", "email": "dr@example.dk"}],
        "version": 2,
    }
    with _open(json.dumps(document, indent=1, ensure_ascii=False).encode()) as stream:
        records, bad = stream.read_all()
        assert stream.stats.skipped_resources == {"json non-array member": 2}
        assert {table for table, _ in stream.plans_seen} == {"patients", "staff"}
    assert not bad
    _check_patients(records[:2])
    assert records[2].email == "dr@example.dk"


def test_small_one_line_document_is_not_mistaken_for_json_lines() -> None:
    with _open(json.dumps({"patients": PATIENTS}).encode()) as stream:
        records, _ = stream.read_all()
        assert stream.format == "json"
    _check_patients(records)


def test_large_array_is_streamed_across_read_chunks() -> None:
    count = 30_000  # ~2.5 MB: several 1 MiB read chunks, elements cut at their edges
    people = ",\n".join(
        json.dumps({"cpr": f"{i:010d}", "name": f"Person {i}", "notes": "x" * (i % 50)})
        for i in range(count)
    )
    with _open(f"[{people}]".encode()) as stream:
        records, bad = stream.read_all()
    assert not bad
    assert len(records) == count
    assert records[-1].cpr == f"{count - 1:010d}"
    assert records[12_345].full_name == "Person 12345"


def test_syntax_error_inside_an_array_resynchronises() -> None:
    data = b'[{"cpr": "0101801234"}, {"cpr": "x" "y"}, {"cpr": "0202802345"}, 7, {"cpr": "3"}]'
    with _open(data) as stream:
        records, bad = stream.read_all()
    assert [r.cpr for r in records] == ["0101801234", "0202802345", "3"]
    assert [b.reason for b in bad] == ["json_syntax", "json_not_object"]


def test_truncated_document_keeps_the_rows_before_the_cut() -> None:
    data = json.dumps(PATIENTS).encode()[:-40]
    with _open(data) as stream:
        records, bad = stream.read_all()
    assert [r.cpr for r in records] == ["0101801234"]
    assert [b.reason for b in bad] == ["json_syntax"]
    with _open(b'[{"cpr": "0101801234"},') as stream:
        records, bad = stream.read_all()
    assert [r.cpr for r in records] == ["0101801234"]
    assert [b.reason for b in bad] == ["json_truncated"]


def test_deeply_nested_junk_is_a_bad_row_not_a_crash() -> None:
    with _open(b"[" + b"[" * 100_000 + b"]" * 100_000 + b"]", format="json") as stream:
        records, bad = stream.read_all()
    assert not records
    assert [b.reason for b in bad] == ["json_too_deep"]
    with _open(b'{"a": 1}\n' + b"[" * 100_000 + b"\n", format="jsonl") as stream:
        _, bad = stream.read_all()
    assert [b.reason for b in bad] == ["json_too_deep"]


def test_values_of_every_json_type_become_strings() -> None:
    data = b'[{"patient_id": 42, "phone": 4512345678, "flag": true, "x": 1.5, "email": null}]'
    with _open(data) as stream:
        (row,) = [r for r in stream.raw_rows() if isinstance(r, RawRow)]
    assert row.as_dict() == {
        "patient_id": "42",
        "phone": "4512345678",
        "flag": "true",
        "x": "1.5",
        "email": None,
    }


def test_integers_longer_than_python_converts_are_values() -> None:
    huge = "9" * 5000
    document = f'[{{"cpr": "0101801234", "x": {huge}}}, {{"cpr": "0202802345"}}]'.encode()
    lines = f'{{"cpr": "0101801234", "x": {huge}}}\n{{"cpr": "0202802345"}}\n'.encode()
    for data in (document, lines):
        with _open(data) as stream:
            records, bad = stream.read_all()
        assert not bad
        assert [r.cpr for r in records] == ["0101801234", "0202802345"]
    with _open(lines) as stream:
        rows = list(stream.raw_rows())
    assert isinstance(rows[0], RawRow)
    assert rows[0].as_dict()["x"] == huge


def test_a_broken_json_line_keeps_its_strings_for_salvage() -> None:
    data = b'{"cpr": "0101801234"}\n{"cpr": "0202802345", "email": "b@example.dk", "x": [\n'
    with _open(data) as stream:
        records, bad = stream.read_all()
        assert stream.stats.salvaged == 1
    assert [r.cpr for r in records] == ["0101801234"]
    assert bad[0].reason == "json_syntax"
    assert bad[0].salvaged is not None
    assert (bad[0].salvaged.cpr, bad[0].salvaged.email) == ("0202802345", "b@example.dk")
