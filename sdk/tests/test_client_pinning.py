"""Operator key pinning: explicit key, trust on first use, and loud refusal on change."""

from __future__ import annotations

from pathlib import Path

import nacl.signing
import pytest

from breachmatch.client.errors import ConfigurationError, OperatorKeyChangedError
from breachmatch.client.pinning import pinned_operator_key


def _key() -> bytes:
    return bytes(nacl.signing.SigningKey.generate().verify_key)


def test_first_use_pins_the_advertised_key_and_says_so(tmp_path: Path):
    notices: list[str] = []
    advertised = _key()
    pin = tmp_path / "operator-key.pin"
    key = pinned_operator_key(advertised, None, pin, notices.append)
    assert bytes(key) == advertised
    assert pin.read_text().strip() == advertised.hex()
    assert len(notices) == 1
    assert "FIRST USE" in notices[0]
    assert advertised.hex() in notices[0]


def test_later_runs_accept_the_pinned_key_silently(tmp_path: Path):
    notices: list[str] = []
    advertised = _key()
    pin = tmp_path / "operator-key.pin"
    pinned_operator_key(advertised, None, pin, notices.append)
    pinned_operator_key(advertised, None, pin, notices.append)
    assert len(notices) == 1


def test_a_changed_key_is_refused_after_first_use(tmp_path: Path):
    pin = tmp_path / "operator-key.pin"
    pinned_operator_key(_key(), None, pin, lambda _: None)
    with pytest.raises(OperatorKeyChangedError, match="MISMATCH") as refused:
        pinned_operator_key(_key(), None, pin, lambda _: None)
    assert "--operator-key" in str(refused.value)
    assert str(pin) in str(refused.value)


def test_explicit_key_file_wins_and_must_match(tmp_path: Path):
    operator = _key()
    key_file = tmp_path / "verify.pub"
    key_file.write_text(operator.hex())
    pin = tmp_path / "operator-key.pin"
    assert bytes(pinned_operator_key(operator, key_file, pin, lambda _: None)) == operator
    assert not pin.exists()
    with pytest.raises(OperatorKeyChangedError, match=str(key_file)):
        pinned_operator_key(_key(), key_file, pin, lambda _: None)


def test_unreadable_key_file_names_the_file(tmp_path: Path):
    bad = tmp_path / "verify.pub"
    bad.write_text("not hex")
    with pytest.raises(ConfigurationError, match=r"verify\.pub"):
        pinned_operator_key(_key(), bad, tmp_path / "pin", lambda _: None)
    with pytest.raises(ConfigurationError, match=r"missing\.pub"):
        pinned_operator_key(_key(), tmp_path / "missing.pub", tmp_path / "pin", lambda _: None)
