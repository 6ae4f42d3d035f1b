"""The real nats-server runner: JetStream works over mTLS, and persisted state survives kill -9.

What the server *refuses* (anonymous clients, hospitals, each service's
forbidden subjects) is tested against the whole stack in tests/test_attacks.py.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType

from breachmatch import bus
from breachmatch.identity import Identity, Role
from breachmatch_dev import DevPki, NatsServer
from breachmatch_dev.nats_server import BINARY_ENV, find_nats_server_binary

RECONNECT_TIMEOUT = 20.0


async def test_jetstream_stores_and_returns_a_message(nats_server: NatsServer) -> None:
    name = f"T{uuid.uuid4().hex}"
    client, _ = await nats_server.connect("admin")
    try:
        js = client.jetstream()
        await js.add_stream(name=name, subjects=[f"{name}.>"], storage=StorageType.FILE)
        ack = await js.publish(f"{name}.one", b"payload-1")
        stored = await js.get_msg(name, ack.seq)
        assert stored.data == b"payload-1"
        assert stored.subject == f"{name}.one"
    finally:
        await client.close()
    assert nats_server.url.startswith("tls://127.0.0.1:")
    log = nats_server.log_path.read_text()
    assert "Server is ready" in log
    assert "TLS required for client connections" in log
    assert "verify_and_map: true" in nats_server.config_path.read_text()


async def test_kill9_then_restart_keeps_persisted_message_and_url(
    fresh_nats_server: NatsServer,
) -> None:
    server = fresh_nats_server
    url_before = server.url
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    client = await nats.connect(
        server.url,
        tls=bus.client_tls(server.client_tls("admin")),
        inbox_prefix=bus.inbox_prefix(Identity(Role.SERVICE, "admin")),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.1,
        reconnected_cb=on_reconnect,
    )
    try:
        js = client.jetstream()
        await js.add_stream(name="DURABLE", subjects=["durable.>"], storage=StorageType.FILE)
        ack = await js.publish("durable.event", b"survives")

        server.kill9()
        assert not server.running
        await asyncio.to_thread(server.restart)
        assert server.running
        assert server.url == url_before

        await asyncio.wait_for(reconnected.wait(), RECONNECT_TIMEOUT)
        stored = await js.get_msg("DURABLE", ack.seq)
        assert stored.data == b"survives"
    finally:
        await client.close()


def test_graceful_stop_and_start_again(fresh_nats_server: NatsServer) -> None:
    server = fresh_nats_server
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    server.stop()
    assert not server.running
    server.start()
    assert server.running
    assert server.store_dir.is_dir()


def test_startup_failure_is_reported_with_the_log_path(tmp_path: Path, dev_pki: DevPki) -> None:
    server = NatsServer(tmp_path, dev_pki, binary=Path("/bin/false"))
    with pytest.raises(RuntimeError, match="exited with code 1") as failure:
        server.start()
    assert str(server.log_path) in str(failure.value)
    assert not server.running


def test_binary_override_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    override = tmp_path / "custom-nats-server"
    monkeypatch.setenv(BINARY_ENV, str(override))
    assert find_nats_server_binary() == override
    monkeypatch.delenv(BINARY_ENV)
    assert find_nats_server_binary().name == "nats-server"
