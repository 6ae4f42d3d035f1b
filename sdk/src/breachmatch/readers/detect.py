"""Deciding a member's format, CSV delimiter and SQL dialect from its content.

Extensions lie (``dump.txt``, ``export.csv`` that is really JSON lines), so
``--format auto`` looks at the first 64 KiB of decoded text:

* ``[`` → a JSON document; ``{`` → JSON lines when the first line is a whole
  object (FHIR NDJSON when it has a ``resourceType``), else a JSON document;
* a first statement that is SQL (``INSERT``, ``CREATE``, ``COPY``, ``SET``,
  comments, …) → an SQL dump;
* text with NULs or many control characters → unrecognised (binary);
* anything else → CSV.
"""

from __future__ import annotations

import csv
import io
import json
import re
from itertools import islice

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


def _looks_binary(text: str) -> bool:
    """NULs, or more than 2 % control characters: not a text dump."""
    if "\x00" in text:
        return True
    return len(_CONTROL.findall(text)) * 50 > len(text)


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
    return "csv"


def _sniff_json_object(text: str, complete: bool) -> str:
    first, newline, rest = text.partition("\n")
    if not newline and not complete:
        return "json"  # one line longer than the sample: a minified document
    try:
        value = json.loads(first)
    except (ValueError, RecursionError):
        return "json"  # a pretty-printed document starts with a bare "{"
    if not isinstance(value, dict):
        return "json"
    if "resourceType" in value:
        return "fhir"
    if complete and not rest.strip() and _holds_object_arrays(value):
        return "json"  # a small one-line document like {"patients": [{...}]}
    return "jsonl"


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
    complete_lines = sample[: sample.rfind("\n") + 1] or sample
    best, best_score = DELIMITERS[0], (0.0, 1)
    for delimiter in DELIMITERS:
        reader = csv.reader(io.StringIO(complete_lines), delimiter=delimiter)
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
