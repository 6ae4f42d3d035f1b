"""mTLS channels to the operator's services, and errors that say what to fix.

The hospital *is* its client certificate (tenant = the name in its URI SAN
``spiffe://breachmatch/hospital/<tenant>``, `breachmatch.identity`), so the
certificate files are checked locally before any connection: a missing file,
a key that belongs to another certificate or an expired certificate is named
precisely here, instead of surfacing as gRPC's "Socket closed".

`explain` turns a final `grpc.RpcError` into a `ClientError` naming the
address and the flag to check; `is_retryable` says which errors are worth a
retry (not a server certificate our CA does not trust — that will not heal);
`call_unary` does both around one unary call with a deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from breachmatch import tls
from breachmatch.client.errors import (
    ClientError,
    RpcFailedError,
    ServiceUnavailableError,
    TlsSetupError,
)
from breachmatch.client.retry import Backoff, call_with_retries
from breachmatch.grpc_tracing import ClientTracing
from breachmatch.identity import IdentityError, Role, identity_from_certificate

T = TypeVar("T")

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

#: 8 MiB: a filter chunk or a full Evaluate batch fits with room to spare.
_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    # Long watch streams: notice a dead peer within minutes. Not more often than
    # gRPC servers accept by default (5 min), or they answer "too many pings".
    ("grpc.keepalive_time_ms", 300_000),
    ("grpc.keepalive_timeout_ms", 20_000),
)


@dataclass(frozen=True)
class Endpoint:
    """One operator service as the hospital configured it."""

    service: str
    address: str
    flag: str
    tls_dir: Path


@dataclass(frozen=True)
class ClientIdentity:
    tenant: str
    credentials: grpc.ChannelCredentials


def load_identity(tls_dir: Path, now: datetime | None = None) -> ClientIdentity:
    """Check the TLS files in `tls_dir` and build channel credentials from them."""
    files = tls.TlsFiles.from_dir(tls_dir)
    for path in (files.ca, files.cert, files.key):
        if not path.is_file():
            raise TlsSetupError(
                f"TLS file {path} is missing: --tls-dir must name a directory holding "
                "ca.crt (the operator's CA), tls.crt and tls.key (this hospital's certificate)"
            )
    _load_certificate(files.ca)
    cert = _load_certificate(files.cert)
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise TlsSetupError(f"{files.key} is not an unencrypted PEM private key") from exc
    if key.public_key() != cert.public_key():
        raise TlsSetupError(f"{files.key} is not the private key of {files.cert}")
    moment = now or datetime.now(UTC)
    if moment < cert.not_valid_before_utc:
        raise TlsSetupError(
            f"the client certificate {files.cert} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check this machine's clock"
        )
    if moment >= cert.not_valid_after_utc:
        raise TlsSetupError(
            f"the client certificate {files.cert} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d}; ask the operator for a new one"
        )
    try:
        identity = identity_from_certificate(cert)
    except IdentityError as exc:
        raise TlsSetupError(f"{files.cert} names no hospital: {exc}") from None
    if identity.role is not Role.HOSPITAL:
        raise TlsSetupError(
            f"{files.cert} is a {identity.role} certificate, not a hospital's; "
            "use the certificate the operator issued to this hospital"
        )
    return ClientIdentity(identity.name, tls.channel_credentials(files))


def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise TlsSetupError(f"{path} is not a PEM certificate") from exc


def open_channel(endpoint: Endpoint, identity: ClientIdentity) -> grpc.Channel:
    if not endpoint.address or ":" not in endpoint.address:
        raise ClientError(
            f"the {endpoint.service} address {endpoint.address!r} is not HOST:PORT; "
            f"set it with {endpoint.flag}"
        )
    channel = grpc.secure_channel(endpoint.address, identity.credentials, options=_CHANNEL_OPTIONS)
    # A client span per call, its trace context sent along (off unless tracing is configured).
    return grpc.intercept_channel(channel, ClientTracing())


def _server_untrusted(error: grpc.RpcError) -> bool:
    details = (error.details() or "").lower()
    return "handshake failed" in details and "certificate_verify_failed" in details


def is_retryable(error: grpc.RpcError) -> bool:
    return error.code() in RETRYABLE and not _server_untrusted(error)


def explain(error: grpc.RpcError, endpoint: Endpoint) -> ClientError:
    """The `ClientError` to report for a call that failed for good."""
    code = error.code()
    details = error.details() or ""
    where = f"the {endpoint.service} at {endpoint.address}"
    files = tls.TlsFiles.from_dir(endpoint.tls_dir)
    if _server_untrusted(error):
        return TlsSetupError(
            f"TLS handshake with {where} failed: its server certificate is not signed by "
            f"{files.ca} or does not name that host; check --tls-dir and {endpoint.flag}"
        )
    if code == grpc.StatusCode.UNAVAILABLE and "socket closed" in details.lower():
        return ServiceUnavailableError(
            f"{where} closed the connection during set-up: it may refuse our client "
            f"certificate {files.cert} (revoked, or not issued by the operator's CA), "
            "or it is restarting; check --tls-dir, then try again"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServiceUnavailableError(
            f"cannot reach {where}: is the {endpoint.service} running? check {endpoint.flag}"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServiceUnavailableError(
            f"{where} did not answer in time; it may be overloaded: try again later "
            "or with a smaller --batch-size"
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return TlsSetupError(f"{where} refused this hospital's identity ({files.cert}): {details}")
    return RpcFailedError(f"{where} refused the request ({code.name}): {details}")


def call_unary(
    method: Callable[..., T], request: object, endpoint: Endpoint, backoff: Backoff, deadline: float
) -> T:
    """One unary RPC with a deadline, retried while transient, explained when it fails."""
    try:
        return call_with_retries(lambda: method(request, timeout=deadline), backoff, is_retryable)
    except grpc.RpcError as error:
        raise explain(error, endpoint) from None
