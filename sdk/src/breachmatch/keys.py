"""Operator key material on disk: OPRF key ring, manifest signing, sealing keys.

Keys come from files (Kubernetes Secrets mounted as files), never from code or
environment values, so they can be rotated without a rebuild and never show up
in `ps` or a crash dump of the environment.

The OPRF key ring is a directory with one JSON file per key id. Rotation is
explicit because every token depends on the key: a new key becomes current,
the previous one stays valid for a grace period (hospitals re-tokenise), and is
then retired — its secret erased from the file, so a retired id can never be
evaluated again by accident.

Each usable key carries the operator-signed statement of its public key
(`breachmatch.statements`), which the matcher serves and hospitals verify
VOPRF proofs against. Statements are signed when a key is made and re-signed
when its validity changes (rotation puts the old key's end date in it);
`KeyRing.sign_statements` refreshes them all (before they expire, or for a
ring made before statements existed).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

import nacl.public
import nacl.signing

from breachmatch import oprf
from breachmatch.statements import KeyPurpose, KeyStatement, SignedKeyStatement, sign_statement

#: How long a freshly signed statement of a current key (or of the notifier key) is valid.
DEFAULT_STATEMENT_LIFETIME = timedelta(days=365)


class KeyState(StrEnum):
    CURRENT = "current"
    GRACE = "grace"
    RETIRED = "retired"


class KeyRingError(LookupError):
    """Base for key-ring lookups."""


class UnknownKeyError(KeyRingError):
    pass


class RetiredKeyError(KeyRingError):
    """The key id was valid once; the client must refresh its key info."""


@dataclass(frozen=True, slots=True)
class OprfKey:
    key_id: str
    state: KeyState
    created_at: datetime
    valid_until: datetime | None
    secret: bytes | None  # None once retired
    #: The operator-signed statement of this key's public key; None once retired
    #: (and in rings made before statements existed, until `sign_statements`).
    statement: SignedKeyStatement | None = None

    def usable(self, now: datetime) -> bool:
        if self.secret is None or self.state is KeyState.RETIRED:
            return False
        return self.valid_until is None or now < self.valid_until

    @property
    def public_key(self) -> bytes:
        if self.secret is None:
            raise RetiredKeyError(f"OPRF key id {self.key_id!r} is retired")
        return oprf.public_key(self.secret)

    def signed(
        self,
        signing_key: nacl.signing.SigningKey,
        now: datetime,
        lifetime: timedelta = DEFAULT_STATEMENT_LIFETIME,
    ) -> OprfKey:
        """This key with a fresh statement: valid from its creation to its end, or `lifetime`."""
        statement = KeyStatement(
            purpose=KeyPurpose.OPRF,
            key_id=self.key_id,
            public_key=self.public_key,
            not_before=self.created_at,
            not_after=self.valid_until or now + lifetime,
        )
        return replace(self, statement=sign_statement(statement, signing_key))

    def to_json(self) -> str:
        return json.dumps(
            {
                "key_id": self.key_id,
                "state": self.state.value,
                "created_at": self.created_at.isoformat(),
                "valid_until": self.valid_until.isoformat() if self.valid_until else None,
                "secret": self.secret.hex() if self.secret else None,
                "statement": json.loads(self.statement.to_json()) if self.statement else None,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> OprfKey:
        doc = json.loads(text)
        statement = doc.get("statement")
        return cls(
            key_id=doc["key_id"],
            state=KeyState(doc["state"]),
            created_at=datetime.fromisoformat(doc["created_at"]),
            valid_until=datetime.fromisoformat(doc["valid_until"]) if doc["valid_until"] else None,
            secret=bytes.fromhex(doc["secret"]) if doc["secret"] else None,
            statement=SignedKeyStatement.from_json(json.dumps(statement)) if statement else None,
        )


def _now() -> datetime:
    return datetime.now(UTC)


def write_secret_file(path: Path, text: str) -> None:
    """Write atomically with mode 0600 (temp file + rename in the same directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


class KeyRing:
    """The OPRF keys in one directory, as of one moment."""

    def __init__(self, directory: Path, keys: dict[str, OprfKey]) -> None:
        self.directory = directory
        self._keys = keys

    @classmethod
    def load(cls, directory: Path) -> KeyRing:
        keys: dict[str, OprfKey] = {}
        if directory.is_dir():
            for path in sorted(directory.glob("*.json")):
                key = OprfKey.from_json(path.read_text())
                keys[key.key_id] = key
        return cls(directory, keys)

    def all(self) -> list[OprfKey]:
        return sorted(self._keys.values(), key=lambda k: k.created_at)

    def valid(self, now: datetime | None = None) -> list[OprfKey]:
        moment = now or _now()
        return [k for k in self.all() if k.usable(moment)]

    @property
    def current(self) -> OprfKey:
        currents = [k for k in self.valid() if k.state is KeyState.CURRENT]
        if not currents:
            raise UnknownKeyError(f"no current OPRF key in {self.directory}")
        return currents[-1]

    def secret_for(self, key_id: str, now: datetime | None = None) -> bytes:
        """The secret for an evaluation under `key_id`, if still allowed."""
        secret = self.key_for(key_id, now).secret
        assert secret is not None  # usable keys have one
        return secret

    def key_for(self, key_id: str, now: datetime | None = None) -> OprfKey:
        """The key for an evaluation under `key_id`, if still allowed."""
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownKeyError(f"unknown OPRF key id {key_id!r}")
        if not key.usable(now or _now()) or key.secret is None:
            raise RetiredKeyError(f"OPRF key id {key_id!r} is retired")
        return key

    def _save(self, key: OprfKey) -> None:
        write_secret_file(self.directory / f"{key.key_id}.json", key.to_json())
        self._keys[key.key_id] = key

    def new_key(
        self,
        signing_key: nacl.signing.SigningKey,
        grace: timedelta = timedelta(days=30),
        lifetime: timedelta = DEFAULT_STATEMENT_LIFETIME,
    ) -> OprfKey:
        """Make a new current key; the previous current one enters its grace period.

        Both get statements signed with `signing_key`: the new one valid for
        `lifetime`, the previous one until its grace period ends.
        """
        now = _now()
        for key in self.valid(now):
            if key.state is KeyState.CURRENT:
                graced = OprfKey(
                    key.key_id, KeyState.GRACE, key.created_at, now + grace, key.secret
                )
                self._save(graced.signed(signing_key, now))
        sk, _ = oprf.random_key_pair()
        key_id = f"k{now:%Y%m%d}-{secrets.token_hex(3)}"
        created = OprfKey(key_id, KeyState.CURRENT, now, None, sk).signed(
            signing_key, now, lifetime
        )
        self._save(created)
        return created

    def sign_statements(
        self,
        signing_key: nacl.signing.SigningKey,
        lifetime: timedelta = DEFAULT_STATEMENT_LIFETIME,
    ) -> list[OprfKey]:
        """Re-sign every usable key's statement (a current key's: valid for `lifetime` from now)."""
        now = _now()
        signed = [key.signed(signing_key, now, lifetime) for key in self.valid(now)]
        for key in signed:
            self._save(key)
        return signed

    def retire(self, key_id: str) -> OprfKey:
        """Retire a key now and erase its secret from disk."""
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownKeyError(f"unknown OPRF key id {key_id!r}")
        retired = OprfKey(key.key_id, KeyState.RETIRED, key.created_at, _now(), None, None)
        self._save(retired)
        return retired


def load_signing_key(path: Path) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(bytes.fromhex(path.read_text().strip()))


def load_verify_key(path: Path) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(bytes.fromhex(path.read_text().strip()))


def load_sealing_secret_key(path: Path) -> nacl.public.PrivateKey:
    return nacl.public.PrivateKey(bytes.fromhex(path.read_text().strip()))


def load_sealing_public_key(path: Path) -> nacl.public.PublicKey:
    return nacl.public.PublicKey(bytes.fromhex(path.read_text().strip()))


def load_key_statement(path: Path) -> SignedKeyStatement:
    """A signed key statement file (as `write_notifier_statement` writes it); unverified."""
    return SignedKeyStatement.from_json(path.read_text())


def notifier_statement(
    public_key: nacl.public.PublicKey,
    signing_key: nacl.signing.SigningKey,
    lifetime: timedelta = DEFAULT_STATEMENT_LIFETIME,
) -> SignedKeyStatement:
    """The operator's statement that `public_key` is the notifier's sealing key from now on."""
    now = _now().replace(microsecond=0)
    raw = bytes(public_key)
    statement = KeyStatement(
        purpose=KeyPurpose.NOTIFIER_SEALING,
        key_id=f"notifier-{now:%Y%m%d}-{raw[:3].hex()}",
        public_key=raw,
        not_before=now,
        not_after=now + lifetime,
    )
    return sign_statement(statement, signing_key)


@dataclass(frozen=True, slots=True)
class OperatorKeyFiles:
    """Where `make_operator_keys` put everything (paths match the deploy Secrets)."""

    oprf_dir: Path
    signing_key: Path
    verify_key: Path
    notifier_secret_key: Path
    notifier_public_key: Path
    #: The operator-signed statement of `notifier_public_key`, served by the matcher.
    notifier_statement: Path


def make_operator_keys(directory: Path) -> OperatorKeyFiles:
    """Create a full operator key set for dev and tests; reuse what exists.

    Every public key a hospital relies on gets its signed statement here, as
    the operator tooling would make it (`breachmatch-matcher keys`).
    """
    files = OperatorKeyFiles(
        oprf_dir=directory / "oprf",
        signing_key=directory / "signing.key",
        verify_key=directory / "verify.pub",
        notifier_secret_key=directory / "notifier.key",
        notifier_public_key=directory / "notifier.pub",
        notifier_statement=directory / "notifier.statement",
    )
    if not files.signing_key.exists():
        generated = nacl.signing.SigningKey.generate()
        write_secret_file(files.signing_key, bytes(generated).hex())
        files.verify_key.write_text(bytes(generated.verify_key).hex())
    signing = load_signing_key(files.signing_key)
    ring = KeyRing.load(files.oprf_dir)
    if not ring.valid():
        ring.new_key(signing)
    elif any(key.statement is None for key in ring.valid()):
        ring.sign_statements(signing)  # a dev ring made before key statements existed
    if not files.notifier_secret_key.exists():
        sealing = nacl.public.PrivateKey.generate()
        write_secret_file(files.notifier_secret_key, bytes(sealing).hex())
        files.notifier_public_key.write_text(bytes(sealing.public_key).hex())
    if not files.notifier_statement.exists():
        public = load_sealing_public_key(files.notifier_public_key)
        files.notifier_statement.write_text(notifier_statement(public, signing).to_json())
    return files
