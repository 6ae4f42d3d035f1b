"""Key info and rotation with `breachmatch-matcher keys`, picked up by a running matcher."""

from __future__ import annotations

import shutil

import grpc
import grpc.aio
import pytest

from breachmatch import oprf
from breachmatch.keys import KeyRing
from breachmatch.v1 import matcher_pb2
from breachmatch_matcher.cli import main

RPC_TIMEOUT = 20.0
TENANT = "mt-keys"


async def _evaluate(stub, key_id: str, inputs: list[bytes]) -> list[bytes]:
    blinds, elements = oprf.blind_batch(inputs)
    request = matcher_pb2.EvaluateRequest(key_id=key_id, blinded_elements=elements)
    responses = [r async for r in stub.Evaluate(iter([request]), timeout=RPC_TIMEOUT)]
    return oprf.finalize_batch(inputs, blinds, list(responses[0].evaluated_elements))


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
    assert before.notifier_public_key == bytes.fromhex(
        matcher_files.keys.notifier_public_key.read_text()
    )
    assert before.max_batch_size == app.config.max_batch

    assert main(["keys", "--oprf-key-dir", str(key_dir), "new", "--grace-days", "2"]) == 0
    after = await stub.GetKeyInfo(matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT)
    new = after.current_key_id
    assert new != old
    states = {k.key_id: (k.state, bool(k.valid_until)) for k in after.keys}
    assert states == {
        old: (matcher_pb2.OprfKey.STATE_GRACE, True),
        new: (matcher_pb2.OprfKey.STATE_CURRENT, False),
    }
    ring = KeyRing.load(key_dir)
    for key_id in (old, new):  # both evaluate, each under its own secret
        inputs = [b"rotation:1", b"rotation:2"]
        secret = ring.secret_for(key_id)
        assert await _evaluate(stub, key_id, inputs) == [oprf.evaluate(secret, x) for x in inputs]

    assert main(["keys", "--oprf-key-dir", str(key_dir), "retire", old]) == 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _evaluate(stub, old, [b"rotation:3"])
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
