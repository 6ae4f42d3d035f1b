"""The signed manifest: what a breach filter is, and the digest that binds its body.

The operator signs the manifest's canonical JSON bytes (sorted keys, no spaces,
UTF-8) with Ed25519; the SDK verifies the signature over exactly the bytes it
received and only then parses them, and refuses bytes that are not canonical,
so there is one byte string per manifest and no re-serialisation can change
what was signed. The body is bound by its size and SHA-256.

The signature covers ``SIGNATURE_CONTEXT + manifest bytes``: the context
string keeps a manifest signature from ever being valid for any other message
the same key might sign.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import nacl.exceptions
import nacl.signing

from breachmatch.filter.digest import BodyDigest
from breachmatch.filter.errors import FilterFormatError, ManifestFormatError, ManifestSignatureError
from breachmatch.filter.layout import FilterParameters
from breachmatch.filter.tags import MAX_ENTRIES
from breachmatch.filter.writer import BodySummary
from breachmatch.records import Category
from breachmatch.v1.breach_pb2 import BreachArtifact

MANIFEST_VERSION = 1
SIGNATURE_CONTEXT = b"breachmatch.v1.breach-manifest\x00"
SIGNATURE_SIZE = 64

#: Breach ids appear in object names and URLs, so they are kept plain.
_BREACH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: Text fields that are one line; `description` may hold several.
_LINE_FIELDS = ("title", "organisation", "oprf_key_id")

#: Anything a body can be verified from: all of it, or its chunks in order.
BodySource = bytes | bytearray | memoryview | Iterable[bytes]


@dataclass(frozen=True)
class Manifest:
    breach_id: str
    title: str
    organisation: str
    breach_date: date
    added_date: date
    description: str
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
        if not _BREACH_ID.fullmatch(self.breach_id):
            raise ManifestFormatError("breach_id must be 1-128 of [A-Za-z0-9._-]")
        for name in _LINE_FIELDS:
            if not getattr(self, name).isprintable():
                raise ManifestFormatError(f"manifest field {name} must be one printable line")
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
        title: str,
        organisation: str,
        breach_date: date,
        added_date: date,
        description: str,
        verified: bool,
        sensitive: bool,
        oprf_key_id: str,
    ) -> Manifest:
        """The manifest of a body `FilterWriter.finish` just wrote."""
        return cls(
            breach_id=breach_id,
            title=title,
            organisation=organisation,
            breach_date=breach_date,
            added_date=added_date,
            description=description,
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
            "title": self.title,
            "organisation": self.organisation,
            "breach_date": self.breach_date.isoformat(),
            "added_date": self.added_date.isoformat(),
            "description": self.description,
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
        try:
            return json.dumps(
                document, sort_keys=True, separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ManifestFormatError("manifest text is not valid Unicode") from exc

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse canonical manifest bytes; anything else raises `ManifestFormatError`."""
        try:
            document = json.loads(data.decode("utf-8"), parse_float=_reject_float)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ManifestFormatError("manifest is not UTF-8 JSON of integers and text") from exc
        fields = _Fields(document, "")
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
            title=fields.text("title"),
            organisation=fields.text("organisation"),
            breach_date=fields.day("breach_date"),
            added_date=fields.day("added_date"),
            description=fields.text("description"),
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


def _reject_float(text: str) -> float:
    raise ValueError("manifests hold no floating-point numbers")


class _Fields:
    """Typed access to one JSON object; every field must be read exactly once."""

    def __init__(self, value: Any, prefix: str) -> None:
        if not isinstance(value, dict):
            raise ManifestFormatError(f"manifest {prefix or 'document'} is not a JSON object")
        self._value: dict[str, Any] = value
        self._prefix = prefix
        self._read: set[str] = set()

    def _get(self, name: str, kind: type | tuple[type, ...], what: str) -> Any:
        if name not in self._value:
            raise ManifestFormatError(f"manifest field {self._prefix}{name} is missing")
        self._read.add(name)
        value = self._value[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ManifestFormatError(f"manifest field {self._prefix}{name} must be {what}")
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
            raise ManifestFormatError(f"manifest field {name} is not an ISO date") from exc

    def counts(self, name: str) -> dict[str, int]:
        nested = self.nested(name)
        result = {key: nested.integer(key) for key in sorted(nested._value)}
        nested.done()
        return result

    def nested(self, name: str) -> _Fields:
        return _Fields(self._get(name, dict, "an object"), f"{self._prefix}{name}.")

    def done(self) -> None:
        if set(self._value) - self._read:
            raise ManifestFormatError(f"manifest {self._prefix or 'document'} has unknown fields")
