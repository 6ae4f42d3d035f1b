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
A file that cannot be read is refused with its path, never silently reset:
resetting it would re-open exactly the replay it guards against.
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
    def __init__(self, path: Path, versions: BreachVersions) -> None:
        self._path = path
        self._versions = versions

    @classmethod
    def open(cls, path: Path) -> SeenBreaches:
        if not path.exists():
            return cls(path, BreachVersions())
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            known = _parse(document)
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"the record of breach versions seen, {path}, cannot be read "
                f"({type(exc).__name__}); restore it from a backup. Deleting it makes this "
                "installation accept replayed old breach versions again"
            ) from None
        return cls(path, BreachVersions(known))

    def get(self, breach_id: str) -> Standing | None:
        return self._versions.get(breach_id)

    def admit(self, checked: CheckedBreachEvent) -> Admission:
        """`BreachVersions.admit`, saved when it changed anything."""
        admission = self._versions.admit(checked)
        if admission is Admission.NEW:
            self._save()
        return admission

    def admit_served(self, manifest: Manifest, manifest_sha256: str) -> Admission:
        admission = self._versions.admit_served(manifest, manifest_sha256)
        if admission is Admission.NEW:
            self._save()
        return admission

    def _save(self) -> None:
        document = {
            "format": _FORMAT,
            "breaches": {
                breach_id: {
                    "version": standing.version,
                    "retracted": standing.retracted,
                    "manifest_sha256": standing.manifest_sha256,
                }
                for breach_id, standing in self._versions.items()
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
