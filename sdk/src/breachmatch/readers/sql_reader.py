"""SQL dumps: the rows of ``INSERT … VALUES`` and ``COPY … FROM stdin``, per table.

Reads MySQL (mysqldump, extended inserts, backslash escapes) and PostgreSQL
(pg_dump with ``--inserts`` or its default ``COPY`` blocks) dumps as a stream
of statements over a bounded `TextWindow`:

* ``INSERT [IGNORE] INTO t [(cols)] VALUES (…),(…);`` — each tuple is a row
  of table ``t``; without a column list the columns of a preceding
  ``CREATE TABLE t`` are used, else ``column_1``, ``column_2``, …
* ``COPY t [(cols)] FROM stdin;`` — tab-separated lines up to ``\\.``.
* ``CREATE TABLE`` — remembered for its column order; everything else
  (SET, LOCK, DROP, comments, functions) is skipped.

Bad rows: ``sql_wrong_value_count`` (tuple width ≠ column list; its values
are kept for by-value salvage),
``sql_syntax`` (a tuple that is not a list of literals, e.g. a stray quote),
``sql_unbalanced`` (the input ends inside a string or tuple, or a COPY block
has no end), ``sql_too_large`` (a row over the window limit). After a bad
tuple the reader resynchronises on the next ``),(`` or ``);``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TextIO

from breachmatch.readers.csv_reader import positional_headers
from breachmatch.readers.items import BadRow, RawRow
from breachmatch.readers.sql_lexer import NULL_WORDS, Dialect
from breachmatch.readers.sql_literals import copy_fields, unquote_name
from breachmatch.readers.window import TextWindow, WindowFull

_NAME_PART = r'(?:`(?:[^`]|``)+`|"(?:[^"]|"")+"|\[[^\]]+\]|[\w$]+)'
_NAME = rf"{_NAME_PART}(?:\s*\.\s*{_NAME_PART})*"
_INSERT = re.compile(
    r"(?:INSERT|REPLACE)\s+(?:(?:IGNORE|LOW_PRIORITY|DELAYED|HIGH_PRIORITY)\s+)*(?:INTO\s+)?"
    rf"(?P<name>{_NAME})\s*(?:\((?P<columns>[^()]*)\)\s*)?VALUES\s*",
    re.IGNORECASE,
)
_CREATE = re.compile(
    r"CREATE\s+(?:(?:TEMPORARY|TEMP|UNLOGGED|GLOBAL|LOCAL)\s+)*TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?P<name>{_NAME})\s*\(",
    re.IGNORECASE,
)
_COPY = re.compile(
    rf"COPY\s+(?P<name>{_NAME})\s*(?:\((?P<columns>[^()]*)\)\s*)?FROM\s+stdin\s*;[^\n]*+\n",
    re.IGNORECASE,
)
_RESYNC = re.compile(r"\)\s*+(?:(,)\s*+(?=\()|;)")
_CONSTRAINT_WORDS = frozenset(
    {"PRIMARY", "KEY", "UNIQUE", "CONSTRAINT", "INDEX", "FOREIGN", "CHECK", "FULLTEXT",
     "SPATIAL", "EXCLUDE", "LIKE", "PERIOD"}
)  # fmt: skip
_SPACE_KINDS = frozenset({"space", "comment"})
#: Enough text to see a whole statement header (table name and column list).
_LOOKAHEAD = 64 * 1024
_MAX_TUPLE_TOKENS = 100_000
_CACHE_LIMIT = 1024


class _Unbalanced(Exception):
    """The input ended inside a string, comment or tuple."""


class _Syntax(Exception):
    """A tuple that is not a list of literals."""


class _TooLarge(Exception):
    """A tuple with more tokens than any real row has."""


class _NoTuple(Exception):
    """Where a tuple should start there is something else (``;``, a keyword, the end)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token


_REASONS: dict[type[Exception], str] = {
    _Unbalanced: "sql_unbalanced",
    _Syntax: "sql_syntax",
    _TooLarge: "sql_too_large",
    WindowFull: "sql_too_large",
}


def read_sql(text: TextIO, dialect: Dialect, member: str) -> Iterator[RawRow | BadRow]:
    """Rows of every table in an SQL dump member."""
    return _SqlReader(text, dialect, member).rows()


class _SqlReader:
    def __init__(self, text: TextIO, dialect: Dialect, member: str) -> None:
        self._w = TextWindow(text)
        self._d = dialect
        self._member = member
        self._row = 0
        self._created: dict[str, tuple[str, ...]] = {}
        self._column_lists: dict[str, tuple[str, ...]] = {}

    def rows(self) -> Iterator[RawRow | BadRow]:
        w = self._w
        while True:
            try:
                if not self._skip_space():
                    return
                w.ensure(_LOOKAHEAD)
                if match := _INSERT.match(w.buf, w.pos):
                    yield from self._insert(match)
                elif match := _COPY.match(w.buf, w.pos):
                    yield from self._copy(match)
                elif match := _CREATE.match(w.buf, w.pos):
                    self._create(match)
                else:
                    self._skip_statement()
            except _Unbalanced:
                return  # only a statement without rows can end here; nothing follows
            except WindowFull:
                self._row += 1
                yield BadRow("sql_too_large", self._row, self._member)
                w.pos = len(w.buf)

    # -- tokens --------------------------------------------------------------

    def _next(self) -> tuple[str, str]:
        """Consume the next token that is not space or a comment; ("eof", "") at the end."""
        w = self._w
        while True:
            match = self._d.token.match(w.buf, w.pos)
            if match is None:
                if w.more():
                    continue
                return "eof", ""
            kind = match.lastgroup or "word"
            if (kind == "open" or match.end() == len(w.buf)) and w.more():
                continue
            if kind == "open":
                raise _Unbalanced
            w.pos = match.end()
            if kind not in _SPACE_KINDS:
                return kind, match.group()

    def _skip_space(self) -> bool:
        """Consume space and comments; False at the end of input."""
        w = self._w
        while True:
            match = self._d.token.match(w.buf, w.pos)
            if match is None:
                if w.more():
                    continue
                return False
            if match.lastgroup not in _SPACE_KINDS:
                return True
            if match.end() == len(w.buf) and w.more():
                continue
            w.pos = match.end()

    def _skip_statement(self) -> None:
        while True:
            kind, text = self._next()
            if kind == "eof" or (kind == "punct" and text == ";"):
                return

    # -- statements ----------------------------------------------------------

    def _create(self, match: re.Match[str]) -> None:
        self._w.pos = match.end()
        columns: list[str] = []
        depth = 0
        expecting_name = True
        while True:
            kind, text = self._next()
            if kind == "eof":
                raise _Unbalanced
            if kind == "punct":
                if text == "(":
                    depth += 1
                elif text == ")" and depth > 0:
                    depth -= 1
                elif text == ")" or text == ";":
                    break
                elif depth == 0:
                    expecting_name = True
                continue
            if expecting_name and depth == 0:
                expecting_name = False
                if not (kind == "word" and text.upper() in _CONSTRAINT_WORDS):
                    columns.append(unquote_name(text))
        self._created[unquote_name(match["name"])] = tuple(columns)
        if text != ";":
            self._skip_statement()

    def _headers(self, match: re.Match[str], table: str) -> tuple[str, ...] | None:
        columns = match["columns"]
        if columns is None:
            return self._created.get(table)
        headers = self._column_lists.get(columns)
        if headers is None:
            if len(self._column_lists) >= _CACHE_LIMIT:
                self._column_lists.clear()
            headers = tuple(unquote_name(c.strip()) for c in columns.split(","))
            self._column_lists[columns] = headers
        return headers

    def _make_row(
        self, table: str, headers: tuple[str, ...] | None, values: list[str | None]
    ) -> RawRow | BadRow:
        if headers is None:
            return RawRow(table, positional_headers(len(values)), values, self._row)
        if len(values) != len(headers):
            cells = tuple(value for value in values if value is not None)
            return BadRow("sql_wrong_value_count", self._row, self._member, cells)
        return RawRow(table, headers, values, self._row)

    def _insert(self, match: re.Match[str]) -> Iterator[RawRow | BadRow]:
        table = unquote_name(match["name"])
        headers = self._headers(match, table)
        w = self._w
        w.pos = match.end()
        dialect = self._d
        fixed = dialect.fixed_row(len(headers)).match if headers else None
        while True:
            self._row += 1
            exact = fixed(w.buf, w.pos) if fixed is not None else None
            generic = dialect.row.match(w.buf, w.pos) if exact is None else None
            if exact is not None:
                values = dialect.fixed_values(exact)
                separator = exact.group(exact.re.groups)
                w.pos = exact.end()
            elif generic is not None:
                values = dialect.row_values(w.buf, w.pos, generic.end(1))
                separator = generic.group(2)
                w.pos = generic.end()
            else:
                try:
                    values = self._slow_tuple()
                except _NoTuple as missing:
                    if missing.token in ("", ";"):
                        self._row -= 1  # the statement simply ended: no row was there
                        return
                    yield BadRow("sql_syntax", self._row, self._member)
                    self._skip_statement()
                    return
                except (_Unbalanced, _Syntax, _TooLarge, WindowFull) as error:
                    yield BadRow(_REASONS[type(error)], self._row, self._member)
                    if self._resync():
                        continue
                    return
                separator = ""
            yield self._make_row(table, headers, values)
            if not separator:
                kind, separator = self._next()
                if kind == "eof":
                    return
                if kind != "punct" or separator not in ",;":
                    self._skip_statement()  # e.g. ON DUPLICATE KEY UPDATE …
                    return
            if separator == ";":
                return

    def _slow_tuple(self) -> list[str | None]:
        kind, text = self._next()
        if kind != "punct" or text != "(":
            raise _NoTuple(text)
        values: list[str | None] = []
        parts: list[tuple[str, str]] = []
        depth = 0
        for _ in range(_MAX_TUPLE_TOKENS):
            kind, text = self._next()
            if kind == "eof":
                raise _Unbalanced
            if kind == "punct" and depth == 0 and text in ",)":
                if text == ")" and not values and not parts:
                    return values
                values.append(self._value(parts))
                if text == ")":
                    return values
                parts = []
                continue
            if kind == "punct":
                if text == ";":
                    raise _Syntax
                depth += 1 if text == "(" else -1 if text == ")" else 0
            elif depth == 0 and parts and not self._may_follow(parts[-1], kind):
                raise _Syntax  # e.g. 'O'Brien: fail here, before a stray quote swallows rows
            parts.append((kind, text))
        raise _TooLarge

    def _may_follow(self, previous: tuple[str, str], kind: str) -> bool:
        """Whether a literal token of `kind` may follow `previous` inside one value."""
        previous_kind, previous_text = previous
        return (
            previous_kind == "word"
            and (previous_text.startswith("_") or previous_text in ("N", "n"))
            and kind in self._d.strings
        )

    def _value(self, parts: list[tuple[str, str]]) -> str | None:
        """One value from its tokens: a literal, an introduced string, or an expression."""
        strings = self._d.strings
        if len(parts) == 1:
            kind, text = parts[0]
            if kind in strings:
                return strings[kind](text)
            if kind == "word":
                return None if text in NULL_WORDS else text
        elif len(parts) == 2 and self._may_follow(parts[0], parts[1][0]):
            kind, text = parts[1]
            return strings[kind](text)  # _utf8mb4'…', N'…'
        if any(kind == "punct" and text == "(" for kind, text in parts):
            return None  # a function call such as now() or CAST(…): not a stored value
        raise _Syntax

    def _resync(self) -> bool:
        """Skip to the next tuple (True) or past the end of the statement (False)."""
        w = self._w
        while True:
            match = _RESYNC.search(w.buf, w.pos)
            if match is not None:
                w.pos = match.end()
                return match.group(1) is not None
            w.discard_all_but(256)
            if not w.more():
                w.pos = len(w.buf)
                return False

    def _copy(self, match: re.Match[str]) -> Iterator[RawRow | BadRow]:
        table = unquote_name(match["name"])
        headers = self._headers(match, table)
        self._w.pos = match.end()
        while True:
            line = self._line()
            if line is None:
                self._row += 1
                yield BadRow("sql_unbalanced", self._row, self._member)
                return
            if line.endswith("\r"):
                line = line[:-1]
            if line == "\\.":
                return
            self._row += 1
            yield self._make_row(table, headers, copy_fields(line))

    def _line(self) -> str | None:
        """The next line without its newline; None at the end of input."""
        w = self._w
        while True:
            end = w.buf.find("\n", w.pos)
            if end >= 0:
                line = w.buf[w.pos : end]
                w.pos = end + 1
                return line
            if not w.more():
                if w.pos < len(w.buf):
                    line = w.buf[w.pos :]
                    w.pos = len(w.buf)
                    return line
                return None
