"""Canonical JSON for what the operator signs: one byte string per document.

Signed documents (the breach manifest, a retraction) are JSON with sorted
keys, no insignificant spaces, UTF-8 and no floating-point numbers. A verifier
checks the signature over the exact bytes it received, parses them with
`Fields` (every field typed, every field read exactly once, nothing unknown)
and then refuses the bytes unless re-serialising the parsed document gives
them back: no two byte strings can carry the same document, so nothing a
relay re-encodes can change what was signed.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from breachmatch.filter.errors import ArtifactError


def canonical_bytes(document: dict[str, Any], error: type[ArtifactError], what: str) -> bytes:
    """The canonical encoding of `document`; `error` if its text is not valid Unicode."""
    try:
        return json.dumps(
            document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(f"{what} text is not valid Unicode") from exc


def parse_document(data: bytes, error: type[ArtifactError], what: str) -> Fields:
    """The top-level object of canonical JSON bytes, for typed reading."""
    try:
        document = json.loads(data.decode("utf-8"), parse_float=_reject_float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise error(f"{what} is not UTF-8 JSON of integers and text") from exc
    return Fields(document, "", error, what)


def _reject_float(text: str) -> float:
    raise ValueError("signed documents hold no floating-point numbers")


class Fields:
    """Typed access to one JSON object; every field must be read exactly once."""

    def __init__(self, value: Any, prefix: str, error: type[ArtifactError], what: str) -> None:
        if not isinstance(value, dict):
            raise error(f"{what} {prefix or 'document'} is not a JSON object")
        self._value: dict[str, Any] = value
        self._prefix = prefix
        self._error = error
        self._what = what
        self._read: set[str] = set()

    def _get(self, name: str, kind: type | tuple[type, ...], expected: str) -> Any:
        if name not in self._value:
            raise self._error(f"{self._what} field {self._prefix}{name} is missing")
        self._read.add(name)
        value = self._value[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self._error(f"{self._what} field {self._prefix}{name} must be {expected}")
        return value

    def text(self, name: str) -> str:
        value: str = self._get(name, str, "a string")
        return value

    def integer(self, name: str) -> int:
        value: int = self._get(name, int, "an integer")
        return value

    def flag(self, name: str) -> bool:
        value: bool = self._get(name, bool, "true or false")
        return value

    def day(self, name: str) -> date:
        text = self.text(name)
        try:
            return date.fromisoformat(text)
        except ValueError as exc:
            raise self._error(f"{self._what} field {name} is not an ISO date") from exc

    def counts(self, name: str) -> dict[str, int]:
        nested = self.nested(name)
        result = {key: nested.integer(key) for key in sorted(nested._value)}
        nested.done()
        return result

    def texts(self, name: str) -> dict[str, str]:
        nested = self.nested(name)
        result = {key: nested.text(key) for key in sorted(nested._value)}
        nested.done()
        return result

    def nested(self, name: str) -> Fields:
        value = self._get(name, dict, "an object")
        return Fields(value, f"{self._prefix}{name}.", self._error, self._what)

    def done(self) -> None:
        if set(self._value) - self._read:
            raise self._error(f"{self._what} {self._prefix or 'document'} has unknown fields")
