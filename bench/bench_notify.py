"""Notifier throughput: notices per second into the local SMTP sink, exactly once.

    .venv/bin/python bench/bench_notify.py [--notices 5000] [--processes 2] [--workers 8]

On the local stack (`breachmatch_dev.stack`, its notifier intake-only) the
operator ingests a synthetic leak sized for about ``--notices`` strong matches;
the hospital runs ``breachmatch check`` and ``breachmatch notify`` (so every
notice carries its proof of match, as intake demands) and the notices wait on
the work queue. ``--processes``
``breachmatch-notifier worker`` processes with ``--workers`` concurrent
deliveries each are then started with the stack notifier's own environment,
and the SMTP sink's files are counted as they arrive.

notices/s is the sink's own count over the time from the first to the last
message it stored (worker start-up excluded; the wall time from starting the
workers is printed too). Lost and duplicated come from the sink as well:
distinct Message-IDs against the notices submitted, and copies of one.

Because the machine may be shared, the CPU time each party spent over the same
interval is printed per notice too (notifier workers, SMTP sink, nats-server),
with the rate that CPU cost allows on the cores this machine has, and — since
CPU time itself stretches on a crowded machine — the notifier's CPU per notice
in ristretto255 scalar multiplications (libsodium, through rbcl) timed in the
same process while the workers run.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import rbcl

from breachmatch_dev.demo import check_command, ingest_command, notify_command
from breachmatch_dev.dumps import Dataset, write_dataset
from breachmatch_dev.stack import Stack, StackInfo

BREACH_ID = "alles-laegehus-demo"
BATCH = 500
TIMEOUT = 600.0
_BIN = Path(sys.executable).parent


#: Share of leaked patients that match on a CPR (strong, so notified) in the synthetic leak.
_STRONG_SHARE = 0.4


def submit(info: StackInfo, data: Dataset, env: dict[str, str]) -> int:
    """Queue the strong matches' notices as a hospital does; how many were queued."""
    results = info.root / "bench-results.json"
    for command in (check_command(data, results), notify_command(results)):
        subprocess.run([str(_BIN / command[0]), *command[1:]], env=env, check=True,
                       capture_output=True)  # fmt: skip
    return sum(1 for match in data.expected if match.strength == "strong")


def worker_command(profile: Path | None, number: int) -> list[str]:
    """The worker's command line; under cProfile in CPU time (dumped at exit) with ``profile``."""
    if profile is None:
        return [str(_BIN / "breachmatch-notifier")]
    profile.mkdir(parents=True, exist_ok=True)
    output = profile.resolve() / f"worker-{number}.prof"
    code = (
        "import cProfile, runpy, sys, time\n"
        "profiler = cProfile.Profile(time.process_time)\n"
        "sys.argv = ['breachmatch-notifier', *sys.argv[1:]]\n"
        "profiler.enable()\n"
        "try:\n"
        "    runpy.run_module('breachmatch_notifier.cli', run_name='__main__')\n"
        "finally:\n"
        f"    profiler.disable(); profiler.dump_stats({str(output)!r})\n"
    )
    return [sys.executable, "-c", code]


def scalar_mult_ms(count: int = 2000) -> float:
    """CPU milliseconds of one libsodium ristretto255 scalar multiplication, measured now."""
    scalar = rbcl.crypto_core_ristretto255_scalar_random()
    point = rbcl.crypto_scalarmult_ristretto255_base(scalar)
    started = time.process_time()
    for _ in range(count):
        rbcl.crypto_scalarmult_ristretto255(scalar, point)
    return 1000 * (time.process_time() - started) / count


def cpu_seconds(parties: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds so far, per party (all its processes)."""
    return {
        name: sum(sum(process.cpu_times()[:2]) for process in processes)
        for name, processes in parties.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="notifier throughput into the SMTP sink")
    parser.add_argument(
        "--notices", type=int, default=5000, help="about this many (strong matches)"
    )
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=32, help="concurrent sends per process")
    parser.add_argument(
        "--profile", type=Path, help="run the workers under cProfile, writing DIR/worker-N.prof"
    )
    parser.add_argument("--root", type=Path, default=Path(".var/bench-notify"))
    args = parser.parse_args()
    shutil.rmtree(args.root, ignore_errors=True)
    stack = Stack(args.root, env={"notifier": {"BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS": "0"}})
    info = stack.up()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        leaked = int(args.notices / _STRONG_SHARE)
        data = write_dataset(args.root / "data", leaked, leaked, 0)
        env = {**os.environ, **info.env, "BREACHMATCH_LOG_FORMAT": "json"}
        subprocess.run([str(_BIN / ingest_command(data)[0]), *ingest_command(data)[1:]],
                       env=env, check=True, capture_output=True)  # fmt: skip
        mail = sorted(info.mail_dir.glob("*.eml")) if info.mail_dir.exists() else []
        assert not mail, "no alert e-mail expected: the bench tenant has no alert address"
        started = time.monotonic()
        notices = submit(info, data, env)
        print(f"queued {notices:,} notices in {time.monotonic() - started:.1f}s (check + notify)")

        notifier_env = stack.service("notifier").env
        worker_env = {
            **os.environ,
            **notifier_env,
            "BREACHMATCH_NATS_TLS_DIR": notifier_env["BREACHMATCH_TLS_DIR"],
            "BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS": str(args.workers),
            "BREACHMATCH_HEALTH_ADDR": "",
            "BREACHMATCH_METRICS_ADDR": "",
        }
        log = (args.root / "logs" / "bench-workers.log").open("ab")
        spawned = time.monotonic()
        workers = [
            subprocess.Popen([*worker_command(args.profile, number), "worker"], env=worker_env,
                             stdout=log, stderr=subprocess.STDOUT)
            for number in range(args.processes)
        ]  # fmt: skip
        parties = {
            "notifier": [psutil.Process(worker.pid) for worker in workers],
            "sink": [psutil.Process(stack.service("smtp-sink").process.pid)],  # type: ignore[union-attr]
            "nats": [psutil.Process(stack.nats.pid)],  # type: ignore[union-attr]
        }
        first = last = 0.0
        count = 0
        cpu_first: dict[str, float] = {}
        cpu_last: dict[str, float] = {}
        expected = notices + 1  # + the new-breach alert to the tenant's DPO
        references: list[float] = []
        while count < expected and time.monotonic() - spawned < TIMEOUT:
            time.sleep(0.05)
            if count and len(references) < 5:  # while the workers run, a few times
                references.append(scalar_mult_ms())
            now = time.monotonic()
            seen = sum(1 for _ in info.mail_dir.glob("*.eml")) if info.mail_dir.exists() else 0
            if seen and not first:
                first, cpu_first = now, cpu_seconds(parties)
            if seen > count:
                count, last, cpu_last = seen, now, cpu_seconds(parties)
        ids: Counter[str] = Counter()
        for path in info.mail_dir.glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if not str(message["To"]).startswith("dpo@"):
                ids[str(message["Message-ID"])] += 1
        lost = notices - len(ids)
        duplicated = sum(n - 1 for n in ids.values())
        print(f"workers  {args.processes} processes x {args.workers} concurrent sends")
        print(f"wall     {last - spawned:.1f}s from starting the workers to the last e-mail")
        print(f"sink     {count:,} messages, {len(ids):,} distinct notices")
        rate = (len(ids) - 1) / (last - first) if last > first else 0.0
        spent = {name: cpu_last[name] - cpu_first[name] for name in parties}
        per_notice = {name: 1000 * seconds / max(1, count - 1) for name, seconds in spent.items()}
        total = sum(per_notice.values())
        cores = psutil.cpu_count() or 1
        print(
            "cpu      ms per notice: "
            + ", ".join(f"{name} {ms:.2f}" for name, ms in per_notice.items())
            + f"; {total:.2f} in all = {cores * 1000 / total:,.0f} notices/s on {cores} idle cores"
        )
        reference = statistics.median(references or [scalar_mult_ms()])
        print(
            f"ratio    notifier CPU per notice = {per_notice['notifier'] / reference:.1f} "
            f"ristretto255 scalar mults ({reference * 1000:.0f} us each, measured meanwhile)"
        )
        print(f"notices/s {rate:,.0f} (lost {lost}, duplicated {duplicated})")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        stack.down()


if __name__ == "__main__":
    main()
