"""Ragged CSV rows: which cell belongs to which column — or an honest refusal.

A row with more cells than its header usually has the delimiter inside a
value that was not quoted (an address "Vej 1; 2. th", a journal note); one
with fewer usually had its trailing empty cells left out. Keeping the first
cells (or padding) is right only when the damage is at the end of the row:
when it is in the middle, every later value moves one column and a kept row
would report an address fragment as a diagnosis. So every plausible
attribution is scored, and the row is kept only when one is clearly best:

* **candidates** — drop the overflow when it is all empty, or pad the
  missing cells at the end (what exporters do: cost 0); join the overflow
  back into one column *j*, or insert the missing cells before column *j*
  (an assumption about where the damage is: cost 1 each);
* **misfits** (cost 2 each) — cells that do not look like their column: in
  an identifier column (CPR, SSN, e-mail, phone, birth date) a value that
  does not validate; in any column a value whose *shape* (letters → ``a``,
  digits → ``9``, runs collapsed: "Vej 12, 8000 By" → ``a 9, 9 a``) was never
  seen in that column in the member's rows of the right width. The column
  that absorbs the overflow is not judged by shape (its value holds the
  delimiter, which no clean value does), only by validation;
* the cheapest candidate wins when it has at most `MAX_MISFITS` misfits and
  is the only one that cheap — or every equally cheap candidate yields the
  same record. Otherwise the row is a bad row, its cells kept for by-value
  salvage (`breachmatch.readers.salvage`).

Shapes are learnt from the well-formed rows of the member: all of the first
`LEARN_ALL`, then one in `LEARN_EVERY`, so a large clean dump pays almost
nothing. A column with more than `MAX_SHAPES` distinct shapes (free text)
or fewer than `MIN_VALUES` values tells nothing and fits anything but a
failed validation. Ragged rows met before `MATURE_ROWS` well-formed rows are
held back (at most `HOLD_LIMIT` of them) until the profile has something to
go on, or the member ends; they are then yielded after the rows that taught
it, with their own row numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from breachmatch.columns import ColumnPlan
from breachmatch.columns.plan import NULL_MARKERS
from breachmatch.identifiers import (
    InvalidIdentifier,
    normalise_birth_date,
    normalise_cpr,
    normalise_email,
    normalise_phone,
    normalise_ssn,
)
from breachmatch.readers.csv_reader import STRAY_QUOTE
from breachmatch.readers.items import BadRow, Item, Mapped, RaggedRow, RawRow

LEARN_ALL = 256
LEARN_EVERY = 64
MATURE_ROWS = 50
HOLD_LIMIT = 10_000
MAX_SHAPES = 200
MIN_VALUES = 20
MAX_MISFITS = 1
_SHAPE_CHARS = 48
_JOIN_COST, _MISFIT_COST = 1, 2

TRAILING_DROPPED = "csv_empty_overflow_dropped"
PADDED = "csv_short_row_padded"
JOINED = "csv_overflow_joined"
INSERTED = "csv_missing_cells_inserted"

#: Validation that tells an identifier column's values from other columns' values.
_VALIDATORS: dict[str, Callable[[str], str]] = {
    "cpr": normalise_cpr,
    "ssn": normalise_ssn,
    "email": normalise_email,
    "phone": normalise_phone,
    "birth_date": normalise_birth_date,
}
_SHAPE_TABLE = str.maketrans(
    {cp: "9" if chr(cp).isdigit() else "a" for cp in range(0x250) if chr(cp).isalnum()}
)
_RUNS = re.compile(r"(.)\1+")

PlanFor = Callable[[str, tuple[str, ...]], ColumnPlan]


def shape(text: str) -> str:
    """The shape of a stripped, non-empty value: ``"Vej 12, 8000 By"`` → ``"a 9, 9 a"``."""
    return _RUNS.sub(r"\1", text[:_SHAPE_CHARS].translate(_SHAPE_TABLE))


def _text(value: str | None) -> str | None:
    """The value stripped, or None when it means "empty"."""
    if not value:
        return None
    text = value.strip()
    return text if text and text not in NULL_MARKERS else None


def _validates(validator: Callable[[str], str], text: str) -> bool:
    try:
        validator(text)
    except InvalidIdentifier:
        return False
    except ValueError:
        return True  # a placeholder ("0000000000", "n/a") is at home in its column
    return True


class _Profile:
    """What the values of each column of one header list look like."""

    def __init__(self, plan: ColumnPlan, headers: tuple[str, ...]) -> None:
        self.plan = plan
        self.headers = headers
        width = len(headers)
        self.rows = 0
        #: Rows recorded but not yet looked at: shapes are computed only once a
        #: ragged row needs them, so a clean dump never pays for them.
        self._pending: list[Sequence[str | None]] = []
        self._oldest = 0
        self._shapes: list[set[str]] = [set() for _ in range(width)]
        self._values = [0] * width
        self._validators: list[Callable[[str], str] | None] = [
            _VALIDATORS.get(d.target.field or "") if d.target is not None else None
            for d in plan.decisions
        ]

    @property
    def mature(self) -> bool:
        return self.rows >= MATURE_ROWS

    def learn(self, values: Sequence[str | None]) -> int:
        """Record a well-formed row; returns how many rows to skip before the next."""
        self.rows += 1
        pending = self._pending
        if len(pending) < LEARN_ALL:
            pending.append(values)
        else:  # keep the latest LEARN_ALL recorded rows
            pending[self._oldest] = values
            self._oldest = (self._oldest + 1) % LEARN_ALL
        return 1 if self.rows < LEARN_ALL else LEARN_EVERY

    def _fold(self) -> None:
        """Take the shapes of the recorded rows into the profile."""
        for values in self._pending:
            self._fold_row(values)
        self._pending.clear()
        self._oldest = 0

    def _fold_row(self, values: Sequence[str | None]) -> None:
        for i, value in enumerate(values):
            text = _text(value)
            if text is None:
                continue
            self._values[i] += 1
            shapes = self._shapes[i]
            if len(shapes) <= MAX_SHAPES:
                shapes.add(shape(text))

    def _fits(self, i: int, value: str | None, judge_shape: bool) -> bool:
        text = _text(value)
        if text is None:
            return True
        validator = self._validators[i]
        if validator is not None and _validates(validator, text):
            return True
        shapes = self._shapes[i]
        if not judge_shape or self._values[i] < MIN_VALUES or len(shapes) > MAX_SHAPES:
            return validator is None
        return shape(text) in shapes

    def misfits(
        self, values: Sequence[str | None], absorbing: int, seen: dict[tuple[int, str], bool]
    ) -> int:
        """Cells not at home in their column; `seen` remembers verdicts across candidates."""
        count = 0
        for i, value in enumerate(values):
            if not value:
                continue
            key = (i if i != absorbing else -1 - i, value)
            fits = seen.get(key)
            if fits is None:
                fits = seen[key] = self._fits(i, value, i != absorbing)
            count += not fits
        return count

    def attribute(self, row: RaggedRow) -> RawRow | BadRow:
        """The row with its cells in their columns, or a bad row keeping its cells."""
        if self._pending:
            self._fold()
        best_cost = -1
        best: list[tuple[str, list[str]]] = []
        seen: dict[tuple[int, str], bool] = {}
        for base, repair, values, absorbing in _candidates(
            row.cells, len(self.headers), row.delimiter
        ):
            misfits = self.misfits(values, absorbing, seen)
            if misfits > MAX_MISFITS:
                continue
            cost = base + _MISFIT_COST * misfits
            if cost == 0:  # the exporter's habit, and every cell at home: nothing beats it
                best_cost, best = 0, [(repair, values)]
                break
            if best_cost < 0 or cost < best_cost:
                best_cost, best = cost, [(repair, values)]
            elif cost == best_cost:
                best.append((repair, values))
        if best and (len(best) == 1 or self._same_records(best)):
            repair, values = best[0]
            return RawRow("", row.headers, values, row.row, row.repair or repair)
        reason = "csv_malformed" if row.repair == STRAY_QUOTE else "csv_wrong_field_count"
        return BadRow(reason, row.row, row.member, row.cells)

    def _same_records(self, candidates: list[tuple[str, list[str]]]) -> bool:
        first = self.plan.record(candidates[0][1])
        return all(self.plan.record(values) == first for _, values in candidates[1:])


def _candidates(
    cells: tuple[str, ...], width: int, delimiter: str
) -> Iterator[tuple[int, str, list[str], int]]:
    """(base cost, repair code, values, column holding joined overflow or -1), cheapest first."""
    extra = len(cells) - width
    if extra > 0:
        if not any(cell.strip() for cell in cells[width:]):
            yield 0, TRAILING_DROPPED, list(cells[:width]), -1
        for j in range(width):
            joined = delimiter.join(cells[j : j + extra + 1])
            yield _JOIN_COST, JOINED, [*cells[:j], joined, *cells[j + extra + 1 :]], j
    else:
        gap = [""] * -extra
        yield 0, PADDED, [*cells, *gap], -1
        for j in range(len(cells)):
            yield _JOIN_COST, INSERTED, [*cells[:j], *gap, *cells[j:]], -1


def attribute_ragged(items: Iterator[Item], plan_for: PlanFor) -> Iterator[Mapped]:
    """`items` of one CSV member with every `RaggedRow` attributed (see the module docstring).

    A CSV member has one header list, so one profile. Order is kept: from a
    ragged row met before the profile is mature, every item is held (at most
    `HOLD_LIMIT`) until it is, or the member ends.
    """
    profile: _Profile | None = None
    held: list[Item] = []
    countdown = 0
    raw_row = RawRow
    for item in items:
        if type(item) is raw_row:
            countdown -= 1
            if countdown <= 0:
                if profile is None:
                    profile = _Profile(plan_for("", item.headers), item.headers)
                countdown = profile.learn(item.values)
            if not held:
                yield item
                continue
            held.append(item)
        elif isinstance(item, RaggedRow):
            if profile is None:
                profile = _Profile(plan_for("", item.headers), item.headers)
            if profile.mature and not held:
                yield profile.attribute(item)
                continue
            held.append(item)
        elif held:
            held.append(item)
            continue
        else:
            yield item
            continue
        if profile is not None and (profile.mature or len(held) >= HOLD_LIMIT):
            yield from _released(held, profile)
    if held and profile is not None:
        yield from _released(held, profile)


def _released(held: list[Item], profile: _Profile) -> Iterator[Mapped]:
    """The held items in order, ragged rows attributed; empties `held`."""
    for item in held:
        yield profile.attribute(item) if isinstance(item, RaggedRow) else item
    held.clear()
