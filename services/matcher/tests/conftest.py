"""Fixtures for the matcher tests: a real matcher on 127.0.0.1 with real mTLS and real NATS.

Tenants are the hospital names in certificate URIs, so each test gets its
own tenant (its own certificate from one test PKI, issued by the session
CA the shared nats-server trusts) and with it its own budget and audit
subject on the shared nats-server. The matcher joins NATS with its own
service certificate, as in production; the test side (`js`) is the dev-only
admin, seeding breach events as ingest would and reading audits.
`start_matcher` starts an in-process `MatcherApp` (the one
`breachmatch-matcher serve` runs); `MatcherProcess` runs the real command in
a subprocess for the tests that need processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import grpc
import grpc.aio
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from breachmatch import bus, keys, tls
from breachmatch.v1 import matcher_pb2, matcher_pb2_grpc
from breachmatch_dev import DevPki, NatsServer, make_dev_pki
from breachmatch_matcher.app import MatcherApp
from breachmatch_matcher.config import MatcherConfig

RPC_TIMEOUT = 20.0
MAX_BATCH = 4096
PROCESS_START_TIMEOUT = 60.0
PROCESS_EXIT_TIMEOUT = 30.0

#: One tenant per test that touches budgets or audit subjects.
TENANTS = (
    "mt-roundtrip",
    "mt-invalid",
    "mt-keys",
    "mt-cancel",
    "mt-budget",
    "mt-budget-procs",
    "mt-breaches",
    "mt-privacy",
    "mt-drain",
    "mt-health",
    "mt-fuzz",
    "mt-storm",
    "mt-budget-kill",
    "mt-metrics",
    "mt-tracing",
)
BUDGETS = {"mt-budget": 100, "mt-budget-procs": 1000, "mt-budget-kill": 2000}


@dataclass(frozen=True)
class MatcherFiles:
    """Everything on disk a matcher needs: PKI, operator keys, tenants file."""

    pki: DevPki
    keys: keys.OperatorKeyFiles
    tenants_file: Path
    root: Path

    def config(self, nats_url: str, **overrides: Any) -> MatcherConfig:
        base = MatcherConfig(
            tls_dir=self.pki.service_dir("matcher"),
            oprf_key_dir=self.keys.oprf_dir,
            verify_key=self.keys.verify_key,
            notifier_statement=self.keys.notifier_statement,
            nats_url=nats_url,
            tenants_file=self.tenants_file,
            grpc_addr="127.0.0.1:0",
            health_addr="127.0.0.1:0",
            metrics_addr=None,
            max_batch=MAX_BATCH,
            workers=2,
            drain_seconds=10.0,
            cache_dir=self.root,
        )
        return replace(base, **overrides)

    def credentials(self, tenant: str) -> grpc.ChannelCredentials:
        return tls.channel_credentials(tls.TlsFiles.from_dir(self.pki.tenant_dir(tenant)))


@pytest.fixture(scope="session")
def matcher_files(tmp_path_factory: pytest.TempPathFactory, dev_pki: DevPki) -> MatcherFiles:
    root = tmp_path_factory.mktemp("matcher")
    tenants_file = root / "tenants.json"
    tenants_file.write_text(
        json.dumps(
            {
                "default_daily_budget": 10_000_000,
                "tenants": {t: {"daily_budget": b} for t, b in BUDGETS.items()},
            }
        )
    )
    return MatcherFiles(
        pki=make_dev_pki(root / "pki", tenants=TENANTS, ca=dev_pki),
        keys=keys.make_operator_keys(root / "keys"),
        tenants_file=tenants_file,
        root=root,
    )


@pytest.fixture(scope="session")
async def matcher(
    matcher_files: MatcherFiles, nats_url: str, js: JetStreamContext
) -> AsyncIterator[MatcherApp]:
    """The shared in-process matcher (2 workers, metrics on); tests must not rotate its keys.

    After `js`, which creates ingest's streams: the matcher waits for them.
    """
    app = MatcherApp(matcher_files.config(nats_url, metrics_addr="127.0.0.1:0"))
    await app.start()
    yield app
    await app.stop()


@pytest.fixture
async def start_matcher(
    js: JetStreamContext,
) -> AsyncIterator[Callable[..., Awaitable[MatcherApp]]]:
    """``await start_matcher(config, interceptors)``: an extra in-process matcher for one test.

    On the shared server `js` has created ingest's streams; a test on another
    server creates them there first (``await server.provision("ingest")``).
    """
    apps: list[MatcherApp] = []

    async def start(config: MatcherConfig, interceptors: tuple[Any, ...] = ()) -> MatcherApp:
        app = MatcherApp(config, interceptors)
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop()


@pytest.fixture
async def connect(
    matcher_files: MatcherFiles,
) -> AsyncIterator[Callable[[int, str], matcher_pb2_grpc.MatcherStub]]:
    """``connect(port, tenant)`` → a Matcher stub over mTLS as that tenant, closed afterwards."""
    channels: list[grpc.aio.Channel] = []

    def open_stub(port: int, tenant: str) -> matcher_pb2_grpc.MatcherStub:
        channel = grpc.aio.secure_channel(f"localhost:{port}", matcher_files.credentials(tenant))
        channels.append(channel)
        return matcher_pb2_grpc.MatcherStub(channel)

    yield open_stub
    for channel in channels:
        await channel.close(None)


async def _evaluate(
    stub: matcher_pb2_grpc.MatcherStub, requests: list[matcher_pb2.EvaluateRequest]
) -> list[matcher_pb2.EvaluateResponse]:
    call: Any = stub.Evaluate(iter(requests), timeout=RPC_TIMEOUT)
    return [response async for response in call]


async def _key_info(stub: matcher_pb2_grpc.MatcherStub) -> matcher_pb2.GetKeyInfoResponse:
    reply: matcher_pb2.GetKeyInfoResponse = await cast(
        Awaitable[matcher_pb2.GetKeyInfoResponse],
        stub.GetKeyInfo(matcher_pb2.GetKeyInfoRequest(), timeout=RPC_TIMEOUT),
    )
    return reply


@pytest.fixture
def evaluate() -> Callable[..., Awaitable[list[matcher_pb2.EvaluateResponse]]]:
    """``await evaluate(stub, requests)``: one Evaluate call, all responses (or AioRpcError)."""
    return _evaluate


@pytest.fixture
def key_info() -> Callable[..., Awaitable[matcher_pb2.GetKeyInfoResponse]]:
    """``await key_info(stub)``: GetKeyInfo with the test deadline."""
    return _key_info


@pytest.fixture(scope="session")
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """A test-side JetStream client (admin: the publisher of breach events, reader of audits)."""
    nc: NatsClient
    nc, context = await nats_server.connect("admin", "matcher-tests")
    await bus.ensure_owned(context, "ingest")
    await bus.ensure_streams(context, bus.STREAM_AUDIT)
    yield context
    await nc.drain()


@dataclass
class MatcherProcess:
    """``python -m breachmatch_matcher.cli serve`` as a real subprocess.

    Ports are chosen by the kernel (``127.0.0.1:0``) and read back from the
    JSON "service started" log line; stderr keeps being drained into `output`.
    """

    process: asyncio.subprocess.Process
    grpc_port: int = 0
    health_port: int = 0
    output: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None
    _new_line: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def start(cls, config: MatcherConfig) -> MatcherProcess:
        argv = [
            sys.executable, "-m", "breachmatch_matcher.cli", "serve",
            "--log-format", "json",
            "--nats-url", config.nats_url,
            "--tls-dir", str(config.tls_dir),
            "--oprf-key-dir", str(config.oprf_key_dir),
            "--verify-key", str(config.verify_key),
            "--notifier-statement", str(config.notifier_statement),
            "--tenants-file", str(config.tenants_file),
            "--grpc-addr", "127.0.0.1:0",
            "--health-addr", "127.0.0.1:0",
            "--metrics-addr", "off",
            "--workers", str(config.workers),
            "--max-batch", str(config.max_batch),
            "--drain-seconds", str(config.drain_seconds),
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        running = cls(process)
        running._reader = asyncio.create_task(running._read(started))
        try:
            line = await asyncio.wait_for(started, PROCESS_START_TIMEOUT)
        except BaseException:
            await running.kill()
            raise
        running.grpc_port, running.health_port = line["grpc_port"], line["health_port"]
        return running

    async def _read(self, started: asyncio.Future[dict[str, Any]]) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.output.append(raw.decode(errors="replace"))
            self._new_line.set()
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("event") == "service started" and not started.done():
                    started.set_result(line)
        if not started.done():
            tail = "".join(self.output[-20:])
            started.set_exception(RuntimeError(f"matcher exited during start-up:\n{tail}"))

    async def wait_for_line(self, wanted: Callable[[dict[str, Any]], bool]) -> int:
        """Wait (bounded) for a JSON log line that `wanted` accepts; its index in `output`."""
        seen = 0
        async with asyncio.timeout(PROCESS_START_TIMEOUT):
            while True:
                for index in range(seen, len(self.output)):
                    with contextlib.suppress(ValueError):
                        if wanted(json.loads(self.output[index])):
                            return index
                seen = len(self.output)
                self._new_line.clear()
                await self._new_line.wait()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def exit_code(self) -> int:
        """Wait (bounded) for the process to exit on its own."""
        code = await asyncio.wait_for(self.process.wait(), PROCESS_EXIT_TIMEOUT)
        if self._reader is not None:
            await self._reader
        return code

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        if self._reader is not None:
            await self._reader


@pytest.fixture
async def spawn_matcher(
    js: JetStreamContext,
) -> AsyncIterator[Callable[[MatcherConfig], Awaitable[MatcherProcess]]]:
    """``await spawn_matcher(config)`` → a running `MatcherProcess`, killed afterwards if alive."""
    running: list[MatcherProcess] = []

    async def spawn(config: MatcherConfig) -> MatcherProcess:
        process = await MatcherProcess.start(config)
        running.append(process)
        return process

    yield spawn
    for process in running:
        await process.kill()
