"""A per-file plan that turns a row of cells into a `PersonRecord`.

Deciding what a header means costs string folding and several dict lookups;
doing that per row would dominate a 10-million-row ingest. So the decision is
made once per distinct header list (`ColumnPlan.for_headers`) and compiled to
a short tuple of operations over column indices; `ColumnPlan.record` then
runs only those operations on each row.

How several columns meet in one field:

* ``phone`` / ``email``: the first non-empty cell fills the field, further
  distinct ones go to ``extra_phones`` / ``extra_emails``.
* ``address`` (joined with ", ") and the name fields (joined with a space):
  cells are concatenated in column order ("Adresse", "Postnr", "By").
* every other field: the first non-empty cell wins.

A category is set only when a cell that implies it is non-empty in this row.
Cells that are empty, whitespace, or an SQL/CSV null marker ("NULL", "null",
``\\N``) count as empty. Values are stripped of surrounding whitespace and
otherwise passed on untouched: normalising them is `breachmatch.identifiers`'
job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

from breachmatch.columns.mapping import ColumnMapping, Decision
from breachmatch.records import Category, PersonRecord

#: Cell values that mean "no value" in SQL and CSV exports.
NULL_MARKERS = frozenset({"NULL", "null", "\\N"})

_FIRST, _JOIN, _MULTI = range(3)
_JOIN_SEPARATORS = {"address": ", ", "full_name": " ", "given_name": " ", "family_name": " "}
_EXTRA_LISTS = {"email": 0, "phone": 1}

#: PersonRecord's string fields in constructor order (they come before the lists).
_RECORD_FIELDS = tuple(f.name for f in fields(PersonRecord))
_STRING_FIELDS = _RECORD_FIELDS[: _RECORD_FIELDS.index("extra_emails")]
if _RECORD_FIELDS[len(_STRING_FIELDS) :] != ("extra_emails", "extra_phones", "categories"):
    raise RuntimeError("PersonRecord changed shape: update breachmatch.columns.plan")
_SLOT = {name: i for i, name in enumerate(_STRING_FIELDS)}
_MRN, _FACILITY = _SLOT["mrn"], _SLOT["facility"]

#: PersonRecord's constructor, called positionally from a slot list (the
#: fastest way to build one; the shape check above keeps the order honest).
_new_record: Callable[..., PersonRecord] = PersonRecord

# IntFlag construction is slow; every combination of the seven bits, once.
_CATEGORIES = tuple(Category(bits) for bits in range(1 << len(Category)))

#: A field fed by one column: (column index, record slot, category bits).
_Single = tuple[int, int, int]
#: A category-only column: (column index, category bits).
_Flag = tuple[int, int]
#: A field fed by several columns: (slot, how they meet, separator, extra list, columns).
_Group = tuple[int, int, str, int, tuple[tuple[int, int], ...]]


def _compile(
    decisions: Sequence[Decision],
) -> tuple[tuple[_Single, ...], tuple[_Flag, ...], tuple[_Group, ...]]:
    by_field: dict[str, list[tuple[int, int]]] = {}
    flags: list[_Flag] = []
    for index, decision in enumerate(decisions):
        target = decision.target
        if target is None:
            continue
        if target.field is None:
            flags.append((index, int(target.category)))
        else:
            by_field.setdefault(target.field, []).append((index, int(target.category)))
    singles: list[_Single] = []
    groups: list[_Group] = []
    for name, columns in by_field.items():
        if len(columns) == 1:
            index, bits = columns[0]
            singles.append((index, _SLOT[name], bits))
        elif name in _JOIN_SEPARATORS:
            groups.append((_SLOT[name], _JOIN, _JOIN_SEPARATORS[name], 0, tuple(columns)))
        elif name in _EXTRA_LISTS:
            groups.append((_SLOT[name], _MULTI, "", _EXTRA_LISTS[name], tuple(columns)))
        else:
            groups.append((_SLOT[name], _FIRST, "", 0, tuple(columns)))
    return tuple(singles), tuple(flags), tuple(groups)


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """The decisions for one header list, compiled for per-row use."""

    table: str
    decisions: tuple[Decision, ...]
    facility: str | None
    _singles: tuple[_Single, ...]
    _flags: tuple[_Flag, ...]
    _groups: tuple[_Group, ...]

    @classmethod
    def for_headers(
        cls, headers: Sequence[str], mapping: ColumnMapping, table: str = ""
    ) -> ColumnPlan:
        decisions = tuple(mapping.decide(table, header) for header in headers)
        return cls(table, decisions, mapping.facility, *_compile(decisions))

    @property
    def unmapped(self) -> tuple[str, ...]:
        """Headers no synonym or mapping entry recognised (explicit ignores excluded)."""
        return tuple(d.header for d in self.decisions if d.source == "unmapped")

    @property
    def maps_anything(self) -> bool:
        return bool(self._singles or self._flags or self._groups)

    def record(self, values: Sequence[str | None]) -> PersonRecord:
        """Build the record for one row; `values` is in header order.

        This runs once per row of every dump, so it works on precomputed
        slots and bit masks rather than names.
        """
        slots: list[str | None] = [None] * len(_STRING_FIELDS)
        extras: tuple[list[str], list[str]] = ([], [])
        bits = 0
        for index, slot, category_bits in self._singles:
            value = values[index]
            if value:
                value = value.strip()
                if value and value not in NULL_MARKERS:
                    slots[slot] = value
                    bits |= category_bits
        for index, category_bits in self._flags:
            if not bits & category_bits:
                value = values[index]
                if value and not value.isspace() and value not in NULL_MARKERS:
                    bits |= category_bits
        if self._groups:
            bits |= self._fill_groups(values, slots, extras)
        if self.facility is not None and slots[_MRN] is not None and slots[_FACILITY] is None:
            slots[_FACILITY] = self.facility
        return _new_record(*slots, extras[0], extras[1], _CATEGORIES[bits])

    def _fill_groups(
        self,
        values: Sequence[str | None],
        slots: list[str | None],
        extras: tuple[list[str], list[str]],
    ) -> int:
        bits = 0
        for slot, how, separator, extra, columns in self._groups:
            for index, category_bits in columns:
                value = values[index]
                if not value:
                    continue
                value = value.strip()
                if not value or value in NULL_MARKERS:
                    continue
                bits |= category_bits
                current = slots[slot]
                if current is None:
                    slots[slot] = value
                elif how == _JOIN:
                    slots[slot] = current + separator + value
                elif how == _MULTI and value != current and value not in extras[extra]:
                    extras[extra].append(value)
        return bits
