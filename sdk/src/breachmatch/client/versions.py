"""The newest version of each breach this hospital has seen, kept across runs.

A matcher that is not the operator's — or the operator's, replaying old
events — could serve a breach's old manifest after a correction, or again
after its retraction; both are validly signed. Only memory tells them apart:
`breachmatch.filter.lifecycle` decides which events move a breach forward,
and this module keeps its state in ``<state>/breach-versions.json`` so the
SDK refuses an older version in every later run too, whether it arrives by
``check`` or by ``watch``.

The file holds breach ids, version numbers and manifest digests — nothing
about patients — and is written atomically (owner-only) after every change.
It is read again for every decision, never held in memory across one: a
watch and the checks it runs both record versions, and a stale copy written
back would forget a newer version one of them had seen. A file that cannot
be read is refused with its path, never silently reset: resetting it would
re-open exactly the replay it guards against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from breachmatch.client.errors import ConfigurationError
from breachmatch.filter import (
    Admission,
    BreachVersions,
    CheckedBreachEvent,
    Manifest,
    Standing,
    is_breach_id,
)
from breachmatch.keys import write_secret_file

_FORMAT = 1


class SeenBreaches:
    def __init__(self, path: Path) -> None:
        self._path = path

    @classmethod
    def open(cls, path: Path) -> SeenBreaches:
        """The record at `path`, checked to be readable now (so a bad one fails early)."""
        seen = cls(path)
        seen._load()
        return seen

    def get(self, breach_id: str) -> Standing | None:
        return self._load().get(breach_id)

    def admit(self, checked: CheckedBreachEvent) -> Admission:
        """`BreachVersions.admit` on the record as it is on disk, saved if it changed."""
        versions = self._load()
        admission = versions.admit(checked)
        if admission is Admission.NEW:
            self._save(versions)
        return admission

    def admit_served(self, manifest: Manifest, manifest_sha256: str) -> Admission:
        versions = self._load()
        admission = versions.admit_served(manifest, manifest_sha256)
        if admission is Admission.NEW:
            self._save(versions)
        return admission

    def _load(self) -> BreachVersions:
        if not self._path.exists():
            return BreachVersions()
        try:
            return BreachVersions(_parse(json.loads(self._path.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"the record of breach versions seen, {self._path}, cannot be read "
                f"({type(exc).__name__}); restore it from a backup. Deleting it makes this "
                "installation accept replayed old breach versions again"
            ) from None

    def _save(self, versions: BreachVersions) -> None:
        document = {
            "format": _FORMAT,
            "breaches": {
                breach_id: {
                    "version": standing.version,
                    "retracted": standing.retracted,
                    "manifest_sha256": standing.manifest_sha256,
                }
                for breach_id, standing in versions.items()
            },
        }
        write_secret_file(self._path, json.dumps(document, indent=1, sort_keys=True) + "\n")


def _parse(document: Any) -> dict[str, Standing]:
    if document["format"] != _FORMAT:
        raise ValueError("unknown format")
    known = {}
    for breach_id, entry in document["breaches"].items():
        version, retracted, digest = entry["version"], entry["retracted"], entry["manifest_sha256"]
        if not (
            is_breach_id(breach_id)
            and type(version) is int
            and version >= 1
            and type(retracted) is bool
            and isinstance(digest, str)
        ):
            raise ValueError("malformed entry")
        known[breach_id] = Standing(version, retracted, digest)
    return known
