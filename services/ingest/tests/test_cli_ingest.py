"""End to end: ``breachmatch-ingest`` on realistic dumps, against a real nats-server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from breachmatch import bus
from breachmatch.filter import verify_artifact, verify_body
from breachmatch.filter.layout import pack_proof_header
from breachmatch.keys import load_signing_key
from breachmatch.v1.breach_pb2 import BreachEvent
from breachmatch_dev import dumps, synthetic
from breachmatch_dev.breach_events import make_manifest, publish_event, unsigned_retraction
from breachmatch_ingest.publish import PublishOutcome, publish_artifact

from .conftest import (
    Cli,
    Kit,
    assert_labels,
    breach_events,
    expected_body,
    expected_pairs,
    published,
    write_dump,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize("kind", ["csv", "jsonl", "sql"])
async def test_dump_becomes_one_signed_filter_with_every_key_and_label(
    kind: str, cli: Cli, js: JetStreamContext, kit: Kit, breach_id: str, tmp_path: Path
) -> None:
    crowd = list(synthetic.crowd(150, seed=len(kind)))
    dump = write_dump(tmp_path / f"dump.{kind}", kind, crowd, bad_every=50)
    report_file = tmp_path / "report.json"
    await cli.ingest(dump, breach_id, "--json-report", str(report_file))

    found = await published(js, breach_id, kit)
    records = [p.record() for p in crowd]
    assert [e.kind for e in found.events] == [BreachEvent.KIND_PUBLISHED]
    verify_body(found.manifest, found.body)
    assert found.body == expected_body(records, kit.secret)
    assert_labels(found, records, kit.secret)

    pairs = expected_pairs(records, kit.secret)
    assert found.manifest.entry_count == len(pairs) == 4 * len(crowd)
    assert found.manifest.oprf_key_id == kit.key.key_id
    report = json.loads(report_file.read_text())
    assert report["entries"] == len(pairs)
    assert report["keys"] == dict.fromkeys(["cpr", "email", "name_dob", "phone"], len(crowd))
    assert report["rows_without_key"] == 0
    bad = 0 if kind == "sql" else 3
    assert report["rows_read"] == len(crowd) + bad
    assert sum(report["bad_rows"].values()) == bad
    rows_per_category: dict[str, int] = {}
    for record in records:
        for name in record.categories.names():
            rows_per_category[name] = rows_per_category.get(name, 0) + 1
    assert report["categories"] == rows_per_category
    # Every person's keys are distinct, so the manifest's per-entry counts are
    # the row counts times four keys per row.
    assert {k: v for k, v in found.manifest.category_counts.items() if v} == {
        name: 4 * count for name, count in rows_per_category.items()
    }


async def test_reingest_gives_the_same_body_and_no_second_event(
    cli: Cli, js: JetStreamContext, kit: Kit, breach_id: str, tmp_path: Path
) -> None:
    dump = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(80, seed=7)))
    await cli.ingest(dump, breach_id)
    first = await published(js, breach_id, kit)

    again = await cli.ingest(dump, breach_id, "--workers", "2")
    second = await published(js, breach_id, kit)
    assert "already_published (version 1)" in again.stdout
    assert second.body == first.body
    assert second.events == first.events
    assert len(second.events) == 1


async def test_bad_rows_are_counted_by_reason_and_never_echoed(
    cli: Cli, js: JetStreamContext, kit: Kit, breach_id: str, tmp_path: Path
) -> None:
    crowd = list(synthetic.crowd(40, seed=11))
    hidden = list(synthetic.crowd(2, seed=99))
    dump = write_dump(tmp_path / "dump.jsonl", "jsonl", crowd)
    with dump.open("ab") as sink:
        for person in hidden:  # truncated JSON holding identifiers: unreadable rows
            p = person.person
            sink.write(f'{{"cpr": "{p.cpr}", "email": "{p.email}", "x": [\n'.encode())
    report_file = tmp_path / "report.json"
    done = await cli.ingest(
        dump, breach_id, "--json-report", str(report_file), "--log-level", "debug"
    )

    report = json.loads(report_file.read_text())
    assert report["rows_read"] == len(crowd) + len(hidden)
    assert report["bad_rows"] == {"json_syntax": len(hidden)}
    for person in hidden:
        for form in person.identifier_forms():
            assert form not in done.output
            assert form not in report_file.read_text()


async def test_inspect_shows_the_mapping_and_needs_no_nats(cli: Cli, tmp_path: Path) -> None:
    crowd = list(synthetic.crowd(30, seed=5))
    dump = write_dump(tmp_path / "dump.csv", "csv", crowd)
    report_file = tmp_path / "inspect.json"
    done = await cli.run(
        str(dump), "--inspect", "--json-report", str(report_file),
        BREACHMATCH_NATS_URL="nats://127.0.0.1:1",  # nothing listens there
    )  # fmt: skip
    assert done.code == 0, done.stderr
    assert "CPR-nr." in done.stdout
    inspected = json.loads(report_file.read_text())
    assert inspected["rows_sampled"] == len(crowd)
    assert {c["header"]: c["target"] for c in inspected["columns"]}["CPR-nr."] == "cpr"
    for person in crowd:
        assert person.person.cpr not in done.output


async def test_missing_or_bad_settings_exit_2_naming_the_flag(cli: Cli, tmp_path: Path) -> None:
    dump = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(3)))
    no_id = await cli.run(str(dump), "--title", "T")
    assert no_id.code == 2
    assert "--breach-id" in no_id.stderr
    bad_title = await cli.run(str(dump), "--breach-id", "x1", "--title", "two\nlines")
    assert bad_title.code == 2
    assert "title" in bad_title.stderr
    missing = await cli.run(str(tmp_path / "absent.csv"), "--breach-id", "x2", "--title", "T")
    assert missing.code == 2


async def test_a_correction_is_published_as_the_next_version(
    cli: Cli, js: JetStreamContext, kit: Kit, breach_id: str, tmp_path: Path
) -> None:
    """Changed metadata, then a changed dump: each a new signed version; unchanged: none."""
    dump = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(30, seed=21)))
    first_run = await cli.ingest(dump, breach_id, "--breach-date", "2025-01-02")
    assert "published (version 1)" in first_run.stdout
    first = await published(js, breach_id, kit)

    fixed = ("--organisation", "Alles Lægehus ApS", "--breach-date", "2025-01-02")
    texts = ("--description-da", "Journaler blev lækket.", "--description-en", "Records leaked.")
    corrected_run = await cli.ingest(dump, breach_id, *fixed, *texts)
    assert "published (version 2)" in corrected_run.stdout
    corrected = await published(js, breach_id, kit)
    assert corrected.manifest.version == 2
    assert corrected.manifest.organisation == "Alles Lægehus ApS"
    assert corrected.manifest.descriptions == {
        "da": "Journaler blev lækket.",
        "en": "Records leaked.",
    }
    assert corrected.manifest.added_date == first.manifest.added_date
    assert corrected.body == first.body
    assert [e.kind for e in corrected.events] == [BreachEvent.KIND_PUBLISHED] * 2

    unchanged = await cli.ingest(dump, breach_id, *fixed, *texts)
    assert "already_published (version 2)" in unchanged.stdout
    assert len((await published(js, breach_id, kit)).events) == 2

    bigger = write_dump(tmp_path / "bigger.csv", "csv", list(synthetic.crowd(31, seed=21)))
    new_dump = await cli.ingest(bigger, breach_id, *fixed, *texts)
    assert "published (version 3)" in new_dump.stdout
    latest = await published(js, breach_id, kit)
    assert latest.manifest.version == 3
    assert latest.manifest.entry_count > first.manifest.entry_count
    # The audit trail keeps every version's manifest and body.
    store = await bus.object_store(js, bus.OBJ_BREACH_FILTERS)
    assert (await store.get(first.manifest.body_object)).data == first.body
    versions = [verify_artifact(e.artifact, kit.verify_key).version for e in latest.events]
    assert versions == [1, 2, 3]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--organisation", ""), "--organisation: empty; every notice names it"),
        (("--description-da", "Kun dansk."), "--description-en: missing"),
        (("--description-en", "See www.example.com", "--description-da", "Se siden."),
         "--description-en: contains a link"),
        (("--title", "Bekræft dit CPR-nummer"), "--title: asks the reader for something"),
        (("--organisation", "O" * 61), "--organisation: longer than 60 characters"),
    ],
)  # fmt: skip
async def test_a_breach_whose_notices_could_not_be_sent_is_refused_before_any_work(
    cli: Cli,
    js: JetStreamContext,
    breach_id: str,
    tmp_path: Path,
    flags: tuple[str, ...],
    says: str,
) -> None:
    dump = write_dump(tmp_path / "dump.csv", "csv", list(synthetic.crowd(5, seed=3)))
    base = ("--breach-id", breach_id, "--title", "Testlæk", "--organisation", "Testklinikken")
    done = await cli.run(str(dump), *base, *flags)
    assert done.code == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert await breach_events(js, breach_id) == []


async def test_racing_publishers_get_distinct_versions_and_junk_counts_for_nothing(
    js: JetStreamContext, kit: Kit, breach_id: str
) -> None:
    """Two publications of one breach at once: versions 1 and 2, never two version 1s."""
    signing_key = load_signing_key(kit.files.signing_key)
    await publish_event(js, unsigned_retraction(breach_id))  # someone else's junk first
    drafts = [make_manifest(breach_id, body, title=f"Draft {body!r}") for body in (b"a", b"b")]
    outcomes = await asyncio.gather(
        *(publish_artifact(js, draft, draft_body, pack_proof_header(0), signing_key)
          for draft, draft_body in zip(drafts, (b"a", b"b"), strict=True))
    )  # fmt: skip
    assert sorted(outcome.version for outcome in outcomes) == [1, 2]
    assert {outcome.outcome for outcome in outcomes} == {PublishOutcome.PUBLISHED}
    announced = [
        verify_artifact(e.artifact, kit.verify_key)
        for e in await breach_events(js, breach_id)
        if e.kind == BreachEvent.KIND_PUBLISHED
    ]
    assert [manifest.version for manifest in announced] == [1, 2]


async def test_fhir_identifiers_in_unknown_systems_are_reported_by_count(
    cli: Cli, breach_id: str, tmp_path: Path
) -> None:
    crowd = list(synthetic.crowd(12, seed=13))
    dump = tmp_path / "patients.ndjson"
    with dump.open("wb") as sink:
        dumps.write_fhir(crowd, sink, cpr_system="http://region.example/cpr")
    done = await cli.ingest(dump, breach_id)
    warnings = [
        json.loads(line)
        for line in done.stderr.splitlines()
        if line.startswith("{") and "patients_per_system" in line
    ]
    assert [w["patients_per_system"] for w in warnings] == [{"http://region.example/cpr": 12}]
    for row in crowd:
        assert row.person.cpr not in done.output
