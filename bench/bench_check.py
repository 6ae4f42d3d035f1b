"""Hospital check benchmark: first check and cached re-check, beside OpenMined PSI.

One run, one table, medians over ``--repeat`` runs, on one synthetic hospital
and one synthetic leak published for real (the ingest CLI, a matcher
subprocess, NATS):

* **first check** — an empty state directory: read the export, download and
  verify the filter, blind → Evaluate → finalize every distinct match key,
  cache it, look it up;
* **cached re-check** — the same state directory again: no OPRF work at all;
  its CPU is also split into phases (`recheck_phases`: the export through
  the row memo with its distinct match keys, the token cache lookup, and
  the rest — key info, filter verification and lookup, the result);
* **OpenMined PSI** — its client and server (P-256, C++, one thread) on the
  very same two sets (the hospital's distinct OPRF inputs against the leak's),
  at the same per-query false-positive rate; run in the bench venv
  (``--psi-python``) through `psi_openmined.py`. PSI has no cache: a re-check
  is a new request (only the server's setup message can be reused).

Client CPU is this process plus its reaped children (the blinding pool);
matcher CPU is the matcher process and its worker processes (psutil). Speed
is printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from breachmatch import keys, logs
from breachmatch.client import CheckResult, Client, PatientSource, PipelineOptions
from breachmatch.client.cache import TokenCache
from breachmatch.client.cache_key import CacheKey
from breachmatch.client.key_trust import TrustedOprfKey
from breachmatch.client.row_memo import RowMemo
from breachmatch.client.state import StateDir
from breachmatch.client.workers import ProcessWorkers
from breachmatch.identifiers import match_keys
from breachmatch.readers import BadRow, open_records
from breachmatch_dev import DevPki, NatsServer, dumps, make_dev_pki, synthetic
from breachmatch_dev.cpu_laps import CpuLaps
from breachmatch_dev.floor import Floor

HERE = Path(__file__).resolve().parent
TENANT = "bench-hospital"


def write_sets(root: Path, patients: int, leaked: int, overlap: float, seed: int) -> int:
    """hospital.csv and leak.csv (the project's synthetic people); returns patients leaked."""
    rng = random.Random(seed)
    shared = int(patients * overlap)
    everyone = list(synthetic.people(patients + max(0, leaked - shared), seed))
    hospital, strangers = everyone[:patients], everyone[patients:]
    with (root / "hospital.csv").open("wb") as out:
        dumps.write_hospital_csv(hospital, out)
    rows = [
        synthetic.leak_row(p, ("cpr", "email", "phone"), rng) for p in rng.sample(hospital, shared)
    ]
    rows += [synthetic.leak_row(p, ("cpr", "email", "phone"), rng) for p in strangers]
    with (root / "leak.csv").open("wb") as out:
        dumps.write_csv(rows, out)
    return shared


def oprf_inputs(path: Path) -> list[str]:
    """The distinct OPRF inputs of a file, as the SDK and ingest compute them (for PSI)."""
    seen: dict[bytes, None] = {}
    with open_records(path) as stream:
        for record in stream:
            if not isinstance(record, BadRow):
                for key in match_keys(record).keys:
                    seen.setdefault(key.oprf_input())
    return [data.decode("utf-8") for data in seen]


class MatcherProcess:
    """``breachmatch-matcher serve`` as a subprocess; the port is read from its start-up log."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.port = 0
        self.output: list[str] = []
        started = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(started,), daemon=True)
        self._reader.start()
        if not started.wait(60) or not self.port:
            self.process.kill()
            tail = "".join(self.output[-10:])
            raise RuntimeError(f"the matcher did not start:\n{tail}")
        self.ps = psutil.Process(self.process.pid)

    def _read(self, started: threading.Event) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.output.append(raw.decode(errors="replace"))
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if line.get("event") == "service started":
                    self.port = int(line["grpc_port"])
                    started.set()
        started.set()

    def cpu_seconds(self) -> tuple[float, float]:
        """(the matcher's own process, its worker processes)."""
        own = sum(self.ps.cpu_times()[:2])
        pool = 0.0
        for child in self.ps.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                pool += sum(child.cpu_times()[:2])
        return own, pool

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def client_cpu_seconds() -> tuple[float, float]:
    """(this process, its reaped children): the check itself, and its blinding pool."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, reaped.ru_utime + reaped.ru_stime


@dataclass
class Sample:
    wall: float
    #: The client's own process (reading, cache, gRPC, pipeline) and its pool workers.
    client_main_cpu: float
    client_pool_cpu: float
    #: The matcher's own process (gRPC, budget, evaluation threads) and its worker processes.
    matcher_main_cpu: float
    matcher_pool_cpu: float
    evaluations: int
    matched: int

    @property
    def client_cpu(self) -> float:
        return self.client_main_cpu + self.client_pool_cpu

    @property
    def matcher_cpu(self) -> float:
        return self.matcher_main_cpu + self.matcher_pool_cpu


def measure(matcher: MatcherProcess, run: Callable[[], CheckResult]) -> Sample:
    (own, pool), (served, served_pool) = client_cpu_seconds(), matcher.cpu_seconds()
    start = time.perf_counter()
    result = run()
    wall = time.perf_counter() - start
    own_after, pool_after = client_cpu_seconds()
    served_after, served_pool_after = matcher.cpu_seconds()
    return Sample(
        wall,
        own_after - own,
        pool_after - pool,
        served_after - served,
        served_pool_after - served_pool,
        result.evaluations,
        len(result.matches),
    )


def recheck_phases(state: Path, cache_key: Path, hospital: Path) -> dict[str, float]:
    """CPU seconds of the re-check's own steps, run one by one on a warm state directory."""
    laps = CpuLaps()
    state_dir = StateDir(state)
    with contextlib.closing(sqlite3.connect(state_dir.token_cache)) as db:
        stated = [TrustedOprfKey(*row) for row in db.execute("SELECT * FROM oprf_keys")]
    key = CacheKey.load_or_create(cache_key)
    with (
        TokenCache(state_dir.token_cache, key) as cache,
        RowMemo(state_dir.row_memo, key, TENANT) as memo,
    ):
        laps.restart()
        patients = PatientSource(hospital).read_keys(memo, cache.index_of)
        laps.lap("export via the row memo, distinct keys")
        for oprf_key in stated:
            cache.use_key(oprf_key)
            found = cache.lookup(oprf_key, patients.keys.inputs, patients.keys.index)
            assert found.found.all(), "a cached token is missing"
        laps.lap("token cache lookup")
    return laps.seconds


def worker_start_cpu(workers: int = 2) -> float:
    """CPU seconds one client OPRF worker process costs to start and stop (no jobs)."""
    before = client_cpu_seconds()[1]
    ProcessWorkers(workers).close()
    return (client_cpu_seconds()[1] - before) / workers


def run_tool(argv: list[str]) -> str:
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return done.stdout


@contextlib.contextmanager
def stack(root: Path, workers: int) -> Iterator[tuple[DevPki, MatcherProcess]]:
    pki = make_dev_pki(root / "pki", tenants=(TENANT,))
    operator = keys.make_operator_keys(root / "keys")
    with NatsServer(root / "nats", pki) as nats:
        run_tool([
            sys.executable, "-m", "breachmatch_ingest.cli", "ingest", str(root / "leak.csv"),
            "--breach-id", "bench-leak", "--title", "Bench leak", "--organisation", "Bench",
            "--nats-url", nats.url, "--nats-tls-dir", str(pki.service_dir("ingest")),
            "--oprf-key-dir", str(operator.oprf_dir), "--signing-key", str(operator.signing_key),
        ])  # fmt: skip
        tenants = root / "tenants.json"  # a first check of 130,000 patients is 520,000 keys
        tenants.write_text(json.dumps({"default_daily_budget": 100_000_000}), encoding="utf-8")
        matcher = MatcherProcess([
            sys.executable, "-m", "breachmatch_matcher.cli", "serve", "--log-format", "json",
            "--nats-url", nats.url, "--tls-dir", str(pki.service_dir("matcher")),
            "--oprf-key-dir", str(operator.oprf_dir), "--verify-key", str(operator.verify_key),
            "--notifier-statement", str(operator.notifier_statement),
            "--grpc-addr", "127.0.0.1:0", "--health-addr", "", "--metrics-addr", "",
            "--workers", str(workers), "--cache-dir", str(root), "--tenants-file", str(tenants),
        ])  # fmt: skip
        try:
            yield pki, matcher
        finally:
            matcher.stop()


def openmined(psi_python: str | None, root: Path, repeat: int) -> dict[str, float]:
    if not psi_python:
        return {}
    client_items, server_items = root / "psi-client.txt", root / "psi-server.txt"
    client_items.write_text("\n".join(oprf_inputs(root / "hospital.csv")), encoding="utf-8")
    server_items.write_text("\n".join(oprf_inputs(root / "leak.csv")), encoding="utf-8")
    out = run_tool([
        psi_python, str(HERE / "psi_openmined.py"), "--client-items", str(client_items),
        "--server-items", str(server_items), "--repeat", str(repeat),
    ])  # fmt: skip
    result: dict[str, float] = json.loads(out)
    return result


def median(samples: list[Sample], field: str) -> float:
    return float(statistics.median(float(getattr(s, field)) for s in samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000, help="hospital size")
    parser.add_argument("--leaked", type=int, default=20_000, help="leak size (rows)")
    parser.add_argument("--overlap", type=float, default=0.1, help="share of patients leaked")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--concurrency", type=int, default=2, help="Evaluate streams")
    parser.add_argument("--client-workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--matcher-workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--psi-python", help="python of the venv with openmined-psi")
    args = parser.parse_args()
    # The client's own progress lines (debug and info) would bury the table.
    logs.configure_logging("bench-check", "WARNING")

    floor = Floor.measure()
    worker_start = worker_start_cpu()
    root = Path(tempfile.mkdtemp(prefix="bench-check-"))
    try:
        in_leak = write_sets(root, args.patients, args.leaked, args.overlap, seed=1)
        psi = openmined(args.psi_python, root, args.repeat)
        options = PipelineOptions(
            batch_size=args.batch_size, streams=args.concurrency, workers=args.client_workers
        )
        first: list[Sample] = []
        cached: list[Sample] = []
        load_before = os.getloadavg()
        with stack(root, args.matcher_workers) as (pki, matcher):
            for attempt in range(args.repeat):
                state = root / f"state-{attempt}"
                with Client(
                    f"127.0.0.1:{matcher.port}",
                    pki.tenant_dir(TENANT),
                    state_dir=state,
                    cache_key=root / f"cache-{attempt}.key",
                    pipeline=options,
                ) as client:
                    first.append(measure(matcher, lambda: client.check(root / "hospital.csv")))
                    cached.append(measure(matcher, lambda: client.check(root / "hospital.csv")))
            phases = recheck_phases(
                root / f"state-{args.repeat - 1}",
                root / f"cache-{args.repeat - 1}.key",
                root / "hospital.csv",
            )
        load_after = os.getloadavg()
        for sample in (*first, *cached):
            assert sample.matched == in_leak, "the check did not find exactly the leaked patients"
        assert all(s.evaluations == 0 for s in cached), "the re-check evaluated something"
        load = os.getloadavg()[0]
        floor = floor.averaged_with(Floor.measure())
    finally:
        shutil.rmtree(root, ignore_errors=True)

    cores = os.cpu_count() or 1
    keys_sent = int(median(first, "evaluations"))
    print(
        f"\nbreachmatch check benchmark — {args.patients:,} patients ({keys_sent:,} distinct "
        f"match keys), leak of {args.leaked:,} rows, {in_leak:,} patients in it; "
        f"medians of {args.repeat}; load average {load:.1f} on {cores} cores\n"
    )
    header = (
        f"{'':<36}{'wall s':>8}{'client CPU s':>14}{'server CPU s':>14}{'keys/s':>9}"
        f"{'client µs/key':>15}{'server µs/key':>15}"
    )
    print(header)
    print("-" * len(header))

    def row(name: str, wall: float | None, client: float, server: float, keys: float) -> None:
        wall_text = f"{wall:>8.2f}" if wall is not None else f"{'—':>8}"
        rate = f"{keys / wall:>9,.0f}" if wall else f"{'—':>9}"
        print(
            f"{name:<36}{wall_text}{client:>14.2f}{server:>14.2f}{rate}"
            f"{client / keys * 1e6:>15,.0f}{server / keys * 1e6:>15,.0f}"
        )

    first_wall = median(first, "wall")
    first_client = median(first, "client_cpu")
    first_server = median(first, "matcher_cpu")
    row("breachmatch first check", first_wall, first_client, first_server, keys_sent)
    print(
        f"{'  own process | worker processes':<36}{'':>8}"
        f"{median(first, 'client_main_cpu'):>7.2f} |{median(first, 'client_pool_cpu'):>5.2f}"
        f"{median(first, 'matcher_main_cpu'):>8.2f} |{median(first, 'matcher_pool_cpu'):>5.2f}"
    )
    row(
        "breachmatch cached re-check",
        median(cached, "wall"),
        median(cached, "client_cpu"),
        median(cached, "matcher_cpu"),
        keys_sent,
    )
    client_floor = floor.client_per_key * keys_sent
    oprf_floor = floor.client_oprf_per_key * keys_sent
    server_floor = floor.matcher_per_key * keys_sent
    row("libsodium floor, VOPRF (0x01)", None, client_floor, server_floor, keys_sent)
    row(
        "libsodium floor, OPRF (0x00)",
        None,
        oprf_floor,
        floor.mult * keys_sent,
        keys_sent,
    )
    ratios = [
        f"client CPU/key {first_client / client_floor:.2f}x the VOPRF floor "
        f"(h2g + 4 mults + 2 adds; target ≤ 1.2x), "
        f"{first_client / oprf_floor:.2f}x the OPRF floor (h2g + 2 mults)",
        f"matcher CPU/key {first_server / server_floor:.2f}x its floor (2 mults + 1 add)",
        f"first-check wall {first_wall:.2f} s against (client + matcher CPU) / {cores} cores "
        f"= {(first_client + first_server) / cores:.2f} s: "
        f"{first_wall / ((first_client + first_server) / cores):.2f}x",
        f"a client OPRF worker process costs {worker_start:.2f} CPU s to start and stop",
    ]
    if psi:
        client_s = psi["client_request_s"] + psi["client_intersect_s"]
        server_s = psi["setup_s"] + psi["server_process_s"]
        n_psi = psi["n_client"]
        row("OpenMined PSI (setup + query)", client_s + server_s, client_s, server_s, n_psi)
        query = client_s + psi["server_process_s"]
        row("OpenMined PSI (query, setup kept)", query, client_s, psi["server_process_s"], n_psi)
        ratios += [
            f"client+matcher CPU {(first_client + first_server) / (client_s + server_s):.2f}x "
            "OpenMined's (setup + query; target ≤ 0.85x)",
            f"first-check wall {first_wall / (client_s + server_s):.2f}x OpenMined's "
            "(setup + query; target ≤ 0.5x)",
        ]
    print()
    for line in ratios:
        print(f"  {line}")
    print(f"  {floor.describe()}")
    if psi:
        print(
            f"  OpenMined PSI: {psi['n_client']:,.0f} client vs {psi['n_server']:,.0f} server "
            f"items, intersection {psi['intersection']:,.0f}; one thread, CPU ≈ wall; setup "
            f"message {psi['setup_bytes'] / 1e6:.2f} MB per check"
        )
    print(f"\n  cached re-check by phase (one run, CPU s, keys per CPU s; {keys_sent:,} keys):")
    phases["rest: key info, filter verify and lookup, result"] = max(
        0.0, median(cached, "client_cpu") - sum(phases.values())
    )
    for name, seconds in phases.items():
        print(f"    {name:<50}{seconds:>8.2f}{keys_sent / max(seconds, 1e-9):>14,.0f}")
    print(
        "  load average (1, 5, 15 min): "
        f"before {' '.join(f'{x:.1f}' for x in load_before)}, "
        f"after {' '.join(f'{x:.1f}' for x in load_after)}"
    )
    print(
        f"  breachmatch: batch {args.batch_size}, {args.concurrency} Evaluate streams, "
        f"client and matcher on the same {cores}-core machine, mTLS over loopback"
    )


if __name__ == "__main__":
    main()
