"""Breach metadata as the operator gives it (CLI flags or the gRPC upload header).

It ends up in the signed manifest, which checks every field when it is built;
`BreachInfo.check` runs the very same checks before any work starts, so a
title with a line break fails in a second rather than after an hour of OPRF
evaluation. It also runs the notice rules the notifier renders with
(`breachmatch.notice_rules`): a breach whose notices could never be sent —
no organisation, a description in one language only, a link in the title —
is refused before it is published, not dead-lettered notice by notice after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from breachmatch.filter import ArtifactError, BodySummary, FilterParameters, Manifest
from breachmatch.notice_rules import NoticeTextError, check_breach_text
from breachmatch.records import Category
from breachmatch.v1 import ingest_pb2


class MetadataError(ValueError):
    """Breach metadata that cannot go into a manifest; the message names the field.

    `field` is the metadata field (``organisation``, ``description.da``) when
    one is to blame, so a CLI can name its own flag for it.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


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
    #: Description per notice language; empty texts are left out.
    descriptions: Mapping[str, str] = field(default_factory=dict)
    verified: bool = False
    sensitive: bool = False

    def manifest_for(self, summary: BodySummary, key_id: str, added_date: date) -> Manifest:
        """The manifest of this breach for the body `summary` describes, as version 1.

        Publication gives it its real version and keeps the first added date
        (`publish.publish_artifact`).
        """
        return Manifest.for_body(
            summary,
            breach_id=self.breach_id,
            version=1,
            title=self.title,
            organisation=self.organisation,
            breach_date=self.breach_date or added_date,
            added_date=added_date,
            descriptions={lang: text for lang, text in self.descriptions.items() if text.strip()},
            verified=self.verified,
            sensitive=self.sensitive,
            oprf_key_id=key_id,
        )

    def check(self) -> None:
        """Raise `MetadataError` if the manifest or a notice would refuse these fields."""
        if not self.title.strip():
            raise MetadataError("a breach needs a title", "title")
        empty = BodySummary(
            entry_count=0,
            parameters=FilterParameters(),
            body_size=0,
            body_sha256="0" * 64,
            category_counts=dict.fromkeys(Category.legend(), 0),
        )
        try:
            manifest = self.manifest_for(empty, key_id="check", added_date=today())
        except ArtifactError as error:
            raise MetadataError(str(error)) from None
        try:
            check_breach_text(manifest.title, manifest.organisation, manifest.descriptions)
        except NoticeTextError as error:
            raise MetadataError(
                f"{error.field}: {error.problem} (notices about this breach could not be sent)",
                error.field,
            ) from None

    @classmethod
    def from_proto(cls, message: ingest_pb2.BreachMetadata) -> BreachInfo:
        return cls(
            breach_id=message.breach_id,
            title=message.title,
            organisation=message.organisation,
            breach_date=parse_date(message.breach_date, "breach_date")
            if message.breach_date
            else None,
            descriptions=dict(message.descriptions),
            verified=message.verified,
            sensitive=message.sensitive,
        )
