"""CSV/TSV rows, streamed with the csv module.

The first non-empty row is the header, unless one of its cells looks like a
value (an "@", six or more digits): then the file has no header row, the
columns are called ``column_1``, ``column_2``, … and that first row is data.
A row wider than the header only by empty cells (trailing delimiters, as
spreadsheets write them) is trimmed; any other width is a
``csv_wrong_field_count`` bad row and reading goes on. Lines longer than the
window limit are cut by ``readline`` so memory stays bounded on junk.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from functools import partial
from typing import TextIO

from breachmatch.columns import looks_like_data
from breachmatch.readers.items import BadRow, RawRow
from breachmatch.readers.window import MAX_UNIT_CHARS


def _reason(error: csv.Error) -> str:
    return "csv_field_too_large" if "field limit" in str(error) else "csv_malformed"


def positional_headers(width: int) -> tuple[str, ...]:
    """Names for the columns of a table without a header."""
    return tuple(f"column_{i}" for i in range(1, width + 1))


def read_csv(text: TextIO, delimiter: str, member: str) -> Iterator[RawRow | BadRow]:
    """Rows of a delimited text member; bad rows are yielded, never raised."""
    lines = iter(partial(text.readline, MAX_UNIT_CHARS), "")
    reader = csv.reader(lines, delimiter=delimiter, quotechar='"', doublequote=True, strict=True)
    row = 0
    headers: tuple[str, ...] | None = None
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            row += 1
            yield BadRow(_reason(error), row, member)
            continue
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        if headers is None:
            if not any(looks_like_data(cell) for cell in cells):
                headers = tuple(
                    cell.strip() or f"column_{i}" for i, cell in enumerate(cells, start=1)
                )
                continue
            headers = positional_headers(len(cells))
        row += 1
        if len(cells) != len(headers):
            width = len(headers)
            if len(cells) > width and not any(cell.strip() for cell in cells[width:]):
                cells = cells[:width]
            else:
                yield BadRow("csv_wrong_field_count", row, member)
                continue
        yield RawRow("", headers, cells, row)
