"""Records → pairs → chunks: fixed boundaries, honest counts, no crash on junk."""

from __future__ import annotations

import io
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from breachmatch.identifiers import match_keys
from breachmatch.readers import BadRow, ReaderError
from breachmatch.records import Category, PersonRecord
from breachmatch_dev import synthetic
from breachmatch_ingest.pipeline import MAX_CHUNK_BYTES, chunks_of, read_dump
from breachmatch_ingest.report import Report


def _records(count: int, seed: int) -> list[PersonRecord]:
    return [p.record() for p in synthetic.crowd(count, seed=seed)]


def test_chunks_hold_every_pair_in_order_with_its_record_label() -> None:
    records = _records(60, seed=3)
    report = Report()
    chunks = list(chunks_of(records, report, chunk_pairs=7))
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(1 <= len(c) <= 7 for c in chunks)
    assert all(len(c) == 7 for c in chunks[:-1])
    expected = [
        (key.oprf_input(), int(r.categories)) for r in records for key in match_keys(r).keys
    ]
    got = [(data, label) for c in chunks for data, label in zip(c.inputs, c.labels, strict=True)]
    assert got == expected
    again = list(chunks_of(records, Report(), chunk_pairs=7))
    assert [(c.inputs, c.labels) for c in again] == [(c.inputs, c.labels) for c in chunks]
    # Counted across every chunk, not just the last one's.
    assert report.rows_read == 60
    assert report.keys == Counter(k.kind.value for r in records for k in match_keys(r).keys)
    assert report.categories == Counter(name for r in records for name in r.categories.names())


def test_chunks_stay_under_the_byte_limit() -> None:
    long_mail = "a" * 60 + ".{}@" + "b" * 60 + ".example.dk"
    records = [PersonRecord(email=long_mail.format(i)) for i in range(5000)]
    chunks = list(chunks_of(records, Report(), chunk_pairs=100_000))
    assert len(chunks) >= 2
    assert all(c.size <= MAX_CHUNK_BYTES for c in chunks)
    assert sum(len(c) for c in chunks) == 5000


def test_the_report_counts_rows_keys_categories_and_rejections_without_values() -> None:
    report = Report()
    items: list[PersonRecord | BadRow] = [
        PersonRecord(cpr="0101901234", email="ukendt", categories=Category.NATIONAL_ID),
        PersonRecord(cpr="3213901234", phone="12", categories=Category.CONTACT),
        PersonRecord(categories=Category.MEDICATION | Category.DIAGNOSES),
        BadRow("csv_wrong_field_count", 4),
        BadRow("csv_wrong_field_count", 5),
    ]
    assert sum(len(c) for c in chunks_of(items, report)) == 1
    assert report.rows_read == 5
    assert report.rows_without_key == 2
    assert report.keys == {"cpr": 1}
    assert report.bad_rows == {"csv_wrong_field_count": 2}
    assert report.placeholders == {"email": 1}
    assert report.invalid_values == {"cpr:cpr_bad_date": 1, "phone:phone_length": 1}
    assert report.categories == {
        "national_id": 1, "contact": 1, "medication": 1, "diagnoses": 1,
    }  # fmt: skip
    text = report.render_text()
    assert "0101901234" not in text
    assert "csv_wrong_field_count" in text
    assert Report.from_dict(report.to_dict()).to_dict() == report.to_dict()


def test_repaired_and_salvaged_rows_are_counted_and_salvaged_keys_published() -> None:
    header = "Navn;CPR-nr.;E-mail;Adresse;Notat"
    rows = [
        f"P{i};{i % 28 + 1:02d}0180{1000 + i};p{i}@example.dk;Vej {i}, By;ok" for i in range(40)
    ]
    rows.append("Kort;0101901234")  # trailing cells left out: padded
    rows.append("Lang;0202901234;q@example.dk;Vej 1; By;fin")  # ';' in the address: joined
    rows.append("x;0303901234;y;z;w;v;u")  # no reading fits: bad, its CPR salvaged
    report = Report()
    chunks = list(chunks_of(read_dump(io.BytesIO("\n".join([header, *rows]).encode())), report))
    assert report.rows_read == 43
    assert report.repaired_rows == {"csv_short_row_padded": 1, "csv_overflow_joined": 1}
    assert report.bad_rows == {"csv_wrong_field_count": 1}
    assert report.salvaged_rows == 1
    salvaged = PersonRecord(cpr="0303901234", categories=Category.NATIONAL_ID)
    pairs = {(data, label) for c in chunks for data, label in zip(c.inputs, c.labels, strict=True)}
    key = match_keys(salvaged).keys[0]
    assert (key.oprf_input(), int(Category.NATIONAL_ID)) in pairs
    assert report.keys["cpr"] == 43
    document = report.to_dict()
    assert document["repaired_rows"] == {"csv_overflow_joined": 1, "csv_short_row_padded": 1}
    assert document["salvaged_rows"] == 1
    assert Report.from_dict(document).to_dict() == document
    text = report.render_text()
    assert "csv_overflow_joined" in text
    assert "0303901234" not in text


def test_a_job_report_stored_before_repairs_were_counted_still_loads() -> None:
    old = Report(rows_read=3, keys=Counter({"cpr": 3})).to_dict()
    del old["repaired_rows"], old["salvaged_rows"]
    loaded = Report.from_dict(old)
    assert (loaded.rows_read, loaded.salvaged_rows, loaded.repaired_rows) == (3, 0, Counter())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_junk_input_never_crashes_and_every_row_is_counted(junk: bytes) -> None:
    report = Report()
    try:
        chunks = list(chunks_of(read_dump(io.BytesIO(junk)), report, chunk_pairs=50))
    except ReaderError:  # a whole-input verdict (e.g. a broken zip), never a row-level crash
        return
    assert report.rows_read >= report.bad_rows.total()
    assert sum(len(c) for c in chunks) == report.pairs


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=40),
        min_size=1,
        max_size=8,
    )
)
def test_junk_csv_cells_are_counted_not_crashed_on(cells: list[str]) -> None:
    rows = [";".join(cells[i : i + 4]) for i in range(len(cells))]
    dump = "CPR-nr.;E-mail;Telefon;Navn\r\n" + "\r\n".join(rows)
    report = Report()
    list(chunks_of(read_dump(io.BytesIO(dump.encode("utf-8"))), report))
    good_rows = report.rows_read - report.bad_rows.total()
    # A name without a birth date makes no key: at most CPR, e-mail and phone per
    # row, and a CPR and an e-mail salvaged from a bad row.
    assert report.pairs <= 3 * good_rows + 2 * report.salvaged_rows
    assert report.rows_without_key <= good_rows
    assert report.repaired_rows.total() <= good_rows
