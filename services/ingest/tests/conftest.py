"""Fixtures for the ingest tests: real nats-server, real subprocesses, independent expectations.

The ingest tests publish breach events and filters, which the matcher's
session-wide tests follow on the shared server, so ingest runs on its own
nats-server (`ingest_nats`). Everything ingest-side joins it as the ingest
service (`services/ingest` of the session PKI), with production permissions:
the in-process pieces through `js`, the CLI processes through
``BREACHMATCH_NATS_TLS_DIR``. Commands run as real processes
(``python -m breachmatch_ingest.cli``) through `Cli`.

What a correct run must produce is computed here independently of the code
under test: from the synthetic people's expected records, through
`breachmatch.identifiers.match_keys` and `oprf.evaluate`, into a
`FilterWriter` (`expected_body`) — so a test can demand byte equality.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from nats.js import JetStreamContext

from breachmatch import bus, oprf
from breachmatch.filter import (
    BreachFilter,
    FilterWriter,
    Manifest,
    ProofIndex,
    derive_keys,
    proof_object_name,
    proven_labels,
    verify_artifact,
)
from breachmatch.identifiers import match_keys
from breachmatch.keys import (
    KeyRing,
    OperatorKeyFiles,
    OprfKey,
    load_signing_key,
    load_verify_key,
    make_operator_keys,
)
from breachmatch.records import Category, PersonRecord
from breachmatch.v1.breach_pb2 import BreachEvent
from breachmatch_dev import DevPki, NatsServer, dumps, synthetic
from breachmatch_ingest.coordinator import Coordinator, CoordinatorSettings, JobOutcome
from breachmatch_ingest.jobs import JobStore, random_job_id
from breachmatch_ingest.metadata import BreachInfo
from breachmatch_ingest.pipeline import read_dump
from breachmatch_ingest.publish import replay_events
from breachmatch_ingest.worker import ChunkWorker, WorkerSettings

PROCESS_TIMEOUT = 120.0


@dataclass(frozen=True)
class Kit:
    """Operator key files for the tests, and the current OPRF key."""

    files: OperatorKeyFiles
    key: OprfKey
    verify_key: nacl.signing.VerifyKey

    @property
    def secret(self) -> bytes:
        assert self.key.secret is not None
        return self.key.secret


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    files = make_operator_keys(tmp_path_factory.mktemp("operator-keys"))
    return Kit(files, KeyRing.load(files.oprf_dir).current, load_verify_key(files.verify_key))


@pytest.fixture(scope="session")
def ingest_nats(tmp_path_factory: pytest.TempPathFactory, dev_pki: DevPki) -> Iterator[NatsServer]:
    with NatsServer(tmp_path_factory.mktemp("ingest-nats"), dev_pki) as server:
        yield server


@pytest.fixture(scope="session")
async def js(ingest_nats: NatsServer) -> AsyncIterator[JetStreamContext]:
    """JetStream as the ingest service (what the in-process coordinator and worker use)."""
    nc, context = await ingest_nats.connect("ingest", "ingest-tests")
    yield context
    await nc.drain()


@pytest.fixture
def breach_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


# --- processes -------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Cli:
    """Runs ``python -m breachmatch_ingest.cli`` with operator keys and NATS URL in its env."""

    env: dict[str, str]
    started: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start(self, *args: str, **env: str) -> asyncio.subprocess.Process:
        """Start in its own session (so the test can kill the whole process group)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "breachmatch_ingest.cli", *args,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=self.env | env, start_new_session=True,
        )  # fmt: skip
        self.started.append(process)
        return process

    async def run(self, *args: str, **env: str) -> Finished:
        process = await self.start(*args, **env)
        stdout, stderr = await asyncio.wait_for(process.communicate(), PROCESS_TIMEOUT)
        assert process.returncode is not None
        return Finished(process.returncode, stdout.decode(), stderr.decode())

    async def ingest(self, dump: Path, breach_id: str, *args: str, **env: str) -> Finished:
        """``ingest DUMP --breach-id ID --title ...``; asserts success."""
        done = await self.run(
            str(dump), "--breach-id", breach_id, "--title", "Testlæk",
            "--organisation", "Testklinikken", "--workers", "1", *args, **env,
        )  # fmt: skip
        assert done.code == 0, done.stderr[-3000:]
        return done

    def kill_all(self) -> None:
        for process in self.started:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
async def cli(kit: Kit, ingest_nats: NatsServer, dev_pki: DevPki) -> AsyncIterator[Cli]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("BREACHMATCH_")
    } | {
        "BREACHMATCH_NATS_URL": ingest_nats.url,
        "BREACHMATCH_NATS_TLS_DIR": str(dev_pki.service_dir("ingest")),
        "BREACHMATCH_OPRF_KEY_DIR": str(kit.files.oprf_dir),
        "BREACHMATCH_SIGNING_KEY": str(kit.files.signing_key),
        "BREACHMATCH_LOG_FORMAT": "json",
        "BREACHMATCH_STALL_TIMEOUT": "60",
    }
    runner = Cli(env)
    yield runner
    runner.kill_all()
    for process in runner.started:
        await process.wait()


@dataclass
class Spawned:
    """A long-running command (worker, serve) whose JSON log lines are collected as they come."""

    process: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, cli: Cli, *args: str, **env: str) -> Spawned:
        spawned = cls(await cli.start(*args, **env))
        spawned._reader = asyncio.create_task(spawned._read())
        return spawned

    async def _read(self) -> None:
        """Collect stdout and stderr (JSON log lines parsed) until both close."""
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        await asyncio.gather(self._lines(self.process.stdout), self._lines(self.process.stderr))
        self._changed.set()

    async def _lines(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            self.raw.append(raw.decode(errors="replace"))
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(raw))
            self._changed.set()

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def wait_for(self, name: str) -> dict[str, Any]:
        """The first log line with event `name`; fails if the process ends or time runs out."""
        async with asyncio.timeout(PROCESS_TIMEOUT):
            while True:
                if found := self.events(name):
                    return found[0]
                if self.process.returncode is not None or (
                    self._reader is not None and self._reader.done()
                ):
                    raise AssertionError(f"exited before {name!r}:\n{''.join(self.raw[-20:])}")
                self._changed.clear()
                await self._changed.wait()

    async def stop(self) -> int:
        """SIGTERM (unless it has exited), then the exit code, once its output is read."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), PROCESS_TIMEOUT)
        if self._reader is not None:
            await self._reader
        return code


# --- in-process pieces -----------------------------------------------------------


@pytest.fixture
async def local_worker(js: JetStreamContext, kit: Kit) -> AsyncIterator[None]:
    """An in-process `ChunkWorker` (one thread) for tests that run the coordinator in-process."""
    stop = asyncio.Event()
    settings = WorkerSettings(oprf_key_dir=kit.files.oprf_dir, slots=1, ack_wait=5.0)
    with ThreadPoolExecutor(1) as pool:
        task = asyncio.create_task(ChunkWorker(js, settings, pool).run(stop))
        yield
        stop.set()
        await task


@pytest.fixture
def coordinator(js: JetStreamContext, kit: Kit) -> Callable[[], Awaitable[Coordinator]]:
    async def make() -> Coordinator:
        return Coordinator(
            js,
            await JobStore.open(js),
            load_signing_key(kit.files.signing_key),
            CoordinatorSettings(chunk_pairs=500, stall_timeout=30.0),
        )

    return make


async def ingest_in_process(
    coordinator: Coordinator, kit: Kit, breach_id: str, dump: Path
) -> JobOutcome:
    """One job through the in-process coordinator (a `local_worker` must be running)."""
    info = BreachInfo(breach_id=breach_id, title="Testlæk", organisation="Testklinikken")
    start = await coordinator.begin(random_job_id(), info, kit.key)
    return await coordinator.run(start, info, kit.key, lambda: read_dump(dump))


# --- dumps and expectations ------------------------------------------------------


def write_dump(path: Path, kind: str, crowd: list[synthetic.LeakRow], bad_every: int = 0) -> Path:
    with path.open("wb") as sink:
        if kind == "csv":
            dumps.write_csv(crowd, sink, bad_every=bad_every)
        elif kind == "jsonl":
            dumps.write_jsonl(crowd, sink, bad_every=bad_every)
        else:
            dumps.write_sql(crowd, sink)
    return path


def expected_pairs(records: Iterable[PersonRecord], secret: bytes) -> dict[bytes, int]:
    """OPRF output → OR of the labels of every record that has the key."""
    labels: dict[bytes, int] = {}
    for record in records:
        for key in match_keys(record).keys:
            token = oprf.evaluate(secret, key.oprf_input())
            labels[token] = labels.get(token, 0) | int(record.categories)
    return labels


def expected_body(records: Iterable[PersonRecord], secret: bytes) -> bytes:
    pairs = expected_pairs(records, secret)
    writer = FilterWriter()
    writer.add_batch(list(pairs), list(pairs.values()))
    body = io.BytesIO()
    writer.finish(body)
    return body.getvalue()


@dataclass(frozen=True)
class Published:
    events: list[BreachEvent]
    manifest: Manifest
    body: bytes
    proof_index: bytes

    def filter(self) -> BreachFilter:
        return BreachFilter.from_bytes(self.body, self.manifest)

    def proofs(self) -> ProofIndex:
        return ProofIndex.from_bytes(self.proof_index, self.manifest.entry_count)


async def breach_events(js: JetStreamContext, breach_id: str) -> list[BreachEvent]:
    """Every event on stream BREACHES about `breach_id`, oldest first."""
    events = [BreachEvent.FromString(data) for _, data in await replay_events(js)]
    return [event for event in events if event.artifact.breach_id == breach_id]


async def published(js: JetStreamContext, breach_id: str, kit: Kit) -> Published:
    """The breach's events, its verified manifest (latest publication) and its body."""
    events = await breach_events(js, breach_id)
    announced = [e for e in events if e.kind == BreachEvent.KIND_PUBLISHED]
    assert announced, "no publication event"
    manifest = verify_artifact(announced[-1].artifact, kit.verify_key)
    store = await bus.object_store(js, bus.OBJ_BREACH_FILTERS)
    body = (await store.get(manifest.body_object)).data
    proof_index = (await store.get(proof_object_name(manifest))).data
    assert body is not None
    assert proof_index is not None
    return Published(events, manifest, body, proof_index)


def assert_labels(found: Published, records: list[PersonRecord], secret: bytes) -> None:
    """Every match key of every record is in the filter, with that record's label.

    Each one also proves its entry to the notifier (filter and proof index agree).
    """
    breach_filter = found.filter()
    proofs = found.proofs()
    for record in records:
        keys = match_keys(record).keys
        assert keys
        outputs = [oprf.evaluate(secret, key.oprf_input()) for key in keys]
        label = int(record.categories)
        assert breach_filter.lookup(outputs) == [Category(label)] * len(keys)
        assert proven_labels(breach_filter, proofs, derive_keys(outputs)).tolist() == [label] * len(
            keys
        )
