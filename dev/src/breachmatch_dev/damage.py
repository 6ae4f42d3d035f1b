"""Leak dumps damaged the way real ones are, and what a reader must still make of them.

Real dumps arrive with a stray quote, an unquoted ``;`` inside an address or
a note, rows whose trailing empty cells were left out, CR-only line endings,
a NUL byte, a cut first line. Each damage here starts from the clean rows of
a generated leak (`breachmatch_dev.synthetic`, read back with the csv
module) and returns the damaged bytes together with, per row, what a correct
reader yields — so a test can demand exact per-row results rather than
"fewer errors":

* ``clean`` — the row as written;
* ``repaired`` — the same identifiers and categories, after the repair named;
* ``bad`` — an unreadable row with its reason, and the record of identifiers
  still recognisable in it by value (or None).

The expected record of a row comes from the meaning of the leak's headers
written out here (`HEADER_MEANING`), not from the column mapping under test.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from breachmatch.records import Category, PersonRecord

#: Leak header → (record field or None, category its non-empty value exposes).
HEADER_MEANING: dict[str, tuple[str | None, Category]] = {
    "Navn": ("full_name", Category(0)),
    "CPR-nr.": ("cpr", Category.NATIONAL_ID),
    "Fødselsdato": ("birth_date", Category(0)),
    "Telefon": ("phone", Category.CONTACT),
    "E-mail": ("email", Category.CONTACT),
    "Adresse": ("address", Category.CONTACT),
    "Diagnose": (None, Category.DIAGNOSES),
    "Medicin": (None, Category.MEDICATION),
    "Henvisning": (None, Category.REFERRALS),
    "Notat": (None, Category.FREE_TEXT),
}
DELIMITER = ";"
ENCODING = "cp1252"
_NEEDS_QUOTES = re.compile(r'[;"\r\n]')

Kind = Literal["clean", "repaired", "bad"]


@dataclass(frozen=True)
class Leak:
    """A generated leak's header and clean rows, as the csv module reads them."""

    headers: list[str]
    rows: list[list[str]]

    @classmethod
    def read(cls, path: Path) -> Leak:
        with path.open(encoding=ENCODING, newline="") as handle:
            header, *rows = csv.reader(handle, delimiter=DELIMITER)
        unknown = set(header) - set(HEADER_MEANING)
        if unknown:
            raise ValueError(f"generated leak has headers damage.py does not know: {unknown}")
        return cls(header, rows)

    def record(self, cells: list[str]) -> PersonRecord:
        """What the row means, by `HEADER_MEANING` (short rows: missing cells are empty)."""
        record = PersonRecord()
        categories = Category(0)
        for header, cell in zip(self.headers, cells, strict=False):
            name, category = HEADER_MEANING[header]
            value = cell.strip()
            if not value:
                continue
            categories |= category
            if name is not None:
                setattr(record, name, value)
        record.categories = categories
        return record


@dataclass(frozen=True)
class Outcome:
    """What a correct reader yields for one row of a damaged dump."""

    kind: Kind
    #: The repair (``repaired``) or bad-row reason (``bad``); "" for ``clean``.
    code: str = ""
    #: The row's record (``clean``/``repaired``) or what salvage finds (``bad``).
    record: PersonRecord | None = None


@dataclass(frozen=True)
class Damaged:
    """A damaged dump and the outcome of each of its rows, in file order."""

    name: str
    data: bytes
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, kind: Kind) -> dict[str, int]:
        counts: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.kind == kind:
                counts[outcome.code] = counts.get(outcome.code, 0) + 1
        return counts


def _csv_bytes(headers: list[str], rows: list[list[str]], newline: str = "\r\n") -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=DELIMITER, lineterminator=newline)
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue().encode(ENCODING)


def _line(cells: list[str], damaged: int | None = None) -> str:
    """A row joined by hand, so the `damaged` cell stays as broken as it was made.

    Every other cell is quoted as the csv module would (a journal note may
    hold a quoted ``;``): only the damage under test may be damaged.
    """
    return DELIMITER.join(
        cell if i == damaged or not _NEEDS_QUOTES.search(cell) else _quoted(cell)
        for i, cell in enumerate(cells)
    )


def _quoted(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def baseline(leak: Leak) -> list[Outcome]:
    """The outcomes of the clean dump: a short row (the generator's broken one) is padded."""
    width = len(leak.headers)
    return [
        Outcome("clean", "", leak.record(cells))
        if len(cells) == width
        else Outcome("repaired", "csv_short_row_padded", leak.record(cells))
        for cells in leak.rows
    ]


def _rewrite(
    leak: Leak,
    name: str,
    change: Callable[[list[str]], tuple[str, str] | None],
    newline: str = "\r\n",
) -> Damaged:
    """Each row written by hand; `change` returns (line, repair code) for a damaged row."""
    lines = [_line(leak.headers)]
    outcomes = baseline(leak)
    for i, cells in enumerate(leak.rows):
        changed = change(cells) if outcomes[i].kind == "clean" else None
        if changed is None:
            buffer = io.StringIO()
            csv.writer(buffer, delimiter=DELIMITER, lineterminator="").writerow(cells)
            lines.append(buffer.getvalue())
            continue
        line, code = changed
        lines.append(line)
        outcomes[i] = Outcome("repaired", code, outcomes[i].record)
    data = (newline.join(lines) + newline).encode(ENCODING)
    return Damaged(name, data, outcomes)


def _column(leak: Leak, header: str) -> int:
    return leak.headers.index(header)


def stray_quote(leak: Leak, row: int = 10) -> Damaged:
    """One unbalanced ``"`` opening the first non-empty cell of data row `row`."""
    target = leak.rows[row - 1]

    def change(cells: list[str]) -> tuple[str, str] | None:
        if cells is not target:
            return None
        at = next(i for i, cell in enumerate(cells) if cell)
        return _line([*cells[:at], '"' + cells[at], *cells[at + 1 :]], at), "csv_stray_quote"

    return _rewrite(leak, "one unbalanced quote", change)


def delimiter_in(leak: Leak, header: str) -> Damaged:
    """An unquoted ``;`` inside every value of column `header` (at its first space)."""
    column = _column(leak, header)

    def change(cells: list[str]) -> tuple[str, str] | None:
        value = cells[column]
        if " " not in value:
            return None
        broken = value.replace(", ", "; ", 1) if ", " in value else value.replace(" ", "; ", 1)
        line = _line([*cells[:column], broken, *cells[column + 1 :]], column)
        return line, "csv_overflow_joined"

    return _rewrite(leak, f"unquoted ; in {header}", change)


def short_rows(leak: Leak) -> Damaged:
    """Every row written without its trailing empty cells."""

    def change(cells: list[str]) -> tuple[str, str] | None:
        if cells[-1]:
            return None
        return _line(cells).rstrip(DELIMITER), "csv_short_row_padded"

    return _rewrite(leak, "trailing empty cells left out", change)


def cr_only(leak: Leak) -> Damaged:
    """Old Mac line endings: a lone CR after every line."""
    return Damaged(
        "CR-only line endings", _csv_bytes(leak.headers, leak.rows, "\r"), baseline(leak)
    )


def nul_byte(leak: Leak, row: int = 5) -> Damaged:
    """One NUL byte in the middle of the first non-empty cell of data row `row`."""
    target = leak.rows[row - 1]

    def change(cells: list[str]) -> tuple[str, str] | None:
        if cells is not target:
            return None
        at = next(i for i, cell in enumerate(cells) if cell)
        value = cells[at]
        half = len(value) // 2
        cells = [*cells[:at], value[:half] + "\x00" + value[half:], *cells[at + 1 :]]
        return _line(cells), "csv_nul_removed"

    return _rewrite(leak, "one NUL byte", change)


def _json_object(leak: Leak, cells: list[str]) -> dict[str, str]:
    return {header: cell for header, cell in zip(leak.headers, cells, strict=True) if cell}


def _readable(leak: Leak, count: int) -> list[list[str]]:
    width = len(leak.headers)
    return [cells for cells in leak.rows if len(cells) == width][:count]


def jsonl_cut_first_line(
    leak: Leak, salvage: Callable[[list[str]], PersonRecord | None], count: int = 200
) -> Damaged:
    """JSON lines of `count` rows whose first line is cut in half.

    `salvage` says what by-value salvage makes of the complete string values
    left on the cut line (the rule lives in the reader; which strings survive
    the cut is what this damage knows).
    """
    rows = _readable(leak, count)
    lines = [json.dumps(_json_object(leak, cells), ensure_ascii=False) for cells in rows]
    cut = lines[0][: len(lines[0]) // 2]
    whole = [value for value in _json_object(leak, rows[0]).values() if json.dumps(value) in cut]
    outcomes = [Outcome("bad", "json_syntax", salvage(whole))]
    outcomes += [Outcome("clean", "", leak.record(cells)) for cells in rows[1:]]
    data = "\n".join([cut, *lines[1:]]).encode("utf-8") + b"\n"
    return Damaged("JSON lines, first line cut", data, outcomes)


def json_long_integer(leak: Leak, count: int = 200, digits: int = 5000) -> Damaged:
    """A JSON array of `count` rows, the third with an integer of `digits` digits."""
    rows = _readable(leak, count)
    documents = [_json_object(leak, cells) for cells in rows]
    documents[2] = {"x": "HUGE", **documents[2]}
    text = json.dumps(documents, ensure_ascii=False).replace('"HUGE"', "7" * digits, 1)
    outcomes = [Outcome("clean", "", leak.record(cells)) for cells in rows]
    return Damaged("JSON integer of 5,000 digits", text.encode(), outcomes)


# --- zip archives zipfile cannot describe --------------------------------------

_CENTRAL_SIGNATURE = b"PK\x01\x02"


def _zip(member: str, data: bytes) -> bytearray:
    info = zipfile.ZipInfo(member)  # a ZipInfo: writestr refuses an empty name given as text
    info.compress_type = zipfile.ZIP_DEFLATED
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, data)
    return bytearray(buffer.getvalue())


def zip_unsupported_version(data: bytes) -> bytes:
    """A zip whose member claims to need zip version 9.9."""
    archive = _zip("leak.csv", data)
    central = archive.index(_CENTRAL_SIGNATURE)
    struct.pack_into("<H", archive, central + 6, 99)
    return bytes(archive)


def zip_empty_member_name(data: bytes) -> bytes:
    """A zip whose only member has an empty name."""
    return bytes(_zip("", data))


def zip_bad_utf8_name(data: bytes) -> bytes:
    """A zip whose member name is flagged UTF-8 but is not."""
    archive = _zip("leak-X.csv", data)
    for signature, flags_at, name_at in ((b"PK\x03\x04", 6, 30), (_CENTRAL_SIGNATURE, 8, 46)):
        start = archive.index(signature)
        (flags,) = struct.unpack_from("<H", archive, start + flags_at)
        struct.pack_into("<H", archive, start + flags_at, flags | 0x800)
        archive[start + name_at + len("leak-")] = 0xFF
    return bytes(archive)
