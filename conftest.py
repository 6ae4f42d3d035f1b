"""Root pytest fixtures shared by every test directory.

Thin on purpose: the setup code lives in `breachmatch.dev` so `make demo` runs
the same thing; this file only gives it pytest scopes and temp directories.
Under pytest-xdist each worker gets its own session, hence its own server and PKI.

Every nats-server here runs with the production security (mTLS-mapped users,
per-service permissions; `breachmatch.nats_auth`) and trusts the CA of the
session's `dev_pki`. Connect with ``await nats_server.connect(service)``:
``"admin"`` (dev-only, may do anything) to seed or inspect streams, or
``"ingest"`` / ``"matcher"`` / ``"notifier"`` to act as that service. A suite
that needs its own tenants makes a PKI from the same CA
(``make_dev_pki(path, tenants, ca=dev_pki)``) so its services' certificates
are NATS users of the shared server too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from breachmatch.dev import DevPki, NatsServer, make_dev_pki


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """CA; hospital-a/-b, operator and service certificates; expired, foreign and nameless ones."""
    return make_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory, dev_pki: DevPki) -> Iterator[NatsServer]:
    """One real nats-server with JetStream for the whole session; do not kill it in a test."""
    with NatsServer(tmp_path_factory.mktemp("nats"), dev_pki) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def fresh_nats_server(tmp_path: Path, dev_pki: DevPki) -> Iterator[NatsServer]:
    """A private nats-server for fault tests (kill9, restart) that must not disturb the others."""
    with NatsServer(tmp_path / "nats", dev_pki) as server:
        yield server
