"""What the format readers yield, before column mapping.

Readers only split bytes into rows; they never decide what a column means.
A tabular reader yields `RawRow`s (headers plus cell strings), the FHIR reader
yields `PatientResource`s and counts other resources as `SkippedResource`,
and any row that cannot be read becomes a `BadRow` that says *why* and
*where* — never *what* it contained, because its content is patient data.
A CSV row whose width does not match its header is yielded as a
`RaggedRow`: only the column mapping can tell which cell belongs where, so
`breachmatch.readers.repair` decides whether it becomes a repaired `RawRow`
or a `BadRow`.

Every record of the input is exactly one `RawRow`, `RaggedRow`,
`PatientResource`, `SkippedResource` or `BadRow`, which is what lets the
stream's counts add up to the records in the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from breachmatch.records import PersonRecord


class ReaderError(Exception):
    """The input as a whole cannot be read (an unreadable container, a bad option).

    Row-level problems are never raised; they are yielded as `BadRow`s.
    """


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that could not be read.

    ``reason`` is a short code (``csv_wrong_field_count``, ``json_syntax``,
    ``sql_unbalanced``, …); ``row`` is the 1-based ordinal of the row within
    its member (header excluded, bad rows included); ``member`` names the
    archive member ("" for a plain file).
    """

    reason: str
    row: int
    member: str = ""
    #: The row's text cut into cells (CSV cells, JSON string values), when
    #: any could be made out: the only input of by-value salvage
    #: (`breachmatch.readers.salvage`). Never shown, never compared.
    cells: tuple[str, ...] = field(default=(), repr=False, compare=False)
    #: What the stream could still recognise in `cells` by value (see
    #: `breachmatch.readers.salvage`): the row stays bad, but its patient is
    #: not lost.
    salvaged: PersonRecord | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class RawRow:
    """One row as found: cell strings (None for SQL NULL / JSON null) in header order.

    ``table`` is the SQL table or the JSON document key the row came from
    ("" for CSV, JSON lines and top-level JSON arrays). ``headers`` is one
    tuple object shared by every row with the same columns, so consumers can
    cache per-header work by identity. ``repair`` names what was mended to
    read the row (``csv_overflow_joined``, ``csv_nul_removed``, …; "" for a
    row read as written), so repaired rows are counted, never hidden.
    """

    table: str
    headers: tuple[str, ...]
    values: Sequence[str | None]
    row: int
    repair: str = ""

    def as_dict(self) -> dict[str, str | None]:
        """Header → value; a repeated header gets a " (2)", " (3)" suffix."""
        result: dict[str, str | None] = {}
        for header, value in zip(self.headers, self.values, strict=True):
            name, n = header, 1
            while name in result:
                n += 1
                name = f"{header} ({n})"
            result[name] = value
        return result


@dataclass(frozen=True, slots=True)
class RaggedRow:
    """A CSV row with more or fewer cells than its header (see `breachmatch.readers.repair`).

    ``delimiter`` is the one the cells were split on, so overflow cells can
    be joined back into the value they were cut from.
    """

    headers: tuple[str, ...]
    cells: tuple[str, ...] = field(repr=False)
    row: int
    member: str
    delimiter: str
    #: A repair already made while reading (e.g. NUL bytes removed), or "".
    repair: str = ""


@dataclass(frozen=True, slots=True)
class PatientResource:
    """A FHIR R4 Patient resource (parsed JSON) and its row ordinal."""

    resource: dict[str, Any]
    row: int


@dataclass(frozen=True, slots=True)
class SkippedResource:
    """A FHIR resource that is not a Patient (counted by type, not yielded)."""

    resource_type: str


#: What the stream maps to records: a CSV member's ragged rows already attributed.
Mapped = RawRow | PatientResource | SkippedResource | BadRow
Item = Mapped | RaggedRow
