"""Call any gRPC method with raw bytes, as an attacker's client would.

The per-method role tests and the attack suite need to reach *every* method
of a service with *every* kind of certificate, without a well-formed request
(which would make the handler do real work, or need state the test does not
have). Raw, undecodable bytes are the probe: a caller whose role may not call
the method gets PERMISSION_DENIED (the allow-list is checked first), a caller
that may gets INVALID_ARGUMENT (the request is refused when decoded, before
the handler). Either way no handler runs, and the answer tells which check
stopped the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor

from breachmatch import tls

#: Field 1, length-delimited, announcing 5 bytes but carrying 2: no protobuf decoder accepts it.
GARBAGE = b"\x0a\x05ab"

RPC_TIMEOUT = 10.0


def methods_of(*files: FileDescriptor) -> list[MethodDescriptor]:
    """Every method of every service declared in `files` (generated ``*_pb2.DESCRIPTOR``)."""
    return [
        method
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
    ]


def full_name(method: MethodDescriptor) -> str:
    """The method's gRPC path, ``/package.Service/Method``."""
    return f"/{method.containing_service.full_name}/{method.name}"


async def raw_call(
    address: str, tls_dir: Path, method: MethodDescriptor, payload: bytes = GARBAGE
) -> grpc.StatusCode:
    """Send `payload` as the (only) request of `method` as the holder of `tls_dir`; the status."""
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(tls_dir))
    path = full_name(method)
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call: Any
        raw = {"request_serializer": None, "response_deserializer": None}  # bytes in, bytes out
        if method.client_streaming and method.server_streaming:
            call = channel.stream_stream(path, **raw)(iter([payload]), timeout=RPC_TIMEOUT)
        elif method.client_streaming:
            call = channel.stream_unary(path, **raw)(iter([payload]), timeout=RPC_TIMEOUT)
        elif method.server_streaming:
            call = channel.unary_stream(path, **raw)(payload, timeout=RPC_TIMEOUT)
        else:
            call = channel.unary_unary(path, **raw)(payload, timeout=RPC_TIMEOUT)
        try:
            if method.server_streaming:
                async for _ in call:
                    pass
            else:
                await call
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK
