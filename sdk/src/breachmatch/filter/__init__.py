"""The breach artifact: a compressed filter of tags with encrypted labels, and its signed manifest.

Ingest builds it (`FilterWriter`, `Manifest.for_body`, `sign_manifest`); the
matcher serves it (`SignedManifest.to_artifact`); a hospital verifies it
(`verify_artifact`, `BreachFilter`) and looks its tokens up (`lookup`); the
notifier checks a hospital's proof of match with it and the proof index
(`ProofIndex`, `proven_labels`). See `tags` for the false-match bound,
`proofs` for why a proof needs the index, and `layout` for the byte formats.
"""

from breachmatch.filter.errors import (
    ArtifactError,
    BodyDigestError,
    FilterFormatError,
    ManifestFormatError,
    ManifestSignatureError,
)
from breachmatch.filter.events import (
    BreachEventError,
    CheckedBreachEvent,
    read_breach_event,
)
from breachmatch.filter.layout import FilterParameters
from breachmatch.filter.manifest import (
    Manifest,
    SignedManifest,
    sign_manifest,
    verify_artifact,
    verify_body,
    verify_manifest,
)
from breachmatch.filter.proofs import ProofIndex, proof_object_name, proven_labels
from breachmatch.filter.reader import NOT_FOUND, BreachFilter, lookup_stream
from breachmatch.filter.stats import FilterStats, filter_stats
from breachmatch.filter.tags import Tags, TokenKeys, derive_keys, false_match_bound
from breachmatch.filter.writer import BodySummary, FilterWriter

__all__ = [
    "NOT_FOUND",
    "ArtifactError",
    "BodyDigestError",
    "BodySummary",
    "BreachEventError",
    "BreachFilter",
    "CheckedBreachEvent",
    "FilterFormatError",
    "FilterParameters",
    "FilterStats",
    "FilterWriter",
    "Manifest",
    "ManifestFormatError",
    "ManifestSignatureError",
    "ProofIndex",
    "SignedManifest",
    "Tags",
    "TokenKeys",
    "derive_keys",
    "false_match_bound",
    "filter_stats",
    "lookup_stream",
    "proof_object_name",
    "proven_labels",
    "read_breach_event",
    "sign_manifest",
    "verify_artifact",
    "verify_body",
    "verify_manifest",
]
