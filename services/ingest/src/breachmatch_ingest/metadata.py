"""Breach metadata as the operator gives it (CLI flags or the gRPC upload header).

It ends up in the signed manifest, which checks every field when it is built;
`BreachInfo.check` runs the very same checks before any work starts, so a
title with a line break fails in a second rather than after an hour of OPRF
evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from breachmatch.filter import ArtifactError, BodySummary, FilterParameters, Manifest
from breachmatch.records import Category
from breachmatch.v1 import ingest_pb2


class MetadataError(ValueError):
    """Breach metadata that cannot go into a manifest; the message names the field."""


def today() -> date:
    return datetime.now(UTC).date()


def parse_date(text: str, field_name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise MetadataError(f"{field_name} must be an ISO date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class BreachInfo:
    breach_id: str
    title: str
    organisation: str = ""
    #: When the leak happened; unknown dates default to the added date.
    breach_date: date | None = None
    description: str = ""
    verified: bool = False
    sensitive: bool = False

    def manifest_for(self, summary: BodySummary, key_id: str, added_date: date) -> Manifest:
        """The manifest of this breach for the body `summary` describes."""
        return Manifest.for_body(
            summary,
            breach_id=self.breach_id,
            title=self.title,
            organisation=self.organisation,
            breach_date=self.breach_date or added_date,
            added_date=added_date,
            description=self.description,
            verified=self.verified,
            sensitive=self.sensitive,
            oprf_key_id=key_id,
        )

    def check(self) -> None:
        """Raise `MetadataError` if these fields would be refused by the manifest."""
        if not self.title.strip():
            raise MetadataError("a breach needs a title")
        empty = BodySummary(
            entry_count=0,
            parameters=FilterParameters(),
            body_size=0,
            body_sha256="0" * 64,
            category_counts=dict.fromkeys(Category.legend(), 0),
        )
        try:
            self.manifest_for(empty, key_id="check", added_date=today())
        except ArtifactError as error:
            raise MetadataError(str(error)) from None

    @classmethod
    def from_proto(cls, message: ingest_pb2.BreachMetadata) -> BreachInfo:
        return cls(
            breach_id=message.breach_id,
            title=message.title,
            organisation=message.organisation,
            breach_date=parse_date(message.breach_date, "breach_date")
            if message.breach_date
            else None,
            description=message.description,
            verified=message.verified,
            sensitive=message.sensitive,
        )
