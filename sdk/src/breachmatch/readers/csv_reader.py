"""CSV/TSV rows, streamed line by line, resynchronising after damage.

The first non-empty row is the header, unless one of its cells looks like a
value (an "@", six or more digits): then the file has no header row, the
columns are called ``column_1``, ``column_2``, … and that first row is data.

A line without a quote character is split on the delimiter directly (what
the csv module would do, faster). A line with one goes through the csv
module, which may pull further lines for a quoted field that spans them.
Real dumps are damaged, though: one stray ``"`` opens a "field" that
swallows every row up to the next quote. So a quoted field that spans lines
is trusted only while it looks like text: it is a *stray quote* when a
continuation line carries a whole row's worth of delimiters before any
quote, when it spans more than `MAX_RECORD_LINES` lines, when the csv module
rejects it, or when the record it yields has the wrong width. Then the first
line is read on its own with its quotes taken literally (counted as repaired
``csv_stray_quote``), and reading resumes at the very next line, so every
line swallowed by the stray quote is read as the row it is.

NUL bytes are removed from the lines they appear in (``csv_nul_removed``).
A row whose width differs from the header's is yielded as a `RaggedRow` for
`breachmatch.readers.repair` to attribute. Lines longer than the window
limit are skipped as ``csv_line_too_long`` bad rows so memory stays bounded.
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import TextIO

from breachmatch.columns import looks_like_data
from breachmatch.readers.items import BadRow, RaggedRow, RawRow
from breachmatch.readers.window import MAX_UNIT_CHARS

#: Lines a quoted field may span before it is taken for a stray quote.
MAX_RECORD_LINES = 100
_QUOTE = '"'
_NEWLINES = ("\n", "\r")

STRAY_QUOTE = "csv_stray_quote"
NUL_REMOVED = "csv_nul_removed"


def positional_headers(width: int) -> tuple[str, ...]:
    """Names for the columns of a table without a header."""
    return tuple(f"column_{i}" for i in range(1, width + 1))


class _StrayQuote(Exception):
    """A quoted field ran on into lines that are rows of their own."""


class _QuotedRecord:
    """The csv module's input for one quoted record: its first line, then more on demand.

    Every continuation line handed out is kept in `taken`, so that when the
    record turns out to be a stray quote those lines can be read again.
    """

    def __init__(self, next_line: Callable[[], str], delimiter: str) -> None:
        self._next_line = next_line
        self._delimiter = delimiter
        self.first: str | None = None
        self.taken: list[str] = []
        #: Delimiters before the first quote that make a continuation line a row.
        self.row_delimiters = 0

    def start(self, line: str, width: int) -> None:
        self.first = line
        self.taken = []
        self.row_delimiters = width - 1 if width >= 2 else 0

    def __iter__(self) -> _QuotedRecord:
        return self

    def __next__(self) -> str:
        if self.first is not None:
            line, self.first = self.first, None
            return line
        if len(self.taken) >= MAX_RECORD_LINES:
            raise _StrayQuote
        line = self._next_line()
        if not line:
            raise StopIteration
        self.taken.append(line)
        if self.row_delimiters:
            before_quote = line.split(_QUOTE, 1)[0]
            if before_quote.count(self._delimiter) >= self.row_delimiters:
                raise _StrayQuote
        return line


def _literal_cells(line: str, delimiter: str) -> list[str]:
    """The line split on every delimiter, quotes taken as text.

    A cell wrapped in quotes is unwrapped; a cell opened by an unpaired quote
    (the stray one) loses it, so the value is what was meant.
    """
    cells = line.rstrip("\r\n").split(delimiter)
    for i, cell in enumerate(cells):
        if not cell.startswith(_QUOTE):
            continue
        if len(cell) >= 2 and cell.endswith(_QUOTE):
            cells[i] = cell[1:-1].replace('""', _QUOTE)
        elif cell.count(_QUOTE) % 2:
            cells[i] = cell[1:]
    return cells


def _header(cells: list[str]) -> tuple[str, ...] | None:
    """The header names, or None when the first row is data."""
    if any(looks_like_data(cell) for cell in cells):
        return None
    return tuple(cell.strip() or f"column_{i}" for i, cell in enumerate(cells, start=1))


def read_csv(text: TextIO, delimiter: str, member: str) -> Iterator[RawRow | RaggedRow | BadRow]:
    """Rows of a delimited text member; bad rows are yielded, never raised."""
    limit = MAX_UNIT_CHARS
    source: Iterator[str] = iter(partial(text.readline, limit), "")
    #: Lines handed back after a stray quote, read before the source goes on.
    again: deque[str] = deque()

    def next_line() -> str:
        return again.popleft() if again else next(source, "")

    quoted = _QuotedRecord(next_line, delimiter)
    reader = csv.reader(quoted, delimiter=delimiter, quotechar=_QUOTE, strict=True)
    row = 0
    headers: tuple[str, ...] = ()
    width = 0
    while True:
        line = again.popleft() if again else next(source, "")
        if not line:
            return
        repair = ""
        if len(line) == limit and not line.endswith(_NEWLINES):
            while (rest := next_line()) and not rest.endswith(_NEWLINES):
                pass
            row += 1
            yield BadRow("csv_line_too_long", row, member)
            continue
        if "\x00" in line:
            line = line.replace("\x00", "")
            repair = NUL_REMOVED
        if _QUOTE not in line:
            cells = line.rstrip("\r\n").split(delimiter)
        else:
            quoted.start(line, width or line.count(delimiter) + 1)
            try:
                cells = next(reader)
                stray = bool(quoted.taken) and 0 < width != len(cells)
            except (csv.Error, _StrayQuote):
                stray = True
            if stray:
                cells = _literal_cells(line, delimiter)
                repair = STRAY_QUOTE
                again.extendleft(reversed(quoted.taken))
        if len(cells) <= 1 and (not cells or not cells[0].strip()):
            continue
        if not width:
            found = _header(cells)
            headers = found if found is not None else positional_headers(len(cells))
            width = len(headers)
            if found is not None:
                continue
        row += 1
        if len(cells) == width:
            yield RawRow("", headers, cells, row, repair)
        else:
            yield RaggedRow(headers, tuple(cells), row, member, delimiter, repair)
