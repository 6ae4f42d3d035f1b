"""OpenTelemetry traces: one switch, one exporter, and what a span may carry.

A check, an ingest or an outreach crosses processes twice — gRPC from the
hospital to a service, then JetStream between services — so each hop carries
the W3C ``traceparent`` (gRPC metadata, NATS message headers) and an operator
sees one trace per request end to end. gRPC spans come from
`breachmatch.grpc_tracing`; NATS spans from `producing` (every publish of a
`bus.connect` connection) and `consuming` (where a service handles a message).

**Off by default.** Nothing is exported, and no exporter thread starts,
unless an OTLP endpoint is configured or ``OTEL_TRACES_EXPORTER=otlp``. The
settings are the standard ``OTEL_*`` variables operators already know, with
flags beside them, checked like every other setting (`breachmatch.settings`):
a bad value is a usage error, exit 2. Export is OTLP over HTTP/protobuf only:
the gRPC exporter would pin grpcio/protobuf versions against ours.

**Privacy.** Spans carry method names, subjects, stream names, gRPC status
codes, error *types* and the hospital tenant name (already in every log line)
— never a request or message body, a breach row, a patient reference, a
contact detail or an error message (which might quote one). The SDK's
automatic exception recording is therefore switched off on every span made
here: it would copy exception messages into span events.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from breachmatch import build
from breachmatch.settings import add_env_argument

if TYPE_CHECKING:
    from nats.aio.msg import Msg

#: The tracer every breachmatch span comes from (a proxy until `configure` sets a provider).
tracer = trace.get_tracer("breachmatch")

#: W3C trace context only: whatever else a caller sends (baggage, vendor headers) is ignored.
_PROPAGATOR = TraceContextTextMapPropagator()

EXPORTERS = ("otlp", "none")
PROTOCOLS = ("http/protobuf",)
SAMPLERS = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
_TRACES_PATH = "/v1/traces"


def otlp_url(text: str) -> str:
    """argparse `type=` for an OTLP/HTTP collector URL (``http(s)://HOST[:PORT][/path]``)."""
    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - raises ValueError when the port is not a number in range
    except ValueError:
        raise argparse.ArgumentTypeError("must be a URL like http://HOST:4318") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError("must be a URL like http://HOST:4318")
    return text.strip()


def sample_ratio(text: str) -> float:
    """argparse `type=` for a sampling ratio: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be a number from 0 to 1")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The trace settings, under their standard OpenTelemetry variable names."""
    add_env_argument(
        parser,
        "--traces-exporter",
        env="OTEL_TRACES_EXPORTER",
        choices=EXPORTERS,
        help="where spans go (default: otlp when an OTLP endpoint is set, else none)",
    )
    add_env_argument(
        parser,
        "--otlp-endpoint",
        env="OTEL_EXPORTER_OTLP_ENDPOINT",
        type=otlp_url,
        help=f"OTLP/HTTP collector base URL; spans go to <URL>{_TRACES_PATH}",
    )
    add_env_argument(
        parser,
        "--otlp-traces-endpoint",
        env="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        type=otlp_url,
        help="the full OTLP/HTTP traces URL (beats --otlp-endpoint)",
    )
    add_env_argument(
        parser,
        "--otlp-protocol",
        env="OTEL_EXPORTER_OTLP_PROTOCOL",
        choices=PROTOCOLS,
        default=PROTOCOLS[0],
        help="OTLP transport (only HTTP/protobuf)",
    )
    add_env_argument(
        parser,
        "--traces-sampler",
        env="OTEL_TRACES_SAMPLER",
        choices=SAMPLERS,
        default=SAMPLERS[0],
        help="which traces are recorded (parentbased_*: follow the caller's decision)",
    )
    add_env_argument(
        parser,
        "--traces-sampler-arg",
        env="OTEL_TRACES_SAMPLER_ARG",
        type=sample_ratio,
        default=1.0,
        help="the ratio of traces kept by the *traceidratio samplers",
    )


@dataclass(frozen=True)
class TracingConfig:
    """The trace settings of one process; `endpoint` is None when nothing is exported."""

    endpoint: str | None = None
    sampler: str = SAMPLERS[0]
    sampler_arg: float = 1.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TracingConfig:
        base = args.otlp_endpoint
        endpoint = args.otlp_traces_endpoint or (base.rstrip("/") + _TRACES_PATH if base else None)
        exporter = args.traces_exporter or ("otlp" if endpoint else "none")
        if exporter == "otlp" and endpoint is None:
            endpoint = "http://localhost:4318" + _TRACES_PATH  # the OTLP/HTTP default
        return cls(
            endpoint if exporter == "otlp" else None, args.traces_sampler, args.traces_sampler_arg
        )


def resource(service: str) -> Resource:
    """Who emits the spans: ``breachmatch-<service>`` at its version and revision.

    ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` still win, as the
    SDK defines (an operator may rename a replica set).
    """
    return Resource.create(
        {
            SERVICE_NAME: f"breachmatch-{service}",
            SERVICE_VERSION: build.version(service),
            "vcs.ref.head.revision": build.git_sha(),
            "process.runtime.version": build.python_version(),
        }
    )


def _sampler(config: TracingConfig) -> Sampler:
    kind = config.sampler.removeprefix("parentbased_")
    root: Sampler = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(
        kind, TraceIdRatioBased(config.sampler_arg)
    )
    return root if kind == config.sampler else ParentBased(root)


def build_provider(service: str, config: TracingConfig) -> TracerProvider | None:
    """A provider exporting to `config.endpoint` in batches; None when tracing is off.

    The exporter module is imported only when used: a process that exports
    nothing loads no HTTP client and starts no thread.
    """
    if config.endpoint is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource(service), sampler=_sampler(config))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=config.endpoint)))
    return provider


def configure(service: str, args: argparse.Namespace) -> TracerProvider | None:
    """Install the process's tracer provider from its parsed settings (see `add_arguments`).

    The provider flushes and stops its exporter at interpreter exit.
    """
    provider = build_provider(service, TracingConfig.from_args(args))
    if provider is not None:
        trace.set_tracer_provider(provider)
    return provider


# --- spans ----------------------------------------------------------------------


def end_with(span: Span, error: BaseException) -> None:
    """Mark `span` failed by `error`'s type only (its message might quote a record)."""
    span.set_attribute("error.type", type(error).__name__)
    span.set_status(StatusCode.ERROR)


@contextlib.contextmanager
def span(
    name: str,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
    parent: Context | None = None,
) -> Iterator[Span]:
    """A current span named `name` that records error types, never exception messages."""
    with tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as error:
            end_with(current, error)
            raise


def inject(carrier: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """Add the W3C trace context of `context` (default: the current span) to `carrier`."""
    _PROPAGATOR.inject(carrier, context=context)
    return carrier


def extract(carrier: Mapping[str, str]) -> Context:
    """The trace context a caller sent in `carrier` (an empty context when it sent none)."""
    return _PROPAGATOR.extract(carrier)


def _messaging(subject: str, stream: str, operation: str) -> dict[str, str | int]:
    return {
        "messaging.system": "nats",
        "messaging.operation.type": operation,
        "messaging.destination.name": subject,
        "messaging.nats.stream": stream,
    }


@contextlib.contextmanager
def producing(subject: str, stream: str) -> Iterator[dict[str, str]]:
    """A PRODUCER span around one publish; yields the headers that carry it.

    With tracing off (no SDK provider installed) no span is made: the no-op
    span would only repeat the current context, which is injected as it is —
    so a caller's trace still passes through — and making it cost more than
    the rest of a JetStream publish's client side (about 60 µs of 130 under
    a gathered batch; the notifier's intake makes two per notice).
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        yield inject({})
        return
    with span(f"send {stream}", SpanKind.PRODUCER, _messaging(subject, stream, "send")):
        yield inject({})


@contextlib.contextmanager
def consuming(msg: Msg, stream: str) -> Iterator[Span]:
    """A CONSUMER span for handling `msg`, in the trace of the span that published it."""
    parent = extract(msg.headers or {})
    attributes = _messaging(msg.subject, stream, "process")
    with span(f"process {stream}", SpanKind.CONSUMER, attributes, parent) as current:
        yield current
