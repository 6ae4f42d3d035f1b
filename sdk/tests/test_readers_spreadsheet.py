"""Workbooks: every sheet, the header below a title block, typed cells read as typed by a person."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import zipfile
from pathlib import Path

import pytest
import xlsxwriter

from breachmatch.columns import ColumnMapping
from breachmatch.identifiers import match_keys
from breachmatch.readers import BadRow, RawRow, inspect, open_records
from breachmatch.readers.spreadsheet_cells import birth_date_text, cpr_text, phone_text
from breachmatch.records import Category

DATA = Path(__file__).parent / "data"
HEADER: list[object] = [
    "CPR-nr.",
    "Fornavn",
    "Efternavn",
    "Fødselsdato",
    "Telefon",
    "E-mail",
    "Medicin",
]


Rows = list[list[object]]


def _workbook(path: Path, sheets: dict[str, Rows]) -> Path:
    """An .xlsx with typed cells (dates as date cells, numbers as numbers)."""
    with xlsxwriter.Workbook(str(path)) as book:
        date_format = book.add_format({"num_format": "dd-mm-yyyy"})
        for name, rows in sheets.items():
            sheet = book.add_worksheet(name)
            for r, row in enumerate(rows):
                for c, value in enumerate(row):
                    if isinstance(value, dt.date):
                        sheet.write_datetime(r, c, value, date_format)
                    elif isinstance(value, int | float):
                        sheet.write_number(r, c, value)
                    elif value:
                        sheet.write_string(r, c, str(value))
    return path


LEAK: dict[str, Rows] = {
    "Patienter": [
        ["Patientliste — Testklinikken (fortroligt)"],
        ["Udtrukket 01-09-2025"],
        [],
        HEADER,
        [102801234, "Anne", "Berg", dt.date(1980, 2, 1), 21345678, "anne@example.dk", "Pinex"],
        ["151275-1234", "Bo", "Dahl", 27744, 21345679.0, "", ""],
        [],
        [3112991234, "Carl", "Eske", "31.12.1999", 4521345680, "carl@example.dk", "", "ekstra"],
    ],
    "Ark2": [
        ["Telefon", "E-mail", "CPR-nr."],
        ["+45 21 34 56 81", "dora@example.dk", 507051234],
    ],
    "Tom": [],
}


def test_every_sheet_is_read_below_its_title_block_with_typed_cells_restored(
    tmp_path: Path,
) -> None:
    path = _workbook(tmp_path / "leak.xlsx", LEAK)
    with open_records(path) as stream:
        records, bad = stream.read_all()
        assert [m.format for m in stream.members] == ["xlsx"]
        assert stream.stats.rows_read == 4
        tables = {table for table, _ in stream.plans_seen}
    assert not bad
    assert tables == {"Patienter", "Ark2"}
    anne, bo, carl, dora = records
    assert (anne.cpr, anne.birth_date, anne.phone) == ("0102801234", "1980-02-01", "21345678")
    assert (bo.cpr, bo.birth_date, bo.phone) == ("151275-1234", "1975-12-16", "21345679")
    assert (carl.cpr, carl.birth_date, carl.phone) == ("3112991234", "31.12.1999", "+4521345680")
    assert (dora.cpr, dora.phone, dora.email) == (
        "0507051234",
        "+45 21 34 56 81",
        "dora@example.dk",
    )
    assert anne.categories == Category.NATIONAL_ID | Category.CONTACT | Category.MEDICATION
    for record in records:
        kinds = {key.kind.value for key in match_keys(record).keys}
        assert "cpr" in kinds
        assert "phone" in kinds


def test_a_value_right_of_the_last_header_gets_a_column_of_its_own(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "leak.xlsx", LEAK)
    with open_records(path) as stream:
        rows = [row for row in stream.raw_rows() if isinstance(row, RawRow)]
    carl = next(row for row in rows if row.values[1] == "Carl")
    assert carl.headers == (*HEADER, "column_8")
    assert carl.values[-1] == "ekstra"
    assert rows[0].headers == tuple(HEADER)


def test_hidden_sheets_are_read_and_chart_sheets_skipped(tmp_path: Path) -> None:
    path = tmp_path / "mixed.xlsx"
    with xlsxwriter.Workbook(str(path)) as book:
        shown = book.add_worksheet("Oversigt")
        shown.write_row(0, 0, ["Antal", "Region"])
        hidden = book.add_worksheet("Skjult")
        hidden.write_row(0, 0, ["CPR-nr.", "Telefon"])
        hidden.write_row(1, 0, [102801234, 21345678])
        hidden.hide()
        chart = book.add_chart({"type": "column"})
        chart.add_series({"values": "=Skjult!$B$2:$B$2"})
        book.add_chartsheet("Graf").set_chart(chart)
    with open_records(path) as stream:
        (record,), bad = stream.read_all()
        assert {table for table, _ in stream.plans_seen} == {"Skjult"}
    assert not bad
    assert (record.cpr, record.phone) == ("0102801234", "21345678")


def test_a_sheet_without_a_header_gets_positional_columns(tmp_path: Path) -> None:
    rows: Rows = [[102801234, "anne@example.dk"]]
    path = _workbook(tmp_path / "raw.xlsx", {"Ark1": rows})
    mapping = ColumnMapping.from_document({"columns": {"column_1": "cpr", "column_2": "email"}})
    with open_records(path, mapping=mapping) as stream:
        (record,), bad = stream.read_all()
    assert not bad
    assert (record.cpr, record.email) == ("0102801234", "anne@example.dk")


def test_the_mapping_decides_which_numbers_are_cpr_numbers(tmp_path: Path) -> None:
    rows: Rows = [["Kundenr", "Personnummer"], [123456789, 102801234]]
    path = _workbook(tmp_path / "kunder.xlsx", {"Ark1": rows})
    mapping = ColumnMapping.from_document({"columns": {"Kundenr": "patient_id"}})
    with open_records(path, mapping=mapping) as stream:
        (record,), _ = stream.read_all()
    assert (record.patient_id, record.cpr) == ("123456789", "0102801234")


def test_ods_and_xls_are_read_like_xlsx(tmp_path: Path) -> None:
    ods = tmp_path / "export.ods"
    ods.write_bytes(
        _ods([["Patientliste"], [], ["CPR-nr.", "Fødselsdato"], [102801234, "1980-02-01"]])
    )
    with open_records(ods) as stream:
        (record,), bad = stream.read_all()
        assert stream.members[0].format == "ods"
    assert not bad
    assert (record.cpr, record.birth_date) == ("0102801234", "1980-02-01")
    # patients.xls was written with xlwt 1.3.0: a title, typed CPR/phone, a date cell, a serial.
    with open_records(DATA / "patients.xls") as stream:
        (anne, bo), bad = stream.read_all()
        assert stream.members[0].format == "xls"
    assert not bad
    assert (anne.cpr, anne.birth_date, anne.phone) == ("0102801234", "1980-02-01", "21345678")
    assert (bo.cpr, bo.birth_date, bo.phone) == ("1512751234", "1975-12-16", "+4522334455")


def test_a_workbook_inside_a_zip_or_gzip_is_read_too(tmp_path: Path) -> None:
    workbook = _workbook(tmp_path / "leak.xlsx", LEAK).read_bytes()
    archive = tmp_path / "leak.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("export/leak.xlsx", workbook)
        handle.writestr("export/readme.txt", "Navn;CPR-nr.\nEva Falk;0808661234\n")
    with open_records(archive) as stream:
        records, bad = stream.read_all()
        assert [m.format for m in stream.members] == ["xlsx", "csv"]
    assert not bad
    assert [r.cpr for r in records] == ["0102801234", "151275-1234", "3112991234", "0507051234",
                                        "0808661234"]  # fmt: skip
    packed = tmp_path / "leak.xlsx.gz"
    packed.write_bytes(gzip.compress(workbook))
    with open_records(packed) as stream:
        assert len(stream.read_all()[0]) == 4
        assert stream.container == "gzip"


def test_a_broken_or_encrypted_workbook_is_a_bad_row_not_a_crash(tmp_path: Path) -> None:
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as handle:
        handle.writestr("[Content_Types].xml", "<Types/>")
        handle.writestr("xl/workbook.xml", "<not a workbook")
    with open_records(broken) as stream:
        _, bad = stream.read_all()
    assert bad == [BadRow("spreadsheet_unreadable", 0, "")]
    ole2 = tmp_path / "encrypted.xlsx"  # password-protected OOXML is an OLE2 file
    ole2.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
    with open_records(ole2) as stream:
        _, bad = stream.read_all()
    assert [b.reason for b in bad] in (["spreadsheet_unreadable"], ["spreadsheet_encrypted"])


def test_inspect_shows_sheets_as_tables_and_no_cell_value(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "leak.xlsx", LEAK)
    report = inspect(path)
    assert report.sample_complete
    assert report.estimated_rows == 4
    assert ("Patienter", "CPR-nr.", "cpr") in {
        (c.table, c.header, c.target) for c in report.columns
    }
    assert report.key_counts["cpr"] == 4
    text = report.render()
    for value in ("0102801234", "102801234", "anne@example.dk", "21345678"):
        assert value not in text


@pytest.mark.parametrize(
    ("value", "cpr", "phone", "born"),
    [
        (102801234, "0102801234", "+102801234", "102801234"),
        (102801234.0, "0102801234", "+102801234", "102801234"),
        (1512751234, "1512751234", "+1512751234", "1512751234"),
        (21345678.0, "21345678", "21345678", "21345678"),
        (27744, "27744", "27744", "1975-12-16"),
        (27744.5, "27744.5", "27744.5", "27744.5"),
        (dt.datetime(1980, 2, 1), "1980-02-01", "1980-02-01", "1980-02-01"),
        (dt.date(1980, 2, 1), "1980-02-01", "1980-02-01", "1980-02-01"),
        ("010280-1234", "010280-1234", "010280-1234", "010280-1234"),
        (True, "true", "true", "true"),
        (None, None, None, None),
    ],
)
def test_typed_cells_by_column(value: object, cpr: str, phone: str, born: str) -> None:
    assert cpr_text(value) == cpr  # type: ignore[arg-type]
    assert phone_text(value) == phone  # type: ignore[arg-type]
    assert birth_date_text(value) == born  # type: ignore[arg-type]


def _ods(rows: list[list[object]]) -> bytes:
    """A minimal OpenDocument spreadsheet (no library writes one for us)."""
    ns = (
        'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    )

    def cell(value: object) -> str:
        if isinstance(value, int | float):
            kind = f'office:value-type="float" office:value="{value}"'
        else:
            kind = 'office:value-type="string"'
        return f"<table:table-cell {kind}><text:p>{value}</text:p></table:table-cell>"

    body = "".join(
        "<table:table-row>" + "".join(cell(v) for v in row) + "</table:table-row>" for row in rows
    )
    content = (
        f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns} '
        'office:version="1.2"><office:body><office:spreadsheet><table:table table:name="Ark1">'
        f"{body}</table:table></office:spreadsheet></office:body></office:document-content>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.spreadsheet"
        )
        archive.writestr("content.xml", content)
        archive.writestr("META-INF/manifest.xml", _MANIFEST)
    return buffer.getvalue()


_MANIFEST = (
    '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest='
    '"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
    '<manifest:file-entry manifest:full-path="/" manifest:media-type='
    '"application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry '
    'manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>'
)
