"""Key info and rotation with `breachmatch-matcher keys`, picked up by a running matcher."""

from __future__ import annotations

import shutil

import grpc
import grpc.aio
import pytest

from breachmatch import oprf, voprf
from breachmatch.keys import KeyRing, load_key_statement, load_verify_key
from breachmatch.statements import KeyPurpose, SignedKeyStatement, verify_statement
from breachmatch.v1 import matcher_pb2
from breachmatch_matcher.cli import main

RPC_TIMEOUT = 20.0
TENANT = "mt-keys"


async def _evaluate(stub, key_id: str, public_key: bytes, inputs: list[bytes]) -> list[bytes]:
    blinds, elements = oprf.blind_batch(inputs)
    request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements)
    [response] = [r async for r in stub.Evaluate(iter([request]), timeout=RPC_TIMEOUT)]
    return voprf.finalize_batch(
        public_key, inputs, blinds, elements, list(response.evaluated_elements), response.proof
    )


async def test_rotation_and_retirement_without_restart(
    matcher_files, nats_url, start_matcher, connect, tmp_path, capsys
):
    key_dir = tmp_path / "oprf"
    shutil.copytree(matcher_files.keys.oprf_dir, key_dir)
    app = await start_matcher(matcher_files.config(nats_url, oprf_key_dir=key_dir, workers=1))
    stub = connect(app.port, TENANT)

    before = await stub.GetKeyInfo(matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT)
    old = before.current_key_id
    assert [(k.key_id, k.state, k.valid_until) for k in before.keys] == [
        (old, matcher_pb2.OprfKey.STATE_CURRENT, "")
    ]
    assert before.operator_verify_key == bytes.fromhex(matcher_files.keys.verify_key.read_text())
    notifier = verify_statement(
        SignedKeyStatement(before.notifier_key.statement, before.notifier_key.signature),
        load_verify_key(matcher_files.keys.verify_key),
        KeyPurpose.NOTIFIER_SEALING,
    )
    assert notifier.public_key == bytes.fromhex(matcher_files.keys.notifier_public_key.read_text())
    assert before.max_batch_size == app.config.max_batch

    signing = ["--signing-key", str(matcher_files.keys.signing_key)]
    assert main(["keys", "--oprf-key-dir", str(key_dir), *signing, "new", "--grace-days", "2"]) == 0
    after = await stub.GetKeyInfo(matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT)
    new = after.current_key_id
    assert new != old
    states = {k.key_id: (k.state, bool(k.valid_until)) for k in after.keys}
    assert states == {
        old: (matcher_pb2.OprfKey.STATE_GRACE, True),
        new: (matcher_pb2.OprfKey.STATE_CURRENT, False),
    }
    ring = KeyRing.load(key_dir)
    verify_key = load_verify_key(matcher_files.keys.verify_key)
    for served in after.keys:  # both evaluate, each under its own secret, proven for its key
        inputs = [b"rotation:1", b"rotation:2"]
        secret = ring.secret_for(served.key_id)
        statement = verify_statement(
            SignedKeyStatement(served.statement.statement, served.statement.signature),
            verify_key,
            KeyPurpose.OPRF,
            key_id=served.key_id,
        )
        outputs = await _evaluate(stub, served.key_id, statement.public_key, inputs)
        assert outputs == [oprf.evaluate(secret, x) for x in inputs]
    graced = next(k for k in after.keys if k.key_id == old)
    ends = ring.key_for(old).valid_until
    assert ends is not None
    stated = SignedKeyStatement(graced.statement.statement, b"").unverified()
    assert stated.not_after == ends.replace(microsecond=0)

    assert main(["keys", "--oprf-key-dir", str(key_dir), "retire", old]) == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _evaluate(stub, old, bytes(32), [b"rotation:3"])
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "key retired: refresh key info" in (caught.value.details() or "")
    final = await stub.GetKeyInfo(matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT)
    assert [k.key_id for k in final.keys] == [new]

    capsys.readouterr()
    assert main(["keys", "--oprf-key-dir", str(key_dir), "list"]) == 0
    listing = capsys.readouterr().out
    assert f"{old}\tretired" in listing
    assert f"{new}\tcurrent" in listing
    secret_hex = ring.secret_for(new).hex()
    assert secret_hex not in listing
    assert secret_hex[:16] not in listing


def test_keys_cli_refuses_unknown_ids_and_missing_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BREACHMATCH_OPRF_KEY_DIR", raising=False)
    assert main(["keys", "--oprf-key-dir", str(tmp_path), "retire", "k-none"]) == 1
    assert "unknown OPRF key id" in capsys.readouterr().err
    assert main(["keys", "list"]) == 2
    assert "--oprf-key-dir is required" in capsys.readouterr().err
    monkeypatch.delenv("BREACHMATCH_SIGNING_KEY", raising=False)
    assert main(["keys", "--oprf-key-dir", str(tmp_path), "new"]) == 2
    assert "--signing-key is required" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.json"))


def test_keys_sign_and_notifier_statement(matcher_files, tmp_path, capsys):
    key_dir = tmp_path / "oprf"
    shutil.copytree(matcher_files.keys.oprf_dir, key_dir)
    signing = ["--signing-key", str(matcher_files.keys.signing_key)]
    capsys.readouterr()
    assert main(["keys", "--oprf-key-dir", str(key_dir), *signing, "sign"]) == 0
    current = KeyRing.load(key_dir).current
    assert current.statement is not None
    assert f"{current.key_id}\tcurrent" in capsys.readouterr().out
    out = tmp_path / "notifier.statement"
    argv = ["keys", *signing, "notifier-statement", "--out", str(out),
            "--notifier-public-key", str(matcher_files.keys.notifier_public_key)]  # fmt: skip
    assert main(argv) == 0
    statement = verify_statement(
        load_key_statement(out),
        load_verify_key(matcher_files.keys.verify_key),
        KeyPurpose.NOTIFIER_SEALING,
    )
    assert statement.public_key.hex() == matcher_files.keys.notifier_public_key.read_text()
    assert main([*argv[:-1], str(tmp_path / "missing.pub")]) == 1
    assert "cannot sign the notifier key" in capsys.readouterr().err
