"""FHIR R4 NDJSON (bulk ``$export``): Patient resources, everything else counted.

One resource per line. Patients are yielded as parsed JSON for
`breachmatch.readers.fhir_patient` to map; a ``Bundle`` line is opened and
its entries treated the same way; every other resource type is counted as
skipped (by type), so an export of Observations and Conditions is visible in
the report rather than silently empty. A line that does not parse is a bad
row whose string values are kept for by-value salvage.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TextIO

from breachmatch.readers.items import BadRow, Mapped, PatientResource, SkippedResource
from breachmatch.readers.salvage import json_strings
from breachmatch.readers.window import iter_lines


def read_fhir_ndjson(text: TextIO, member: str) -> Iterator[Mapped]:
    """Patient resources of an NDJSON member."""
    row = 0
    for line in iter_lines(text):
        if line is not None and (not line or line.isspace()):
            continue
        if line is None:
            row += 1
            yield BadRow("json_too_large", row, member)
            continue
        try:
            resource = json.loads(line)
        except ValueError:
            row += 1
            yield BadRow("json_syntax", row, member, json_strings(line))
            continue
        except RecursionError:
            row += 1
            yield BadRow("json_too_deep", row, member)
            continue
        for item in _resources(resource):
            if isinstance(item, SkippedResource):
                yield item
                continue
            row += 1
            if isinstance(item, str):
                yield BadRow(item, row, member)
            else:
                yield PatientResource(item, row)


def _resources(resource: object) -> Iterator[dict[str, Any] | SkippedResource | str]:
    """What one line holds: Patients, skipped resources, or bad-row reason codes.

    A Bundle's entries are classified too (one level: a Bundle inside a
    Bundle is counted as skipped).
    """
    if not isinstance(resource, dict) or resource.get("resourceType") != "Bundle":
        yield _classify(resource)
        return
    entries = resource.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and "resource" in entry:
            yield _classify(entry["resource"])


def _classify(resource: object) -> dict[str, Any] | SkippedResource | str:
    if not isinstance(resource, dict):
        return "json_not_object"
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return "fhir_no_resource_type"
    if kind == "Patient":
        return resource
    return SkippedResource(kind)
