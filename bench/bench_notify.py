"""Notifier throughput: notices per second into the local SMTP sink, exactly once.

    .venv/bin/python bench/bench_notify.py [--notices 5000] [--processes 2] [--workers 8]

On the local stack (`breachmatch.dev.stack`, its notifier intake-only) the
operator ingests a small synthetic leak so a breach is published; then
``--notices`` notices for distinct made-up patients are submitted over the
hospital's mTLS Outreach API and wait on the work queue. ``--processes``
``breachmatch-notifier worker`` processes with ``--workers`` concurrent
deliveries each are then started with the stack notifier's own environment,
and the SMTP sink's files are counted as they arrive.

notices/s is the sink's own count over the time from the first to the last
message it stored (worker start-up excluded; the wall time from starting the
workers is printed too). Lost and duplicated come from the sink as well:
distinct Message-IDs against the notices submitted, and copies of one.

Because the machine may be shared, the CPU time each party spent over the same
interval is printed per notice too (notifier workers, SMTP sink, nats-server),
with the rate that CPU cost allows on the cores this machine has.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import nacl.public
import psutil

from breachmatch import keys, tls
from breachmatch.dev.demo import ingest_command
from breachmatch.dev.dumps import write_dataset
from breachmatch.dev.stack import Stack, StackInfo
from breachmatch.v1 import outreach_pb2_grpc
from breachmatch.v1.outreach_pb2 import ContactDetails, OutreachItem, SubmitOutreachRequest

BREACH_ID = "alles-laegehus-demo"
BATCH = 500
TIMEOUT = 600.0
_BIN = Path(sys.executable).parent


def submit(info: StackInfo, public_key: nacl.public.PublicKey, notices: int) -> None:
    """Queue ``notices`` notices through the hospital's Outreach API."""
    box = nacl.public.SealedBox(public_key)
    credentials = tls.channel_credentials(tls.TlsFiles.from_dir(info.tenant_dir))
    with grpc.secure_channel(info.notifier_addr, credentials) as channel:
        stub = outreach_pb2_grpc.OutreachStub(channel)
        for start in range(0, notices, BATCH):
            items = [
                OutreachItem(
                    patient_ref=f"P{number:07d}",
                    breach_id=BREACH_ID,
                    idempotency_key=f"bench-{number:07d}",
                    sealed_contact=box.encrypt(
                        ContactDetails(
                            name=f"Bench Patient {number}",
                            email=f"patient{number}@example.dk",
                            language="da",
                            channels=["email"],
                        ).SerializeToString()
                    ),
                )
                for number in range(start, min(start + BATCH, notices))
            ]
            reply = stub.SubmitOutreach(SubmitOutreachRequest(items=items), timeout=120)
            assert all(receipt.accepted for receipt in reply.receipts)


def cpu_seconds(parties: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """User + system CPU seconds so far, per party (all its processes)."""
    return {
        name: sum(sum(process.cpu_times()[:2]) for process in processes)
        for name, processes in parties.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="notifier throughput into the SMTP sink")
    parser.add_argument("--notices", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8, help="concurrent sends per process")
    parser.add_argument("--root", type=Path, default=Path(".var/bench-notify"))
    args = parser.parse_args()
    shutil.rmtree(args.root, ignore_errors=True)
    stack = Stack(args.root, env={"notifier": {"BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS": "0"}})
    info = stack.up()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        data = write_dataset(args.root / "data", 50, 20, 10)
        env = {**os.environ, **info.env, "BREACHMATCH_LOG_FORMAT": "json"}
        subprocess.run([str(_BIN / ingest_command(data)[0]), *ingest_command(data)[1:]],
                       env=env, check=True, capture_output=True)  # fmt: skip
        mail = sorted(info.mail_dir.glob("*.eml")) if info.mail_dir.exists() else []
        assert not mail, "no alert e-mail expected: the bench tenant has no alert address"
        # The stack's operator keys (made by `up`, reused here).
        key_files = keys.make_operator_keys(args.root / "keys")
        public_key = keys.load_sealing_public_key(key_files.notifier_public_key)
        started = time.monotonic()
        submit(info, public_key, args.notices)
        print(f"queued {args.notices:,} notices in {time.monotonic() - started:.1f}s")

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
            subprocess.Popen([str(_BIN / "breachmatch-notifier"), "worker"], env=worker_env,
                             stdout=log, stderr=subprocess.STDOUT)
            for _ in range(args.processes)
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
        expected = args.notices + 1  # + the new-breach alert to the tenant's DPO
        while count < expected and time.monotonic() - spawned < TIMEOUT:
            time.sleep(0.05)
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
        lost = args.notices - len(ids)
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
        print(f"notices/s {rate:,.0f} (lost {lost}, duplicated {duplicated})")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
        stack.down()


if __name__ == "__main__":
    main()
