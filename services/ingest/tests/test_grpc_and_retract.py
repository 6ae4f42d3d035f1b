"""The gRPC Ingest service over real mTLS, and retraction (gRPC, CLI and the publish rules)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from nats.js import JetStreamContext

from breachmatch import bus, tls
from breachmatch.authz import is_allowed
from breachmatch.filter import read_breach_event
from breachmatch.identity import Role
from breachmatch.keys import load_signing_key
from breachmatch.server import ServerConfig, Service
from breachmatch.v1 import ingest_pb2, ingest_pb2_grpc
from breachmatch.v1.breach_pb2 import BreachEvent
from breachmatch_dev import DevPki, synthetic
from breachmatch_dev.rpc_probe import full_name, methods_of, raw_call
from breachmatch_ingest.coordinator import Coordinator
from breachmatch_ingest.jobs import JobRecord, JobState, JobStore
from breachmatch_ingest.publish import (
    BreachRetractedError,
    RetractOutcome,
    UnknownBreachError,
    publish_artifact,
    retract_breach,
)
from breachmatch_ingest.servicer import SERVICE_NAME, IngestServicer

from .conftest import (
    PROCESS_TIMEOUT,
    Cli,
    Kit,
    breach_events,
    expected_body,
    ingest_in_process,
    published,
    write_dump,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

_UPLOAD_SLICE = 16 * 1024


@pytest.fixture
async def ingest_address(
    js: JetStreamContext,
    kit: Kit,
    dev_pki: DevPki,
    coordinator: Callable[[], Awaitable[Coordinator]],
    local_worker: None,
) -> AsyncIterator[str]:
    """An in-process Ingest service on 127.0.0.1 (mTLS, the ingest service certificate)."""
    config = ServerConfig(grpc_addr="127.0.0.1:0", tls_dir=dev_pki.service_dir("ingest"))
    service = Service("ingest", config)
    servicer = IngestServicer(
        js,
        await JobStore.open(js),
        await coordinator(),
        kit.files.oprf_dir,
        load_signing_key(kit.files.signing_key),
    )
    ingest_pb2_grpc.add_IngestServicer_to_server(servicer, service.server)
    await service.start([SERVICE_NAME])
    yield f"localhost:{service.bound_port}"
    await service.drain()
    await servicer.stop()


@pytest.fixture
async def ingest_stub(ingest_address: str, dev_pki: DevPki) -> AsyncIterator[Any]:
    """A client of `ingest_address` with the operator's certificate.

    Typed `Any`: the generated stubs describe the synchronous API, not grpc.aio's.
    """
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(dev_pki.operator_dir))
    channel = grpc.aio.secure_channel(ingest_address, credentials)
    yield ingest_pb2_grpc.IngestStub(channel)
    await channel.close(None)


async def test_each_method_admits_exactly_its_roles(
    ingest_address: str, dev_pki: DevPki, js: JetStreamContext
) -> None:
    """Undecodable bytes as probe: hospitals and services get PERMISSION_DENIED on every
    method (the operator's alone), the operator INVALID_ARGUMENT; no job is created."""
    jobs_before = (await js.stream_info(bus.kv_stream(bus.KV_INGEST_JOBS))).state.last_seq
    callers = {
        Role.HOSPITAL: dev_pki.tenant_dir("hospital-b"),
        Role.OPERATOR: dev_pki.operator_dir,
        Role.SERVICE: dev_pki.service_dir("matcher"),
    }
    seen = {
        (method.name, role): await raw_call(ingest_address, directory, method)
        for method in methods_of(ingest_pb2.DESCRIPTOR)
        for role, directory in callers.items()
    }
    expected = {
        (method.name, role): grpc.StatusCode.INVALID_ARGUMENT
        if is_allowed(full_name(method), role)
        else grpc.StatusCode.PERMISSION_DENIED
        for method in methods_of(ingest_pb2.DESCRIPTOR)
        for role in callers
    }
    assert seen == expected
    assert {seen[m, Role.OPERATOR] for m in ("Upload", "GetJob", "RetractBreach")} == {
        grpc.StatusCode.INVALID_ARGUMENT
    }
    jobs_after = (await js.stream_info(bus.kv_stream(bus.KV_INGEST_JOBS))).state.last_seq
    assert jobs_after == jobs_before


def _header(
    breach_id: str,
    title: str = "Uploaded",
    filename: str = "dump.jsonl",
    organisation: str = "Testklinikken",
    descriptions: dict[str, str] | None = None,
) -> Any:
    metadata = ingest_pb2.BreachMetadata(
        breach_id=breach_id,
        title=title,
        organisation=organisation,
        sensitive=True,
        descriptions=descriptions or {},
    )
    header = ingest_pb2.UploadHeader(metadata=metadata, format="auto", filename=filename)
    return ingest_pb2.UploadRequest(header=header)


async def _requests(breach_id: str, data: bytes) -> AsyncIterator[ingest_pb2.UploadRequest]:
    yield _header(breach_id)
    for start in range(0, len(data), _UPLOAD_SLICE):
        yield ingest_pb2.UploadRequest(chunk=data[start : start + _UPLOAD_SLICE])
    yield ingest_pb2.UploadRequest(chunk=b"")  # the end marker


async def _finished(js: JetStreamContext, predicate: Callable[[JobRecord], bool]) -> JobRecord:
    """The first job record (any job) for which `predicate` holds, watched in KV."""
    watcher = await (await bus.key_value(js, bus.KV_INGEST_JOBS)).watchall()
    try:
        while True:
            entry = await watcher.updates(timeout=PROCESS_TIMEOUT)
            if entry is not None and entry.value:
                record = JobRecord.from_json(entry.value)
                if predicate(record):
                    return record
    finally:
        await watcher.stop()


async def test_upload_streams_a_dump_into_a_published_filter(
    ingest_stub: Any,
    js: JetStreamContext,
    kit: Kit,
    breach_id: str,
    tmp_path: Path,
) -> None:
    crowd = list(synthetic.crowd(120, seed=41))
    data = write_dump(tmp_path / "dump.jsonl", "jsonl", crowd, bad_every=60).read_bytes()
    reply = await ingest_stub.Upload(_requests(breach_id, data), timeout=PROCESS_TIMEOUT)
    await _finished(js, lambda r: r.job_id == reply.job_id and r.state is not JobState.RUNNING)

    job = (await ingest_stub.GetJob(ingest_pb2.GetJobRequest(job_id=reply.job_id))).job
    assert (job.state, job.breach_id, job.error) == (ingest_pb2.Job.STATE_SUCCEEDED, breach_id, "")
    assert job.version == 1
    assert (job.report.rows_read, dict(job.report.bad_rows)) == (122, {"json_syntax": 2})
    assert job.report.entries == 4 * len(crowd)
    assert dict(job.report.keys) == dict.fromkeys(["cpr", "email", "name_dob", "phone"], 120)
    found = await published(js, breach_id, kit)
    assert found.manifest.sensitive
    assert found.body == expected_body([p.record() for p in crowd], kit.secret)


async def test_upload_refuses_bad_headers_and_fails_the_job_of_a_cut_upload(
    ingest_stub: Any, js: JetStreamContext, breach_id: str, tmp_path: Path
) -> None:
    async def chunk_first() -> AsyncIterator[ingest_pb2.UploadRequest]:
        yield ingest_pb2.UploadRequest(chunk=b"CPR;Navn\r\n")

    async def header_only(header: Any) -> AsyncIterator[ingest_pb2.UploadRequest]:
        yield header

    for requests, says in (
        (chunk_first(), "header"),
        (header_only(_header(breach_id, title="")), "title"),
        (header_only(_header(breach_id, organisation="")), "organisation: empty"),
        (
            header_only(_header(breach_id, descriptions={"da": "Kun på dansk."})),
            "description.en: missing",
        ),
        (header_only(_header(breach_id, title="Klik her for info")), "title: asks the reader"),
        (header_only(_header("../etc")), "breach_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ingest_stub.Upload(requests, timeout=PROCESS_TIMEOUT)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert says in str(refused.value.details())

    data = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(500))).read_bytes()

    async def unfinished() -> AsyncIterator[ingest_pb2.UploadRequest]:
        yield _header(breach_id)
        yield ingest_pb2.UploadRequest(chunk=data[: len(data) // 2])

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest_stub.Upload(unfinished(), timeout=PROCESS_TIMEOUT)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "end marker" in str(refused.value.details())

    cut_id = breach_id + "-cut"
    sent = asyncio.Event()

    async def cut() -> AsyncIterator[ingest_pb2.UploadRequest]:
        yield _header(cut_id)
        yield ingest_pb2.UploadRequest(chunk=data[: len(data) // 2])
        sent.set()
        await asyncio.Event().wait()  # never ends: the call is cancelled

    call = ingest_stub.Upload(cut(), timeout=PROCESS_TIMEOUT)
    await sent.wait()
    await _finished(js, lambda r: r.breach_id == cut_id)  # the server has begun the job
    call.cancel()
    for cut_short in (breach_id, cut_id):

        def failed_job(record: JobRecord, of: str = cut_short) -> bool:
            return record.breach_id == of and record.state is JobState.FAILED

        failed = await _finished(js, failed_job)
        assert failed.error == "upload ended before the dump was complete"
    assert await breach_events(js, breach_id) == await breach_events(js, cut_id) == []


async def test_retraction_is_one_event_and_final(
    ingest_stub: Any,
    js: JetStreamContext,
    kit: Kit,
    coordinator: Callable[[], Awaitable[Coordinator]],
    breach_id: str,
    tmp_path: Path,
) -> None:
    dump = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(20, seed=51)))
    await ingest_in_process(await coordinator(), kit, breach_id, dump)
    before = await published(js, breach_id, kit)

    for _ in range(2):  # the second request is answered, but emits nothing
        await ingest_stub.RetractBreach(
            ingest_pb2.RetractBreachRequest(breach_id=breach_id, reason="not a real leak")
        )
    events = await breach_events(js, breach_id)
    assert [e.kind for e in events] == [BreachEvent.KIND_PUBLISHED, BreachEvent.KIND_RETRACTED]
    assert events[-1].reason == "not a real leak"
    # Signed by the operator key, naming the version it withdraws.
    checked = read_breach_event(events[-1].SerializeToString(), kit.verify_key)
    assert checked.retraction is not None
    assert (checked.retraction.version, checked.retraction.reason) == (1, "not a real leak")
    signing_key = load_signing_key(kit.files.signing_key)
    again = await retract_breach(js, breach_id, "again", signing_key)
    assert again is RetractOutcome.ALREADY_RETRACTED

    # The body stays in the store, but the breach id cannot be announced again.
    store = await bus.object_store(js, bus.OBJ_BREACH_FILTERS)
    assert (await store.get(before.manifest.body_object)).data == before.body
    corrected = dataclasses.replace(before.manifest, title="Corrected after retraction")
    with pytest.raises(BreachRetractedError):
        await publish_artifact(js, corrected, before.body, before.proof_index, signing_key)

    for request, code in (
        (ingest_pb2.RetractBreachRequest(breach_id="never-published", reason="x"), "NOT_FOUND"),
        (ingest_pb2.RetractBreachRequest(breach_id=breach_id), "INVALID_ARGUMENT"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ingest_stub.RetractBreach(request)
        assert refused.value.code().name == code
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await ingest_stub.GetJob(ingest_pb2.GetJobRequest(job_id="0" * 32))
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    for job_id in ("¹" * 32, "../" * 11, "A" * 32):  # "¹" passed isalnum() and broke the KV key
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await ingest_stub.GetJob(ingest_pb2.GetJobRequest(job_id=job_id))
        assert malformed.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_retract_command_publishes_a_retraction(
    cli: Cli,
    js: JetStreamContext,
    kit: Kit,
    coordinator: Callable[[], Awaitable[Coordinator]],
    local_worker: None,
    breach_id: str,
    tmp_path: Path,
) -> None:
    dump = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(10, seed=61)))
    await ingest_in_process(await coordinator(), kit, breach_id, dump)
    done = await cli.run("retract", breach_id, "--reason", "duplicate of another breach")
    assert done.code == 0, done.stderr
    assert f"breach {breach_id}: retracted" in done.stdout
    last = (await breach_events(js, breach_id))[-1]
    assert (last.kind, last.reason) == (BreachEvent.KIND_RETRACTED, "duplicate of another breach")
    assert read_breach_event(last.SerializeToString(), kit.verify_key).retraction is not None
    with pytest.raises(UnknownBreachError):
        await retract_breach(
            js, "never-published-either", "x", load_signing_key(kit.files.signing_key)
        )
    for args, says in (
        (("retract", "..", "--reason", "x"), "is not a breach id"),
        (("retract", breach_id, "--reason", "two\nlines"), "one printable line"),
    ):
        refused = await cli.run(*args)
        assert refused.code == 2
        assert says in refused.stderr
        assert "Traceback" not in refused.stderr


async def test_fuzzed_requests_get_a_status_never_a_crash(
    ingest_address: str, dev_pki: DevPki, fuzz_grpc_service: Callable[..., dict[str, list[str]]]
) -> None:
    """Every Ingest method, fed valid protobufs with arbitrary field values by the operator
    (the one role that gets past the allow-list): a status that says what is wrong, never
    UNKNOWN or INTERNAL (see `fuzz_grpc_service`)."""
    service = ingest_pb2.DESCRIPTOR.services_by_name["Ingest"]
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(dev_pki.operator_dir))
    with grpc.secure_channel(ingest_address, credentials) as channel:
        seen = await asyncio.to_thread(fuzz_grpc_service, channel, service, 30)
    assert not any("PERMISSION_DENIED" in codes for codes in seen.values()), "fuzzed the door"
    assert set(seen) == {"Upload", "GetJob", "RetractBreach"}
    assert "INVALID_ARGUMENT" in seen["Upload"]
