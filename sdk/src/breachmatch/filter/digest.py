"""Size and SHA-256 of a body, computed as its bytes go by.

The writer, `verify_body` and the streaming reader all need the same two
numbers over bytes they only see once; one running digest serves all three.
"""

from __future__ import annotations

import hashlib
import hmac

from breachmatch.filter.errors import BodyDigestError


class BodyDigest:
    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()

    def verify(self, expected_size: int, expected_sha256: str) -> None:
        """Raise `BodyDigestError` unless the bytes seen are the expected ones."""
        if self.size != expected_size:
            raise BodyDigestError(f"body is {self.size} bytes, the manifest says {expected_size}")
        if not hmac.compare_digest(self.hexdigest(), expected_sha256):
            raise BodyDigestError("body SHA-256 differs from the manifest's")
