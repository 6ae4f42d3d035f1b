"""The ingest report: what a dump held, counted — never what it said.

The operator needs to judge a dump's quality before announcing a breach
(were the CPR numbers recognised? did half the rows fail to parse?), so every
row is accounted for, by counts and reason codes only. The same numbers go
to the terminal (`render_text`), to ``--json-report`` (`to_dict`), into the
job record in KV, and over gRPC (`to_proto`).

Definitions:

* ``rows_read`` — every record of the dump, exactly once: clean rows,
  ``repaired_rows`` and ``bad_rows`` add up to it;
* ``repaired_rows`` — rows read only after mending them, by what was mended
  (``csv_stray_quote``, ``csv_overflow_joined``, ``csv_short_row_padded``, …);
* ``rows_without_key`` — readable rows that yielded no match key at all;
* ``keys`` — match keys made, by kind (a row with two phones counts two);
* ``categories`` — rows exposing each data category (salvaged ones included);
* ``bad_rows`` — unreadable rows by the reader's reason code;
* ``salvaged_rows`` — bad rows that still gave keys from values recognisable
  on their own (a valid CPR number, an e-mail address);
* ``invalid_values`` / ``placeholders`` — identifier values that gave no key,
  by ``kind:reason`` and by kind;
* ``entries`` — distinct tokens in the published filter.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from breachmatch.identifiers import KeyExtraction, KeyKind
from breachmatch.readers import ReadStats
from breachmatch.records import Category
from breachmatch.v1 import ingest_pb2

_COUNTERS = ("keys", "categories", "bad_rows", "repaired_rows", "invalid_values", "placeholders")


class KeyTally:
    """The counts of many rows' match keys, in plain ints until `Report.add_tally`.

    Counting each row straight into the report's Counters (kind names,
    category names) cost ingest more CPU than reading the row; this keeps one
    int per key kind and one per label value instead, and the report turns
    them into names once per chunk.
    """

    __slots__ = ("invalid", "keys", "placeholders", "rows", "rows_by_label", "rows_without_key",
                 "salvaged")  # fmt: skip

    def __init__(self) -> None:
        #: Records counted (bad rows are counted by `Report.add_bad_row` instead).
        self.rows = 0
        self.rows_without_key = 0
        #: Bad rows that gave keys by value (their keys and labels are counted here too).
        self.salvaged = 0
        self.keys = dict.fromkeys(KeyKind, 0)
        self.rows_by_label = [0] * (1 << 8)
        self.invalid: list[tuple[KeyKind, str]] = []
        self.placeholders: list[KeyKind] = []

    def clear(self) -> None:
        """Back to zero, in place: the counting loop holds on to `keys` and `rows_by_label`."""
        self.rows = self.rows_without_key = self.salvaged = 0
        for kind in self.keys:
            self.keys[kind] = 0
        self.rows_by_label[:] = [0] * len(self.rows_by_label)
        self.invalid.clear()
        self.placeholders.clear()

    def add(self, extraction: KeyExtraction, label: int) -> None:
        """One record's (or salvaged bad row's) extraction; the caller counts its keys."""
        self.rows_by_label[label] += 1
        if extraction.invalid:
            self.invalid += extraction.invalid
        if extraction.placeholders:
            self.placeholders += extraction.placeholders


@dataclass
class Report:
    rows_read: int = 0
    rows_without_key: int = 0
    keys: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    bad_rows: Counter[str] = field(default_factory=Counter)
    repaired_rows: Counter[str] = field(default_factory=Counter)
    salvaged_rows: int = 0
    invalid_values: Counter[str] = field(default_factory=Counter)
    placeholders: Counter[str] = field(default_factory=Counter)
    entries: int = 0
    elapsed_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def pairs(self) -> int:
        """(OPRF input, label) pairs sent for evaluation: one per key made."""
        return sum(self.keys.values())

    def add_bad_row(self, reason: str) -> None:
        self.rows_read += 1
        self.bad_rows[reason] += 1

    def add_read_stats(self, stats: ReadStats) -> None:
        """The reader's own counts, once the dump is read (repairs are known only to it)."""
        self.repaired_rows = Counter(stats.repaired)

    def add_tally(self, tally: KeyTally) -> None:
        """Fold in the rows `tally` counted since it was last cleared, then clear it."""
        self.rows_read += tally.rows
        self.rows_without_key += tally.rows_without_key
        self.salvaged_rows += tally.salvaged
        self.keys.update({kind.value: n for kind, n in tally.keys.items() if n})
        for label, rows in enumerate(tally.rows_by_label):
            if rows:
                for name in Category(label).names():
                    self.categories[name] += rows
        self.invalid_values.update(f"{kind.value}:{reason}" for kind, reason in tally.invalid)
        self.placeholders.update(kind.value for kind in tally.placeholders)
        tally.clear()

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "rows_read": self.rows_read,
            "salvaged_rows": self.salvaged_rows,
            "rows_without_key": self.rows_without_key,
            "entries": self.entries,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
        }
        for name in _COUNTERS:
            document[name] = dict(sorted(getattr(self, name).items()))
        return document

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> Report:
        """The inverse of `to_dict`; job records written before a counter existed lack it."""
        return cls(
            rows_read=int(document["rows_read"]),
            salvaged_rows=int(document.get("salvaged_rows", 0)),
            rows_without_key=int(document["rows_without_key"]),
            entries=int(document["entries"]),
            elapsed_seconds=float(document["elapsed_seconds"]),
            **{
                name: Counter({str(k): int(v) for k, v in document.get(name, {}).items()})
                for name in _COUNTERS
            },
        )

    def to_proto(self) -> ingest_pb2.IngestReport:
        """The gRPC form. ``invalid_values`` has no field there (see the module docstring)."""
        return ingest_pb2.IngestReport(
            rows_read=self.rows_read,
            rows_without_key=self.rows_without_key,
            keys=dict(self.keys),
            categories=dict(self.categories),
            bad_rows=dict(self.bad_rows),
            repaired_rows=dict(self.repaired_rows),
            salvaged_rows=self.salvaged_rows,
            placeholders=dict(self.placeholders),
            entries=self.entries,
            elapsed_seconds=self.elapsed_seconds,
            rows_per_second=self.rows_per_second,
        )

    def render_text(self) -> str:
        """The human summary printed at the end of a CLI run."""
        lines = [
            f"rows read          {self.rows_read:>12,}",
            f"  repaired         {self.repaired_rows.total():>12,}",
            f"  bad              {self.bad_rows.total():>12,}",
            f"  bad, salvaged    {self.salvaged_rows:>12,}",
            f"rows without key   {self.rows_without_key:>12,}",
            f"filter entries     {self.entries:>12,}",
            f"elapsed            {self.elapsed_seconds:>12.1f} s",
            f"throughput         {self.rows_per_second:>12,.0f} rows/s",
        ]
        sections = (
            ("match keys", self.keys),
            ("exposed categories (rows)", self.categories),
            ("repaired rows by repair", self.repaired_rows),
            ("bad rows by reason", self.bad_rows),
            ("invalid values by key:reason", self.invalid_values),
            ("placeholders by key", self.placeholders),
        )
        for title, counts in sections:
            lines.append(f"{title}:")
            if not counts:
                lines.append("  (none)")
            lines.extend(f"  {name:<28}{count:>12,}" for name, count in sorted(counts.items()))
        return "\n".join(lines)
