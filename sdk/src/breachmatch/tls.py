"""mTLS for every gRPC endpoint: the one place that loads certificates and names the tenant.

A hospital is its client certificate (docs/architecture.md, promise 6): the tenant id is
the certificate's common name, verified by gRPC's TLS handshake against the
operator's CA. Certificates from another CA, expired certificates and missing
certificates are refused by the handshake itself when the server requires
client auth (sdk/tests/test_tls.py pins this down), so no servicer code runs for
them.

`TenantInterceptor` makes the tenant available to handlers as
`current_tenant()` and refuses, with UNAUTHENTICATED, any call that reaches
the server without a certificate common name (for example on a server built
with `require_client_auth=False`). Installing it on the server, rather than
asking each handler to authenticate, is what keeps a new RPC from forgetting.
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

from breachmatch import logs

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"

_COMMON_NAME_PROPERTY = "x509_common_name"

_tenant: ContextVar[str] = ContextVar("breachmatch_tenant")

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
    certificate, so `TenantInterceptor` refuses every call: that mode is only
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


async def tenant_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The tenant id of the caller: its verified client certificate's common name.

    Aborts the call with UNAUTHENTICATED when there is none (plaintext port,
    or a server that did not require a client certificate).
    """
    names = list(context.auth_context().get(_COMMON_NAME_PROPERTY, ()))
    if len(names) != 1 or not names[0]:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            "a client certificate with exactly one common name is required",
        )
    try:
        return names[0].decode("utf-8")
    except UnicodeDecodeError:
        await context.abort(
            grpc.StatusCode.UNAUTHENTICATED, "client certificate common name is not UTF-8"
        )


def current_tenant() -> str:
    """The tenant of the RPC being handled, as authenticated by `TenantInterceptor`.

    Raises RuntimeError outside such an RPC so that a server missing the
    interceptor fails loudly instead of serving an anonymous caller.
    """
    try:
        return _tenant.get()
    except LookupError:
        raise RuntimeError(
            "no authenticated tenant: install TenantInterceptor on the gRPC server"
        ) from None


class TenantInterceptor(_ServerInterceptor):
    """Authenticate every call before its handler runs and expose the tenant via `current_tenant()`.

    grpc.aio gives interceptors no access to the peer, so the interceptor
    wraps the handler: the wrapper reads the certificate from the call's
    context, then runs the real behaviour. The tenant is set in a context
    variable without a reset: grpc.aio runs each RPC in its own asyncio task,
    and the task's copy of the context ends with it.

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
        return _authenticated(handler, handler_call_details.method)


# grpc-stubs types handler behaviours as sync callables; aio ones are coroutines.
_Behaviour = Callable[..., Any]


def _authenticated(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    kinds: list[tuple[_Behaviour | None, Callable[..., grpc.RpcMethodHandler[Any, Any]]]] = [
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
    ]
    for behaviour, make_handler in kinds:
        if behaviour is not None:
            return make_handler(
                _wrap(behaviour, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise TypeError(f"gRPC method {method} has no behaviour to authenticate")


async def _authenticate(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Set the call's tenant and bind it to every log line of the call."""
    tenant = await tenant_of(context)
    _tenant.set(tenant)
    logs.bind(tenant=tenant)


def _wrap(behaviour: _Behaviour, method: str) -> _Behaviour:
    if inspect.isasyncgenfunction(behaviour):

        async def streaming(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await _authenticate(context)
            async for response in behaviour(request, context):
                yield response

        return streaming
    if inspect.iscoroutinefunction(behaviour):

        async def single(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await _authenticate(context)
            return await behaviour(request, context)

        return single
    raise TypeError(f"TenantInterceptor supports async gRPC handlers only; {method} is not one")
