"""The uniform entry point: any supported input → a stream of records.

`open_records` opens a file or binary stream, unwraps gzip/bz2/xz/zip,
decides each member's encoding and format (``auto``: from content), runs the
matching reader and maps its rows through a `ColumnPlan` compiled once per
header list. Iterating the returned `RecordStream` yields `PersonRecord` or
`BadRow`; `RecordStream.raw_rows` yields the unmapped rows instead (FHIR
Patients flattened to dotted paths) for inspection. Ragged CSV rows are
attributed to their columns (`breachmatch.readers.repair`) before either,
and a bad row's identifiers recognisable by value ride along on it
(`BadRow.salvaged`, `breachmatch.readers.salvage`). Either way the stream
keeps counts (`ReadStats`) and byte progress (`bytes_read` of
`total_bytes`, compressed bytes for compressed input) for progress bars.

Memory is bounded by one row (at most the window limit), never by the input.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from breachmatch.closing import Closeable
from breachmatch.columns import ColumnMapping, ColumnPlan
from breachmatch.readers.containers import CountingSource, Member, MemberBytes, open_container
from breachmatch.readers.csv_reader import read_csv
from breachmatch.readers.detect import FORMATS, sniff_delimiter, sniff_format, sniff_sql_dialect
from breachmatch.readers.encoding import (
    SAMPLE_BYTES,
    check_encoding,
    decode_sample,
    open_text,
    sniff_encoding,
)
from breachmatch.readers.fhir_patient import UnknownSystems, patient_record
from breachmatch.readers.fhir_reader import read_fhir_ndjson
from breachmatch.readers.flatten import flat_row
from breachmatch.readers.items import (
    BadRow,
    Mapped,
    PatientResource,
    RawRow,
    ReaderError,
    SkippedResource,
)
from breachmatch.readers.json_reader import read_json_document, read_json_lines
from breachmatch.readers.repair import PlanFor, attribute_ragged
from breachmatch.readers.salvage import salvage
from breachmatch.readers.spreadsheet_reader import may_be_workbook, open_workbook
from breachmatch.readers.sql_lexer import DIALECTS
from breachmatch.readers.sql_reader import read_sql
from breachmatch.records import PersonRecord

_PLAN_CACHE_LIMIT = 1024
_PLANS_SEEN_LIMIT = 256


@dataclass
class ReadStats:
    """Running counts; live while the stream is iterated.

    Every record of the input is counted exactly once: ``rows_read`` =
    clean rows + ``repaired`` + ``bad_rows`` (`clean_rows` is the rest).
    ``salvaged`` counts bad rows that still gave identifiers by value.
    """

    #: Rows (and FHIR Patients) seen: clean, repaired and bad.
    rows_read: int = 0
    bad_rows: Counter[str] = field(default_factory=Counter)
    #: Rows read only after mending them, by what was mended.
    repaired: Counter[str] = field(default_factory=Counter)
    #: Bad rows whose identifiers were recognised by value.
    salvaged: int = 0
    #: Non-Patient FHIR resources and non-array JSON members, by type.
    skipped_resources: Counter[str] = field(default_factory=Counter)
    #: FHIR Patients with an identifier in a system no rule recognises, per system.
    unknown_identifier_systems: UnknownSystems = field(default_factory=UnknownSystems)

    @property
    def clean_rows(self) -> int:
        return self.rows_read - self.repaired.total() - self.bad_rows.total()


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """What was decided about one member of the input."""

    name: str
    container: str
    format: str
    encoding: str | None = None
    delimiter: str | None = None
    dialect: str | None = None


def _unreadable(member: Member, kind: str, reason: str) -> tuple[MemberInfo, Iterator[Mapped]]:
    member.data.close()
    info = MemberInfo(member.name, member.container, kind)
    return info, iter((BadRow(reason, 0, member.name),))


def _open_member(
    member: Member,
    requested: str,
    encoding: str | None,
    plan_for: PlanFor,
    mapping: ColumnMapping,
) -> tuple[MemberInfo, Iterator[Mapped]]:
    """Sniff one member and start its reader (lazily: nothing is read past the sample).

    `encoding` overrides the sniffed one; `plan_for` gives ragged-row
    attribution the column plan of a header list. A workbook is recognised
    by its bytes whatever `requested` says: its cells are typed, so its
    reader needs the `mapping` to know which column is a CPR number or a phone.
    """
    data = member.data
    sample_bytes = data.head(SAMPLE_BYTES)
    if data.error is not None and not sample_bytes:
        return _unreadable(member, "unreadable", data.error)
    if may_be_workbook(sample_bytes):
        kind, rows = open_workbook(data, member.name, mapping)
        info = MemberInfo(member.name, member.container, kind or "unrecognised")
        return info, _closing(rows, data, member)
    encoding = encoding or sniff_encoding(sample_bytes, data.fits_in_head)
    sample = decode_sample(sample_bytes, encoding)
    fmt = sniff_format(sample, data.fits_in_head) if requested == "auto" else requested
    if fmt is None:
        return _unreadable(member, "unrecognised", "unrecognised_format")
    text = open_text(data, encoding)
    delimiter = dialect = None
    items: Iterator[Mapped]
    if fmt in ("csv", "tsv"):
        delimiter = "\t" if fmt == "tsv" else sniff_delimiter(sample)
        fmt = "csv"
        items = attribute_ragged(read_csv(text, delimiter, member.name), plan_for)
    elif fmt == "sql":
        dialect = sniff_sql_dialect(sample)
        items = read_sql(text, DIALECTS[dialect], member.name)
    elif fmt == "json":
        items = read_json_document(text, member.name)
    elif fmt == "jsonl":
        items = read_json_lines(text, member.name)
    else:
        items = read_fhir_ndjson(text, member.name)
    info = MemberInfo(member.name, member.container, fmt, encoding, delimiter, dialect)
    return info, _closing(items, text, member)


def _closing(
    items: Iterator[Mapped], text: IO[str] | MemberBytes, member: Member
) -> Iterator[Mapped]:
    """The member's items, then a bad row if its container broke; closes the member."""
    try:
        yield from items
        if member.data.error is not None:
            yield BadRow(member.data.error, 0, member.name)
    finally:
        text.close()


class RecordStream(Closeable):
    """Records (or raw rows) of one input; see `open_records`.

    Iterate it once, either as records (``for r in stream``) or via
    `raw_rows`; both draw from the same underlying reader.
    """

    def __init__(
        self,
        source: Path | IO[bytes],
        format: str,
        mapping: ColumnMapping,
        encoding: str | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ReaderError(f"unknown format; expected one of {', '.join(FORMATS)}")
        self._encoding = check_encoding(encoding) if encoding else None
        self._owned: IO[bytes] | None = None
        binary: IO[bytes]
        if isinstance(source, Path):
            self._owned = binary = source.open("rb")
            self.total_bytes: int | None = os.fstat(binary.fileno()).st_size
        else:
            binary = source
            self.total_bytes = _remaining_size(binary)
        self._counter = CountingSource(binary)
        self._requested = format
        self._mapping = mapping
        self.stats = ReadStats()
        self.members: list[MemberInfo] = []
        #: Plans compiled so far, by (table, headers), for inspection (bounded).
        self.plans_seen: dict[tuple[str, tuple[str, ...]], ColumnPlan] = {}
        self._plans: dict[tuple[str, tuple[str, ...]], ColumnPlan] = {}
        try:
            self.container, members = open_container(self._counter)
            first = next(members, None)
            opened = (
                _open_member(first, format, self._encoding, self.plan, mapping)
                if first is not None
                else None
            )
            if opened is not None:
                self.members.append(opened[0])
        except BaseException:
            if self._owned is not None:
                self._owned.close()
            raise
        first_items = opened[1] if opened is not None else iter(())
        self._items = self._counted(self._all_items(first_items, members))
        self._records = self._mapped()

    @property
    def format(self) -> str:
        """The first member's format ("empty" for an archive without members)."""
        return self.members[0].format if self.members else "empty"

    @property
    def mapping(self) -> ColumnMapping:
        return self._mapping

    @property
    def bytes_read(self) -> int:
        return self._counter.count

    def __iter__(self) -> Iterator[PersonRecord | BadRow]:
        return self._records

    def read_all(self) -> tuple[list[PersonRecord], list[BadRow]]:
        """Drain the stream into (records, bad rows).

        Only for inputs known to be small (a sample, a test file): a dump is
        iterated, never held.
        """
        records: list[PersonRecord] = []
        bad: list[BadRow] = []
        for item in self:
            if isinstance(item, BadRow):
                bad.append(item)
            else:
                records.append(item)
        return records, bad

    def raw_rows(self) -> Iterator[RawRow | BadRow]:
        """Unmapped rows; FHIR Patients appear flattened as table "Patient"."""
        for item in self._items:
            if isinstance(item, PatientResource):
                yield flat_row("Patient", item.resource, item.row)
            else:
                yield item

    def plan(self, table: str, headers: tuple[str, ...]) -> ColumnPlan:
        """The compiled plan for a header list (cached)."""
        key = (table, headers)
        plan = self._plans.get(key)
        if plan is None:
            plan = ColumnPlan.for_headers(headers, self._mapping, table)
            if len(self._plans) >= _PLAN_CACHE_LIMIT:
                self._plans.clear()
            self._plans[key] = plan
            if len(self.plans_seen) < _PLANS_SEEN_LIMIT:
                self.plans_seen.setdefault(key, plan)
        return plan

    def _all_items(self, first: Iterator[Mapped], rest: Iterator[Member]) -> Iterator[Mapped]:
        yield from first
        for member in rest:
            info, items = _open_member(
                member, self._requested, self._encoding, self.plan, self._mapping
            )
            self.members.append(info)
            yield from items

    def _counted(
        self, items: Iterator[Mapped]
    ) -> Generator[RawRow | PatientResource | BadRow, None, None]:
        stats = self.stats
        for item in items:
            if type(item) is RawRow:
                stats.rows_read += 1
                if item.repair:
                    stats.repaired[item.repair] += 1
                yield item
            elif isinstance(item, SkippedResource):
                stats.skipped_resources[item.resource_type] += 1
            elif isinstance(item, BadRow):
                stats.rows_read += 1
                stats.bad_rows[item.reason] += 1
                yield item
            else:
                stats.rows_read += 1
                yield item

    def _mapped(self) -> Generator[PersonRecord | BadRow, None, None]:
        facility, fhir = self._mapping.facility, self._mapping.fhir
        unknown_systems = self.stats.unknown_identifier_systems
        plan: ColumnPlan | None = None
        headers: tuple[str, ...] = ()
        table = ""
        for item in self._items:
            if type(item) is RawRow:
                if item.headers is not headers or item.table != table or plan is None:
                    headers, table = item.headers, item.table
                    plan = self.plan(table, headers)
                yield plan.record(item.values)
            elif isinstance(item, PatientResource):
                yield patient_record(item.resource, fhir, facility, unknown_systems)
            elif isinstance(item, BadRow):
                if item.cells and (found := salvage(item.cells)) is not None:
                    self.stats.salvaged += 1
                    item = replace(item, salvaged=found)
                yield item

    def close(self) -> None:
        """Stop reading and release the input (a caller's stream is left open)."""
        self._records.close()
        self._items.close()
        if self._owned is not None:
            self._owned.close()


def _remaining_size(binary: IO[bytes]) -> int | None:
    """Bytes from the current position to the end, when the stream can tell."""
    try:
        if not binary.seekable():
            return None
        here = binary.tell()
        end = binary.seek(0, os.SEEK_END)
        binary.seek(here)
    except OSError:
        return None
    return end - here


def open_records(
    source: Path | IO[bytes],
    format: str = "auto",
    mapping: ColumnMapping | None = None,
    encoding: str | None = None,
) -> RecordStream:
    """Open a dump or export for streaming.

    `format` is one of ``auto`` (decide per member from its content), ``csv``,
    ``tsv``, ``json``, ``jsonl``, ``sql`` or ``fhir``; `encoding` (any codec
    name Python knows) overrides the sniffed text encoding of every member.
    Raises `ReaderError` for an unknown format or encoding or an input
    container that cannot be opened; every row-level problem is yielded as a
    `BadRow` instead.
    """
    return RecordStream(source, format, mapping or ColumnMapping(), encoding)
