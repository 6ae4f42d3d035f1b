"""Spreadsheets (.xlsx/.xlsm, .xlsb, .xls, .ods): every sheet, as rows of text.

Leaks circulate as workbooks more than as anything else, and a workbook is
not a table: it has several sheets, a title block above the header row
("Patientliste", "Udtrukket 01-09-2025", an empty row), and typed cells.
So, per sheet (the sheet name is the rows' table, as an SQL table is):

* the **header row** is the row among the first `HEADER_SEARCH_ROWS` that
  the column mapping recognises most columns of (the earliest on a tie);
  when none is recognised, the first row of two or more text cells that do
  not look like values; when there is none either, the sheet has no header
  and its columns are ``column_1``, ``column_2``, …. Rows above the header
  are the title block and are not rows of the table;
* each **cell** is turned back into the text a person typed, by what its
  column holds (`breachmatch.readers.spreadsheet_cells`: a CPR number that
  lost its leading zero, a phone typed as a number, a date cell);
* empty rows are skipped; a cell right of the last header holding a value
  gets a ``column_<n>`` header of its own rather than being dropped.

The library is python-calamine (Rust): about 170,000 rows/s where openpyxl's
streaming mode manages 28,000 (100,000 rows × 10 columns, this machine). It
holds one sheet at a time in memory, about 0.75 KiB per 10-column row — at
most ~750 MiB for a sheet at Excel's 1,048,576-row limit — so a workbook's
sheets are loaded one after another, never all at once. The workbook's bytes
are held in memory while it is read (at most `MAX_WORKBOOK_BYTES`): a zip
member or a compressed file cannot be handed to the library any other way,
and nothing from a leak is ever written to disk.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from python_calamine import CalamineError, CalamineWorkbook, PasswordError, SheetTypeEnum

from breachmatch.columns import ColumnMapping, looks_like_data
from breachmatch.readers.items import BadRow, RawRow
from breachmatch.readers.spreadsheet_cells import Cell, converter_for

if TYPE_CHECKING:  # containers imports this module to recognise a workbook
    from breachmatch.readers.containers import MemberBytes

#: Rows searched for the header below a title block.
HEADER_SEARCH_ROWS = 30
#: Largest workbook file read (its cells take several times this in memory).
MAX_WORKBOOK_BYTES = 512 << 20

_CHUNK_BYTES = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ODS_MIMETYPE = b"application/vnd.oasis.opendocument.spreadsheet"
_Convert = Callable[[Cell], str | None]


def may_be_workbook(head: bytes) -> bool:
    """True when bytes starting with `head` could be a workbook (a zip or an OLE2 file)."""
    return head.startswith((_ZIP_MAGIC, _OLE2_MAGIC))


def workbook_kind(archive: zipfile.ZipFile) -> str | None:
    """ "xlsx", "xlsb" or "ods" when the zip archive is a workbook, else None."""
    names = set(archive.namelist())
    if "xl/workbook.xml" in names:
        return "xlsx"
    if "xl/workbook.bin" in names:
        return "xlsb"
    if "mimetype" in names:
        try:
            with archive.open("mimetype") as handle:
                if handle.read(len(_ODS_MIMETYPE)) == _ODS_MIMETYPE:
                    return "ods"
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError):
            return None
    return None


def _sniff(data: bytes) -> str | None:
    if data.startswith(_OLE2_MAGIC):
        return "xls"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return workbook_kind(archive)
    except (zipfile.BadZipFile, OSError, EOFError):
        return None


def open_workbook(
    data: MemberBytes, member: str, mapping: ColumnMapping
) -> tuple[str | None, Iterator[RawRow | BadRow]]:
    """The workbook kind ("xlsx", "ods", …; None if the bytes are no workbook) and its rows."""
    content = _read_up_to(data, MAX_WORKBOOK_BYTES + 1)
    if len(content) > MAX_WORKBOOK_BYTES:
        return "spreadsheet", iter((BadRow("spreadsheet_too_large", 0, member),))
    kind = _sniff(content)
    if kind is None:
        return None, iter((BadRow("unrecognised_format", 0, member),))
    return kind, _rows(content, member, mapping)


def _read_up_to(data: MemberBytes, limit: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < limit:
        chunk = data.read(min(_CHUNK_BYTES, limit - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return bytes(buffer)


def _rows(content: bytes, member: str, mapping: ColumnMapping) -> Iterator[RawRow | BadRow]:
    try:
        workbook = CalamineWorkbook.from_filelike(io.BytesIO(content))
    except PasswordError:
        yield BadRow("spreadsheet_encrypted", 0, member)
        return
    except (CalamineError, ValueError, OSError):
        yield BadRow("spreadsheet_unreadable", 0, member)
        return
    row = 0
    with workbook:
        for sheet in workbook.sheets_metadata:
            if sheet.typ != SheetTypeEnum.WorkSheet:  # charts and macros hold no rows
                continue
            name = sheet.name
            try:
                cells = workbook.get_sheet_by_name(name).iter_rows()
            except (CalamineError, ValueError):
                row += 1
                yield BadRow("spreadsheet_sheet_unreadable", row, member)
                continue
            for item in _SheetRows(name, mapping).rows(cells):
                row += 1
                item.row = row
                yield item


def _is_empty(value: Cell) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text_cells(cells: Sequence[Cell]) -> list[str] | None:
    """The row as header names, or None when a cell is typed or looks like a value."""
    names: list[str] = []
    for value in cells:
        if _is_empty(value):
            names.append("")
        elif isinstance(value, str) and not looks_like_data(value):
            names.append(value.strip())
        else:
            return None
    return names if sum(bool(n) for n in names) >= 2 else None


class _SheetRows:
    """One sheet: find its header, then turn each row into cell strings."""

    def __init__(self, sheet: str, mapping: ColumnMapping) -> None:
        self._sheet = sheet
        self._mapping = mapping
        self._headers: tuple[str, ...] = ()
        self._converters: list[_Convert] = []
        # Header tuples widened for rows with values right of the last header.
        self._wider: dict[int, tuple[str, ...]] = {}

    def rows(self, cells: Iterator[Sequence[Cell]]) -> Iterator[RawRow]:
        head: list[Sequence[Cell]] = []
        for values in cells:
            if all(_is_empty(v) for v in values):
                continue
            head.append(values)
            if len(head) == HEADER_SEARCH_ROWS:
                break
        if not head:
            return
        start = self._choose_header(head)
        for values in head[start:]:
            yield self._row(values)
        for values in cells:
            if not all(_is_empty(v) for v in values):
                yield self._row(values)

    def _recognised(self, names: list[str]) -> int:
        return sum(
            bool(n) and self._mapping.decide(self._sheet, n).target is not None for n in names
        )

    def _choose_header(self, head: list[Sequence[Cell]]) -> int:
        """Set the headers; return the index of the first data row in `head`."""
        candidates = [(i, names) for i, row in enumerate(head) if (names := _text_cells(row))]
        best: tuple[int, list[str]] | None = None
        best_score = 0
        for index, names in candidates:
            score = self._recognised(names)
            if score > best_score:
                best, best_score = (index, names), score
        if best is None and candidates:
            best = candidates[0]
        if best is None:
            self._set_headers([])
            return 0
        index, names = best
        self._set_headers(names)
        return index + 1

    def _set_headers(self, names: list[str]) -> None:
        while names and not names[-1]:
            names = names[:-1]
        self._headers = tuple(n or f"column_{i}" for i, n in enumerate(names, start=1))
        self._converters = [self._converter(h) for h in self._headers]

    def _converter(self, header: str) -> _Convert:
        target = self._mapping.decide(self._sheet, header).target
        return converter_for(target.field if target is not None else None)

    def _widen(self, width: int) -> tuple[str, ...]:
        headers = self._wider.get(width)
        if headers is None:
            extra = range(len(self._headers) + 1, width + 1)
            headers = self._headers + tuple(f"column_{i}" for i in extra)
            self._wider[width] = headers
            self._converters += [self._converter(h) for h in headers[len(self._converters) :]]
        return headers

    def _row(self, values: Sequence[Cell]) -> RawRow:
        width = len(values)
        while width > len(self._headers) and _is_empty(values[width - 1]):
            width -= 1
        headers = self._headers if width <= len(self._headers) else self._widen(width)
        converters = self._converters
        texts = [converters[i](values[i]) if i < width else "" for i in range(len(headers))]
        return RawRow(self._sheet, headers, texts, 0)
