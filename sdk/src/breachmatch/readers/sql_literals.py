"""Decoding SQL literals and names the way MySQL and PostgreSQL dumps write them.

* MySQL strings: backslash escapes (``\\'``, ``\\n``, ``\\0``, ``\\Z``, …; an
  unknown escape is the character itself, but ``\\%`` and ``\\_`` keep their
  backslash) and doubled quotes.
* PostgreSQL strings: standard (only ``''``), or ``E'…'`` with C-style
  escapes (``\\n``, octal, ``\\xHH``, ``\\uXXXX``).
* PostgreSQL ``COPY … FROM stdin`` text format: ``\\N`` is NULL; backslash
  escapes as in E-strings.
* Names: ```back`ticks```, ``"double quotes"`` or ``[brackets]``, dotted.
"""

from __future__ import annotations

import re

_MYSQL_ESCAPES = {"0": "\0", "b": "\b", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a"}
_MYSQL_KEEP_BACKSLASH = frozenset("%_")
_C_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}

_MYSQL_ESCAPE = re.compile(r"\\(.)|''|\"\"", re.DOTALL)
_C_ESCAPE = re.compile(
    r"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]{1,2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|(.))|''",
    re.DOTALL,
)
_NAME_PART = re.compile(r'`((?:[^`]|``)+)`|"((?:[^"]|"")+)"|\[([^\]]+)\]|([^\s.`"\[]+)')


def _mysql_escape(match: re.Match[str]) -> str:
    char = match.group(1)
    if char is None:
        return match.group()[0]
    if char in _MYSQL_KEEP_BACKSLASH:
        return "\\" + char
    return _MYSQL_ESCAPES.get(char, char)


def unescape_mysql(body: str) -> str:
    """The value of a MySQL string literal's body (between the quotes)."""
    return _MYSQL_ESCAPE.sub(_mysql_escape, body)


def unescape_postgres(body: str) -> str:
    """The value of a standard PostgreSQL string literal's body."""
    return body.replace("''", "'")


def _code_point(value: int) -> str:
    if value >= 0x110000 or 0xD800 <= value < 0xE000:
        return "\ufffd"
    return chr(value)


def _c_escape(match: re.Match[str]) -> str:
    octal, hex2, hex4, hex8, other = match.groups()
    if octal is not None:
        return _code_point(int(octal, 8))
    for digits in (hex2, hex4, hex8):
        if digits is not None:
            return _code_point(int(digits, 16))
    if other is not None:
        return _C_ESCAPES.get(other, other)
    return "'"


def unescape_c_style(body: str) -> str:
    """The value of an ``E'…'`` string body or a ``COPY`` text field."""
    if "\\" not in body and "''" not in body:
        return body
    return _C_ESCAPE.sub(_c_escape, body)


def copy_fields(line: str) -> list[str | None]:
    """The fields of one ``COPY … FROM stdin`` text-format line (without its newline)."""
    return [
        None if field == "\\N" else unescape_c_style(field) if "\\" in field else field
        for field in line.split("\t")
    ]


def unquote_name(name: str) -> str:
    """A dotted, possibly quoted SQL name as plain text ("public"."p" → public.p)."""
    parts = []
    for match in _NAME_PART.finditer(name):
        backtick, double, bracket, bare = match.groups()
        if backtick is not None:
            parts.append(backtick.replace("``", "`"))
        elif double is not None:
            parts.append(double.replace('""', '"'))
        else:
            parts.append(bracket if bracket is not None else bare)
    return ".".join(parts)
