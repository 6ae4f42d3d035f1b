"""gRPC spans: a SERVER span per call on every service, a CLIENT span per SDK call.

The client puts the W3C ``traceparent`` in the call's metadata; the server
continues that trace. Both are small interceptors of our own rather than
opentelemetry-instrumentation-grpc: ours runs outside `tls.AuthInterceptor`
(admission, decoding and the behaviour in one span, refusals included),
names the admitted tenant, and records what `breachmatch.tracing` allows and
no more (no peer address, no error details); it also adds no dependency
beyond the OpenTelemetry API and SDK.

A span is named by its method (``breachmatch.v1.Matcher/Evaluate``) and
carries the RPC attributes of the OpenTelemetry conventions, the gRPC status
code and, on the server, the hospital tenant once `AuthInterceptor` has
admitted it — never a request, a response or an error's details.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode

from breachmatch import tls, tracing
from breachmatch.identity import Role

if TYPE_CHECKING:  # grpc-stubs makes the interceptor generic; the runtime class is not
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


def _rpc_attributes(method: str) -> dict[str, str | int]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


def _set_code(span: Span, code: grpc.StatusCode | None) -> None:
    code = code or grpc.StatusCode.OK
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(StatusCode.ERROR)


# --- server -------------------------------------------------------------------------


class TracingInterceptor(_ServerInterceptor):
    """Run each call's handler (as wrapped by the interceptors after this one) in a SERVER span.

    Installed before `tls.AuthInterceptor`, so refused calls are traced too.
    """

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED
            return handler
        return _traced(handler, details.method)


_Behaviour = Callable[..., Any]
_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def _traced(
    handler: grpc.RpcMethodHandler[Any, Any], method: str
) -> grpc.RpcMethodHandler[Any, Any]:
    for kind, make_handler in _KINDS:
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            return make_handler(
                _wrap(behaviour, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise TypeError(f"gRPC method {method} has no behaviour to trace")


@contextlib.contextmanager
def _server_span(method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
    """The span of one call: in the caller's trace, closed with the call's status code."""
    metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    parent = tracing.extract(metadata)
    attributes = _rpc_attributes(method)
    with tracing.span(method.lstrip("/"), SpanKind.SERVER, attributes, parent) as span:
        try:
            yield
        except grpc.aio.AbortError:  # the handler (or admission) answered with a status
            _set_code(span, context.code())
            raise
        except BaseException:
            _set_code(span, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            with_tenant(span)
        _set_code(span, context.code())


def with_tenant(span: Span) -> None:
    """Name the hospital tenant on `span` once the call has been admitted."""
    try:
        identity = tls.current_identity()
    except RuntimeError:  # refused before admission
        return
    if identity.role is Role.HOSPITAL:
        span.set_attribute("breachmatch.tenant", identity.name)


def _wrap(behaviour: _Behaviour, method: str) -> _Behaviour:
    if inspect.isasyncgenfunction(behaviour):

        async def streaming(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            with _server_span(method, context):
                async for response in behaviour(request, context):
                    yield response

        return streaming

    async def single(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with _server_span(method, context):
            return await behaviour(request, context)

    return single


# --- client -------------------------------------------------------------------------


@dataclass(frozen=True)
class _CallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class ClientTracing(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """A CLIENT span per call of a synchronous channel, its context sent as ``traceparent``.

    The span ends when the call does (its done-callback), so a response
    stream is timed to its last message, and carries the final status code.
    """

    def _intercept(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        method = str(details.method)
        span = tracing.tracer.start_span(
            method.lstrip("/"), kind=SpanKind.CLIENT, attributes=_rpc_attributes(method)
        )
        carrier = tracing.inject({}, trace.set_span_in_context(span))
        traced = _CallDetails(
            method,
            details.timeout,
            [*(details.metadata or ()), *carrier.items()],
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )
        try:
            call = continuation(traced, request)
        except BaseException as error:
            tracing.end_with(span, error)
            span.end()
            raise
        call.add_done_callback(lambda done: _finish(span, done))
        return call

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._intercept(continuation, details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return self._intercept(continuation, details, request)

    def intercept_stream_unary(
        self, continuation: Any, details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return self._intercept(continuation, details, request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Iterator[Any]
    ) -> Any:
        return self._intercept(continuation, details, request_iterator)


def _finish(span: Span, call: grpc.Call) -> None:
    _set_code(span, call.code())
    span.end()
