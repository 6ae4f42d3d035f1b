"""Root pytest fixtures shared by every test directory.

Thin on purpose: the setup code lives in `breachmatch_dev` so `make demo` runs
the same thing; this file only gives it pytest scopes and temp directories.
Under pytest-xdist each worker gets its own session, hence its own server and PKI.

Every nats-server here runs with the production security (mTLS-mapped users,
per-service permissions; `breachmatch.nats_auth`) and trusts the CA of the
session's `dev_pki`. Connect with ``await nats_server.connect(service)``:
``"admin"`` (dev-only, may do anything) to seed or inspect streams, or
``"ingest"`` / ``"matcher"`` / ``"notifier"`` to act as that service. A suite
that needs its own tenants makes a PKI from the same CA
(``make_dev_pki(path, tenants, ca=dev_pki)``) so its services' certificates
are NATS users of the shared server too.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from breachmatch import build, tracing
from breachmatch.identifiers import KeyExtraction, match_keys
from breachmatch.records import PersonRecord
from breachmatch_dev import DevPki, NatsServer, make_dev_pki


@pytest.fixture
def normalised(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Rows a check's read normalised since the test began (one slot): a spy around the
    real `match_keys` where the row memo calls it, so a test can count what was skipped."""
    from breachmatch.client import memo_read

    calls = [0]

    def counting(record: PersonRecord) -> KeyExtraction:
        calls[0] += 1
        return match_keys(record)

    monkeypatch.setattr(memo_read, "match_keys", counting)
    return calls


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    """CA; hospital-a/-b, operator and service certificates; expired, foreign and nameless ones."""
    return make_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory, dev_pki: DevPki) -> Iterator[NatsServer]:
    """One real nats-server with JetStream for the whole session; do not kill it in a test."""
    with NatsServer(tmp_path_factory.mktemp("nats"), dev_pki) as server:
        yield server


@pytest.fixture(scope="session")
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


@pytest.fixture
def fresh_nats_server(tmp_path: Path, dev_pki: DevPki) -> Iterator[NatsServer]:
    """A private nats-server for fault tests (kill9, restart) that must not disturb the others."""
    with NatsServer(tmp_path / "nats", dev_pki) as server:
        yield server


# --- protobuf request fuzzing ----------------------------------------------------------

#: Known good values of string or bytes fields, by field name (see `fuzz_grpc_service`).
Hints = dict[str, list[Any]]

_INTEGER_RANGES = {
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    """Any value in range, with the edges (where overflows hide) drawn often."""
    edges = sorted(e for e in {low, low + 1, 0, 1, high - 1, high} if low <= e <= high)
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def _scalar(field: Any, depth: int, hints: Hints) -> st.SearchStrategy[Any]:
    if field.type in _INTEGER_RANGES:
        return _integers(*_INTEGER_RANGES[field.type])
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_STRING:
        odd = ["", ".", "..", "*", ">", "a.b", "x" * 300, *hints.get(field.name, ())]
        return st.text(max_size=64) | st.sampled_from(odd)
    if field.type == FieldDescriptor.TYPE_BYTES:
        known = hints.get(field.name, [])
        return st.binary(max_size=96) | (st.sampled_from(known) if known else st.nothing())
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if field.type == FieldDescriptor.TYPE_FLOAT else 64)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = [value.number for value in field.enum_type.values]
        return st.sampled_from(known) | _integers(-(2**31), 2**31 - 1)  # proto3 enums are open
    return _message(field.message_type, depth + 1, hints)


def _message(descriptor: Any, depth: int, hints: Hints) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        entry = field.message_type
        if field.containing_oneof is not None:
            continue
        if entry is not None and entry.GetOptions().map_entry:
            keys, values = (
                _scalar(entry.fields_by_name[n], depth, hints) for n in ("key", "value")
            )
            fields[field.name] = st.dictionaries(keys, values, max_size=4)
        elif field.is_repeated:
            fields[field.name] = st.lists(_scalar(field, depth, hints), max_size=6)
        else:
            fields[field.name] = _scalar(field, depth, hints)
    # At most one field of each oneof, as (name, value).
    oneofs = [
        st.none() | st.sampled_from(list(oneof.fields)).flatmap(lambda f: _named(f, depth, hints))
        for oneof in descriptor.oneofs
    ]

    def build(values: dict[str, Any], chosen: tuple[tuple[str, Any] | None, ...]) -> Message:
        return cls(**values, **dict(pick for pick in chosen if pick is not None))

    return st.builds(build, st.fixed_dictionaries({}, optional=fields), st.tuples(*oneofs))


def _named(field: Any, depth: int, hints: Hints) -> st.SearchStrategy[tuple[str, Any]]:
    return _scalar(field, depth, hints).map(lambda value: (field.name, value))


#: What no request, however odd, may get: they mean the service crashed on it.
CRASH_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
#: Deadlines of one fuzzed call: streams that follow events (watches) never end by themselves.
_UNARY_SECONDS = 10.0
_STREAM_SECONDS = 0.3


def _fuzz_method(
    channel: grpc.Channel, method: Any, examples: int, hints: Hints, seen: dict[str, list[str]]
) -> None:
    cls = message_factory.GetMessageClass(method.input_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    kind = (
        ("stream" if method.client_streaming else "unary")
        + "_"
        + ("stream" if method.server_streaming else "unary")
    )
    call = getattr(channel, kind)(path, cls.SerializeToString, lambda raw: raw)
    requests = _message(method.input_type, 0, hints)

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.lists(requests, min_size=1, max_size=3) if method.client_streaming else requests)
    def one(request: Any) -> None:
        timeout = _STREAM_SECONDS if method.server_streaming else _UNARY_SECONDS
        try:
            if method.client_streaming:
                result = call(iter(request), timeout=timeout)
            else:
                result = call(request, timeout=timeout)
            if method.server_streaming:
                for _ in result:
                    pass
            code = grpc.StatusCode.OK
            details = ""
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
        seen.setdefault(method.name, []).append(code.name)
        assert code not in CRASH_CODES, f"{method.name}: {code.name} {details!r} for {request!r}"
        assert "nats" not in details.lower(), f"{method.name}: internal error leaked: {details!r}"

    one()


@pytest.fixture(scope="session")
def fuzz_grpc_service() -> Callable[..., dict[str, list[str]]]:
    """``fuzz(channel, service_descriptor, examples, hints)``: every method, fuzzed requests.

    Requests are valid messages with arbitrary field values, edges (0, 2^64-1,
    "..", ...) drawn often; string and bytes fields named in `hints` also draw those
    known good values (a real key id, a served breach), so the fuzz gets past
    the first lookup. Blocking (a sync channel): run it with `asyncio.to_thread`
    when the service lives on the test's event loop. Returns the status codes
    seen per method.
    """

    def fuzz(
        channel: grpc.Channel, service: Any, examples: int = 40, hints: Hints | None = None
    ) -> dict[str, list[str]]:
        seen: dict[str, list[str]] = {}
        for method in service.methods:
            _fuzz_method(channel, method, examples, hints or {}, seen)
        return seen

    return fuzz


# --- metrics ---------------------------------------------------------------------------

#: One scraped sample: (name, sorted label pairs) → value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(scope="session")
def scrape() -> Callable[[int], Samples]:
    """``scrape(port)``: what Prometheus reads from the metrics endpoint on 127.0.0.1:port.

    Blocking: run it with `asyncio.to_thread` when the endpoint's process is this one.
    """
    return _scrape


def build_labels(service: str) -> tuple[tuple[str, str], ...]:
    """The labels `breachmatch_build_info` has for `service` in this test environment."""
    return (
        ("git_sha", build.git_sha()),
        ("python", build.python_version()),
        ("service", service),
        ("version", build.version(service)),
    )


@pytest.fixture(scope="session")
def build_info_labels() -> Callable[[str], tuple[tuple[str, str], ...]]:
    return build_labels


# --- OTLP ------------------------------------------------------------------------------


class OtlpReceiver:
    """An OTLP/HTTP collector's traces endpoint on 127.0.0.1: keeps every export it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers["Content-Length"])
                bodies.append(self.rfile.read(size))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def spans(self) -> list[ExportedSpan]:
        """Every span received so far, with the service that sent it."""
        return _exported(self.bodies)


@dataclass(frozen=True)
class ExportedSpan:
    """One exported span and the service that sent it."""

    service: str
    span: Span

    @property
    def kind(self) -> str:
        return Span.SpanKind.Name(self.span.kind)


def _exported(bodies: list[bytes]) -> list[ExportedSpan]:
    found = []
    for body in bodies:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                found += [ExportedSpan(attributes["service.name"], span) for span in scope.spans]
    return found


@pytest.fixture(scope="session")
def otlp_receiver() -> type[OtlpReceiver]:
    """``with otlp_receiver() as receiver``: a collector's OTLP/HTTP endpoint at ``receiver.url``.

    Point a process's ``OTEL_EXPORTER_OTLP_ENDPOINT`` at it; ``receiver.spans()``
    then holds what that process exported, decoded with OpenTelemetry's own
    protobuf messages, and ``receiver.bodies`` the bytes as sent.
    """
    return OtlpReceiver


# --- traces ----------------------------------------------------------------------------


class SpanRecorder(SpanProcessor):
    """Keeps the spans this process ends while a test asks for them (the `spans` fixture).

    A process has one global tracer provider for good, so this processor
    stays installed and records only while `recording`; other tests in the
    process leave nothing behind. Spans go to OTel's own in-memory exporter.
    """

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.recording = False
        self._ended = threading.Condition()

    def on_end(self, span: ReadableSpan) -> None:
        if self.recording:
            with self._ended:
                self.exporter.export([span])
                self._ended.notify_all()

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def wait_for(
        self, wanted: Callable[[tuple[ReadableSpan, ...]], bool], timeout: float = 20.0
    ) -> tuple[ReadableSpan, ...]:
        """Block until `wanted(finished spans)`: a server may end its span after the client
        has its answer. Call it off the event loop when the server runs on it."""
        with self._ended:
            if not self._ended.wait_for(lambda: wanted(self.finished()), timeout):
                names = [(s.name, s.kind.name) for s in self.finished()]
                raise AssertionError(f"the expected spans did not end; ended: {names}")
        return self.finished()


_RECORDER = SpanRecorder()


@pytest.fixture
def spans() -> Iterator[SpanRecorder]:
    """Every span this process ends during the test: the real SDK provider and propagation.

    The services under test run in this process, so their spans land here too.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(resource=tracing.resource("tests"))
        provider.add_span_processor(_RECORDER)
        trace.set_tracer_provider(provider)
    _RECORDER.exporter.clear()
    _RECORDER.recording = True
    try:
        yield _RECORDER
    finally:
        _RECORDER.recording = False
        _RECORDER.exporter.clear()
