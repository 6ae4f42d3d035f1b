"""OPRF key ring rotation and operator key files."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta

import nacl.public
import nacl.signing
import pytest

from breachmatch import keys, oprf
from breachmatch.statements import KeyPurpose, verify_statement

SIGNING = nacl.signing.SigningKey.generate()


def test_new_ring_has_one_current_key(tmp_path):
    ring = keys.KeyRing.load(tmp_path)
    created = ring.new_key(SIGNING)
    reloaded = keys.KeyRing.load(tmp_path)
    assert reloaded.current.key_id == created.key_id
    assert reloaded.secret_for(created.key_id) == created.secret
    mode = stat.S_IMODE((tmp_path / f"{created.key_id}.json").stat().st_mode)
    assert mode == 0o600


def test_rotation_keeps_old_key_for_grace_then_retires(tmp_path):
    ring = keys.KeyRing.load(tmp_path)
    old = ring.new_key(SIGNING)
    new = ring.new_key(SIGNING, grace=timedelta(days=7))
    ring = keys.KeyRing.load(tmp_path)
    assert ring.current.key_id == new.key_id
    assert {k.key_id for k in ring.valid()} == {old.key_id, new.key_id}
    assert ring.secret_for(old.key_id) == old.secret
    later = datetime.now(UTC) + timedelta(days=8)
    with pytest.raises(keys.RetiredKeyError):
        ring.secret_for(old.key_id, now=later)
    ring.retire(old.key_id)
    text = (tmp_path / f"{old.key_id}.json").read_text()
    assert old.secret is not None
    assert old.secret.hex() not in text
    with pytest.raises(keys.RetiredKeyError):
        keys.KeyRing.load(tmp_path).secret_for(old.key_id)
    assert keys.KeyRing.load(tmp_path).all()[0].statement is None
    with pytest.raises(keys.UnknownKeyError):
        ring.secret_for("k-nope")


def test_keys_carry_signed_statements_that_follow_rotation(tmp_path):
    ring = keys.KeyRing.load(tmp_path)
    old = ring.new_key(SIGNING)
    first = old.statement
    assert first is not None
    statement = verify_statement(first, SIGNING.verify_key, KeyPurpose.OPRF, key_id=old.key_id)
    assert statement.public_key == oprf.public_key(old.secret or b"")
    assert statement.not_after - statement.not_before >= keys.DEFAULT_STATEMENT_LIFETIME
    ring.new_key(SIGNING, grace=timedelta(days=7))
    graced = keys.KeyRing.load(tmp_path).all()[0]
    assert graced.key_id == old.key_id
    assert graced.statement is not None
    ends = verify_statement(graced.statement, SIGNING.verify_key, KeyPurpose.OPRF).not_after
    assert graced.valid_until is not None
    assert ends == graced.valid_until.replace(microsecond=0)


def test_sign_statements_adds_statements_to_an_old_ring(tmp_path):
    ring = keys.KeyRing.load(tmp_path)
    key = ring.new_key(SIGNING)
    bare = keys.OprfKey(key.key_id, key.state, key.created_at, None, key.secret)
    (tmp_path / f"{key.key_id}.json").write_text(bare.to_json())
    assert keys.KeyRing.load(tmp_path).current.statement is None
    other = nacl.signing.SigningKey.generate()
    [signed] = keys.KeyRing.load(tmp_path).sign_statements(other)
    reloaded = keys.KeyRing.load(tmp_path).current.statement
    assert reloaded is not None
    assert reloaded == signed.statement
    verify_statement(reloaded, other.verify_key, KeyPurpose.OPRF, key_id=key.key_id)


def test_operator_keys_are_usable_and_reused(tmp_path):
    files = keys.make_operator_keys(tmp_path)
    signing = keys.load_signing_key(files.signing_key)
    verify = keys.load_verify_key(files.verify_key)
    assert verify.verify(signing.sign(b"manifest")) == b"manifest"
    sealed = nacl.public.SealedBox(keys.load_sealing_public_key(files.notifier_public_key))
    opener = nacl.public.SealedBox(keys.load_sealing_secret_key(files.notifier_secret_key))
    assert opener.decrypt(sealed.encrypt(b"contact")) == b"contact"
    current = keys.KeyRing.load(files.oprf_dir).current
    assert current.secret is not None
    assert len(oprf.evaluate(current.secret, b"x")) == oprf.OUTPUT_SIZE
    again = keys.make_operator_keys(tmp_path)
    assert keys.load_signing_key(again.signing_key).encode() == signing.encode()
    assert keys.KeyRing.load(again.oprf_dir).current.key_id == current.key_id
    assert isinstance(verify, nacl.signing.VerifyKey)
    notifier = verify_statement(
        keys.load_key_statement(files.notifier_statement), verify, KeyPurpose.NOTIFIER_SEALING
    )
    assert notifier.public_key == bytes(keys.load_sealing_public_key(files.notifier_public_key))
    assert keys.load_key_statement(again.notifier_statement) == keys.load_key_statement(
        files.notifier_statement
    )
