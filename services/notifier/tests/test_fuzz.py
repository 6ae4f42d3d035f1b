"""Every Outreach method, fed valid protobufs with arbitrary field values, never crashes.

Issue 14 found ``WatchStatus(after_sequence=2^64-1)`` answered UNKNOWN with an
internal NATS error; every request a hospital can build must instead get a
status that says what is wrong with it (see `fuzz_grpc_service`).
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from breachmatch.tls import TlsFiles, channel_credentials
from breachmatch.v1 import outreach_pb2
from breachmatch.v1.outreach_pb2 import WatchStatusRequest

from .conftest import HOSPITAL, Harness, Patient

EXAMPLES = 40
BREACH = "fuzz-breach"


async def test_fuzzed_requests_get_a_status_never_a_crash(harness: Harness, fuzz_grpc_service):
    patient = Patient("fuzz-1", "Fuzz Patient", email="f@example.dk")
    await harness.publish_breach(BREACH, [patient])
    app = await harness.start_app(workers_per_process=0)
    # Valid values for the fuzz to mix in: a proven contact and an opaque ref.
    hints = {
        "breach_id": [BREACH],
        "sealed_contact": [harness.seal(patient.contact())],
        "patient_ref": [patient.opaque_ref],
    }
    service = outreach_pb2.DESCRIPTOR.services_by_name["Outreach"]
    credentials = channel_credentials(TlsFiles.from_dir(harness.pki.tenant_dir(HOSPITAL)))
    with grpc.secure_channel(f"localhost:{app.port}", credentials) as channel:
        seen = await asyncio.to_thread(fuzz_grpc_service, channel, service, EXAMPLES, hints)
    # A hospital certificate: past the allow-list, so the fuzz reaches the handlers.
    assert not any("PERMISSION_DENIED" in codes for codes in seen.values())
    assert set(seen) == {"SubmitOutreach", "GetStatus", "WatchStatus"}
    assert "OK" in seen["SubmitOutreach"]


async def test_watch_status_from_beyond_the_last_event_is_an_invalid_argument(harness: Harness):
    app = await harness.start_app(workers_per_process=0)
    stub = harness.stub(app)
    for after in (2**64 - 1, 2**63, 10**9):
        call = stub.WatchStatus(WatchStatusRequest(after_sequence=after), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in call:
                pass
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
        assert "after_sequence" in (refused.value.details() or "")
        assert "nats" not in (refused.value.details() or "").lower()
