"""Ingest throughput and memory, beside the bound the OPRF itself sets, in one run.

    .venv/bin/python bench/bench_ingest.py [--rows 100000] [--workers 1 2] [--keep]
                                           [--writer-only]

What it does, all on this machine:

1. measures the raw bound on one core: libsodium's hash-to-group plus scalar
   multiplication (`rbcl`, on pre-hashed input), and the full RFC 9497
   ``oprf.evaluate_batch`` (which adds expand_message_xmd and the Finalize hash);
2. feeds the filter writer alone, in a fresh process, as many random pairs
   as ``--rows`` rows have match keys (4 per row, none repeated: its worst
   case) and reports that process's peak RSS and the body's bytes per entry —
   the writer's share of the ingest Job's memory limit, measurable at 10M
   rows in minutes (``--writer-only`` stops here);
3. writes a synthetic cp1252 CSV dump of ``--rows`` people (4 match keys each);
4. measures the coordinator's reading alone (reading and column mapping), then
   with match keys and chunk cutting, no OPRF (the ceiling of one coordinator
   however many workers there are; the difference is normalisation's share);
5. runs the real CLI (``breachmatch-ingest``) against a private nats-server,
   once per ``--workers`` value, sampling the resident memory of the process
   and of its whole tree (pool processes included) with psutil.

It prints one table. Rows/s is dump rows per wall-clock second of the whole
CLI run (start-up, hashing the dump, publication included); tokens/s is OPRF
evaluations per second of the same run; CPU s is the run's CPU time summed
over all its processes (CPU s / seconds = cores kept busy). Nothing leaves the temp directory,
which is removed at the end unless ``--keep``.

Below the table, per CLI run, the CPU split between the coordinator process
(reading, match keys, sealing, NATS, the filter writer, start-up) and the
worker processes (OPRF), in µs per token, with the load average around the
run: on a shared machine the wall-clock speed-up from one worker to two says
as much about the neighbours as about ingest, the CPU split does not. Ingest
scales out as long as the coordinator's CPU per token stays well under a
worker's: one coordinator can feed about (worker µs / coordinator µs) workers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import psutil
import rbcl

from breachmatch import oprf
from breachmatch.filter import FilterWriter, TokenKeys
from breachmatch.keys import KeyRing, OperatorKeyFiles, make_operator_keys
from breachmatch_dev import NatsServer, dumps, make_dev_pki, synthetic
from breachmatch_ingest.pipeline import chunks_of, read_dump
from breachmatch_ingest.report import Report

_RAW_SAMPLES = 20_000
_SAMPLE_INTERVAL = 0.1
_MIB = 1 << 20
_KEYS_PER_ROW = 4
_WRITER_BATCH = 1 << 16


@dataclass(frozen=True)
class Run:
    label: str
    seconds: float
    rows: int
    tokens: int
    cpu_seconds: float = 0.0
    peak_rss: int = 0
    peak_tree_rss: int = 0
    #: CPU seconds of the worker (pool) processes; the rest of `cpu_seconds` is the coordinator's.
    worker_cpu_seconds: float = 0.0
    #: One-minute load average before and after the run.
    load: tuple[float, float] = (0.0, 0.0)

    def line(self) -> str:
        cpu = f"{self.cpu_seconds:>8.1f}" if self.cpu_seconds else f"{'-':>8}"
        extra = f"{cpu} {'-':>9} {'-':>9}"
        if self.peak_rss:
            extra = (
                f"{self.cpu_seconds:>8.1f} {self.peak_rss / _MIB:>9.0f}"
                f" {self.peak_tree_rss / _MIB:>9.0f}"
            )
        return (
            f"{self.label:<34}{self.seconds:>9.1f}{self.rows / self.seconds:>11,.0f}"
            f"{self.tokens / self.seconds:>11,.0f} {extra}"
        )


def _raw_bound(secret: bytes) -> tuple[Run, Run]:
    """Both bounds in CPU seconds of this process, so other load on the box does not count."""
    uniform = [os.urandom(64) for _ in range(_RAW_SAMPLES)]
    started = time.process_time()
    for data in uniform:
        rbcl.crypto_scalarmult_ristretto255(secret, rbcl.crypto_core_ristretto255_from_hash(data))
    libsodium = time.process_time() - started
    inputs = [b"breachmatch:v1:cpr:%010d" % i for i in range(_RAW_SAMPLES)]
    started = time.process_time()
    oprf.evaluate_batch(secret, inputs)
    full = time.process_time() - started
    per_row = _RAW_SAMPLES / _KEYS_PER_ROW
    return (
        Run("bound: rbcl h2g+scalarmult, 1 core", libsodium, int(per_row), _RAW_SAMPLES,
            libsodium),
        Run("bound: oprf.evaluate, 1 core", full, int(per_row), _RAW_SAMPLES, full),
    )  # fmt: skip


def _coordinator_only(dump: Path) -> tuple[Run, Run]:
    """Reading alone, then reading with match keys and chunk cutting (what the coordinator does).

    The difference is normalisation's share: `match_keys` plus cutting.
    """
    rows = 0
    started, cpu = time.perf_counter(), time.process_time()
    for _item in read_dump(dump):
        rows += 1
    reading = Run("reading alone", time.perf_counter() - started, rows, 0,
                  time.process_time() - cpu)  # fmt: skip
    report = Report()
    started, cpu = time.perf_counter(), time.process_time()
    for _chunk in chunks_of(read_dump(dump), report):
        pass
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    keys = Run("coordinator only (read+keys)", seconds, report.rows_read, report.pairs, cpu)
    return replace(reading, tokens=keys.tokens), keys


def _writer_alone(rows: int) -> Run:
    """`_feed_writer` in a fresh interpreter, so its peak RSS is the writer's own."""
    pairs = rows * _KEYS_PER_ROW
    argv = [sys.executable, __file__, "--feed-writer", str(pairs)]
    seconds, cpu, peak, per_entry = json.loads(
        subprocess.run(argv, capture_output=True, check=True).stdout
    )
    print(f"filter body: {per_entry:.3f} bytes per entry ({pairs:,} entries)")
    return Run(f"filter writer alone, {pairs:,} pairs", seconds, rows, pairs, cpu, peak, peak)


def _feed_writer(pairs: int) -> None:
    """Random distinct pairs through `FilterWriter` into a temp file; print time and peak RSS."""
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    writer = FilterWriter()
    for start in range(0, pairs, _WRITER_BATCH):
        count = min(_WRITER_BATCH, pairs - start)
        words = rng.integers(0, 1 << 64, size=(count, 2), dtype=np.uint64, endpoint=False)
        pads = rng.integers(0, 256, size=count, dtype=np.uint8)
        writer.add_keys(TokenKeys(words, pads), rng.integers(0, 128, size=count))
    with tempfile.TemporaryFile() as body:
        summary = writer.finish(body)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds = time.perf_counter() - started
    per_entry = summary.body_size / summary.entry_count
    print(json.dumps([seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, per_entry]))


def _cli_run(dump: Path, workers: int, env: dict[str, str], report_file: Path) -> Run:
    argv = [
        sys.executable, "-m", "breachmatch_ingest.cli", str(dump),
        "--breach-id", f"bench-{workers}w-{os.urandom(4).hex()}", "--title", "Benchmark",
        "--organisation", "Benchmark",
        "--workers", str(workers), "--json-report", str(report_file),
    ]  # fmt: skip
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    cpu_before = _children_cpu()
    process = psutil.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = peak_tree = 0
    #: Last CPU seconds seen per pool process: they are idle once their last chunk is
    #: in, so the last sample is their total to within one sampling interval.
    worker_cpu: dict[int, float] = {}
    while process.poll() is None:
        try:
            own = process.memory_info().rss
            children = process.children(recursive=True)
            tree = own
            for child in children:
                tree += child.memory_info().rss
                times = child.cpu_times()
                worker_cpu[child.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            continue  # a child ended between listing and reading; the next sample catches up
        peak, peak_tree = max(peak, own), max(peak_tree, tree)
        time.sleep(_SAMPLE_INTERVAL)  # sampling, not synchronisation
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if process.returncode != 0:
        raise SystemExit(f"ingest failed:\n{stderr.decode()[-2000:]}")
    report = json.loads(report_file.read_text())
    tokens = sum(report["keys"].values())
    label = f"ingest CLI, {workers} worker(s)"
    load = (load_before, os.getloadavg()[0])
    workers_cpu = sum(worker_cpu.values())
    return Run(label, seconds, report["rows_read"], tokens, cpu, peak, peak_tree, workers_cpu, load)


def _print_ratios(raw: Run, reading: Run, coordinator: Run, cli: dict[int, Run]) -> None:
    """Ingest against the raw loop, per core, in CPU time; the CPU split; the scaling.

    Per core: tokens per CPU second of the whole CLI (coordinator, pool, NATS
    client) over the raw loop's. Scaling: wall-clock tokens/s from one worker
    to two, which on a loaded machine is bounded by the cores the neighbours
    leave, so the CPU split is printed beside it.
    """
    raw_us = raw.cpu_seconds / raw.tokens * 1e6  # both samples of the bound
    reading_us = reading.cpu_seconds / reading.tokens * 1e6
    keys_us = coordinator.cpu_seconds / coordinator.tokens * 1e6 - reading_us
    print(
        f"raw rbcl loop (both samples): {raw_us:.1f} us/token; in the coordinator, reading "
        f"{reading_us:.1f} and match keys + chunk cutting {keys_us:.1f} us/token"
    )
    for workers, run in cli.items():
        ratio = raw_us / (run.cpu_seconds / run.tokens * 1e6)
        coordinator_us = (run.cpu_seconds - run.worker_cpu_seconds) / run.tokens * 1e6
        worker_us = run.worker_cpu_seconds / run.tokens * 1e6
        print(
            f"ingest per core, {workers} worker(s): {ratio:.2f}x the raw rbcl loop (CPU time); "
            f"coordinator {coordinator_us:.1f} us/token, workers {worker_us:.1f} us/token "
            f"({raw_us / worker_us:.2f}x raw), one coordinator feeds ~"
            f"{worker_us / coordinator_us:.0f} workers; "
            f"{run.cpu_seconds / run.seconds:.2f} cores busy; "
            f"load {run.load[0]:.1f} -> {run.load[1]:.1f}"
        )
    if 1 in cli and 2 in cli:
        speedup = (cli[2].tokens / cli[2].seconds) / (cli[1].tokens / cli[1].seconds)
        cpu_cost = (cli[2].cpu_seconds / cli[2].tokens) / (cli[1].cpu_seconds / cli[1].tokens)
        print(
            f"ingest 1 -> 2 workers: {speedup:.2f}x tokens/s (wall clock), "
            f"CPU per token {cpu_cost:.2f}x"
        )


def _children_cpu() -> float:
    """CPU seconds of every waited-for descendant (the CLI and, through it, its pool)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cli_runs(root: Path, dump: Path, keys: OperatorKeyFiles, workers: list[int]) -> dict[int, Run]:
    """One CLI run per worker count, against a private nats-server."""
    pki = make_dev_pki(root / "pki")
    with NatsServer(root / "nats", pki) as nats:
        env = os.environ | {
            "BREACHMATCH_NATS_URL": nats.url,
            "BREACHMATCH_NATS_TLS_DIR": str(pki.service_dir("ingest")),
            "BREACHMATCH_OPRF_KEY_DIR": str(keys.oprf_dir),
            "BREACHMATCH_SIGNING_KEY": str(keys.signing_key),
            "BREACHMATCH_LOG_FORMAT": "json",
        }
        return {n: _cli_run(dump, n, env, root / f"report-{n}.json") for n in workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the dump")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="runs to make")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    parser.add_argument("--writer-only", action="store_true", help="skip the CLI runs")
    parser.add_argument("--feed-writer", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feed_writer is not None:
        _feed_writer(args.feed_writer)
        return

    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    keys = make_operator_keys(root / "keys")
    secret = KeyRing.load(keys.oprf_dir).current.secret
    assert secret is not None
    print(f"{args.rows:,} rows; {os.cpu_count()} cores; Python {sys.version.split()[0]}; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")  # fmt: skip
    runs = [*_raw_bound(secret), _writer_alone(args.rows)]
    cli_runs: dict[int, Run] = {}
    if not args.writer_only:
        dump = root / "dump.csv"
        with dump.open("wb") as sink:
            dumps.write_csv(synthetic.crowd(args.rows, seed=7), sink)
        print(f"dump: {dump.stat().st_size / _MIB:.1f} MiB")
        runs.extend(_coordinator_only(dump))
        cli_runs = _cli_runs(root, dump, keys, args.workers)
    runs.extend(cli_runs.values())
    if cli_runs:
        # Again after the CLI runs: on a shared machine one sample of the bound
        # can be 20% off the load the runs themselves met.
        runs.append(replace(_raw_bound(secret)[0], label="bound: rbcl, again after the runs"))
    print(
        f"{'':<34}{'seconds':>9}{'rows/s':>11}{'tokens/s':>11}"
        f" {'CPU s':>8} {'RSS MiB':>9} {'tree MiB':>9}"
    )
    for run in runs:
        print(run.line())
    if cli_runs:
        raw, again = runs[0], runs[-1]
        both = replace(raw, tokens=raw.tokens * 2, cpu_seconds=raw.cpu_seconds + again.cpu_seconds)
        _print_ratios(both, runs[3], runs[4], cli_runs)
    if args.keep:
        print(f"kept {root}")
    else:
        subprocess.run(["rm", "-rf", str(root)], check=True)


if __name__ == "__main__":
    main()
