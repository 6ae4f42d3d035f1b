"""Deciding a member's format, CSV delimiter and SQL dialect from its content.

Extensions lie (``dump.txt``, ``export.csv`` that is really JSON lines), so
``--format auto`` looks at the first 64 KiB of decoded text:

* ``[`` → a JSON document; ``{`` → JSON lines when the first line, or most
  of the first lines, are whole objects (FHIR NDJSON when most of those have
  a ``resourceType``), else a JSON document — a majority, so a dump whose
  first line is cut or damaged is still read line by line;
* a first statement that is SQL (``INSERT``, ``CREATE``, ``COPY``, ``SET``,
  comments, …) → an SQL dump;
* text with more than 2 % control characters (NULs included), in most of
  its lines → unrecognised (binary); a stray NUL is damage in its row, not a
  verdict on the file;
* mostly whole JSON objects per line after a damaged start → JSON lines;
* anything else → CSV.

Lines end at ``\r\n``, ``\n`` or a lone ``\r`` (old Mac exports), as they do
for the readers.
"""

from __future__ import annotations

import csv
import re
from itertools import islice

from breachmatch.readers.json_reader import DECODER

#: Formats a caller may ask for ("tsv" is CSV with a tab delimiter).
FORMATS = ("auto", "csv", "tsv", "json", "jsonl", "sql", "fhir")

DELIMITERS = (",", ";", "\t", "|")

_SQL_START = re.compile(
    r"(?:\s+|--[^\n]*+(?:\n|\Z)|\#[^\n]*+(?:\n|\Z)|/\*.*?\*/)*+"
    r"(?:(?:INSERT|REPLACE)\s+(?:INTO|IGNORE)\s"
    r"|CREATE\s+(?:TABLE|DATABASE|SCHEMA|SEQUENCE|INDEX|UNIQUE|TYPE|EXTENSION|FUNCTION|OR|"
    r"TEMP|TEMPORARY|UNLOGGED)\s"
    r"|COPY\s+[\w.\"`]+\s*(?:\(|FROM\s)"
    r"|SET\s+(?:NAMES\s|[\w@.]+\s*(?:=|TO\s))"
    r"|DROP\s+(?:TABLE|DATABASE|SCHEMA|IF)\s"
    r"|(?:UN)?LOCK\s+TABLES\s"
    r"|USE\s+`?\w+`?\s*;"
    r"|BEGIN\s*;|START\s+TRANSACTION"
    r"|ALTER\s+(?:TABLE|SEQUENCE|SCHEMA|DATABASE)\s"
    r"|SELECT\s+pg_catalog\.|\\connect\s)",
    re.IGNORECASE | re.DOTALL,
)
_SQL_COMMENT_START = re.compile(r"\s*(?:--|/\*)")
_POSTGRES_MARKERS = re.compile(
    r"PostgreSQL database dump|standard_conforming_strings|pg_catalog|^COPY\s|\bpublic\.\w",
    re.MULTILINE,
)
_MYSQL_MARKERS = re.compile(r"MySQL dump|MariaDB dump|ENGINE\s*=|/\*!\d{5}|LOCK TABLES|`")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_LINE = re.compile(r"[^\r\n]*+(?:\r\n|\r|\n)")
#: Lines looked at to tell JSON lines from a JSON document.
_PROBE_LINES = 20


def _looks_binary(text: str) -> bool:
    """Not a text dump: more than 2 % control characters (NULs included), in most lines.

    Damage is local — a NUL or two in some rows of a small file — while a
    binary file has control characters all over.
    """
    if len(_CONTROL.findall(text)) * 50 <= len(text):
        return False
    lines = _lines(text, complete=True)
    return sum(_CONTROL.search(line) is not None for line in lines) * 2 > len(lines)


def _lines(sample: str, complete: bool) -> list[str]:
    """The sample's whole lines (a last line cut by the sample's end left out)."""
    lines = _LINE.findall(sample)
    end = sum(map(len, lines))
    if complete and end < len(sample):
        lines.append(sample[end:])
    return lines


def sniff_format(sample: str, complete: bool) -> str | None:
    """The format of a member starting with `sample`; None when it is not text.

    `complete` says the sample is the whole member.
    """
    text = sample.lstrip("\ufeff \t\r\n")
    if not text:
        return "csv"
    if text[0] == "[":
        return "json"
    if text[0] == "{":
        return _sniff_json_object(text, complete)
    if _SQL_START.match(text) or _SQL_COMMENT_START.match(text):
        return "sql"
    if _looks_binary(text):
        return None
    return _json_lines(text, complete) or "csv"


def _object(line: str) -> dict[str, object] | None:
    try:
        value = DECODER.decode(line)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _json_lines(text: str, complete: bool) -> str | None:
    """JSON lines ("jsonl", or "fhir" for resources), or None.

    JSON lines when the first line, or most of the first lines, are whole
    JSON objects.
    """
    lines = [line for line in _lines(text, complete)[:_PROBE_LINES] if line.strip()]
    values = list(map(_object, lines))
    objects = [value for value in values if value is not None]
    if not values or (values[0] is None and len(objects) * 2 <= len(values)):
        return None
    resources = sum("resourceType" in value for value in objects)
    return "fhir" if resources * 2 > len(objects) else "jsonl"


def _sniff_json_object(text: str, complete: bool) -> str:
    lines = _lines(text, complete)
    if complete and len(lines) == 1:
        value = _object(lines[0])
        if value is not None and "resourceType" not in value and _holds_object_arrays(value):
            return "json"  # a small one-line document like {"patients": [{...}]}
    # A pretty-printed document starts with a bare "{"; a minified one longer
    # than the sample has no whole line at all.
    return _json_lines(text, complete) or "json"


def _holds_object_arrays(value: dict[str, object]) -> bool:
    return any(
        isinstance(member, list) and bool(member) and isinstance(member[0], dict)
        for member in value.values()
    )


def sniff_delimiter(sample: str) -> str:
    """The delimiter that splits the sample's first rows most consistently.

    Each candidate parses up to 50 rows with the csv module (so quoted fields
    and embedded newlines count correctly); the score is the share of rows
    as wide as the first, then the width. Ties go to the earlier candidate.
    """
    lines = _lines(sample, complete=False) or [sample]
    best, best_score = DELIMITERS[0], (0.0, 1)
    for delimiter in DELIMITERS:
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            rows = [row for row in islice(reader, 50) if row]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        score = (sum(len(row) == width for row in rows) / len(rows), width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def sniff_sql_dialect(sample: str) -> str:
    """ "postgresql" when the dump says so, else "mysql" (backslash escapes)."""
    if _POSTGRES_MARKERS.search(sample) and not _MYSQL_MARKERS.search(sample):
        return "postgresql"
    return "mysql"
