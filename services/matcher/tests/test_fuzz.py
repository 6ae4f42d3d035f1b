"""Every Matcher method, fed valid protobufs with arbitrary field values, never crashes.

A request a hospital can build must get a status that says what is wrong with
it (INVALID_ARGUMENT, NOT_FOUND, OUT_OF_RANGE, ...), never UNKNOWN or
INTERNAL, and never an internal error text (see `fuzz_grpc_service`).
"""

from __future__ import annotations

import asyncio

import grpc

from breachmatch import oprf
from breachmatch.v1 import matcher_pb2

EXAMPLES = 40


async def test_fuzzed_requests_get_a_status_never_a_crash(
    matcher, matcher_files, fuzz_grpc_service, connect, key_info
):
    key_id = (await key_info(connect(matcher.port, "mt-fuzz"))).current_key_id
    served = [served.manifest.breach_id for served in matcher._running.breaches.served()]
    _, elements = oprf.blind_batch([b"fuzz"])
    hints = {"key_id": [key_id], "breach_id": served, "blinded_elements": elements}
    service = matcher_pb2.DESCRIPTOR.services_by_name["Matcher"]
    target = f"localhost:{matcher.port}"
    with grpc.secure_channel(target, matcher_files.credentials("mt-fuzz")) as channel:
        seen = await asyncio.to_thread(fuzz_grpc_service, channel, service, EXAMPLES, hints)
    # A hospital certificate: past the allow-list, so the fuzz reaches the handlers.
    assert not any("PERMISSION_DENIED" in codes for codes in seen.values())
    assert set(seen) == {"Evaluate", "GetKeyInfo", "ListBreaches", "GetBreach", "WatchBreaches"}
    # Both past the key lookup (bad elements) and not (unknown key ids).
    assert {"NOT_FOUND", "INVALID_ARGUMENT"} <= set(seen["Evaluate"])
