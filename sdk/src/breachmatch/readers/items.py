"""What the format readers yield, before column mapping.

Readers only split bytes into rows; they never decide what a column means.
A tabular reader yields `RawRow`s (headers plus cell strings), the FHIR reader
yields `PatientResource`s and counts other resources as `SkippedResource`,
and any row that cannot be read becomes a `BadRow` that says *why* and
*where* — never *what* it contained, because its content is patient data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


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


@dataclass(slots=True)
class RawRow:
    """One row as found: cell strings (None for SQL NULL / JSON null) in header order.

    ``table`` is the SQL table or the JSON document key the row came from
    ("" for CSV, JSON lines and top-level JSON arrays). ``headers`` is one
    tuple object shared by every row with the same columns, so consumers can
    cache per-header work by identity.
    """

    table: str
    headers: tuple[str, ...]
    values: Sequence[str | None]
    row: int

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
class PatientResource:
    """A FHIR R4 Patient resource (parsed JSON) and its row ordinal."""

    resource: dict[str, Any]
    row: int


@dataclass(frozen=True, slots=True)
class SkippedResource:
    """A FHIR resource that is not a Patient (counted by type, not yielded)."""

    resource_type: str


Item = RawRow | PatientResource | SkippedResource | BadRow
