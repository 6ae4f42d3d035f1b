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
same process while the workers run. The load average is printed beside them.

Then the same SMTP and NATS exchanges a notice needs are replayed alone
against the same sink and nats-server (`smtp_floor`, `nats_floor`): their CPU per notice
is the floor no notifier goes below, and what it allows on this machine's
cores is the bound on notices/s.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib
import psutil
import rbcl
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

from breachmatch import bus
from breachmatch.tls import TlsFiles
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


# --- the transport floor -------------------------------------------------------
# Each notice is one SMTP transaction (MAIL, RCPT, DATA over a kept session) and,
# for exactly-once, one ledger read, three ledger compare-and-sets (claim, intent,
# sent), one status event and the work queue's fetch and acknowledgement. These
# replay just those exchanges from this process against the same sink and
# nats-server — SMTP as the e-mail channel speaks it, NATS as the notifier's user
# with its coalescing client and as many in flight — and count the CPU of this
# process (the client's share) and of the server.

#: Kept SMTP sessions and deliveries in flight: the notifier's defaults per process.
SESSIONS = 16
IN_FLIGHT = 32


@dataclass(frozen=True)
class Floor:
    """CPU milliseconds per notice: this process (the client side), and the server side."""

    client_ms: float
    server_ms: float


async def _measure(
    count: int, server: psutil.Process, work: Callable[[int], Awaitable[None]], in_flight: int
) -> Floor:
    slots = asyncio.Semaphore(in_flight)

    async def one(number: int) -> None:
        async with slots:
            await work(number)

    server_before = sum(server.cpu_times()[:2])
    started = time.process_time()
    await asyncio.gather(*(one(number) for number in range(count)))
    client = time.process_time() - started
    served = sum(server.cpu_times()[:2]) - server_before
    return Floor(1000 * client / count, 1000 * served / count)


async def smtp_floor(port: int, message: bytes, count: int, sink: psutil.Process) -> Floor:
    """``count`` copies of ``message`` into the sink over `SESSIONS` kept sessions."""
    idle: list[aiosmtplib.SMTP] = []
    for _ in range(SESSIONS):
        session = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await session.connect()
        await session.ehlo()
        idle.append(session)

    async def send(number: int) -> None:
        session = idle.pop()
        mail = await session.execute_command(b"MAIL", b"FROM:<floor@bench.example.dk>")
        rcpt = await session.execute_command(b"RCPT", b"TO:<floor%d@bench.example.dk>" % number)
        if (mail.code, rcpt.code) != (250, 250):
            raise RuntimeError(f"the sink refused the floor's envelope ({mail.code}, {rcpt.code})")
        await session.data(message)
        idle.append(session)

    try:
        return await _measure(count, sink, send, SESSIONS)
    finally:
        for session in idle:
            session.close()


async def nats_floor(info: StackInfo, count: int, nats: psutil.Process) -> Floor:
    """A notice's NATS exchanges, ``count`` times, as the notifier's user."""
    tls = TlsFiles.from_dir(info.pki.service_dir("notifier"))
    nc, js = await bus.connect(info.nats_url, "bench-floor", tls, coalesce_writes=True)
    try:
        ledger = await bus.key_value(js, bus.KV_OUTREACH_LEDGER)
        entry = b"x" * 420  # about a ledger entry's size
        for number in range(count):
            await ledger.put(f"floor.{number}", entry)
        # The requests are queued on the status stream under a subject of their own
        # (the work queue admits one consumer only; the notifier's user may create no
        # stream): a pull consumer with explicit acks, as the workers' is.
        queue_subject = f"{bus.OUTREACH_STATUS}.bench-floor-queue"
        status_subject = f"{bus.OUTREACH_STATUS}.bench-floor"
        for _ in range(count):
            await js.publish(queue_subject, b"q" * 600, stream=bus.STREAM_OUTREACH_STATUS)
        consumer = ConsumerConfig(durable_name="bench-floor", filter_subject=queue_subject)
        await js.add_consumer(bus.STREAM_OUTREACH_STATUS, consumer)
        pull = await js.pull_subscribe_bind(
            durable="bench-floor", stream=bus.STREAM_OUTREACH_STATUS
        )
        queued: list[Msg] = []
        fetching = asyncio.Lock()

        async def notice(number: int) -> None:
            async with fetching:
                if not queued:
                    queued.extend(await pull.fetch(IN_FLIGHT, timeout=10))
                msg = queued.pop()
            key = f"floor.{number}"
            found = await ledger.get(key)
            revision = found.revision or 0
            for _ in range(3):  # claim, intent, sent
                revision = await ledger.update(key, entry, last=revision)
            await js.publish(status_subject, b"s" * 160, stream=bus.STREAM_OUTREACH_STATUS)
            await msg.ack_sync()

        return await _measure(count, nats, notice, IN_FLIGHT)
    finally:
        await nc.close()


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
    parser.add_argument(
        "--floor", type=int, default=3000, help="notices the transport floor replays (0: none)"
    )
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
        load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
        print(f"load     {load} (1, 5, 15 min) at the end of the run")
        if args.floor:
            for worker in workers:  # the floor is measured on a quiet stack
                worker.terminate()
            sample = next(info.mail_dir.glob("*.eml")).read_bytes()
            port = int(notifier_env["BREACHMATCH_SMTP_PORT"])
            smtp = asyncio.run(smtp_floor(port, sample, args.floor, parties["sink"][0]))
            bus_floor = asyncio.run(nats_floor(info, args.floor, parties["nats"][0]))
            floor = smtp.client_ms + smtp.server_ms + bus_floor.client_ms + bus_floor.server_ms
            print(
                f"floor    ms per notice, its exchanges alone: SMTP client {smtp.client_ms:.2f} "
                f"+ sink {smtp.server_ms:.2f}, NATS client {bus_floor.client_ms:.2f} "
                f"+ nats-server {bus_floor.server_ms:.2f}; {floor:.2f} in all = "
                f"{cores * 1000 / floor:,.0f} notices/s on {cores} idle cores at the most"
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
