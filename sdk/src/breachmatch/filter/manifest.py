"""The signed manifest: what a breach filter is, and the digest that binds its body.

The operator signs the manifest's canonical JSON bytes (sorted keys, no spaces,
UTF-8) with Ed25519; the SDK verifies the signature over exactly the bytes it
received and only then parses them, and refuses bytes that are not canonical,
so there is one byte string per manifest and no re-serialisation can change
what was signed. The body is bound by its size and SHA-256.

The signature covers ``SIGNATURE_CONTEXT + manifest bytes``: the context
string keeps a manifest signature from ever being valid for any other message
the same key might sign.

Every publication of a breach id carries a ``version``, 1 for the first and
one more for each correction (changed metadata or a changed dump). Consumers
keep the newest version they have seen per breach id and refuse anything
older (`breachmatch.filter.lifecycle`), so a replayed old manifest can never
bring back what a correction or a retraction replaced. ``descriptions`` holds
the breach's description per notice language (``da``, ``en``; empty when
there is none), so each notice quotes the text in its own language.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import nacl.exceptions
import nacl.signing

from breachmatch.filter.breach_ids import BREACH_ID_RULE, is_breach_id
from breachmatch.filter.canonical import canonical_bytes, parse_document
from breachmatch.filter.digest import BodyDigest
from breachmatch.filter.errors import FilterFormatError, ManifestFormatError, ManifestSignatureError
from breachmatch.filter.layout import FilterParameters
from breachmatch.filter.tags import MAX_ENTRIES
from breachmatch.filter.writer import BodySummary
from breachmatch.records import Category
from breachmatch.v1.breach_pb2 import BreachArtifact

#: The manifest format; 2 added ``version`` and per-language ``descriptions``.
MANIFEST_VERSION = 2
SIGNATURE_CONTEXT = b"breachmatch.v1.breach-manifest\x00"
SIGNATURE_SIZE = 64
#: Highest publication version (JSON integers beyond 2**53 are not portable).
MAX_VERSION = 2**53 - 1

#: Text fields that are one line; descriptions may hold several.
_LINE_FIELDS = ("title", "organisation", "oprf_key_id")
#: A description's key: a two- or three-letter ISO 639 language code.
_LANGUAGE = re.compile(r"[a-z]{2,3}")

#: Anything a body can be verified from: all of it, or its chunks in order.
BodySource = bytes | bytearray | memoryview | Iterable[bytes]


@dataclass(frozen=True)
class Manifest:
    breach_id: str
    version: int
    title: str
    organisation: str
    breach_date: date
    added_date: date
    descriptions: dict[str, str]
    verified: bool
    sensitive: bool
    oprf_key_id: str
    entry_count: int
    filter_parameters: FilterParameters
    category_counts: dict[str, int]
    body_size: int
    body_sha256: str
    categories: dict[str, int] = field(default_factory=Category.legend)

    def __post_init__(self) -> None:
        if not is_breach_id(self.breach_id):
            raise ManifestFormatError(f"breach_id must be {BREACH_ID_RULE}")
        if not 1 <= self.version <= MAX_VERSION:
            raise ManifestFormatError("manifest field version must be a positive integer")
        for name in _LINE_FIELDS:
            if not getattr(self, name).isprintable():
                raise ManifestFormatError(f"manifest field {name} must be one printable line")
        for language, text in self.descriptions.items():
            if not _LANGUAGE.fullmatch(language) or not text.strip():
                raise ManifestFormatError(
                    "manifest descriptions map language codes to non-empty texts"
                )
        if not self.oprf_key_id:
            raise ManifestFormatError("manifest field oprf_key_id is empty")
        if not 0 <= self.entry_count <= MAX_ENTRIES:
            raise ManifestFormatError("manifest field entry_count is out of range")
        if self.body_size < 0:
            raise ManifestFormatError("manifest field body_size is negative")
        if len(self.body_sha256) != 64 or not set(self.body_sha256) <= set(string.hexdigits[:16]):
            raise ManifestFormatError("manifest field body_sha256 is not 64 lower-case hex digits")
        if self.categories != Category.legend():
            raise ManifestFormatError("manifest category legend differs from this SDK's")
        if set(self.category_counts) != set(self.categories):
            raise ManifestFormatError("manifest category_counts must name every category")
        if not all(0 <= n <= self.entry_count for n in self.category_counts.values()):
            raise ManifestFormatError("manifest category_counts are out of range")

    @classmethod
    def for_body(
        cls,
        summary: BodySummary,
        *,
        breach_id: str,
        version: int,
        title: str,
        organisation: str,
        breach_date: date,
        added_date: date,
        descriptions: dict[str, str],
        verified: bool,
        sensitive: bool,
        oprf_key_id: str,
    ) -> Manifest:
        """The manifest of a body `FilterWriter.finish` just wrote."""
        return cls(
            breach_id=breach_id,
            version=version,
            title=title,
            organisation=organisation,
            breach_date=breach_date,
            added_date=added_date,
            descriptions=descriptions,
            verified=verified,
            sensitive=sensitive,
            oprf_key_id=oprf_key_id,
            entry_count=summary.entry_count,
            filter_parameters=summary.parameters,
            category_counts=dict(summary.category_counts),
            body_size=summary.body_size,
            body_sha256=summary.body_sha256,
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON: sorted keys, no insignificant spaces, UTF-8."""
        p = self.filter_parameters
        document = {
            "manifest_version": MANIFEST_VERSION,
            "breach_id": self.breach_id,
            "version": self.version,
            "title": self.title,
            "organisation": self.organisation,
            "breach_date": self.breach_date.isoformat(),
            "added_date": self.added_date.isoformat(),
            "descriptions": self.descriptions,
            "verified": self.verified,
            "sensitive": self.sensitive,
            "oprf_key_id": self.oprf_key_id,
            "entry_count": self.entry_count,
            "filter_parameters": {
                "format_version": p.format_version,
                "m_log2": p.m_log2,
                "rice_bits": p.rice_bits,
                "block_buckets": p.block_buckets,
            },
            "categories": self.categories,
            "category_counts": self.category_counts,
            "body_size": self.body_size,
            "body_sha256": self.body_sha256,
        }
        return canonical_bytes(document, ManifestFormatError, "manifest")

    @property
    def body_object(self) -> str:
        """The body's name in the object store: per breach and content, never overwritten.

        Two versions of a breach with different bodies keep both (the audit
        trail), and two publishers racing for the same version cannot
        overwrite each other's body under a manifest that names the other.
        """
        return f"{self.breach_id}.{self.body_sha256}"

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse canonical manifest bytes; anything else raises `ManifestFormatError`."""
        fields = parse_document(data, ManifestFormatError, "manifest")
        if fields.integer("manifest_version") != MANIFEST_VERSION:
            raise ManifestFormatError("unsupported manifest_version")
        params = fields.nested("filter_parameters")
        try:
            parameters = FilterParameters(
                format_version=params.integer("format_version"),
                m_log2=params.integer("m_log2"),
                rice_bits=params.integer("rice_bits"),
                block_buckets=params.integer("block_buckets"),
            )
        except FilterFormatError as exc:
            raise ManifestFormatError(f"manifest filter_parameters: {exc}") from exc
        params.done()
        manifest = cls(
            breach_id=fields.text("breach_id"),
            version=fields.integer("version"),
            title=fields.text("title"),
            organisation=fields.text("organisation"),
            breach_date=fields.day("breach_date"),
            added_date=fields.day("added_date"),
            descriptions=fields.texts("descriptions"),
            verified=fields.flag("verified"),
            sensitive=fields.flag("sensitive"),
            oprf_key_id=fields.text("oprf_key_id"),
            entry_count=fields.integer("entry_count"),
            filter_parameters=parameters,
            categories=fields.counts("categories"),
            category_counts=fields.counts("category_counts"),
            body_size=fields.integer("body_size"),
            body_sha256=fields.text("body_sha256"),
        )
        fields.done()
        if manifest.to_bytes() != data:
            raise ManifestFormatError("manifest bytes are not in canonical form")
        return manifest


@dataclass(frozen=True, slots=True)
class SignedManifest:
    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes

    def to_artifact(self) -> BreachArtifact:
        """The gRPC/event message that carries this manifest."""
        return BreachArtifact(
            breach_id=self.manifest.breach_id,
            manifest=self.manifest_bytes,
            signature=self.signature,
            body_size=self.manifest.body_size,
        )


def sign_manifest(manifest: Manifest, signing_key: nacl.signing.SigningKey) -> SignedManifest:
    data = manifest.to_bytes()
    signature = signing_key.sign(SIGNATURE_CONTEXT + data).signature
    return SignedManifest(manifest=manifest, manifest_bytes=data, signature=signature)


def verify_manifest(
    manifest_bytes: bytes, signature: bytes, verify_key: nacl.signing.VerifyKey
) -> Manifest:
    """Check the signature over the exact bytes, then parse them."""
    if len(signature) != SIGNATURE_SIZE:
        raise ManifestSignatureError(f"manifest signature must be {SIGNATURE_SIZE} bytes")
    try:
        verify_key.verify(SIGNATURE_CONTEXT + manifest_bytes, signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise ManifestSignatureError("manifest signature does not verify") from exc
    return Manifest.from_bytes(manifest_bytes)


def verify_artifact(artifact: BreachArtifact, verify_key: nacl.signing.VerifyKey) -> Manifest:
    """`verify_manifest`, plus the unsigned envelope fields must agree with it."""
    manifest = verify_manifest(artifact.manifest, artifact.signature, verify_key)
    if artifact.breach_id != manifest.breach_id:
        raise ManifestFormatError("artifact breach_id differs from its signed manifest")
    if artifact.body_size != manifest.body_size:
        raise ManifestFormatError("artifact body_size differs from its signed manifest")
    return manifest


def verify_body(manifest: Manifest, body: BodySource) -> None:
    """Raise `BodyDigestError` unless `body` has the manifest's size and SHA-256."""
    digest = BodyDigest()
    chunks = [body] if isinstance(body, bytes | bytearray | memoryview) else body
    for chunk in chunks:
        digest.update(chunk)
    digest.verify(manifest.body_size, manifest.body_sha256)
