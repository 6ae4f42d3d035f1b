"""Root pytest fixtures shared by every test directory.

Thin on purpose: the setup code lives in `breachmatch.dev` so `make demo` runs
the same thing; this file only gives it pytest scopes and temp directories.
Under pytest-xdist each worker gets its own session, hence its own server and PKI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from breachmatch.dev import DevPki, NatsServer, make_dev_pki


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One real nats-server with JetStream for the whole session; do not kill it in a test."""
    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def fresh_nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A private nats-server for fault tests (kill9, restart) that must not disturb the others."""
    with NatsServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """CA, server cert, tenant certs hospital-a and hospital-b, plus expired and foreign ones."""
    return make_dev_pki(tmp_path_factory.mktemp("pki"))
