"""``--inspect``: what a reader would do with an input, decided on a sample.

`inspect` reads the first rows (1000 by default; all of them with
``sample_rows=0``) exactly as a real run would and reports the chosen
format, encoding and delimiter, the column mapping per table, unmapped
columns, how many sampled records have each field and category, how many
give each kind of match key and how many values were invalid (by reason) or
fillers — the same normalisation ingest and the hospital SDK run — FHIR
identifiers in systems nobody recognised, rows repaired (by what was
mended) and bad rows (by reason, and how many of them still gave
identifiers by value). It writes nothing, and neither
the report nor its `render` ever contains a cell value: only counts,
decisions, and header names — and a header name that looks like a value (a
file without a header row, JSON keyed by CPR) is hidden.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from breachmatch.columns import ColumnMapping, display_name
from breachmatch.columns.targets import FIELD_NAMES
from breachmatch.identifiers import match_keys
from breachmatch.readers.fhir_patient import fhir_mapping_rows
from breachmatch.readers.stream import MemberInfo, RecordStream, open_records
from breachmatch.records import IDENTIFIER_FIELDS, PersonRecord

_IDENTIFYING = tuple(f for f in IDENTIFIER_FIELDS if f != "facility")
_WORKBOOKS = frozenset({"xlsx", "xlsb", "xls", "ods", "spreadsheet"})


@dataclass(frozen=True, slots=True)
class ColumnReport:
    """One column's decision: target label ("" when none) and why."""

    table: str
    header: str
    target: str
    source: str


@dataclass
class InspectReport:
    """The outcome of `inspect`; see the module docstring."""

    container: str
    members: list[MemberInfo]
    rows_sampled: int
    sample_complete: bool
    bytes_read: int
    total_bytes: int | None
    columns: list[ColumnReport]
    #: Tables where no column was recognised: their header names are not shown.
    tables_without_mapping: list[str]
    field_counts: dict[str, int]
    category_counts: dict[str, int]
    rows_without_identifiers: int
    bad_rows: dict[str, int] = field(default_factory=dict)
    repaired_rows: dict[str, int] = field(default_factory=dict)
    #: Bad rows whose identifiers were still recognised by value.
    salvaged_rows: int = 0
    skipped_resources: dict[str, int] = field(default_factory=dict)
    #: Records giving at least one key of each kind.
    key_counts: dict[str, int] = field(default_factory=dict)
    #: Values that gave no key, as "kind: reason" (fillers as "kind: placeholder").
    rejected_values: dict[str, int] = field(default_factory=dict)
    #: Records (readable rows) that give no match key at all.
    rows_without_keys: int = 0
    #: Records without a patient id (a hospital names them by row number).
    rows_without_patient_id: int = 0
    #: FHIR Patients with identifiers in systems no rule recognises, per system.
    unknown_identifier_systems: dict[str, int] = field(default_factory=dict)

    @property
    def unmapped(self) -> list[ColumnReport]:
        return [c for c in self.columns if c.source == "unmapped"]

    @property
    def estimated_rows(self) -> int | None:
        """Rows in the whole input, extrapolated from the bytes the sample used."""
        if self.sample_complete:
            return self.rows_sampled
        if not self.total_bytes or not self.bytes_read or self._holds_workbook:
            return None
        return round(self.rows_sampled * self.total_bytes / self.bytes_read)

    @property
    def _holds_workbook(self) -> bool:
        """A workbook is read whole before its first row: its bytes say nothing of rows."""
        return any(m.format in _WORKBOOKS for m in self.members)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (for ``--inspect --json``)."""
        return {
            "container": self.container,
            "members": [asdict(m) for m in self.members],
            "rows_sampled": self.rows_sampled,
            "sample_complete": self.sample_complete,
            "estimated_rows": self.estimated_rows,
            "columns": [asdict(c) for c in self.columns],
            "tables_without_mapping": self.tables_without_mapping,
            "field_counts": self.field_counts,
            "category_counts": self.category_counts,
            "rows_without_identifiers": self.rows_without_identifiers,
            "bad_rows": self.bad_rows,
            "repaired_rows": self.repaired_rows,
            "salvaged_rows": self.salvaged_rows,
            "skipped_resources": self.skipped_resources,
            "key_counts": self.key_counts,
            "rejected_values": self.rejected_values,
            "rows_without_keys": self.rows_without_keys,
            "rows_without_patient_id": self.rows_without_patient_id,
            "unknown_identifier_systems": self.unknown_identifier_systems,
        }

    def render(self) -> str:
        """A terminal report (no cell values, value-like names hidden)."""
        lines = [f"container   {self.container}"]
        lines += [f"member      {_describe(m)}" for m in self.members]
        lines.append(f"sampled     {self._sample_line()}")
        lines.append("columns")
        width = max((len(display_name(c.header)) for c in self.columns), default=0)
        for column in self.columns:
            table = f"{display_name(column.table)}: " if column.table else ""
            target = column.target or "-"
            name = display_name(column.header).ljust(width)
            lines.append(f"  {table}{name}  → {target}  ({column.source})")
        for table in self.tables_without_mapping:
            where = f"table {display_name(table)!r}" if table else "the file"
            lines.append(
                f"  no column of {where} was recognised: header names not shown "
                "(is the first row a header? add a mapping file)"
            )
        lines.append(f"fields      {_counts(self.field_counts)}")
        lines.append(f"categories  {_counts(self.category_counts)}")
        lines.append(f"no identifier in {self.rows_without_identifiers} row(s)")
        lines.append(f"keys        {_counts(self.key_counts)}")
        lines.append(f"rejected    {_counts(self.rejected_values)}")
        lines.append(f"no key in {self.rows_without_keys} row(s)")
        lines.append(f"repaired    {_counts(self.repaired_rows)}")
        salvaged = f" ({self.salvaged_rows} salvaged by value)" if self.salvaged_rows else ""
        lines.append(f"bad rows    {_counts(self.bad_rows)}{salvaged}")
        if self.skipped_resources:
            lines.append(f"skipped     {_counts(self.skipped_resources)}")
        if self.unknown_identifier_systems:
            lines.append(
                "unknown     FHIR identifier systems (Patients): "
                f"{_counts(self.unknown_identifier_systems)}; map them in the mapping "
                'file\'s "fhir": {"identifier_systems": {...}} or they are not used'
            )
        return "\n".join(lines)

    def _sample_line(self) -> str:
        text = f"{self.rows_sampled} rows"
        if self.sample_complete:
            return text + " (the whole input)"
        estimate = self.estimated_rows
        if estimate is not None:
            text += f", ≈ {estimate} rows in total"
        return text


def _describe(member: MemberInfo) -> str:
    parts = [member.format]
    if member.encoding:
        parts.append(member.encoding)
    if member.delimiter:
        parts.append("delimiter " + ("tab" if member.delimiter == "\t" else repr(member.delimiter)))
    if member.dialect:
        parts.append(member.dialect)
    name = f"{display_name(member.name)}: " if member.name else ""
    return name + ", ".join(parts)


def _counts(counts: dict[str, int]) -> str:
    shown = [f"{display_name(k)} {v}" for k, v in counts.items() if v]
    return "  ".join(shown) if shown else "none"


def _columns(stream: RecordStream) -> tuple[list[ColumnReport], list[str]]:
    columns: list[ColumnReport] = []
    silent: list[str] = []
    seen: set[tuple[str, str]] = set()
    if any(m.format == "fhir" for m in stream.members):
        rows = fhir_mapping_rows(stream.mapping.fhir)
        columns += [ColumnReport("Patient", s, t, "fhir") for s, t in rows]
    for (table, _headers), plan in stream.plans_seen.items():
        if not plan.maps_anything:
            if table not in silent:
                silent.append(table)
            continue
        for decision in plan.decisions:
            if (table, decision.header) in seen:
                continue
            seen.add((table, decision.header))
            target = decision.target.label if decision.target is not None else ""
            columns.append(ColumnReport(table, decision.header, target, decision.source))
    return columns, silent


def inspect(
    source: Path | IO[bytes],
    format: str = "auto",
    mapping: ColumnMapping | None = None,
    sample_rows: int = 1000,
    encoding: str | None = None,
) -> InspectReport:
    """Read up to `sample_rows` rows (0: all) and report what a full run would do."""
    fields: Counter[str] = Counter(dict.fromkeys(FIELD_NAMES, 0))
    categories: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    without_identifiers = without_keys = without_patient_id = 0
    with open_records(source, format, mapping, encoding) as stream:
        complete = True
        for item in stream:
            if isinstance(item, PersonRecord):
                fields.update(name for name in FIELD_NAMES if getattr(item, name) is not None)
                fields["extra_phones"] += bool(item.extra_phones)
                fields["extra_emails"] += bool(item.extra_emails)
                categories.update(item.categories.names())
                if all(getattr(item, name) is None for name in _IDENTIFYING):
                    without_identifiers += 1
                extraction = match_keys(item)
                keys.update(list(dict.fromkeys(key.kind.value for key in extraction.keys)))
                rejected.update(f"{kind.value}: {reason}" for kind, reason in extraction.invalid)
                rejected.update(f"{kind.value}: placeholder" for kind in extraction.placeholders)
                without_keys += not extraction.keys
                without_patient_id += item.patient_id is None
            if sample_rows and stream.stats.rows_read >= sample_rows:
                complete = False
                break
        columns, silent = _columns(stream)
        return InspectReport(
            container=stream.container,
            members=list(stream.members),
            rows_sampled=stream.stats.rows_read,
            sample_complete=complete,
            bytes_read=stream.bytes_read,
            total_bytes=stream.total_bytes,
            columns=columns,
            tables_without_mapping=silent,
            field_counts=dict(fields),
            category_counts=dict(categories),
            rows_without_identifiers=without_identifiers,
            bad_rows=dict(stream.stats.bad_rows),
            repaired_rows=dict(stream.stats.repaired),
            salvaged_rows=stream.stats.salvaged,
            skipped_resources=dict(stream.stats.skipped_resources),
            key_counts=dict(keys),
            rejected_values=dict(rejected),
            rows_without_keys=without_keys,
            rows_without_patient_id=without_patient_id,
            unknown_identifier_systems=dict(stream.stats.unknown_identifier_systems),
        )
