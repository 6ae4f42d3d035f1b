"""Nested JSON objects as flat rows with dotted paths.

``{"patient": {"contact": {"email": "…"}, "phones": ["…", "…"]}}`` becomes the
headers ``patient.contact.email``, ``patient.phones.0``, ``patient.phones.1``,
so JSON goes through the same column mapping as CSV and SQL (which matches
nested keys on their last named segment). The walk is iterative: a document
nested as deep as the JSON parser allows cannot exhaust the Python stack.
"""

from __future__ import annotations

from typing import Any

from breachmatch.readers.items import RawRow


def _cell(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def flatten(document: dict[str, Any]) -> tuple[tuple[str, ...], list[str | None]]:
    """Dotted paths and their scalar values, in document order."""
    headers: list[str] = []
    values: list[str | None] = []
    stack: list[tuple[str, Any]] = [(str(k), v) for k, v in reversed(document.items())]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{path}.{i}", value[i]) for i in range(len(value) - 1, -1, -1))
        else:
            headers.append(path)
            values.append(_cell(value))
    return tuple(headers), values


def flat_row(table: str, document: dict[str, Any], row: int) -> RawRow:
    """`document` as a `RawRow` of `table`."""
    headers, values = flatten(document)
    return RawRow(table, headers, values, row)
