"""Why a breach artifact was refused.

A hospital acts on a breach filter only after checking it, so every refusal has
its own type: a caller can tell a forged manifest from a truncated download.
Messages name the field and the reason, never a value taken from a token.
"""

from __future__ import annotations


class ArtifactError(Exception):
    """Base class: the manifest, signature or body cannot be trusted or used."""


class ManifestSignatureError(ArtifactError):
    """The Ed25519 signature over the manifest bytes does not verify."""


class ManifestFormatError(ArtifactError):
    """The manifest is not a well-formed, canonical manifest of this format."""


class BodyDigestError(ArtifactError):
    """The body's size or SHA-256 differs from what the signed manifest states."""


class FilterFormatError(ArtifactError):
    """The body is malformed, or its header disagrees with the manifest."""


class RetractionSignatureError(ArtifactError):
    """A retraction is unsigned, or its signature does not verify."""


class RetractionFormatError(ArtifactError):
    """A retraction statement is not a well-formed, canonical statement of this format."""
