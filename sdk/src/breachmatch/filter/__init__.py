"""The breach artifact: a compressed filter of tags with encrypted labels, and its signed manifest.

Ingest builds it (`FilterWriter`, `Manifest.for_body`, `sign_manifest`); the
matcher serves it (`SignedManifest.to_artifact`); a hospital verifies it
(`verify_artifact`, `BreachFilter`) and looks its tokens up (`lookup`); the
notifier checks a hospital's proof of match with it and the proof index
(`ProofIndex`, `proven_labels`). See `tags` for the false-match bound,
`proofs` for why a proof needs the index, and `layout` for the byte formats.

What happens to a breach after its publication — corrections as new
versions, signed retractions, refusal of replays — is `retraction` and
`lifecycle`; `breach_ids` is the one validator of breach ids.
"""

from breachmatch.filter.breach_ids import (
    BREACH_ID_PATTERN,
    BreachIdError,
    check_breach_id,
    is_breach_id,
    path_in,
)
from breachmatch.filter.errors import (
    ArtifactError,
    BodyDigestError,
    FilterFormatError,
    ManifestFormatError,
    ManifestSignatureError,
    RetractionFormatError,
    RetractionSignatureError,
)
from breachmatch.filter.events import (
    BreachEventError,
    CheckedBreachEvent,
    check_breach_event,
    read_breach_event,
)
from breachmatch.filter.layout import FilterParameters
from breachmatch.filter.lifecycle import Admission, BreachVersions, Standing
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
from breachmatch.filter.retraction import (
    Retraction,
    SignedRetraction,
    sign_retraction,
    verify_retraction,
)
from breachmatch.filter.stats import FilterStats, filter_stats
from breachmatch.filter.tags import Tags, TokenKeys, derive_keys, false_match_bound
from breachmatch.filter.writer import BodySummary, FilterWriter

__all__ = [
    "BREACH_ID_PATTERN",
    "NOT_FOUND",
    "Admission",
    "ArtifactError",
    "BodyDigestError",
    "BodySummary",
    "BreachEventError",
    "BreachFilter",
    "BreachIdError",
    "BreachVersions",
    "CheckedBreachEvent",
    "FilterFormatError",
    "FilterParameters",
    "FilterStats",
    "FilterWriter",
    "Manifest",
    "ManifestFormatError",
    "ManifestSignatureError",
    "ProofIndex",
    "Retraction",
    "RetractionFormatError",
    "RetractionSignatureError",
    "SignedManifest",
    "SignedRetraction",
    "Standing",
    "Tags",
    "TokenKeys",
    "check_breach_event",
    "check_breach_id",
    "derive_keys",
    "false_match_bound",
    "filter_stats",
    "is_breach_id",
    "lookup_stream",
    "path_in",
    "proof_object_name",
    "proven_labels",
    "read_breach_event",
    "sign_manifest",
    "sign_retraction",
    "verify_artifact",
    "verify_body",
    "verify_manifest",
    "verify_retraction",
]
