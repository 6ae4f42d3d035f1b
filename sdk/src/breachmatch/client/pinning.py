"""Which operator key may sign the breach filters this hospital acts on.

The matcher hands out the operator's Ed25519 verify key (GetKeyInfo), but a
key received from the party whose artifacts it verifies proves nothing on its
own. So the key is pinned:

* ``--operator-key FILE`` (hex, as the operator publishes ``verify.pub``):
  that key and no other; a matcher advertising a different one is refused.
* otherwise trust on first use: the advertised key is written to the state
  directory with a loud notice to compare it out of band, and every later run
  refuses a matcher that advertises anything else. A genuine rotation is then
  an explicit act (pass the new key, or delete the pin).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

import nacl.exceptions
import nacl.signing

from breachmatch.client.errors import ConfigurationError, OperatorKeyChangedError
from breachmatch.keys import load_verify_key

Notice = Callable[[str], None]


def pinned_operator_key(
    advertised: bytes, operator_key_file: Path | None, pin_file: Path, notice: Notice
) -> nacl.signing.VerifyKey:
    """The verify key to check manifests with, after comparing it with the pin."""
    if operator_key_file is not None:
        pinned = _read_key(operator_key_file, "--operator-key")
        source = f"--operator-key {operator_key_file}"
    elif pin_file.exists():
        pinned = _read_key(pin_file, "the pin file")
        source = f"the key pinned on first use in {pin_file}"
    else:
        key = _parse(advertised, "the matcher's advertised operator key")
        pin_file.write_text(advertised.hex() + "\n")
        notice(
            "TRUSTING THE OPERATOR KEY ON FIRST USE: "
            f"{advertised.hex()} is now pinned in {pin_file}. Compare it with the key your "
            "operator published; from now on a different key is refused. "
            "Pass --operator-key FILE to pin a key explicitly."
        )
        return key
    if not hmac.compare_digest(bytes(pinned), advertised):
        raise OperatorKeyChangedError(
            "OPERATOR KEY MISMATCH: the matcher advertises operator key "
            f"{advertised.hex()}, but {source} is {bytes(pinned).hex()}. Either the matcher "
            "is not the operator's, or the operator rotated its signing key: get the new key "
            "from the operator out of band and pass it with --operator-key. Nothing was checked."
        )
    return pinned


def _read_key(path: Path, what: str) -> nacl.signing.VerifyKey:
    try:
        return load_verify_key(path)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the operator key {path} ({what}): {exc.strerror}"
        ) from exc
    except (ValueError, nacl.exceptions.CryptoError) as exc:
        raise ConfigurationError(
            f"{path} ({what}) is not an Ed25519 verify key in hex (64 hex digits)"
        ) from exc


def _parse(raw: bytes, what: str) -> nacl.signing.VerifyKey:
    try:
        return nacl.signing.VerifyKey(raw)
    except (ValueError, nacl.exceptions.CryptoError) as exc:
        raise OperatorKeyChangedError(f"{what} is not a 32-byte Ed25519 key") from exc
