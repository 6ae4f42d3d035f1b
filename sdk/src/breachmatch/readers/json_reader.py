"""JSON lines, and JSON documents streamed without loading them.

**JSON lines**: one object per line; a line that does not parse is a
``json_syntax`` bad row (its string values kept for by-value salvage) and
the next line is read normally.

**Documents** are parsed incrementally over a `TextWindow` with
``json.JSONDecoder.raw_decode``, one array element at a time, so a 10 GB
array needs memory for one element only. Rows are:

* the elements of a top-level array (table ""), and
* the elements of every array-valued member of a top-level object
  (``{"patients": [...], "meta": {...}}``: table "patients"); other members
  are counted as skipped, not read as rows.

Several top-level values in a row (concatenated JSON) are read one after
another. An element that is not an object is a ``json_not_object`` bad row.
After a syntax error inside an array the parser resynchronises on the next
``},{`` and counts the skipped stretch as one ``json_syntax`` bad row; a
truncated document ends with a ``json_truncated`` bad row.

Integers are kept as the digits they were written with (they become cell
strings anyway), so a 5,000-digit number is a value, not the end of the
read: Python refuses to convert integers of more than 4,300 digits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import TextIO

from breachmatch.readers.flatten import flat_row
from breachmatch.readers.items import BadRow, Mapped, RawRow, SkippedResource
from breachmatch.readers.salvage import json_strings
from breachmatch.readers.window import TextWindow, WindowFull, iter_lines

_NON_WHITESPACE = re.compile(r"[^ \t\r\n]")
_NEXT_OBJECT = re.compile(r"\}\s*+,\s*+(?=\{)")
#: Integers stay digit strings: no int conversion limit, and str() of them is what a cell holds.
DECODER = json.JSONDecoder(parse_int=str)
_SKIPPED_MEMBER = SkippedResource("json non-array member")
_REASONS: dict[type[Exception], str] = {
    json.JSONDecodeError: "json_syntax",
    RecursionError: "json_too_deep",
    WindowFull: "json_too_large",
}


def read_json_lines(text: TextIO, member: str) -> Iterator[RawRow | BadRow]:
    """One row per non-blank line."""
    row = 0
    for line in iter_lines(text):
        if line is not None and (not line or line.isspace()):
            continue
        row += 1
        if line is None:
            yield BadRow("json_too_large", row, member)
            continue
        try:
            value = DECODER.decode(line)
        except ValueError:
            yield BadRow("json_syntax", row, member, json_strings(line))
            continue
        except RecursionError:
            yield BadRow("json_too_deep", row, member)
            continue
        if isinstance(value, dict):
            yield flat_row("", value, row)
        else:
            yield BadRow("json_not_object", row, member)


def read_json_document(text: TextIO, member: str) -> Iterator[Mapped]:
    """Rows of a JSON document (see the module docstring)."""
    return _Document(TextWindow(text), member).rows()


class _Syntax(Exception):
    """The document is malformed at the window position."""


class _Document:
    def __init__(self, window: TextWindow, member: str) -> None:
        self._w = window
        self._member = member
        self._row = 0

    def rows(self) -> Iterator[Mapped]:
        try:
            while (char := self._peek()) != "":
                self._w.pos += 1
                if char == "[":
                    yield from self._array("")
                elif char == "{":
                    yield from self._object()
                else:
                    raise _Syntax
        except _Syntax:
            yield self._bad("json_syntax")
        except (json.JSONDecodeError, RecursionError, WindowFull) as error:
            yield self._bad(_REASONS[type(error)])

    def _bad(self, reason: str) -> BadRow:
        self._row += 1
        return BadRow(reason, self._row, self._member)

    def _peek(self) -> str:
        """Skip whitespace; the next character, or "" at the end of input."""
        w = self._w
        while True:
            found = _NON_WHITESPACE.search(w.buf, w.pos)
            if found is not None:
                w.pos = found.start()
                return found.group()
            w.pos = len(w.buf)
            if not w.more():
                return ""

    def _decode(self) -> object:
        """One JSON value at the window position, reading more input while it is cut."""
        w = self._w
        while True:
            try:
                value, end = DECODER.raw_decode(w.buf, w.pos)
            except json.JSONDecodeError as error:
                cut = error.pos >= len(w.buf) - 1 or error.msg.startswith("Unterminated")
                if cut and w.more():
                    continue
                raise
            if end == len(w.buf) and w.more():
                continue  # a number may go on in the next chunk
            w.pos = end
            return value

    def _array(self, table: str) -> Iterator[Mapped]:
        if self._peek() == "]":
            self._w.pos += 1
            return
        while True:
            if self._peek() == "":
                yield self._bad("json_truncated")
                return
            try:
                value = self._decode()
            except (json.JSONDecodeError, RecursionError, WindowFull) as error:
                yield self._bad(_REASONS[type(error)])
                if not self._resync():
                    return
                continue
            self._row += 1
            if isinstance(value, dict):
                yield flat_row(table, value, self._row)
            else:
                yield BadRow("json_not_object", self._row, self._member)
            char = self._peek()
            self._w.pos += 1
            if char == "]":
                return
            if char == "":
                yield self._bad("json_truncated")
                return
            if char != ",":
                yield self._bad("json_syntax")
                if not self._resync():
                    return

    def _resync(self) -> bool:
        """Move to the next element that starts after a "},"; False at the end of input."""
        w = self._w
        start = w.pos + 1
        while True:
            match = _NEXT_OBJECT.search(w.buf, start)
            if match is not None:
                w.pos = match.end()
                return True
            w.discard_all_but(64)
            start = w.pos
            if not w.more():
                w.pos = len(w.buf)
                return False

    def _object(self) -> Iterator[Mapped]:
        if self._peek() == "}":
            self._w.pos += 1
            return
        while True:
            if self._peek() != '"':
                raise _Syntax
            key = self._decode()
            if self._peek() != ":":
                raise _Syntax
            self._w.pos += 1
            if self._peek() == "[":
                self._w.pos += 1
                yield from self._array(str(key))
            else:
                self._decode()
                yield _SKIPPED_MEMBER
            char = self._peek()
            self._w.pos += 1
            if char == "}":
                return
            if char != ",":
                raise _Syntax
