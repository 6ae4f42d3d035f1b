"""The whole flow as separate processes, and every promise of docs/architecture.md checked.

Runs exactly what `make demo` runs (`breachmatch_dev.demo.run_flow`): a real
nats-server, the matcher, notifier and ingest services as processes, an SMTP
sink, the ingest CLI on a messy cp1252 leak, the hospital CLI's check and
notify (twice). Then it checks the outcome against the generator's ground
truth and scans everything the system stored or logged for the patients'
identifiers.

Tracing is switched on the way an operator would (``OTEL_EXPORTER_OTLP_ENDPOINT``
in every process's environment) with a local OTLP/HTTP receiver standing in
for the collector, so the same run shows that one ingest, one check and one
notify each form one trace across the processes, and that no exported span
carries an identifier.
"""

from __future__ import annotations

import csv
import email
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from breachmatch_dev.demo import Outcome, expected_matches, found_matches, run_flow


@dataclass(frozen=True)
class Run:
    outcome: Outcome
    exports: list[bytes]
    #: `ExportedSpan`s (root conftest), from every process of the flow.
    spans: list[Any]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, otlp_receiver: Any) -> Iterator[Run]:
    with otlp_receiver() as receiver, pytest.MonkeyPatch.context() as environment:
        # Every process of the flow (services and CLIs) inherits this environment.
        environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        environment.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        # Two notifier processes share the queue, as in `make demo-alles`.
        outcome = run_flow(
            tmp_path_factory.mktemp("e2e"), patients=400, leaked=150, strangers=100, notifiers=2
        )
        # Each process flushed its spans when it exited, before run_flow returned.
        yield Run(outcome, list(receiver.bodies), receiver.spans())


@pytest.fixture(scope="module")
def outcome(run: Run) -> Outcome:
    return run.outcome


def test_hospital_learns_exactly_its_own_matches(outcome: Outcome) -> None:
    assert found_matches(outcome.results) == expected_matches(outcome.data)
    assert len(outcome.results["matches"]) == 150


def test_each_notice_is_delivered_exactly_once(outcome: Outcome) -> None:
    mails = [email.message_from_bytes(p.read_bytes()) for p in outcome.info.mail_dir.glob("*.eml")]
    per_key = Counter(str(m["X-Breachmatch-Idempotency-Key"]).strip() for m in mails)
    assert outcome.strong > 0
    # One notice per strong match, plus the notifier's new-breach alert to the hospital.
    assert len(mails) == outcome.strong + 1
    assert len(per_key) == len(mails), "notify ran twice; nothing may be sent twice"


def test_the_run_is_timed_against_its_libsodium_floor(outcome: Outcome) -> None:
    """What the demo's phase table is made of: each phase's CPU, and the OPRF work it did."""
    assert list(outcome.phases) == ["ingest", "check", "notify"]
    assert all(phase.cpu > 0 and phase.wall > 0 for phase in outcome.phases.values())
    # The notices' CPU per process: the CLIs, the sink and NATS worked; both notifiers counted.
    notify = outcome.phases["notify"].by_party
    assert min(notify["tools"], notify["smtp-sink"], notify["nats-server"]) > 0
    notifiers = sorted(name for name in notify if name.startswith("notifier"))
    assert len(notifiers) == 2
    assert notifiers[0] == "notifier"
    assert sum(notify.values()) == pytest.approx(outcome.phases["notify"].cpu)
    # A first check evaluates every distinct key; the ingest one token per filter entry.
    assert outcome.evaluations == outcome.results["summary"]["match_keys"] > 400
    assert outcome.leaked_tokens >= 150
    floor = outcome.floor  # its speed is printed by the demo, never asserted
    assert min(floor.h2g, floor.mult, floor.add) > 0


def _identifier_patterns(hospital_csv: Path) -> list[re.Pattern[bytes]]:
    patterns = []
    with hospital_csv.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            cpr, phone = row["cpr"], row["phone"]
            for literal in (
                cpr, f"{cpr[:6]}-{cpr[6:]}", row["email"], row["email"].upper(),
                f"+45{phone}", f"{row['first_name']} {row['last_name']}",
            ):  # fmt: skip
                patterns.append(re.compile(re.escape(literal.encode())))
            patterns.append(re.compile(rb"(?<!\d)" + phone.encode() + rb"(?!\d)"))
    return patterns


def test_no_identifier_in_any_stored_file_or_log(outcome: Outcome) -> None:
    root = outcome.info.root
    # Not scanned: the inputs themselves (the leak and the hospital's own
    # export), and the delivery hand-offs (sent e-mails and the Digital Post
    # outbox), which must name the patient they are addressed to.
    skipped = {root / "data", outcome.info.mail_dir, outcome.info.outbox_dir}
    files = [
        p for p in root.rglob("*") if p.is_file() and not any(p.is_relative_to(s) for s in skipped)
    ]
    scanned = {p.relative_to(root).parts[0] for p in files}
    assert {"nats", "logs", "hospital-a"} <= scanned
    patterns = _identifier_patterns(outcome.data.hospital_csv)
    leaks = [
        str(path.relative_to(root))
        for path in files
        for content in [path.read_bytes()]
        if any(p.search(content) for p in patterns)
    ]
    assert leaks == []


def test_stack_env_names_where_each_service_serves_metrics(outcome: Outcome) -> None:
    """`make up` writes the Prometheus addresses beside the others; they are the ones the
    services reported listening on."""
    for name in ("matcher", "notifier", "ingest"):
        address = outcome.info.env[f"{name.upper()}_METRICS_ADDR"]
        log = (outcome.info.root / "logs" / f"{name}.log").read_text()
        started = [
            json.loads(line)
            for line in log.splitlines()
            if line.startswith("{") and '"service started"' in line
        ]
        assert started, name
        assert address.endswith(f":{started[0]['metrics_port']}"), name


def test_no_patient_id_reaches_the_operator(outcome: Outcome) -> None:
    """Patient ids (often the CPR number in Danish exports) stay with the hospital.

    The notifier knows each patient by an HMAC under the hospital's key, so
    neither the JetStream store nor any service log holds an id; the
    hospital's own state directory and results file do, by design.
    """
    root = outcome.info.root
    with outcome.data.hospital_csv.open(encoding="utf-8") as handle:
        ids = [row["patient_id"].encode() for row in csv.DictReader(handle)]
    assert ids
    for folder in ("nats", "logs"):
        stored = b"".join(p.read_bytes() for p in (root / folder).rglob("*") if p.is_file())
        assert stored
        assert [i for i in ids if i in stored] == [], f"patient ids in {folder}"


def _traces(spans: list[Any]) -> dict[bytes, list[Any]]:
    traces: dict[bytes, list[Any]] = defaultdict(list)
    for traced in spans:
        traces[traced.span.trace_id].append(traced)
    return traces


def _continued(spans: list[Any], client: Any, service: str) -> bool:
    """Whether `service` has a SERVER span that is the child of `client`'s call."""
    return any(
        s.service == service
        and s.kind == "SPAN_KIND_SERVER"
        and s.span.trace_id == client.span.trace_id
        and s.span.parent_span_id == client.span.span_id
        for s in spans
    )


def test_every_process_exports_its_spans_as_its_own_service(run: Run) -> None:
    services = {traced.service for traced in run.spans}
    assert {
        "breachmatch-client",
        "breachmatch-ingest",
        "breachmatch-matcher",
        "breachmatch-notifier",
    } <= services


def test_each_sdk_call_continues_in_the_service_it_called(run: Run) -> None:
    """The hospital CLI's check and notify: its CLIENT span and the service's SERVER span."""
    calls = {
        "breachmatch.v1.Matcher/Evaluate": "breachmatch-matcher",
        "breachmatch.v1.Outreach/SubmitOutreach": "breachmatch-notifier",
    }
    for method, service in calls.items():
        clients = [
            s for s in run.spans
            if s.service == "breachmatch-client" and s.kind == "SPAN_KIND_CLIENT"
            and s.span.name == method
        ]  # fmt: skip
        assert clients, method
        assert all(_continued(run.spans, client, service) for client in clients), method


def test_one_ingest_is_one_trace_through_the_workers_matcher_and_notifier(run: Run) -> None:
    jobs = [s for s in run.spans if s.span.name == "ingest job"]
    assert len(jobs) == 1
    trace = _traces(run.spans)[jobs[0].span.trace_id]
    seen = {(s.service, s.kind, s.span.name) for s in trace}
    assert ("breachmatch-ingest", "SPAN_KIND_PRODUCER", "send INGEST_CHUNKS") in seen
    assert ("breachmatch-ingest", "SPAN_KIND_CONSUMER", "process INGEST_CHUNKS") in seen
    assert ("breachmatch-ingest", "SPAN_KIND_PRODUCER", "send BREACHES") in seen
    assert ("breachmatch-matcher", "SPAN_KIND_CONSUMER", "process BREACHES") in seen
    assert ("breachmatch-notifier", "SPAN_KIND_CONSUMER", "process BREACHES") in seen


def test_an_outreach_submission_and_its_delivery_are_one_trace(run: Run) -> None:
    deliveries = [
        s for s in run.spans
        if s.service == "breachmatch-notifier" and s.span.name == "process OUTREACH"
    ]  # fmt: skip
    assert len(deliveries) >= run.outcome.strong
    traces = _traces(run.spans)
    for delivery in deliveries:
        names = {(s.service, s.kind, s.span.name) for s in traces[delivery.span.trace_id]}
        submit = "breachmatch.v1.Outreach/SubmitOutreach"
        assert ("breachmatch-client", "SPAN_KIND_CLIENT", submit) in names
        assert ("breachmatch-notifier", "SPAN_KIND_SERVER", submit) in names
        assert ("breachmatch-notifier", "SPAN_KIND_PRODUCER", "send OUTREACH") in names


def test_no_identifier_in_any_exported_span(run: Run) -> None:
    """Every byte the collector received — span names, attributes, resources — is scanned
    for the patients' identifiers and ids; the hospital tenant name is allowed."""
    exported = b"".join(run.exports)
    assert b"hospital-a" in exported  # the tenant, named on the services' spans
    patterns = _identifier_patterns(run.outcome.data.hospital_csv)
    assert [p.pattern for p in patterns if p.search(exported)] == []
    with run.outcome.data.hospital_csv.open(encoding="utf-8") as handle:
        ids = [row["patient_id"].encode() for row in csv.DictReader(handle)]
    assert [i for i in ids if i in exported] == []
