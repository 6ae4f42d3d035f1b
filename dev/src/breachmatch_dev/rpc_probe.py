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

import asyncio
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
    if method.client_streaming:
        return await asyncio.to_thread(_streamed_call, address, credentials, method, payload)
    async with grpc.aio.secure_channel(address, credentials) as channel:
        call: Any
        raw = {"request_serializer": None, "response_deserializer": None}  # bytes in, bytes out
        if method.server_streaming:
            call = channel.unary_stream(path, **raw)(payload, timeout=RPC_TIMEOUT)
        else:
            call = channel.unary_unary(path, **raw)(payload, timeout=RPC_TIMEOUT)
        code: grpc.StatusCode = await call.code()
        return code


def _streamed_call(
    address: str, credentials: grpc.ChannelCredentials, method: MethodDescriptor, payload: bytes
) -> grpc.StatusCode:
    """A client-streaming call made with the synchronous API, in a worker thread.

    A server that refuses at once ends the call while the client may still be
    writing. grpc.aio then replaces the server's status with its own INTERNAL
    ("Internal error from Core", from the failed send), so the test would see
    a status no server sent. The synchronous API consumes the request iterator
    on its own thread and keeps the server's status.
    """
    path = full_name(method)
    with grpc.secure_channel(address, credentials) as channel:
        try:
            if method.server_streaming:
                for _ in channel.stream_stream(path, None, None)(
                    iter([payload]), timeout=RPC_TIMEOUT
                ):
                    pass
            else:
                channel.stream_unary(path, None, None)(iter([payload]), timeout=RPC_TIMEOUT)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
    return grpc.StatusCode.OK
