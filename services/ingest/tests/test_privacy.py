"""Promise 2: after ingest, no identifier is anywhere — NATS store, temp files, logs.

Two dumps go in, one through the CLI and one uploaded to ``serve`` over gRPC,
both processes logging at debug level with their own TMPDIR, on a private
nats-server. Then every byte those runs left behind is searched for every
spelling of every test identifier (CPR with and without dash, e-mail as
written and lower-cased, phone as written, E.164 and national, name, birth
date, address; UTF-8 and cp1252). The dumps themselves are searched first, as
a control that the search finds what it looks for.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from nats.js.kv import KeyValue

from breachmatch import bus, tls
from breachmatch.v1 import ingest_pb2, ingest_pb2_grpc
from breachmatch_dev import DevPki, NatsServer, synthetic
from breachmatch_ingest.jobs import JobRecord, JobState

from .conftest import PROCESS_TIMEOUT, Cli, Spawned, write_dump

pytestmark = pytest.mark.asyncio(loop_scope="session")

_DIGITS = re.compile(rb"[0-9]+")


class IdentifierScan:
    """Finds identifier spellings in bytes; all-digit ones only as whole digit runs."""

    def __init__(self, forms: Iterable[str]) -> None:
        self.digit_runs: set[bytes] = set()
        self.texts: set[bytes] = set()
        for form in forms:
            for encoding in ("utf-8", "cp1252"):
                data = form.encode(encoding, errors="ignore")
                (self.digit_runs if data.isdigit() else self.texts).add(data)

    def hits(self, data: bytes) -> list[bytes]:
        found = [run for run in _DIGITS.findall(data) if run in self.digit_runs]
        return found + [text for text in self.texts if text in data]


def _files(*roots: Path) -> list[Path]:
    return [path for root in roots for path in root.rglob("*") if path.is_file()]


async def _upload(port: int, pki: DevPki, breach_id: str, data: bytes) -> str:
    async def requests() -> AsyncIterator[ingest_pb2.UploadRequest]:
        metadata = ingest_pb2.BreachMetadata(
            breach_id=breach_id, title="Privacy", organisation="Privacy clinic"
        )
        yield ingest_pb2.UploadRequest(header=ingest_pb2.UploadHeader(metadata=metadata))
        for start in range(0, len(data), 8192):
            yield ingest_pb2.UploadRequest(chunk=data[start : start + 8192])
        yield ingest_pb2.UploadRequest(chunk=b"")

    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(pki.operator_dir))
    async with grpc.aio.secure_channel(f"localhost:{port}", credentials) as channel:
        stub: Any = ingest_pb2_grpc.IngestStub(channel)
        reply = await stub.Upload(requests(), timeout=PROCESS_TIMEOUT)
    return str(reply.job_id)


async def _until(jobs: KeyValue, job_id: str, condition: Callable[[JobRecord], bool]) -> JobRecord:
    """Watch the job's KV record until `condition` holds."""
    watcher = await jobs.watch(job_id)
    try:
        while True:
            entry = await watcher.updates(timeout=PROCESS_TIMEOUT)
            if entry is not None and entry.value:
                record = JobRecord.from_json(entry.value)
                if condition(record):
                    return record
    finally:
        await watcher.stop()


async def test_no_identifier_survives_in_store_temp_files_or_logs(
    cli: Cli, fresh_nats_server: NatsServer, dev_pki: DevPki, tmp_path: Path
) -> None:
    by_cli = list(synthetic.crowd(100, seed=71))
    by_upload = list(synthetic.crowd(100, seed=72))
    in_bad_rows = list(synthetic.crowd(5, seed=73))
    csv_dump = write_dump(tmp_path / "dump.csv", "csv", by_cli)
    with csv_dump.open("ab") as sink:  # too-wide rows full of identifiers
        for row in in_bad_rows:
            p = row.person
            cells = [p.given_name, p.family_name, p.cpr, p.phone, p.email, p.address, "x", "y"]
            sink.write((";".join(cells * 2) + "\r\n").encode("cp1252"))
    jsonl_dump = write_dump(tmp_path / "dump.jsonl", "jsonl", by_upload)
    scan = IdentifierScan(
        form for p in by_cli + by_upload + in_bad_rows for form in p.identifier_forms()
    )
    assert scan.hits(csv_dump.read_bytes())  # the control: the scan does find identifiers
    assert scan.hits(jsonl_dump.read_bytes())

    temp_dirs = {name: tmp_path / f"{name}-tmp" for name in ("cli", "worker", "serve")}
    for directory in temp_dirs.values():
        directory.mkdir()
    url = fresh_nats_server.url
    debug = {"BREACHMATCH_NATS_URL": url, "BREACHMATCH_LOG_LEVEL": "debug"}
    nc, js = await fresh_nats_server.connect("ingest", "privacy-test")
    jobs = await bus.key_value(js, bus.KV_INGEST_JOBS)

    # With no worker running, the whole dump waits on the work queue: at rest, sealed.
    coordinator = await Spawned.start(
        cli, str(csv_dump), "--breach-id", "privacy-cli", "--title", "Privacy",
        "--organisation", "Privacy clinic", "--workers", "0",
        "--chunk-pairs", "50", **debug, TMPDIR=str(temp_dirs["cli"]),
    )  # fmt: skip
    job_id = (await coordinator.wait_for("ingest job started"))["job_id"]
    await _until(jobs, job_id, lambda r: r.chunks_total is not None)
    queued = {str(p): scan.hits(p.read_bytes()) for p in _files(fresh_nats_server.store_dir)}
    assert {where: hits for where, hits in queued.items() if hits} == {}

    worker = await Spawned.start(
        cli, "worker", "--workers", "1", **debug, TMPDIR=str(temp_dirs["worker"])
    )
    assert (await _until(jobs, job_id, lambda r: r.state is not JobState.RUNNING)).state is (
        JobState.SUCCEEDED
    )
    assert await asyncio.wait_for(coordinator.process.wait(), PROCESS_TIMEOUT) == 0

    serve = await Spawned.start(
        cli, "serve", "--tls-dir", str(dev_pki.service_dir("ingest")), "--grpc-addr", "127.0.0.1:0",
        "--health-addr", "127.0.0.1:0", "--metrics-addr", "", "--workers", "1",
        **debug, TMPDIR=str(temp_dirs["serve"]),
    )  # fmt: skip
    port = (await serve.wait_for("service started"))["grpc_port"]
    job_id = await _upload(port, dev_pki, "privacy-upload", jsonl_dump.read_bytes())
    uploaded = await _until(jobs, job_id, lambda r: r.state is not JobState.RUNNING)
    assert uploaded.state is JobState.SUCCEEDED
    await nc.close()
    assert [await process.stop() for process in (coordinator, worker, serve)] == [0, 0, 0]
    assert serve.events("upload started")[0]["peer"] == "operator/operator"

    leftovers = {
        str(path): scan.hits(path.read_bytes())
        for path in _files(fresh_nats_server.store_dir.parent, *temp_dirs.values())
    }
    for name, process in (("cli", coordinator), ("worker", worker), ("serve", serve)):
        leftovers[f"{name} output"] = scan.hits("".join(process.raw).encode())
    assert {where: hits for where, hits in leftovers.items() if hits} == {}
    assert len(_files(fresh_nats_server.store_dir)) > 5  # the scan did look at a store
