"""Ragged CSV rows: which cell belongs to which column — or an honest refusal.

A row with more cells than its header usually has the delimiter inside a
value that was not quoted (an address "Vej 1; 2. th", a journal note); one
with fewer usually had its trailing empty cells left out. Keeping the first
cells is right only when the damage is at the end of the row: when it is in
the middle, every later value moves one column and a kept row would report
an address fragment as a diagnosis. So every plausible reading is scored,
and the row is kept only when one is clearly best:

* **candidates** — a short row: pad the missing cells at the end (what
  exporters do: cost 0). A wide row: join the overflow back into column
  *j*, for every *j*, or drop overflow cells that are all empty (cost 1
  each; dropping costs 0 only when most rows of the member end that way, as
  a habit of the exporter, rather than as a shifted row's empty last cell).
* **misfits** (cost 2 each) — cells that do not look like their column: a
  value whose *shape* (letters → ``a``,
  digits → ``9``, runs of either collapsed: "Vej 12, 8000 By" → ``a 9, 9
  a``) was never seen in that column; a joined value whose first or last
  piece is empty, or whose first piece does not start like the column's
  values. In an identifier column (CPR, SSN, e-mail, phone, birth date) a
  value that neither validates nor has a known shape rules the candidate
  out, and so does a delimiter: no identifier holds one.
* The cheapest candidate wins when it has at most `MAX_MISFITS` misfits and
  is the only one that cheap, or every equally cheap candidate yields the
  same record. Otherwise the row is a bad row, its cells kept for by-value
  salvage (`breachmatch.readers.salvage`).

Shapes are learnt from the member's rows of the right width (the first
`LEARN_ALL`, then one in `LEARN_EVERY`) and from rows repaired with
certainty (no misfit, no other reading) — the only place the values of a
column show up when every one of them was cut — and computed only when a
ragged row needs them, so a clean dump pays nothing. A column with fewer
than `MIN_VALUES` values or more than `MAX_SHAPES` shapes (free text) tells
nothing: anything but a failed validation fits it. From the first ragged
row until `MATURE_ROWS` rows have been seen (or the member ends), rows are
held back and judged together, twice: rows refused on the first pass are
tried again with what the certain repairs of that pass taught. Order is
kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from breachmatch.columns import ColumnPlan
from breachmatch.columns.plan import NULL_MARKERS
from breachmatch.identifiers import (
    InvalidIdentifier,
    Placeholder,
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
MATURE_ROWS = 1000
MAX_SHAPES = 200
MIN_VALUES = 20
MAX_MISFITS = 1
_REFUSED = MAX_MISFITS + 1
#: Share of rows ending in empty overflow cells that makes dropping them a habit.
HABIT_SHARE = 0.9
_SHAPE_CHARS = 48
_MOVE_COST, _MISFIT_COST = 1, 2

DROPPED = "csv_empty_overflow_dropped"
PADDED = "csv_short_row_padded"
JOINED = "csv_overflow_joined"

Validator = Callable[[str], bool]
_SHAPE_TABLE = str.maketrans(
    {cp: "9" if chr(cp).isdigit() else "a" for cp in range(0x250) if chr(cp).isalnum()}
)
_LETTER_RUNS = re.compile("a+")
_DIGIT_RUNS = re.compile("9+")

PlanFor = Callable[[str, tuple[str, ...]], ColumnPlan]


def shape(text: str) -> str:
    """The shape of a stripped, non-empty value: ``"Vej 12, 8000 By"`` → ``"a 9, 9 a"``."""
    classes = text[:_SHAPE_CHARS].translate(_SHAPE_TABLE)
    return _DIGIT_RUNS.sub("9", _LETTER_RUNS.sub("a", classes))


def _text(value: str | None) -> str | None:
    """The value stripped, or None when it means "empty"."""
    if not value:
        return None
    text = value.strip()
    return text if text and text not in NULL_MARKERS else None


def _validator(normalise: Callable[[str], str], needs: str = "") -> Validator:
    """Whether a value is a valid (or placeholder) identifier of `normalise`'s kind."""

    def valid(text: str) -> bool:
        if needs and needs not in text:
            return False  # cheap: the e-mail validator is not
        try:
            normalise(text)
        except InvalidIdentifier:
            return False
        except Placeholder:
            return True  # a filler ("0000000000", "n/a") is at home in its column
        return True

    return valid


#: Validation that tells an identifier column's values from other columns' values.
_VALIDATORS: dict[str, Validator] = {
    "cpr": _validator(normalise_cpr),
    "ssn": _validator(normalise_ssn),
    "email": _validator(normalise_email, "@"),
    "phone": _validator(normalise_phone),
    "birth_date": _validator(normalise_birth_date),
}


def _values(row: RaggedRow, width: int, repair: str, j: int) -> list[str]:
    """The row's cells placed by `repair` with the damage at column `j`."""
    cells = row.cells
    extra = len(cells) - width
    if repair == DROPPED:
        return list(cells[:width])
    if repair == JOINED:
        return [*cells[:j], row.delimiter.join(cells[j : j + extra + 1]), *cells[j + extra + 1 :]]
    return [*cells, *[""] * -extra]  # PADDED


class _Profile:
    """What the values of each column of one header list look like."""

    def __init__(self, plan: ColumnPlan, headers: tuple[str, ...]) -> None:
        self.plan = plan
        self.headers = headers
        width = len(headers)
        #: Well-formed rows, ragged rows, and ragged rows wide only by empty cells.
        self.rows = self.ragged = self.empty_overflow = 0
        #: Well-formed rows recorded to learn from, and rows repaired with
        #: certainty (which teach the profile too).
        self._recorded = self._sure = 0
        #: Rows recorded but not yet looked at: shapes are computed only once a
        #: ragged row needs them, so a clean dump never pays for them.
        self._pending: list[Sequence[str | None]] = []
        self._oldest = 0
        self._values = [0] * width
        self._shapes: list[set[str]] = [set() for _ in range(width)]
        self._prefixes: list[set[str]] = [set() for _ in range(width)]
        self._validators: list[Validator | None] = [
            _VALIDATORS.get(d.target.field or "") if d.target is not None else None
            for d in plan.decisions
        ]

    @property
    def mature(self) -> bool:
        return self.rows + self.ragged >= MATURE_ROWS

    def learn(self, values: Sequence[str | None]) -> int:
        """Record a well-formed row; returns how many rows to skip before the next.

        Called for one row in each stride, so `rows` counts the skipped ones too.
        """
        stride = 1 if self._recorded < LEARN_ALL else LEARN_EVERY
        self.rows += stride
        self._recorded += 1
        pending = self._pending
        if len(pending) < LEARN_ALL:
            pending.append(values)
        else:  # keep the latest LEARN_ALL recorded rows
            pending[self._oldest] = values
            self._oldest = (self._oldest + 1) % LEARN_ALL
        return stride

    def note(self, row: RaggedRow) -> None:
        """Count a ragged row as it arrives (for maturity and the dropping habit)."""
        self.ragged += 1
        width = len(self.headers)
        if len(row.cells) > width and not any(cell.strip() for cell in row.cells[width:]):
            self.empty_overflow += 1

    def _fold(self) -> None:
        """Take the shapes of the recorded rows into the profile."""
        for values in self._pending:
            for i, value in enumerate(values):
                text = _text(value)
                if text is None:
                    continue
                self._values[i] += 1
                shapes = self._shapes[i]
                if len(shapes) <= MAX_SHAPES:
                    found = shape(text)
                    if found not in shapes:
                        shapes.add(found)
                        self._prefixes[i].update(found[:n] for n in range(1, len(found) + 1))
        self._pending.clear()
        self._oldest = 0

    def _informative(self, i: int) -> bool:
        return self._values[i] >= MIN_VALUES and len(self._shapes[i]) <= MAX_SHAPES

    def _misfit(self, i: int, value: str) -> int:
        """0 when `value` is at home in column `i`, 1 when it is not, `_REFUSED`
        when it cannot be: an invalid identifier of a shape never seen there."""
        text = _text(value)
        if text is None:
            return 0
        informative = self._informative(i)
        if informative and shape(text) in self._shapes[i]:
            return 0
        validator = self._validators[i]
        if validator is not None:
            return 0 if validator(text) else _REFUSED
        return int(informative)

    def _absorbed(self, i: int, cells: tuple[str, ...]) -> int:
        """The misfit of these cells joined by the delimiter in column `i`."""
        first, last = _text(cells[0]), _text(cells[-1])
        if self._validators[i] is not None:
            return _REFUSED  # no identifier holds the delimiter
        if first is None or last is None:
            return 1
        if not self._informative(i):
            return 0
        return int(shape(first) not in self._prefixes[i])

    def attribute(self, row: RaggedRow) -> RawRow | BadRow:
        """The row with its cells in their columns, or a bad row keeping its cells.

        Every candidate leaves the cells before the damage (column *j*) where
        they were written and moves all cells after it by the same offset, so
        a cell has only two possible columns: misfits are judged once per
        placement and summed per candidate.
        """
        if self._pending:
            self._fold()
        cells, width = row.cells, len(self.headers)
        n, shift = len(cells), len(cells) - width
        home = [0] * (n + 1)  # home[j]: misfits of cells[:j] in the columns they were written in
        for c in range(min(n, width)):
            home[c + 1] = home[c] + self._misfit(c, cells[c])
        #: (cost, misfits, repair, j) of each candidate.
        found: list[tuple[int, int, str, int]] = []
        if shift < 0:
            found.append((_MISFIT_COST * home[n], home[n], PADDED, n))
        elif not any(cell.strip() for cell in cells[width:]):
            habit = self.empty_overflow >= HABIT_SHARE * (self.rows + self.ragged)
            base = 0 if habit else _MOVE_COST
            found.append((base + _MISFIT_COST * home[width], home[width], DROPPED, -1))
        if shift > 0 and (not found or found[0][0] > 0):  # nothing beats a habit without misfit
            moved = [0] * (n + 1)  # moved[c]: misfits of cells[c:] moved back by the overflow
            for c in range(n - 1, shift, -1):
                moved[c] = moved[c + 1] + self._misfit(c - shift, cells[c])
            for j in range(width):
                after = j + shift + 1
                misfits = home[j] + moved[after] + self._absorbed(j, cells[j:after])
                found.append((_MOVE_COST + _MISFIT_COST * misfits, misfits, JOINED, j))
        plausible = [f for f in found if f[1] <= MAX_MISFITS]
        if plausible:
            cost = min(f[0] for f in plausible)
            best = [(_values(row, width, r, j), r, m) for c, m, r, j in plausible if c == cost]
            if len(best) == 1 or self._same_records([values for values, _, _ in best]):
                values, repair, misfits = best[0]
                if len(best) == 1 and not misfits:
                    self._learn_repaired(values)
                return RawRow("", row.headers, values, row.row, row.repair or repair)
        reason = "csv_malformed" if row.repair == STRAY_QUOTE else "csv_wrong_field_count"
        return BadRow(reason, row.row, row.member, row.cells)

    def _learn_repaired(self, values: list[str]) -> None:
        """A row repaired with every cell at home and no other reading: learn from it too."""
        self._sure += 1
        if self._sure < LEARN_ALL or not self._sure % LEARN_EVERY:
            self._pending.append(values)

    def _same_records(self, candidates: list[list[str]]) -> bool:
        first = self.plan.record(candidates[0])
        return all(self.plan.record(values) == first for values in candidates[1:])


def attribute_ragged(items: Iterator[Item], plan_for: PlanFor) -> Iterator[Mapped]:
    """`items` of one CSV member with every `RaggedRow` attributed (see the module docstring).

    A CSV member has one header list, so one profile. From a ragged row met
    before `MATURE_ROWS` rows, items are held (in order) until the profile
    is mature or the member ends.
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
            profile.note(item)
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
        if profile is not None and profile.mature:
            yield from _released(held, profile)
    if held and profile is not None:
        yield from _released(held, profile)


def _released(held: list[Item], profile: _Profile) -> Iterator[Mapped]:
    """The held items in order, ragged rows attributed; empties `held`.

    Rows refused on the first pass are tried once more at the end of it: the
    rows repaired with certainty in the meantime have taught the profile
    the damaged column's values (a column whose every value was cut has no
    shapes from well-formed rows at all).
    """
    done: list[Mapped] = []
    refused: list[tuple[int, RaggedRow]] = []
    for item in held:
        if isinstance(item, RaggedRow):
            attributed = profile.attribute(item)
            if isinstance(attributed, BadRow):
                refused.append((len(done), item))
            done.append(attributed)
        else:
            done.append(item)
    for at, ragged in refused:
        done[at] = profile.attribute(ragged)
    held.clear()
    yield from done
