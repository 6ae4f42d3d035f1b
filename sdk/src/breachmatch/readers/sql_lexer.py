"""Tokens and value tuples of the two SQL dialects dumps come in.

Three speeds. When the table's width is known (a column list or CREATE
TABLE), one regular expression with a capture group per column matches a
whole ``(…)`` tuple and hands back every value in one call. Otherwise the
generic row pattern matches the tuple and ``findall`` pulls its values out.
Both are C speed for the millions of rows of an extended ``INSERT``.
Anything else (a tuple cut by the read window, a function call,
``_binary'…'``) falls to the token path, which is slower but understands
nesting and comments.

String, name and comment patterns match only *terminated* constructs; an
opening quote or ``/*`` without its end matches the ``open`` kind instead,
so the reader knows to read more input or, at the end, to report
``sql_unbalanced``. Possessive quantifiers and atomic groups keep every
pattern that runs on raw input linear. The ``findall`` value patterns run
only inside a tuple the row pattern has already matched, so they use the
faster greedy "unrolled loop" form.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from breachmatch.readers.sql_literals import unescape_c_style, unescape_mysql, unescape_postgres

_BARE = r"[^\s'\"`(),;]++"
#: Bare words that are SQL NULL.
NULL_WORDS = frozenset({"NULL", "null", "Null"})
_MYSQL_STRING = r"'(?:[^'\\]++|\\.|'')*+'"
_PG_STRING = r"'(?:[^']++|'')*+'"
_PG_E_STRING = r"[Ee]'(?:[^'\\]++|\\.|'')*+'"


def _token_pattern(strings: str, opening: str) -> re.Pattern[str]:
    return re.compile(
        rf"(?P<space>\s++)|(?P<comment>--[^\n]*+(?:\n|\Z)|\#[^\n]*+(?:\n|\Z)|/\*.*?\*/)"
        rf"|{strings}|(?P<punct>[(),;])|(?P<open>{opening}|/\*)|(?P<word>{_BARE}|.)",
        re.DOTALL,
    )


def _row_pattern(literal: str) -> re.Pattern[str]:
    """A whole tuple (group 1), then the separator after it, if any (group 2)."""
    value = rf"(?:{literal}|{_BARE})"
    return re.compile(
        rf"(\(\s*+(?:{value}\s*+(?:,\s*+{value}\s*+)*+)?\))\s*+([,;]?)\s*+", re.DOTALL
    )


# The two decoders below run once per value of every row: conditions are
# inlined rather than calling helpers, and unescaping is only called for
# bodies that contain an escape. A group that did not take part is "" from
# findall and None from a match, so both are handled.


def _mysql_values(values: Iterable[tuple[Any, ...]]) -> list[str | None]:
    return [
        (None if bare in NULL_WORDS else bare)
        if bare
        else (unescape_mysql(body) if "\\" in body or "'" in body else body)
        for body, bare in values
    ]


def _postgres_values(values: Iterable[tuple[Any, ...]]) -> list[str | None]:
    return [
        (None if bare in NULL_WORDS else bare)
        if bare
        else unescape_c_style(escaped)
        if escaped
        else (unescape_postgres(plain) if plain and "'" in plain else plain or "")
        for escaped, plain, bare in values
    ]


def _dollar_body(token: str) -> str:
    tag_end = token.index("$", 1) + 1
    return token[tag_end:-tag_end]


@dataclass(frozen=True)
class Dialect:
    """Patterns and literal decoding for one SQL dialect."""

    name: str
    token: re.Pattern[str]
    row: re.Pattern[str]
    value: re.Pattern[str]
    #: One value with a capture group per literal kind (for fixed-width rows).
    value_groups: str
    decode: Callable[[Iterable[tuple[Any, ...]]], list[str | None]]
    #: Token kind → the value of a string token of that kind.
    strings: dict[str, Callable[[str], str]]
    _fixed: dict[int, re.Pattern[str]] = field(default_factory=dict, compare=False)
    _groups_per_value: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_groups_per_value", re.compile(self.value_groups).groups)

    def row_values(self, text: str, start: int, end: int) -> list[str | None]:
        """The values of the generic-path tuple ``text[start:end]`` (parentheses included)."""
        return self.decode(self.value.findall(text, start + 1, end - 1))

    def fixed_row(self, width: int) -> re.Pattern[str]:
        """A tuple of exactly `width` plain literals, then its separator (last group)."""
        pattern = self._fixed.get(width)
        if pattern is None:
            values = r"\s*+,\s*+".join([self.value_groups] * width)
            pattern = re.compile(rf"\(\s*+{values}\s*+\)\s*+([,;]?)\s*+", re.DOTALL)
            if len(self._fixed) < 64:
                self._fixed[width] = pattern
        return pattern

    def fixed_values(self, match: re.Match[str]) -> list[str | None]:
        """The values of a `fixed_row` match."""
        groups = match.groups()[:-1]
        return self.decode(zip(*[iter(groups)] * self._groups_per_value, strict=True))


MYSQL = Dialect(
    name="mysql",
    token=_token_pattern(
        r"(?P<string>'(?:[^'\\]++|\\.|'')*+')"
        r"|(?P<dstring>\"(?:[^\"\\]++|\\.|\"\")*+\")"
        r"|(?P<ident>`(?:[^`]++|``)*+`)",
        opening=r"['\"`]",
    ),
    row=_row_pattern(_MYSQL_STRING),
    value=re.compile(rf"'([^'\\]*(?:(?:\\.|'')[^'\\]*)*)'|({_BARE})", re.DOTALL),
    value_groups=rf"(?>'([^'\\]*(?:(?:\\.|'')[^'\\]*)*)'|({_BARE}))",
    decode=_mysql_values,
    strings={
        "string": lambda token: unescape_mysql(token[1:-1]),
        "dstring": lambda token: unescape_mysql(token[1:-1]),
    },
)

POSTGRES = Dialect(
    name="postgresql",
    token=_token_pattern(
        r"(?P<estring>[Ee]'(?:[^'\\]++|\\.|'')*+')"
        r"|(?P<string>'(?:[^']++|'')*+')"
        r"|(?P<dollar>\$(?P<tag>(?:[A-Za-z_]\w*+)?)\$.*?\$(?P=tag)\$)"
        r"|(?P<ident>\"(?:[^\"]++|\"\")*+\")",
        opening=r"[Ee]?'|\"|\$(?:[A-Za-z_]\w*+)?\$",
    ),
    row=_row_pattern(rf"{_PG_E_STRING}|{_PG_STRING}"),
    value=re.compile(
        rf"[Ee]'([^'\\]*(?:(?:\\.|'')[^'\\]*)*)'|'([^']*(?:''[^']*)*)'|({_BARE})", re.DOTALL
    ),
    value_groups=(rf"(?>[Ee]'([^'\\]*(?:(?:\\.|'')[^'\\]*)*)'|'([^']*(?:''[^']*)*)'|({_BARE}))"),
    decode=_postgres_values,
    strings={
        "string": lambda token: unescape_postgres(token[1:-1]),
        "estring": lambda token: unescape_c_style(token[2:-1]),
        "dollar": _dollar_body,
    },
)

DIALECTS = {d.name: d for d in (MYSQL, POSTGRES)}
