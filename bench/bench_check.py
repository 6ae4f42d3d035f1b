"""Hospital check benchmark: first check and cached re-check, beside OpenMined PSI.

One run, one table, medians over ``--repeat`` runs, on one synthetic hospital
and one synthetic leak published for real (the ingest CLI, a matcher
subprocess, NATS):

* **first check** — an empty state directory: read the export, download and
  verify the filter, blind → Evaluate → finalize every distinct match key,
  cache it, look it up;
* **cached re-check** — the same state directory again: no OPRF work at all;
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

from breachmatch import keys
from breachmatch.client import CheckResult, Client, PipelineOptions
from breachmatch.identifiers import match_keys
from breachmatch.readers import BadRow, open_records
from breachmatch_dev import DevPki, NatsServer, dumps, make_dev_pki, synthetic

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

    def cpu_seconds(self) -> float:
        total = sum(self.ps.cpu_times()[:2])
        for child in self.ps.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def client_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime


@dataclass
class Sample:
    wall: float
    client_cpu: float
    matcher_cpu: float
    evaluations: int
    matched: int


def measure(matcher: MatcherProcess, run: Callable[[], CheckResult]) -> Sample:
    cpu, served = client_cpu_seconds(), matcher.cpu_seconds()
    start = time.perf_counter()
    result = run()
    wall = time.perf_counter() - start
    return Sample(
        wall,
        client_cpu_seconds() - cpu,
        matcher.cpu_seconds() - served,
        result.evaluations,
        len(result.matches),
    )


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
        matcher = MatcherProcess([
            sys.executable, "-m", "breachmatch_matcher.cli", "serve", "--log-format", "json",
            "--nats-url", nats.url, "--tls-dir", str(pki.service_dir("matcher")),
            "--oprf-key-dir", str(operator.oprf_dir), "--verify-key", str(operator.verify_key),
            "--notifier-statement", str(operator.notifier_statement),
            "--grpc-addr", "127.0.0.1:0", "--health-addr", "", "--metrics-addr", "",
            "--workers", str(workers), "--cache-dir", str(root),
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

    root = Path(tempfile.mkdtemp(prefix="bench-check-"))
    try:
        in_leak = write_sets(root, args.patients, args.leaked, args.overlap, seed=1)
        psi = openmined(args.psi_python, root, args.repeat)
        options = PipelineOptions(
            batch_size=args.batch_size, streams=args.concurrency, workers=args.client_workers
        )
        first: list[Sample] = []
        cached: list[Sample] = []
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
        for sample in (*first, *cached):
            assert sample.matched == in_leak, "the check did not find exactly the leaked patients"
        assert all(s.evaluations == 0 for s in cached), "the re-check evaluated something"
    finally:
        shutil.rmtree(root, ignore_errors=True)

    cores = os.cpu_count() or 1
    keys_sent = int(median(first, "evaluations"))
    print(
        f"\nbreachmatch check benchmark — {args.patients:,} patients ({keys_sent:,} distinct "
        f"match keys), leak of {args.leaked:,} rows, {in_leak:,} patients in it; "
        f"medians of {args.repeat}\n"
    )
    header = f"{'':<34}{'wall s':>9}{'client CPU s':>14}{'server CPU s':>14}{'keys/s':>10}"
    print(header)
    print("-" * len(header))
    rows = [("breachmatch first check", first), ("breachmatch cached re-check", cached)]
    for name, samples in rows:
        wall = median(samples, "wall")
        rate = f"{keys_sent / wall:>10,.0f}"
        print(
            f"{name:<34}{wall:>9.2f}{median(samples, 'client_cpu'):>14.2f}"
            f"{median(samples, 'matcher_cpu'):>14.2f}{rate}"
        )
    if psi:
        client_s = psi["client_request_s"] + psi["client_intersect_s"]
        server_s = psi["setup_s"] + psi["server_process_s"]
        print(
            f"{'OpenMined PSI (setup + query)':<34}{client_s + server_s:>9.2f}{client_s:>14.2f}"
            f"{server_s:>14.2f}{psi['n_client'] / (client_s + server_s):>10,.0f}"
        )
        query = client_s + psi["server_process_s"]
        print(
            f"{'OpenMined PSI (query, setup kept)':<34}{query:>9.2f}{client_s:>14.2f}"
            f"{psi['server_process_s']:>14.2f}{psi['n_client'] / query:>10,.0f}"
        )
        print(
            f"\n  OpenMined PSI: {psi['n_client']:,.0f} client vs {psi['n_server']:,.0f} server "
            f"items, intersection {psi['intersection']:,.0f}; one thread, CPU ≈ wall; setup "
            f"message {psi['setup_bytes'] / 1e6:.2f} MB per check"
        )
    print(
        f"  breachmatch: batch {args.batch_size}, {args.concurrency} Evaluate streams, "
        f"client and matcher on the same {cores}-core machine, mTLS over loopback"
    )


if __name__ == "__main__":
    main()
