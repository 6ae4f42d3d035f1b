"""The hospital's cache key: 32 secret bytes in a file only the hospital controls.

It protects the token cache at rest and keys the outreach idempotency keys.
Rather than use the same 32 bytes for several primitives, each use gets its
own subkey, ``HMAC-SHA256(key, "breachmatch.cache-key.v1|" + purpose)``, so a
weakness in one use (say an HMAC index leaked with the database) says nothing
about the SecretBox key.

The file holds the key as 64 hex digits (what `breachmatch` writes when it
creates one, mode 0600) or as 32 raw bytes (``head -c 32 /dev/urandom``). A
file readable by group or others is refused: whoever reads it can open the
cache.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import stat
from pathlib import Path

from breachmatch.client.errors import ConfigurationError
from breachmatch.keys import write_secret_file

KEY_SIZE = 32
_SUBKEY_CONTEXT = b"breachmatch.cache-key.v1|"


class CacheKey:
    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_SIZE:
            raise ConfigurationError(f"a cache key is {KEY_SIZE} bytes")
        self._secret = secret

    @classmethod
    def load_or_create(cls, path: Path) -> CacheKey:
        """Read the key file, or create it (0600) with fresh random bytes if it is absent."""
        if not path.exists():
            write_secret_file(path, secrets.token_bytes(KEY_SIZE).hex())
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigurationError(
                f"cache key file {path} is readable by other users; run: chmod 600 {path}"
            )
        data = path.read_bytes()
        if len(data) == KEY_SIZE:
            return cls(data)
        try:
            secret = bytes.fromhex(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            secret = b""
        if len(secret) != KEY_SIZE:
            raise ConfigurationError(
                f"cache key file {path} must hold {KEY_SIZE} bytes, raw or as "
                f"{2 * KEY_SIZE} hex digits; pass the right file with --cache-key"
            )
        return cls(secret)

    def subkey(self, purpose: str) -> bytes:
        """An independent 32-byte key for one named use."""
        return hmac.digest(self._secret, _SUBKEY_CONTEXT + purpose.encode("ascii"), hashlib.sha256)
