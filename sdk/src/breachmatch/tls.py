"""mTLS for every gRPC endpoint: the one place that loads certificates and admits callers.

Every caller is its client certificate, verified by gRPC's TLS handshake
against the operator's CA: certificates from another CA, expired
certificates and missing certificates are refused by the handshake itself when
the server requires client auth (sdk/tests/test_tls.py pins this down), so no
servicer code runs for them. *Who* the certificate speaks for — a hospital
tenant, the operator or one of the services — is its URI SAN
(`breachmatch.identity`), and what that role may call is `breachmatch.authz`.

`AuthInterceptor` does all of it before any handler runs, in this order:

1. UNAUTHENTICATED unless the peer certificate names exactly one identity
   (also for calls on a server built with ``require_client_auth=False``);
2. PERMISSION_DENIED unless the identity's role is allowed the method
   (default deny: a method missing from `authz.ALLOWED_ROLES` is refused);
3. INVALID_ARGUMENT for a request that is not a valid protobuf of the
   method's request type, with one log line naming the caller and no
   traceback. gRPC would otherwise decode before any interceptor code runs
   and answer UNKNOWN with an ERROR traceback, so the interceptor installs a
   pass-through request deserializer and decodes inside the wrapper (also
   for each message of a request stream). Handlers therefore must read
   requests from their arguments, never with ``context.read()``.

Handlers see the caller as `current_identity()`, and hospital calls as
`current_tenant()`. Installing this on the server, rather than asking each
handler to check, is what keeps a new RPC from forgetting.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from breachmatch import authz, logs
from breachmatch.identity import Identity, IdentityError, Role, identity_from_pem

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"

#: The auth context property grpc core fills with the verified peer certificate.
_PEER_CERT_PROPERTY = "x509_pem_cert"

_identity: ContextVar[Identity] = ContextVar("breachmatch_identity")

log = logs.get_logger(__name__)

# grpc-stubs makes the interceptor base generic; the runtime class is not subscriptable.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one party: the CA it trusts, its certificate, and its private key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_dir(cls, directory: Path) -> TlsFiles:
        """Files of a Kubernetes-style TLS secret directory (ca.crt, tls.crt, tls.key)."""
        directory = Path(directory)
        return cls(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)


def server_credentials(files: TlsFiles, require_client_auth: bool = True) -> grpc.ServerCredentials:
    """Server credentials that, by default, demand a client certificate signed by `files.ca`.

    With `require_client_auth=False` gRPC does not even ask for a client
    certificate, so `AuthInterceptor` refuses every call: that mode is only
    for endpoints that serve no tenant (and for testing that refusal).
    """
    return grpc.ssl_server_credentials(
        [(files.key.read_bytes(), files.cert.read_bytes())],
        root_certificates=files.ca.read_bytes(),
        require_client_auth=require_client_auth,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Client credentials: present `files.cert` and trust only servers signed by `files.ca`."""
    return grpc.ssl_channel_credentials(
        root_certificates=files.ca.read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )


async def identity_of(context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
    """The identity of the caller: its verified client certificate's one URI SAN.

    Aborts the call with UNAUTHENTICATED when there is no certificate
    (plaintext port, or a server that did not require one) or when the
    certificate names no breachmatch identity.
    """
    pems = list(context.auth_context().get(_PEER_CERT_PROPERTY, ()))
    if len(pems) != 1:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate is required")
    try:
        return identity_from_pem(bytes(pems[0]))
    except IdentityError:
        log.info("call refused", reason="no_identity")
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "the client certificate must carry exactly one URI SAN "
            "spiffe://breachmatch/<role>/<name>",
        )


def current_identity() -> Identity:
    """The caller of the RPC being handled, as authenticated by `AuthInterceptor`.

    Raises RuntimeError outside such an RPC so that a server missing the
    interceptor fails loudly instead of serving an anonymous caller.
    """
    try:
        return _identity.get()
    except LookupError:
        raise RuntimeError(
            "no authenticated caller: install AuthInterceptor on the gRPC server"
        ) from None


def current_tenant() -> str:
    """The hospital tenant of the RPC being handled (its certificate's hospital name).

    Raises RuntimeError when the caller is not a hospital: `authz` admits only
    hospitals to the methods that ask, so reaching this is a programming error.
    """
    identity = current_identity()
    if identity.role is not Role.HOSPITAL:
        raise RuntimeError(f"the caller is a {identity.role}, not a hospital tenant")
    return identity.name


class AuthInterceptor(_ServerInterceptor):
    """Authenticate, authorise and decode every call before its handler runs.

    grpc.aio gives interceptors no access to the peer, so the interceptor
    wraps the handler: the wrapper reads the certificate from the call's
    context, checks the method's allow-list, decodes the request, then runs
    the real behaviour. The identity is set in a context variable without a
    reset: grpc.aio runs each RPC in its own asyncio task, and the task's copy
    of the context ends with it.

    Only async behaviours (coroutine functions and async generators) are
    supported, which is what grpc.aio servicers are; anything else is refused
    when the method is looked up rather than silently left unauthenticated.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED, nothing to protect
            return handler
        return _guarded(handler, handler_call_details.method)


# grpc-stubs types handler behaviours as sync callables; aio ones are coroutines.
_Behaviour = Callable[..., Any]
_Decode = Callable[[bytes], Any] | None


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    kinds: list[tuple[_Behaviour | None, bool, Callable[..., grpc.RpcMethodHandler[Any, Any]]]] = [
        (handler.unary_unary, False, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, False, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, True, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, True, grpc.stream_stream_rpc_method_handler),
    ]
    for behaviour, request_streaming, make_handler in kinds:
        if behaviour is not None:
            return make_handler(
                _wrap(behaviour, method, handler.request_deserializer, request_streaming),
                request_deserializer=None,  # raw bytes in: `_wrap` decodes after admission
                response_serializer=handler.response_serializer,
            )
    raise TypeError(f"gRPC method {method} has no behaviour to guard")


async def _admit(context: grpc.aio.ServicerContext[Any, Any], method: str) -> None:
    """Authenticate the caller, bind it to every log line of the call, check the allow-list."""
    identity = await identity_of(context)
    _identity.set(identity)
    if identity.role is Role.HOSPITAL:
        logs.bind(tenant=identity.name)
    else:
        logs.bind(peer=str(identity))
    if not authz.is_allowed(method, identity.role):
        log.info("call refused", reason="role_not_allowed", role=str(identity.role))
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"a {identity.role} certificate may not call {method}",
        )


async def _decode(
    raw: Any, decode: _Decode, context: grpc.aio.ServicerContext[Any, Any], method: str
) -> Any:
    if decode is None:
        return raw
    try:
        return decode(raw)
    except DecodeError:
        log.warning("undecodable request refused", size=len(raw))
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {method} message"
        )


async def _decode_stream(
    raws: AsyncIterator[Any],
    decode: _Decode,
    context: grpc.aio.ServicerContext[Any, Any],
    method: str,
) -> AsyncIterator[Any]:
    async for raw in raws:
        yield await _decode(raw, decode, context, method)


def _wrap(
    behaviour: _Behaviour, method: str, decode: _Decode, request_streaming: bool
) -> _Behaviour:
    async def admitted(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Admit the caller, then the request (decoded, or a stream that decodes as it goes)."""
        await _admit(context, method)
        if request_streaming:
            return _decode_stream(request, decode, context, method)
        return await _decode(request, decode, context, method)

    if inspect.isasyncgenfunction(behaviour):

        async def streaming(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            async for response in behaviour(await admitted(request, context), context):
                yield response

        return streaming
    if inspect.iscoroutinefunction(behaviour):

        async def single(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            return await behaviour(await admitted(request, context), context)

        return single
    raise TypeError(f"AuthInterceptor supports async gRPC handlers only; {method} is not one")
