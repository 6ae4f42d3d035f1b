"""The hospital SDK against the real thing: NATS, an mTLS matcher, breaches from real ingest.

One module-private nats-server and matcher, so `--all` sees exactly the
breaches published here. Breaches are published by running the ingest CLI
(`breachmatch-ingest ingest`) on synthetic leak dumps whose overlap with the
synthetic hospital is known row by row: every matching leak row shares
exactly one kind of match key with one patient (or, for ``H-multi``, two).

Evaluate calls are counted by the matcher itself: its Prometheus counter of
evaluated elements per tenant (in this process, since the matcher runs
in-process), and each test checks as its own tenant so counts do not mix.
The SDK is synchronous, so it runs in a worker thread (`asyncio.to_thread`)
while the matcher serves on the test's event loop; the CLI runs as a real
subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import nacl.signing
import psutil
import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from breachmatch import bus, keys, oprf, statements, tls
from breachmatch.client import (
    Backoff,
    CheckResult,
    Client,
    PatientSource,
    PipelineOptions,
)
from breachmatch.client.audit import SecurityAudit
from breachmatch.client.cache import TokenCache
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.errors import (
    ArtifactRefusedError,
    BudgetExhaustedError,
    ClientError,
    OperatorKeyChangedError,
    UntrustedKeyError,
    UnverifiableEvaluationError,
)
from breachmatch.client.evaluate import STREAM_DEPTH
from breachmatch.client.outreach import OutreachPlan, idempotency_key
from breachmatch.filter import (
    BreachFilter,
    ProofIndex,
    derive_keys,
    proof_object_name,
    proven_labels,
    verify_artifact,
)
from breachmatch.identifiers import Strength
from breachmatch.records import Category
from breachmatch.v1 import breach_pb2, matcher_pb2, matcher_pb2_grpc, outreach_pb2
from breachmatch_dev import DevPki, NatsServer, make_dev_pki
from breachmatch_dev.breach_events import (
    make_manifest,
    publication,
    publish_event,
    retraction,
    unsigned_retraction,
)
from breachmatch_matcher import app as matcher_app
from breachmatch_matcher.app import MatcherApp
from breachmatch_matcher.config import MatcherConfig
from breachmatch_matcher.evaluator import Evaluator
from breachmatch_matcher.servicer import MatcherServicer
from breachmatch_notifier.app import NotifierApp
from breachmatch_notifier.channels import ChannelsConfig
from breachmatch_notifier.config import NotifierConfig

TENANTS = (
    "sdk-first",
    "sdk-tamper",
    "sdk-pin",
    "sdk-budget",
    "sdk-cli",
    "sdk-resume",
    "sdk-watch",
    "sdk-rotate",
    "sdk-notify",
    "sdk-lie",
    "sdk-fake-notifier",
    "sdk-lifecycle",
    "sdk-memo",
)
BUDGETS = {"sdk-budget": 10}
FACILITY = "Hospital A"
TIMEOUT = 60.0
FAST = Backoff(initial=0.05, maximum=0.2, attempts=3)

HOSPITAL_HEADER = "patient_id,cpr,mrn,first_name,last_name,birth_date,email,phone,address,language"
#: The patients the leaks are built around (see LEAK_1, LEAK_2, LEAK_3).
TARGETS = [
    "H-cpr,0302611234,,Anna,Berg,1961-02-03,anna.berg@hosp.example,+45 21 34 56 71,Vej 1,da",
    "H-email,0404622345,,Bo,Dahl,1962-04-04,bo.dahl@hosp.example,+45 21 34 56 73,Vej 2,da",
    "H-phone,0505633456,,Carl,Eske,1963-05-05,carl.eske@hosp.example,+45 21 34 56 72,Vej 3,en",
    "H-namedob,0606644567,,Søren,Kjær,1964-06-06,soren.k@hosp.example,+45 21 34 56 74,Vej 4,da",
    "H-mrn,0707655678,A-100,Dora,Falk,1965-07-07,dora.falk@hosp.example,+45 21 34 56 75,Vej 5,da",
    "H-multi,0808666789,,Eva,Gram,1966-08-08,eva.gram@hosp.example,+45 21 34 56 76,Vej 6,da",
]
LEAK_HEADER = (
    "Fornavn;Efternavn;CPR-nr.;Fødselsdato;Telefon;E-mail;Journalnr;Journal;Henvisning;Medicin;"
    "Diagnose"
)
LEAK_1 = [
    "Xenia;Ulv;030261-1234;01-01-1999;;;;Kontrol;;;",  # H-cpr by cpr only
    "Yrsa;Vang;;;;BO.DAHL@HOSP.EXAMPLE;;;;Metformin;",  # H-email by e-mail only
    ";;;;21 34 56 72;;;;Henvist;;",  # H-phone by phone only
    "SOEREN;KJAER;;06-06-1964;;;;;;;DF329",  # H-namedob by name and birth date only
    ";;;;;;A100;Journal;;;",  # H-mrn by MRN only (facility from the mapping)
    "Eva;Gram;080866-6789;;;eva.gram@hosp.example;;;;;",  # H-multi by cpr and e-mail
    "Ole;Lund;121212-1212;12-12-1912;40 50 60 70;ole@lund.example;;;;;",  # nobody here
    "Pia;Moe;131313-1313;;;;;Noter;;;",  # nobody here
]
LEAK_2 = [
    "Anna;Berg;030261-1234;03-02-1961;;;;;;Sertralin;",  # H-cpr by cpr and name_dob
    ";;;;;carl.eske@hosp.example;;;;;",  # H-phone by e-mail
]
LEAK_3 = [";;;;;dora.falk@hosp.example;;;;;"]  # H-mrn by e-mail

EXPECTED_1 = {
    ("H-cpr", ("cpr",), "strong", ("national_id", "medical_history")),
    ("H-email", ("email",), "medium", ("contact", "medication")),
    ("H-phone", ("phone",), "medium", ("contact", "referrals")),
    ("H-namedob", ("name_dob",), "medium", ("diagnoses",)),
    ("H-mrn", ("mrn",), "strong", ("medical_history",)),
    ("H-multi", ("cpr", "email"), "strong", ("contact", "national_id")),
}
EXPECTED_2 = {
    ("H-cpr", ("cpr", "name_dob"), "strong", ("national_id", "medication")),
    ("H-phone", ("email",), "medium", ("contact",)),
}
EXPECTED_3 = {("H-mrn", ("email",), "medium", ("contact",))}


def cache_key_for(state: Path) -> Path:
    """The cache key of a test's state directory: beside it, never inside it."""
    return state.with_name(f"{state.name}.cache.key")


def background_patients(count: int, seed: int) -> list[str]:
    """Patients who are in no leak: CPRs from 1920-1929, mail and phones of their own."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(1920, 1929)
        cpr = f"{day:02d}{month:02d}{year % 100:02d}{rng.randint(1000, 9999)}"
        phone = (
            f"+45 {rng.randint(30, 39)} {rng.randint(10, 99)} {rng.randint(10, 99)} {n % 90 + 10}"
        )
        rows.append(
            f"B-{seed}-{n:05d},{cpr},,Per{n},Bak{seed},{year}-{month:02d}-{day:02d},"
            f"p{n}.s{seed}@bg.example,{phone},Gade {n},da"
        )
    return rows


def hospital_csv(path: Path, rows: Iterable[str]) -> Path:
    path.write_text("\n".join([HOSPITAL_HEADER, *rows]) + "\n")
    return path


def identifier_forms(rows: Iterable[str]) -> set[bytes]:
    """Every spelling of the hospital's identifiers a careless store might hold."""
    forms: set[bytes] = set()
    for row in rows:
        fields = row.split(",")
        cpr, email, phone = fields[1], fields[6], fields[7]
        forms |= {cpr.encode(), f"{cpr[:6]}-{cpr[6:]}".encode(), email.encode()}
        forms |= {email.upper().encode(), phone.encode(), phone.replace(" ", "").encode()}
        forms.add(phone.replace(" ", "").removeprefix("+45").encode())
    return forms


def matches_of(result: CheckResult, breach_id: str) -> set[tuple[Any, ...]]:
    return {
        (m.patient_id, m.matched_keys, m.strength, m.categories)
        for m in result.matches
        if m.breach_id == breach_id
    }


def evaluated(tenant: str) -> float:
    """Elements the matcher evaluated for `tenant`, from its own Prometheus counter."""
    value = REGISTRY.get_sample_value(
        "breachmatch_matcher_evaluated_elements_total", {"tenant": tenant}
    )
    return value or 0.0


@dataclass(frozen=True)
class Stack:
    nats_url: str
    pki: DevPki
    keys: keys.OperatorKeyFiles
    port: int
    root: Path
    hospital: Path
    hospital_rows: tuple[str, ...]
    config: MatcherConfig

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, tenant: str, state: Path, **options: Any) -> Client:
        return Client(
            self.address,
            self.pki.tenant_dir(tenant),
            state_dir=state,
            cache_key=cache_key_for(state),
            backoff=FAST,
            pipeline=PipelineOptions(backoff=FAST, **options),
        )


async def run_ingest(
    stack_root: Path,
    nats_url: str,
    pki: DevPki,
    operator: keys.OperatorKeyFiles,
    breach_id: str,
    rows: list[str],
    oprf_dir: Path | None = None,
    organisation: str = "Clinic",
) -> None:
    """Publish a breach for real: the ingest CLI on a semicolon CSV with Danish headers."""
    dump = stack_root / f"{breach_id}.csv"
    dump.write_text("\n".join([LEAK_HEADER, *rows]) + "\n", encoding="utf-8")
    mapping = stack_root / "leak-map.json"
    mapping.write_text(json.dumps({"facility": FACILITY}))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "breachmatch_ingest.cli", "ingest", str(dump),
        "--breach-id", breach_id, "--title", f"Leak {breach_id}", "--organisation", organisation,
        "--map", str(mapping), "--nats-url", nats_url,
        "--nats-tls-dir", str(pki.service_dir("ingest")),
        "--oprf-key-dir", str(oprf_dir or operator.oprf_dir),
        "--signing-key", str(operator.signing_key), "--workers", "1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == 0, err.decode()[-2000:]


async def wait_until_served(stack: Stack, breach_ids: set[str]) -> None:
    """Follow WatchBreaches until the matcher has accepted every breach in `breach_ids`."""
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(stack.pki.tenant_dir("sdk-first")))
    async with grpc.aio.secure_channel(stack.address, credentials) as channel:
        stub = matcher_pb2_grpc.MatcherStub(channel)
        call = stub.WatchBreaches(matcher_pb2.WatchBreachesRequest(), timeout=TIMEOUT)
        missing = set(breach_ids)
        async for response in call:
            missing.discard(response.event.artifact.breach_id)
            if not missing:
                call.cancel()
                return


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("sdk-stack")
    tenants_file = root / "tenants.json"
    tenants_file.write_text(
        json.dumps(
            {
                "default_daily_budget": 10_000_000,
                "tenants": {
                    **{t: {"daily_budget": b} for t, b in BUDGETS.items()},
                    **{
                        tenant: {
                            "organisation": "Hospital A",
                            "contact_point": "Patientkontoret, tlf. 11 22 33 44",
                        }
                        for tenant in ("sdk-notify", "sdk-lifecycle")
                    },
                },
            }
        )
    )
    pki = make_dev_pki(root / "pki", tenants=TENANTS)
    operator = keys.make_operator_keys(root / "keys")
    rows = (*TARGETS, *background_patients(30, seed=1))
    with NatsServer(root / "nats", pki) as nats:
        await nats.provision("ingest")  # as `breachmatch-ingest serve` would: the matcher waits
        config = MatcherConfig(
            tls_dir=pki.service_dir("matcher"),
            oprf_key_dir=operator.oprf_dir,
            verify_key=operator.verify_key,
            notifier_statement=operator.notifier_statement,
            nats_url=nats.url,
            tenants_file=tenants_file,
            grpc_addr="127.0.0.1:0",
            health_addr=None,
            metrics_addr=None,
            workers=2,
            cache_dir=root,
        )
        app = MatcherApp(config)
        await app.start()
        stack = Stack(
            nats.url, pki, operator, app.port, root, hospital_csv(root / "h.csv", rows), rows,
            config,
        )  # fmt: skip
        # One after the other: watch tests rely on leak-1 being the first event.
        await run_ingest(root, nats.url, pki, operator, "leak-1", LEAK_1)
        await run_ingest(root, nats.url, pki, operator, "leak-2", LEAK_2)
        await wait_until_served(stack, {"leak-1", "leak-2"})
        try:
            yield stack
        finally:
            await app.stop()


@dataclass(frozen=True)
class FirstCheck:
    state: Path
    result: CheckResult
    counted: float


@pytest.fixture(scope="module")
async def first_check(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> FirstCheck:
    """Tenant sdk-first's first check of leak-1, from an empty state directory."""
    state = tmp_path_factory.mktemp("state-first")
    before = evaluated("sdk-first")
    with stack.client("sdk-first", state) as client:
        result = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
    return FirstCheck(state, result, evaluated("sdk-first") - before)


def _facility(path: Path) -> PatientSource:
    return PatientSource(path, facility=FACILITY)


def _cached_rows(state: Path) -> int:
    """Tokens committed to the token cache so far (0 while it is still being created)."""
    with contextlib.closing(sqlite3.connect(state / "tokens.sqlite")) as db:
        try:
            return int(db.execute("SELECT coalesce(sum(entries), 0) FROM segments").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0


async def test_first_check_finds_exactly_the_expected_matches(first_check: FirstCheck):
    result = first_check.result
    assert matches_of(result, "leak-1") == EXPECTED_1
    (summary,) = result.summaries
    assert (summary.patients_checked, summary.patients_matched) == (36, 6)
    assert (summary.strong, summary.medium) == (3, 3)
    assert summary.categories["contact"] == 3
    assert result.tenant == "sdk-first"


async def test_first_check_evaluates_each_distinct_key_once_and_caches_it(
    first_check: FirstCheck,
):
    result = first_check.result
    assert result.evaluations == result.match_keys
    assert first_check.counted == result.match_keys
    assert _cached_rows(first_check.state) == result.match_keys


async def test_second_check_and_a_new_breach_make_no_evaluate_calls(
    stack: Stack, first_check: FirstCheck
):
    before = evaluated("sdk-first")
    with stack.client("sdk-first", first_check.state) as client:
        again = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
        second = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-2"])
        both = await asyncio.to_thread(client.check, _facility(stack.hospital))
    assert evaluated("sdk-first") == before
    assert again.evaluations == second.evaluations == both.evaluations == 0
    assert again.matches == first_check.result.matches
    assert again.summaries == first_check.result.summaries
    assert matches_of(again, "leak-1") == EXPECTED_1
    assert matches_of(second, "leak-2") == EXPECTED_2
    assert {s.breach_id for s in both.summaries} >= {"leak-1", "leak-2"}
    assert matches_of(both, "leak-1") | matches_of(both, "leak-2") == EXPECTED_1 | EXPECTED_2


async def test_only_new_patients_are_evaluated(
    stack: Stack, first_check: FirstCheck, tmp_path: Path
):
    newcomers = background_patients(3, seed=7)
    grown = hospital_csv(tmp_path / "grown.csv", (*stack.hospital_rows, *newcomers))
    state = _copy_state(first_check.state, tmp_path / "state")
    before = evaluated("sdk-first")
    with stack.client("sdk-first", state) as client:
        result = await asyncio.to_thread(client.check, _facility(grown), ["leak-1"])
    assert result.evaluations == 3 * 4  # cpr, email, phone, name_dob of each newcomer
    assert evaluated("sdk-first") - before == result.evaluations
    assert matches_of(result, "leak-1") == EXPECTED_1


def _copy_state(source: Path, state: Path) -> Path:
    """A second installation with the first one's cache, pin and cache key."""
    state.mkdir()
    for name in ("tokens.sqlite", "operator-key.pin"):
        (state / name).write_bytes((source / name).read_bytes())
    cache_key_for(state).write_bytes(cache_key_for(source).read_bytes())
    cache_key_for(state).chmod(0o600)
    return state


async def test_a_cache_segment_altered_in_one_byte_is_evaluated_again_not_matched(
    stack: Stack, first_check: FirstCheck, tmp_path: Path
):
    state = _copy_state(first_check.state, tmp_path / "state")
    with contextlib.closing(sqlite3.connect(state / "tokens.sqlite")) as db, db:
        rows = list(db.execute("SELECT key_id, seg, entries, sealed FROM segments"))
        key_id, seg, entries, sealed = rows[0]
        altered = bytearray(sealed)
        altered[-1] ^= 0x80
        db.execute(
            "UPDATE segments SET sealed = ? WHERE key_id = ? AND seg = ?",
            (bytes(altered), key_id, seg),
        )
    before = evaluated("sdk-first")
    with stack.client("sdk-first", state) as client:
        result = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
        again = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
    assert result.evaluations == entries > 0
    assert evaluated("sdk-first") - before == entries
    assert result.matches == first_check.result.matches
    assert again.evaluations == 0
    assert again.matches == first_check.result.matches


def _report(result: CheckResult) -> tuple[object, ...]:
    """What a check reports, but when it ran and how much it had to evaluate."""
    return (
        result.matches, result.summaries, result.patients_checked, result.bad_rows,
        result.patients_without_keys, result.match_keys,
    )  # fmt: skip


async def test_a_recheck_of_an_edited_export_normalises_its_changes_and_reports_as_fresh(
    stack: Stack, tmp_path: Path, normalised: list[int]
):
    rows = list(stack.hospital_rows)
    export = hospital_csv(tmp_path / "export.csv", rows)
    with stack.client("sdk-memo", tmp_path / "state") as client:
        await asyncio.to_thread(client.check, _facility(export), ["leak-1"])
        unchanged = normalised[0]
        before = evaluated("sdk-memo")
        again = await asyncio.to_thread(client.check, _facility(export), ["leak-1"])
        assert normalised[0] == unchanged  # an unchanged export is not normalised again
        edited = rows[-1].replace("@bg.example", "@moved.example")  # a new e-mail key
        newcomer = background_patients(1, seed=9)[0]  # four new keys
        rows = [*rows[:-3], rows[-2], edited, newcomer]  # one row gone, one edited, one new
        hospital_csv(export, rows)
        result = await asyncio.to_thread(client.check, _facility(export), ["leak-1"])
    assert normalised[0] - unchanged == 2
    assert again.evaluations == 0
    assert result.evaluations == 5
    assert evaluated("sdk-memo") - before == 5
    with stack.client("sdk-memo", tmp_path / "fresh") as client:
        fresh = await asyncio.to_thread(client.check, _facility(export), ["leak-1"])
    assert _report(result) == _report(fresh)
    assert matches_of(result, "leak-1") == EXPECTED_1


async def test_a_token_segment_altered_under_a_remembered_export_is_evaluated_again(
    stack: Stack, tmp_path: Path
):
    """The memo has the keys' index only: their inputs are read afresh to evaluate them."""
    export = hospital_csv(tmp_path / "export.csv", stack.hospital_rows)
    state = tmp_path / "state"
    with stack.client("sdk-memo", state) as client:
        first = await asyncio.to_thread(client.check, _facility(export), ["leak-1"])
    with contextlib.closing(sqlite3.connect(state / "tokens.sqlite")) as db, db:
        key_id, seg, entries, sealed = next(
            db.execute("SELECT key_id, seg, entries, sealed FROM segments")
        )
        db.execute(
            "UPDATE segments SET sealed = ? WHERE key_id = ? AND seg = ?",
            (sealed[:-1] + bytes([sealed[-1] ^ 0x80]), key_id, seg),
        )
    before = evaluated("sdk-memo")
    with stack.client("sdk-memo", state) as client:
        result = await asyncio.to_thread(client.check, _facility(export), ["leak-1"])
        again = await asyncio.to_thread(client.check, _facility(export), ["leak-1"])
    assert result.evaluations == entries > 0
    assert evaluated("sdk-memo") - before == entries
    assert _report(result) == _report(first)
    assert again.evaluations == 0
    assert _report(again) == _report(first)


async def test_a_filter_altered_in_the_state_directory_is_refused(stack: Stack, tmp_path: Path):
    with stack.client("sdk-tamper", tmp_path) as client:
        await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
        body = tmp_path / "breaches" / "leak-1" / "body"
        original = body.read_bytes()
        flipped = bytearray(original)
        flipped[len(flipped) // 2] ^= 0x40
        body.write_bytes(bytes(flipped))
        with pytest.raises(ArtifactRefusedError, match="changed after it was downloaded"):
            await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
        body.write_bytes(original)
        artifact = tmp_path / "breaches" / "leak-1" / "artifact.bin"
        stored = bytearray(artifact.read_bytes())
        stored[stored.index(b'"title"') + 9] ^= 0x01
        artifact.write_bytes(bytes(stored))
        with pytest.raises(ArtifactRefusedError, match="signature"):
            await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])


async def test_an_interrupted_download_resumes_from_its_offset(stack: Stack, tmp_path: Path):
    """A partial body is continued, not fetched again — an altered partial copy proves it."""
    with stack.client("sdk-tamper", tmp_path / "full") as client:
        await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
    stored = tmp_path / "full" / "breaches" / "leak-1"
    body = (stored / "body").read_bytes()
    state = tmp_path / "resumed"
    partial = state / "breaches" / "leak-1"
    partial.mkdir(parents=True)
    shutil.copy(stored / "artifact.bin", partial / "artifact.bin")
    (partial / "body.part").write_bytes(bytes([body[0] ^ 0xFF]) + body[1 : len(body) // 2])
    with stack.client("sdk-tamper", state) as client:
        with pytest.raises(ArtifactRefusedError, match="does not match its signed manifest"):
            await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
        assert not (partial / "body.part").exists()  # the bad partial copy was discarded
        (partial / "body.part").write_bytes(body[: len(body) // 2])
        result = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
    assert (partial / "body").read_bytes() == body
    assert matches_of(result, "leak-1") == EXPECTED_1


async def test_a_matcher_with_another_operator_key_is_refused(stack: Stack, tmp_path: Path):
    wrong = tmp_path / "verify.pub"
    wrong.write_text(keys.make_operator_keys(tmp_path / "other").verify_key.read_text())
    before = evaluated("sdk-pin")
    client = Client(
        stack.address,
        stack.pki.tenant_dir("sdk-pin"),
        state_dir=tmp_path / "state",
        cache_key=cache_key_for(tmp_path / "state"),
        operator_key=wrong,
        backoff=FAST,
    )
    with client, pytest.raises(OperatorKeyChangedError, match="OPERATOR KEY MISMATCH"):
        await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
    assert evaluated("sdk-pin") == before
    assert not (tmp_path / "state" / "breaches" / "leak-1").exists()


async def test_exhausted_budget_names_what_remains_and_keeps_what_was_done(
    stack: Stack, tmp_path: Path
):
    client = stack.client("sdk-budget", tmp_path, batch_size=4, streams=1)
    with client, pytest.raises(BudgetExhaustedError) as refused:
        await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
    assert refused.value.remaining == 2  # 10 per day, batches of 4: two granted, 2 left
    assert "2 evaluations remain today" in str(refused.value)
    assert _cached_rows(tmp_path) == 8


async def _cli(stack: Stack, tenant: str, state: Path, *args: str) -> tuple[int, str, str]:
    """Run ``breachmatch`` for real; flags partly through the environment, as documented."""
    env = {
        **os.environ,
        "BREACHMATCH_MATCHER": stack.address,
        "BREACHMATCH_TLS_DIR": str(stack.pki.tenant_dir(tenant)),
        "BREACHMATCH_STATE_DIR": str(state),
        "BREACHMATCH_CACHE_KEY": str(cache_key_for(state)),
        "BREACHMATCH_FACILITY": FACILITY,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "breachmatch.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_check_writes_reports_without_any_identifier(stack: Stack, tmp_path: Path):
    state = tmp_path / "state"
    report, table = tmp_path / "results.json", tmp_path / "results.csv"
    code, out, err = await _cli(
        stack, "sdk-cli", state, "check", "--patients", str(stack.hospital),
        "--breach", "leak-1,leak-2", "--json", str(report), "--csv", str(table),
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(report.read_text())
    assert document["version"] == 1
    assert document["tenant"] == "sdk-cli"
    assert document["patients_file"] == str(stack.hospital)
    found = {
        (m["patient_id"], tuple(m["matched_keys"]), m["strength"], tuple(m["categories"]))
        for m in document["matches"]
    }
    assert found == EXPECTED_1 | EXPECTED_2
    assert len(table.read_text().splitlines()) == 1 + len(EXPECTED_1 | EXPECTED_2)
    assert "Breach leak-1" in out
    assert "H-multi" in out
    written = [report.read_bytes(), table.read_bytes(), out.encode(), err.encode()]
    written += [p.read_bytes() for p in state.rglob("*") if p.is_file()]
    leaked = {
        form for form in identifier_forms(stack.hospital_rows) for blob in written if form in blob
    }
    assert leaked == set()

    # `--json -`: the same document on stdout, the human summary on stderr.
    code, out, err = await _cli(
        stack, "sdk-cli", state, "check", "--patients", str(stack.hospital),
        "--breach", "leak-1,leak-2", "--json", "-",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["matches"] == document["matches"]
    assert "Breach leak-1" in err
    assert not (tmp_path / "-").exists()


async def test_cli_errors_say_what_to_fix(stack: Stack, tmp_path: Path):
    odd = tmp_path / "odd.csv"
    odd.write_text("Kundenr;Ident\nK1;0302611234\n")
    code, _, err = await _cli(stack, "sdk-cli", tmp_path, "check", "--patients", str(odd))
    assert code == 1
    assert "--map" in err
    assert "0302611234" not in err
    code, _, err = await _cli(
        stack, "sdk-cli", tmp_path, "check", "--patients", str(stack.hospital),
        "--matcher", "127.0.0.1:1", "--retries", "2",
    )  # fmt: skip
    assert code == 69  # EX_UNAVAILABLE: distinct from a problem the hospital must fix
    assert "cannot reach the matcher at 127.0.0.1:1: is the matcher running? check --matcher" in err
    code, _, err = await _cli(stack, "sdk-cli", tmp_path, "check")
    assert code == 2, err
    assert "--patients is required (or set BREACHMATCH_PATIENTS)" in err


async def test_an_interrupted_run_resumes_where_it_stopped(stack: Stack, tmp_path: Path):
    big = hospital_csv(tmp_path / "big.csv", (*TARGETS, *background_patients(1500, seed=2)))
    state = tmp_path / "state"
    env_args = ("--patients", str(big), "--breach", "leak-1", "--batch-size", "64")
    env = {
        **os.environ,
        "BREACHMATCH_MATCHER": stack.address,
        "BREACHMATCH_TLS_DIR": str(stack.pki.tenant_dir("sdk-resume")),
        "BREACHMATCH_STATE_DIR": str(state),
        "BREACHMATCH_CACHE_KEY": str(cache_key_for(state)),
        "BREACHMATCH_FACILITY": FACILITY,
    }
    before = evaluated("sdk-resume")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "breachmatch.cli", "check", *env_args, "--concurrency", "1",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(TIMEOUT):
        # Another process's commit cannot notify us: watch the checkpoint itself.
        while not (state / "tokens.sqlite").exists() or _cached_rows(state) == 0:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers, "a run this size evaluates in a pool of worker processes"
    process.kill()
    await process.wait()
    # The pool (and multiprocessing's resource tracker) end with the killed parent.
    _, alive = await asyncio.to_thread(psutil.wait_procs, workers, TIMEOUT)
    assert alive == []
    checkpointed = _cached_rows(state)
    report = tmp_path / "resumed.json"
    code, _, err = await _cli(stack, "sdk-resume", state, "check", *env_args, "--json", str(report))
    assert code == 0, err
    summary = json.loads(report.read_text())["summary"]
    distinct = summary["match_keys"]
    assert 0 < checkpointed < distinct
    assert checkpointed + summary["evaluations"] == distinct
    assert _cached_rows(state) == distinct
    # The killed run also paid for the batches it had in flight (at most the
    # stream depth of batches, each of --batch-size elements), and nothing more.
    in_flight = evaluated("sdk-resume") - before - distinct
    assert 0 <= in_flight <= STREAM_DEPTH * 64
    found = {
        (m["patient_id"], tuple(m["matched_keys"]), m["strength"], tuple(m["categories"]))
        for m in json.loads(report.read_text())["matches"]
    }
    assert found == EXPECTED_1


async def test_watch_checks_a_newly_published_breach_from_the_cache(stack: Stack, tmp_path: Path):
    with stack.client("sdk-watch", tmp_path) as client:
        warm = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
        assert warm.evaluations == warm.match_keys
        results: asyncio.Queue[CheckResult] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def on_result(result: CheckResult) -> None:
            loop.call_soon_threadsafe(results.put_nowait, result)

        watching = asyncio.create_task(
            asyncio.to_thread(client.watch, _facility(stack.hospital), on_result, stop=stop)
        )
        before = evaluated("sdk-watch")
        seen: dict[str, CheckResult] = {}
        async with asyncio.timeout(TIMEOUT):
            while {"leak-1", "leak-2"} - set(seen):
                result = await results.get()
                seen[result.summaries[0].breach_id] = result
            await run_ingest(stack.root, stack.nats_url, stack.pki, stack.keys, "leak-3", LEAK_3)
            while "leak-3" not in seen:
                result = await results.get()
                seen[result.summaries[0].breach_id] = result
        stop.set()
        await asyncio.wait_for(watching, TIMEOUT)
    assert evaluated("sdk-watch") == before
    assert [seen[b].evaluations for b in ("leak-1", "leak-2", "leak-3")] == [0, 0, 0]
    assert matches_of(seen["leak-2"], "leak-2") == EXPECTED_2
    assert matches_of(seen["leak-3"], "leak-3") == EXPECTED_3
    assert int((tmp_path / "watch.sequence").read_text()) >= 3


async def test_key_rotation_re_evaluates_exactly_the_retired_entries(stack: Stack, tmp_path: Path):
    """A second matcher with its own copy of the key ring, rotated while it runs."""
    ring_dir = tmp_path / "oprf"
    shutil.copytree(stack.keys.oprf_dir, ring_dir)
    old_key = keys.KeyRing.load(ring_dir).current.key_id
    rotating = MatcherApp(replace(stack.config, oprf_key_dir=ring_dir, workers=1))
    await rotating.start()
    try:
        notices: list[str] = []
        client = Client(
            f"127.0.0.1:{rotating.port}", stack.pki.tenant_dir("sdk-rotate"),
            state_dir=tmp_path / "state", cache_key=cache_key_for(tmp_path / "state"),
            backoff=FAST, notice=notices.append,
        )  # fmt: skip
        with client:
            first = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
            assert first.evaluations == first.match_keys
            signing = keys.load_signing_key(stack.keys.signing_key)
            new_key = keys.KeyRing.load(ring_dir).new_key(signing).key_id  # old: grace period
            graced = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
            # leak-1 still uses the old key (cached); the new current key is evaluated once.
            assert graced.evaluations == first.match_keys
            assert matches_of(graced, "leak-1") == EXPECTED_1
            keys.KeyRing.load(ring_dir).retire(old_key)
            with pytest.raises(ClientError, match="publish it again under the current key"):
                await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
            everything = await asyncio.to_thread(client.check, _facility(stack.hospital))
            assert everything.summaries == ()  # every served breach used the retired key
            assert everything.evaluations == 0
            assert "leak-1" in notices[-1]
            assert "not checked" in notices[-1]
            with TokenCache(
                tmp_path / "state" / "tokens.sqlite", client_cache_key(tmp_path)
            ) as cache:
                assert (cache.count(old_key), cache.count(new_key)) == (0, first.match_keys)
            await run_ingest(
                tmp_path,
                stack.nats_url,
                stack.pki,
                stack.keys,
                "leak-rotated",
                LEAK_1,
                oprf_dir=ring_dir,
            )
            await wait_until_served(stack, {"leak-rotated"})
            rotated = await asyncio.to_thread(
                client.check, _facility(stack.hospital), ["leak-rotated"]
            )
        assert rotated.evaluations == 0
        assert rotated.summaries[0].oprf_key_id == new_key
        assert matches_of(rotated, "leak-rotated") == EXPECTED_1
    finally:
        await rotating.stop()


async def test_proofs_of_match_are_each_patients_strongest_token_in_the_breach(
    stack: Stack, first_check: FirstCheck
):
    patients = _facility(stack.hospital).read()
    with stack.client("sdk-first", first_check.state) as client:
        proofs = await asyncio.to_thread(
            client.prove, first_check.result, patients, Strength.MEDIUM
        )
    kinds = {patient: proof.key_kind for (patient, _), proof in proofs.items()}
    assert kinds == {
        "H-cpr": "cpr",
        "H-email": "email",
        "H-phone": "phone",
        "H-namedob": "name_dob",
        "H-mrn": "mrn",
        "H-multi": "cpr",  # matched by CPR and e-mail: the strong key proves it
    }
    # Each token proves its entry the way the notifier checks it (filter and proof
    # index), and the entry's label is what the check reported for the patient.
    folder = first_check.state / "breaches" / "leak-1"
    artifact = breach_pb2.BreachArtifact.FromString((folder / "artifact.bin").read_bytes())
    manifest = verify_artifact(artifact, keys.load_verify_key(stack.keys.verify_key))
    # As the notifier: its NATS user may read the filters and proof indexes.
    notifier_tls = tls.TlsFiles.from_dir(stack.pki.service_dir("notifier"))
    nc, js = await bus.connect(stack.nats_url, "sdk-flow-proofs", notifier_tls)
    try:
        store = await js.object_store(bus.OBJ_BREACH_FILTERS)
        index_bytes = (await store.get(proof_object_name(manifest))).data
    finally:
        await nc.close()
    assert index_bytes is not None
    order = sorted(proofs)
    with BreachFilter.open(folder / "body", manifest) as body:
        labels = proven_labels(
            body,
            ProofIndex.from_bytes(index_bytes, manifest.entry_count),
            derive_keys([proofs[key].token for key in order]),
        )
    reported = {patient: categories for patient, _, _, categories in EXPECTED_1}
    assert {
        patient: tuple(Category(int(label)).names())
        for (patient, _), label in zip(order, labels, strict=True)
    } == reported

    # A patient whose data changed since the check has nothing left to prove it with.
    changed = replace(
        patients,
        patients=tuple(
            replace(p, keys=()) if p.patient_id == "H-cpr" else p for p in patients.patients
        ),
    )
    with stack.client("sdk-first", first_check.state) as client:
        fewer = await asyncio.to_thread(client.prove, first_check.result, changed, Strength.MEDIUM)
    assert set(fewer) == set(proofs) - {("H-cpr", "leak-1")}


def client_cache_key(state_root: Path) -> CacheKey:
    return CacheKey.load_or_create(cache_key_for(state_root / "state"))


def notifier_app(stack: Stack) -> NotifierApp:
    """The real notifier intake and workers, delivering through dry-run channels."""
    return NotifierApp(
        NotifierConfig(
            notifier_secret_key=stack.keys.notifier_secret_key,
            tenants_file=stack.config.tenants_file or Path(),
            channels=ChannelsConfig(dry_run=True),
            tls_dir=stack.pki.service_dir("notifier"),
            nats_url=stack.nats_url,
            verify_key=stack.keys.verify_key,
            grpc_addr="127.0.0.1:0",
            health_addr=None,
            metrics_addr=None,
            workers_per_process=1,
        ),
        intake=True,
    )


@pytest.fixture(scope="module")
async def notifier(stack: Stack) -> AsyncIterator[str]:
    app = notifier_app(stack)
    await app.start()
    assert app.service is not None
    yield f"127.0.0.1:{app.service.bound_port}"
    await app.stop()


async def test_cli_notify_submits_each_strong_match_once_and_shows_status(
    stack: Stack, notifier: str, tmp_path: Path
):
    results = tmp_path / "results.json"
    code, _, err = await _cli(
        stack, "sdk-notify", tmp_path, "check", "--patients", str(stack.hospital),
        "--breach", "leak-1", "--json", str(results),
    )  # fmt: skip
    assert code == 0, err
    notify = ("notify", "--from", str(results), "--notifier", notifier, "--channels", "email,sms")
    code, out, err = await _cli(stack, "sdk-notify", tmp_path, *notify)
    assert code == 0, err
    assert "3 accepted, 0 already submitted" in out
    assert "3 medium-only matches" in out
    code, out, err = await _cli(stack, "sdk-notify", tmp_path, *notify)
    assert code == 0, err
    assert "0 accepted, 3 already submitted" in out
    code, out, err = await _cli(
        stack, "sdk-notify", tmp_path, "status", "--notifier", notifier, "--breach", "leak-1"
    )
    assert code == 0, err
    listed = {line.split()[0] for line in out.splitlines()[2:-1]}
    assert listed == {"H-cpr", "H-mrn", "H-multi"}
    assert out.rstrip().endswith("3 notices")
    leaked = {f for f in identifier_forms(stack.hospital_rows) if f.decode() in out + err}
    assert leaked == set()
    code, out, err = await _cli(
        stack, "sdk-notify", tmp_path, "status", "--notifier", notifier, "--breach", "leak-1",
        "--json", "-",
    )  # fmt: skip
    assert code == 0, err
    notices = json.loads(out)["notices"]
    assert {n["patient_id"] for n in notices} == {"H-cpr", "H-mrn", "H-multi"}
    assert {n["breach_id"] for n in notices} == {"leak-1"}
    code, out, err = await _cli(
        stack, "sdk-notify", tmp_path, "watch", "--patients", str(stack.hospital),
        "--notify", "--notifier", notifier, "--channels", "email", "--max-events", "1",
    )  # fmt: skip
    assert code == 0, err
    assert "Breach leak-1" in out
    assert "0 accepted, 3 already submitted" in out


async def test_cli_watch_replays_missed_breaches_and_remembers_where_it_stopped(
    stack: Stack, tmp_path: Path
):
    out_dir = tmp_path / "watch-results"
    args = ("watch", "--patients", str(stack.hospital), "--out-dir", str(out_dir))
    code, out, err = await _cli(stack, "sdk-watch", tmp_path, *args, "--max-events", "2")
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} == {"leak-1.json", "leak-2.json"}
    replayed = json.loads((out_dir / "leak-2.json").read_text())
    found = {
        (m["patient_id"], tuple(m["matched_keys"]), m["strength"], tuple(m["categories"]))
        for m in replayed["matches"]
    }
    assert found == EXPECTED_2
    assert "Breach leak-1" in out
    first_cursor = int((tmp_path / "watch.sequence").read_text())
    (out_dir / "leak-1.json").unlink()
    # A breach after the cursor, so the resumed watch has an event to handle
    # whichever other tests (publishing more) ran before this one.
    await run_ingest(stack.root, stack.nats_url, stack.pki, stack.keys, "leak-watch", LEAK_3)
    code, out, err = await _cli(stack, "sdk-watch", tmp_path, *args, "--max-events", "1")
    assert code == 0, err
    assert not (out_dir / "leak-1.json").exists()  # not replayed: the cursor was kept
    assert int((tmp_path / "watch.sequence").read_text()) > first_cursor


# --- attacks on verifiable evaluation ---------------------------------------------

OTHER_SECRET, OTHER_PUBLIC = oprf.random_key_pair()


class LyingEvaluator(Evaluator):
    """The real matcher's evaluator, except that batch number `lie_at` is evaluated under
    another key: all of it (proven under that key), or one element (with the honest proof)."""

    lie: str = ""
    lie_at: int = -1

    def __init__(self, workers: int = 0) -> None:
        super().__init__(workers)
        self.batches = 0

    async def blind_evaluate(
        self, secret: bytes, public_key: bytes, elements: Any
    ) -> tuple[list[bytes], bytes]:
        number, self.batches = self.batches, self.batches + 1
        if number == self.lie_at and self.lie == "batch":
            return await super().blind_evaluate(OTHER_SECRET, OTHER_PUBLIC, elements)
        evaluated, proof = await super().blind_evaluate(secret, public_key, elements)
        if number == self.lie_at and self.lie == "element":
            middle = len(elements) // 2
            evaluated[middle] = oprf.blind_evaluate(OTHER_SECRET, elements[middle])
        return evaluated, proof


@pytest.mark.parametrize("lie", ["batch", "element"])
@pytest.mark.parametrize("lie_at", [0, 3])
async def test_a_matcher_evaluating_under_another_key_is_caught_every_time(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lie: str, lie_at: int
):
    """A real matcher (real gRPC, mTLS, NATS, crypto) whose evaluator answers one batch, or
    one element of one batch, under another key: the SDK refuses that batch, keeps nothing
    of it, stops, and records the refusal; the honest batches before it stay cached."""
    lying = type("Lying", (LyingEvaluator,), {"lie": lie, "lie_at": lie_at})
    monkeypatch.setattr(matcher_app, "Evaluator", lying)
    app = MatcherApp(replace(stack.config, workers=1))
    await app.start()
    state = tmp_path / "state"
    batch = 8
    try:
        client = Client(
            f"127.0.0.1:{app.port}", stack.pki.tenant_dir("sdk-lie"), state_dir=state,
            operator_key=stack.keys.verify_key, backoff=FAST,
            pipeline=PipelineOptions(backoff=FAST, batch_size=batch, streams=1, workers=1),
        )  # fmt: skip
        current = keys.KeyRing.load(stack.keys.oprf_dir).current.key_id
        with client, pytest.raises(UnverifiableEvaluationError) as refused:
            await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
    finally:
        await app.stop()
    assert f"matcher returned an unverifiable evaluation for key {current}" in str(refused.value)
    assert _cached_rows(state) == lie_at * batch  # only the batches proven before the lie
    [event] = SecurityAudit(state / "audit.jsonl").events()
    assert (event["event"], event["key_id"], event["batch_elements"]) == (
        "unverifiable_evaluation", current, batch,
    )  # fmt: skip


class FakeNotifierKey(MatcherServicer):
    """The real matcher, serving the real OPRF keys but a notifier key of the attacker's."""

    statement: statements.SignedKeyStatement | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        served = self.statement
        if served is None:  # no statement at all: an empty message
            self._notifier_key = matcher_pb2.SignedKeyStatement()
        else:
            self._notifier_key = matcher_pb2.SignedKeyStatement(
                statement=served.statement_bytes, signature=served.signature
            )


def _attacker_statements() -> dict[str, statements.SignedKeyStatement | None]:
    import nacl.public
    import nacl.signing

    attacker = keys.notifier_statement(
        nacl.public.PrivateKey.generate().public_key, nacl.signing.SigningKey.generate()
    )
    return {"signed by the attacker": attacker, "no statement": None}


@pytest.mark.parametrize("served", ["signed by the attacker", "no statement"])
async def test_a_fake_matchers_notifier_key_is_refused_before_anything_is_sealed(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: str
):
    fake = type("Fake", (FakeNotifierKey,), {"statement": _attacker_statements()[served]})
    monkeypatch.setattr(matcher_app, "MatcherServicer", fake)
    app = MatcherApp(replace(stack.config, workers=1))
    await app.start()
    state = tmp_path / "state"
    try:
        client = Client(
            f"127.0.0.1:{app.port}", stack.pki.tenant_dir("sdk-fake-notifier"),
            state_dir=state, operator_key=stack.keys.verify_key, backoff=FAST,
            notifier="127.0.0.1:9",  # never reached: a submission would fail as unavailable
        )  # fmt: skip
        with client:
            result = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
            assert matches_of(result, "leak-1") == EXPECTED_1  # the OPRF side is genuine
            with pytest.raises(UntrustedKeyError, match="Nothing was sealed or sent"):
                await asyncio.to_thread(client.notify, result, _facility(stack.hospital))
    finally:
        await app.stop()
    assert not (state / "submitted.sqlite").exists()
    [event] = SecurityAudit(state / "audit.jsonl").events()
    assert event["event"] == "untrusted_notifier_key"


# --- the breach lifecycle under attack: crafted events on NATS, a forwarding matcher ---


@pytest.fixture(scope="module")
async def js(stack: Stack) -> AsyncIterator[JetStreamContext]:
    """A client of the stack's NATS, as anyone who can reach it has (the attacker's view)."""
    # Only ingest may publish breach events: this is an intruder holding its identity.
    ingest = tls.TlsFiles.from_dir(stack.pki.service_dir("ingest"))
    nc, context = await bus.connect(stack.nats_url, "sdk-flow-tests", ingest)
    yield context
    await nc.drain()


@dataclass(frozen=True)
class Corrected:
    """Breach leak-fix, published twice: v1 with a wrong organisation, then the corrected v2."""

    first: breach_pb2.BreachEvent
    #: The stream's last sequence before leak-fix was first published.
    before: int


async def _events_of(js: JetStreamContext, breach_id: str) -> list[breach_pb2.BreachEvent]:
    last = int((await js.stream_info(bus.STREAM_BREACHES)).state.last_seq)
    sub = await js.subscribe(bus.BREACH_EVENTS, stream=bus.STREAM_BREACHES, ordered_consumer=True)
    found = []
    try:
        while True:
            msg = await sub.next_msg(timeout=TIMEOUT)
            event = breach_pb2.BreachEvent.FromString(msg.data)
            if event.artifact.breach_id == breach_id:
                found.append(event)
            if msg.metadata.sequence.stream >= last:
                return found
    finally:
        await sub.unsubscribe()


@pytest.fixture(scope="module")
async def corrected(stack: Stack, js: JetStreamContext) -> Corrected:
    before = int((await js.stream_info(bus.STREAM_BREACHES)).state.last_seq)
    await run_ingest(
        stack.root, stack.nats_url, stack.pki, stack.keys, "leak-fix", LEAK_3, organisation="Wrong"
    )
    await run_ingest(stack.root, stack.nats_url, stack.pki, stack.keys, "leak-fix", LEAK_3)
    events = await _events_of(js, "leak-fix")
    assert len(events) == 2
    return Corrected(events[0], before)


async def served_breaches(stack: Stack) -> dict[str, breach_pb2.BreachArtifact]:
    """What the matcher serves now, by breach id."""
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(stack.pki.tenant_dir("sdk-first")))
    async with grpc.aio.secure_channel(stack.address, credentials) as channel:
        reply = await matcher_pb2_grpc.MatcherStub(channel).ListBreaches(
            matcher_pb2.ListBreachesRequest(), timeout=TIMEOUT
        )
    return {artifact.breach_id: artifact for artifact in reply.breaches}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_crafted_events_on_nats_change_nothing_the_hospital_sees(
    stack: Stack, js: JetStreamContext, corrected: Corrected, tmp_path: Path
):
    """Issue 10, attacks 2 and 7: an unsigned retraction, a `..` id, a replayed old manifest."""
    state = tmp_path / "state"
    with stack.client("sdk-lifecycle", state) as client:
        checked = await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1"])
    assert matches_of(checked, "leak-1") == EXPECTED_1
    before = _snapshot(state)
    key_before = cache_key_for(state).read_bytes()
    signer = keys.load_signing_key(stack.keys.signing_key)
    for attack in (
        unsigned_retraction("leak-1"),
        unsigned_retraction(".."),
        retraction("never-published", 1, signer),  # signed, but of no breach
        corrected.first,  # the superseded v1 of leak-fix, validly signed
    ):
        await publish_event(js, attack)
    await run_ingest(stack.root, stack.nats_url, stack.pki, stack.keys, "leak-after", LEAK_3)
    # The matcher applies events in order: once leak-after is served, so were the attacks.
    await wait_until_served(stack, {"leak-after"})

    served = await served_breaches(stack)
    assert {"leak-1", "leak-fix", "leak-after"} <= set(served)
    fix = verify_artifact(served["leak-fix"], keys.load_verify_key(stack.keys.verify_key))
    assert (fix.version, fix.organisation) == (2, "Clinic")
    with stack.client("sdk-lifecycle", state) as client:
        # The watch carries on from before leak-fix to leak-after, through whatever came.
        (state / "watch.sequence").write_text(f"{corrected.before}\n")
        results: list[CheckResult] = []
        stop = threading.Event()

        def on_result(result: CheckResult) -> None:
            results.append(result)
            if result.summaries[0].breach_id == "leak-after":
                stop.set()

        await asyncio.wait_for(
            asyncio.to_thread(client.watch, _facility(stack.hospital), on_result, stop=stop),
            TIMEOUT,
        )
    checked_ids = [r.summaries[0].breach_id for r in results]
    assert checked_ids == ["leak-fix", "leak-fix", "leak-after"]  # v1 event, v2 event, sentinel
    assert all(r.summaries[0].organisation == "Clinic" for r in results[:2])  # always v2
    after = _snapshot(state)
    # Every file is still there and unchanged, but the record of versions seen (which
    # now also holds leak-fix and leak-after).
    assert set(before) <= set(after)
    changed = {name for name in before if after[name] != before[name]}
    assert changed == {"breach-versions.json"}
    assert cache_key_for(state).read_bytes() == key_before
    seen_before = json.loads(before["breach-versions.json"])["breaches"]
    seen_after = json.loads(after["breach-versions.json"])["breaches"]
    assert seen_after["leak-1"] == seen_before["leak-1"]
    assert seen_after["leak-1"]["version"] == 1
    assert seen_after["leak-fix"]["version"] == 2


class ForwardingMatcher(matcher_pb2_grpc.MatcherServicer):
    """An attacker's matcher: the operator's key info, and whatever events it likes to send."""

    def __init__(
        self, info: matcher_pb2.GetKeyInfoResponse, events: list[breach_pb2.BreachEvent]
    ) -> None:
        self._info = info
        self._events = events

    async def GetKeyInfo(self, request: Any, context: Any) -> matcher_pb2.GetKeyInfoResponse:
        return self._info

    async def WatchBreaches(
        self, request: Any, context: Any
    ) -> AsyncIterator[matcher_pb2.WatchBreachesResponse]:
        for sequence, event in enumerate(self._events, start=1):
            if sequence > request.after_sequence:
                yield matcher_pb2.WatchBreachesResponse(sequence=sequence, event=event)


@contextlib.asynccontextmanager
async def forwarding_matcher(
    stack: Stack, events: list[breach_pb2.BreachEvent]
) -> AsyncIterator[str]:
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(stack.pki.tenant_dir("sdk-first")))
    async with grpc.aio.secure_channel(stack.address, credentials) as channel:
        info = await matcher_pb2_grpc.MatcherStub(channel).GetKeyInfo(
            matcher_pb2.GetKeyInfoRequest(), timeout=TIMEOUT
        )
    server = grpc.aio.server()
    # The generated base answers UNIMPLEMENTED for every other method.
    forwarding = ForwardingMatcher(info, events)  # type: ignore[abstract]
    matcher_pb2_grpc.add_MatcherServicer_to_server(forwarding, server)
    port = server.add_secure_port(
        "127.0.0.1:0",
        tls.server_credentials(tls.TlsFiles.from_dir(stack.pki.service_dir("matcher"))),
    )
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_watch_refuses_crafted_events_even_from_a_matcher_that_forwards_them(
    stack: Stack, corrected: Corrected, tmp_path: Path
):
    """The SDK checks every event itself: `breachmatch watch` skips each crafted one, no crash."""
    state = tmp_path / "state"
    with stack.client("sdk-lifecycle", state) as client:  # pins the key, sees leak-fix v2
        await asyncio.to_thread(client.check, _facility(stack.hospital), ["leak-1", "leak-fix"])
    before = _snapshot(state)
    signer = keys.load_signing_key(stack.keys.signing_key)
    stranger = nacl.signing.SigningKey.generate()
    garbage_id = breach_pb2.BreachEvent(
        kind=breach_pb2.BreachEvent.KIND_RETRACTED,
        artifact=breach_pb2.BreachArtifact(breach_id="\x1b[2J" + "A" * 10_000),
        retraction=breach_pb2.BreachRetraction(statement=b"{", signature=b"\x00" * 64),
    )
    crafted = [
        unsigned_retraction(".."),
        unsigned_retraction("leak-1"),
        publication(make_manifest("leak-1", version=9), stranger),
        corrected.first,  # validly signed, but older than the v2 this hospital has seen
        retraction("never-published", 1, signer),
        breach_pb2.BreachEvent(kind=breach_pb2.BreachEvent.KIND_UNSPECIFIED),
        garbage_id,
        retraction("leak-1", 1, signer),  # the one genuine retraction
    ]
    async with forwarding_matcher(stack, crafted) as address:
        code, _, err = await _cli(
            stack, "sdk-lifecycle", state, "watch", "--patients", str(stack.hospital),
            "--matcher", address, "--max-events", str(len(crafted)),
        )  # fmt: skip
    assert code == 0, err
    assert "Traceback" not in err
    assert err.count("ignored") == len(crafted) - 1
    for reason in (
        "RetractionSignatureError",
        "ManifestSignatureError",
        "replayed_publication",
        "unknown_breach",
        "unknown_kind",
    ):
        assert reason in err
    assert "\x1b[2J" not in err
    assert "breach leak-1 was retracted by the operator (version 1)" in err
    refused = [
        (event["sequence"], event["reason"])
        for event in SecurityAudit(state / "audit.jsonl").events()
        if event["event"] == "breach event refused"
    ]
    assert refused == list(
        enumerate(
            [
                "RetractionSignatureError",
                "RetractionSignatureError",
                "ManifestSignatureError",
                "replayed_publication",
                "unknown_breach",
                "unknown_kind",
                "RetractionSignatureError",
            ],
            start=1,
        )
    )
    after = _snapshot(state)
    gone = {name for name in before if name.startswith("breaches/leak-1/")}
    assert gone
    assert not gone & set(after)  # only the retracted breach's copy was removed
    kept = set(before) - gone - {"breach-versions.json", "watch.sequence"}
    assert {name: after[name] for name in kept} == {name: before[name] for name in kept}
    assert int((state / "watch.sequence").read_text()) == len(crafted)
    versions = json.loads((state / "breach-versions.json").read_text())["breaches"]
    assert versions["leak-1"]["retracted"] is True
    assert versions["leak-fix"]["version"] == 2
    assert "never-published" not in versions


async def test_notify_sends_the_other_breaches_when_one_was_retracted(stack: Stack, tmp_path: Path):
    """Issue 10, attack 7: one retracted breach must not keep the others' notices back."""
    await run_ingest(stack.root, stack.nats_url, stack.pki, stack.keys, "leak-n1", LEAK_1)
    await run_ingest(stack.root, stack.nats_url, stack.pki, stack.keys, "leak-n2", LEAK_2)
    await wait_until_served(stack, {"leak-n1", "leak-n2"})
    state = tmp_path / "state"
    with stack.client("sdk-lifecycle", state) as client:
        result = await asyncio.to_thread(
            client.check, _facility(stack.hospital), ["leak-n1", "leak-n2"]
        )
    retract = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "breachmatch_ingest.cli", "retract", "leak-n2",
        "--reason", "published in error", "--nats-url", stack.nats_url,
        "--nats-tls-dir", str(stack.pki.service_dir("ingest")),
        "--signing-key", str(stack.keys.signing_key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(retract.communicate(), TIMEOUT)
    assert retract.returncode == 0, err.decode()
    assert b"breach leak-n2: retracted" in out
    app = notifier_app(stack)
    await app.start()  # replays the stream, retraction included, before it serves
    try:
        assert app.service is not None
        client = Client(
            stack.address, stack.pki.tenant_dir("sdk-lifecycle"), state_dir=state,
            cache_key=cache_key_for(state), notifier=f"127.0.0.1:{app.service.bound_port}",
            backoff=FAST,
        )  # fmt: skip
        with client:
            done = await asyncio.to_thread(client.notify, result, _facility(stack.hospital))
            # A breach retracted between proving and submitting: the notifier refuses its
            # batch with the breach's state, and the SDK still sends the other breach's.
            first = done.plan.items[0]
            late = outreach_pb2.OutreachItem()
            late.CopyFrom(first)
            late.breach_id = "leak-n2"
            late.idempotency_key = idempotency_key(
                client_cache_key(tmp_path), "sdk-lifecycle", done.plan.patient_ids[0], "leak-n2"
            )
            raced = await asyncio.to_thread(
                client._outreach_client().submit,
                OutreachPlan((first, late, late), (done.plan.patient_ids[0],) * 3, 0, 0),
            )
    finally:
        await app.stop()
    strong_1 = sum(m[2] == "strong" for m in EXPECTED_1)
    strong_2 = sum(m[2] == "strong" for m in EXPECTED_2)
    assert (done.submitted.accepted, done.submitted.already_submitted) == (strong_1, 0)
    # The matcher no longer serves the retracted breach: its matches have no proof
    # and are left out before anything is sent.
    assert done.plan.unproven == strong_2
    assert done.submitted.refused == ()
    assert (raced.accepted, raced.already_submitted, raced.refused) == (0, 1, ())
    assert raced.refused_breaches == {"leak-n2": "retracted"}
    assert raced.not_sent == 2
