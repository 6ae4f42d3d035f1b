"""The hospital's side of notices: ``breachmatch notify`` into the notifier's intake.

    .venv/bin/python bench/bench_outreach.py [--scale medium] [--profile DIR]

On the local stack (`breachmatch_dev.stack`) with the demo's proportions
(``--scale``, `breachmatch_dev.demo`): the operator ingests the leak and the
hospital runs ``breachmatch check``, neither measured. Then, measured in CPU
seconds per process:

1. ``submit``: ``breachmatch notify`` (read the export, prove, seal, submit)
   against an intake-only notifier (``serve`` with no workers), so the
   notifier's CPU is intake's alone (SubmitOutreach: open, check proofs,
   ledger, reservations, quota, publish);
2. ``resubmit``: the same command again, as the demo does: nothing new is
   queued;
3. ``deliver``: one ``breachmatch-notifier worker`` process (the demo's
   notifier runs its 32 workers in the intake process) sends the queue to the
   SMTP sink; the run ends when the sink holds every notice (and the
   new-breach alert), exactly once.

Each phase prints wall seconds and CPU ms per notice per party (client, intake,
workers, sink, nats-server), and the notices/s its CPU allows on this machine's
cores. ``--profile DIR`` runs the client and the intake notifier under cProfile
in CPU time (``DIR/client-N.prof``, ``DIR/intake.prof``).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

from breachmatch_dev.demo import _SCALES, check_command, ingest_command, notify_command
from breachmatch_dev.dumps import write_dataset
from breachmatch_dev.floor import Floor
from breachmatch_dev.nats_server import free_port
from breachmatch_dev.stack import Stack

TIMEOUT = 900.0
_BIN = Path(sys.executable).parent


def profiled(module: str, program: str, output: Path | None) -> list[str]:
    """Run ``module`` as ``program``; under cProfile in CPU time with ``output`` (at exit)."""
    if output is None:
        return [str(_BIN / program)]
    code = (
        "import cProfile, runpy, sys, time\n"
        "profiler = cProfile.Profile(time.process_time)\n"
        f"sys.argv = [{program!r}, *sys.argv[1:]]\n"
        "profiler.enable()\n"
        "try:\n"
        f"    runpy.run_module({module!r}, run_name='__main__')\n"
        "finally:\n"
        f"    profiler.disable(); profiler.dump_stats({str(output.resolve())!r})\n"
    )
    return [sys.executable, "-c", code]


def cpu_seconds(parties: dict[str, list[psutil.Process]]) -> dict[str, float]:
    return {
        name: sum(sum(process.cpu_times()[:2]) for process in processes)
        for name, processes in parties.items()
    }


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def report(name: str, wall: float, spent: dict[str, float], notices: int) -> None:
    per_notice = {party: 1000 * seconds / max(1, notices) for party, seconds in spent.items()}
    total = sum(per_notice.values())
    cores = psutil.cpu_count() or 1
    print(
        f"{name:<9} {wall:6.1f}s wall, {notices / wall:6.0f}/s; CPU ms per notice: "
        + ", ".join(f"{party} {ms:.2f}" for party, ms in per_notice.items())
        + f"; {total:.2f} in all = {cores * 1000 / total:,.0f}/s on {cores} idle cores"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="breachmatch notify into the notifier's intake")
    parser.add_argument("--scale", choices=sorted(_SCALES), default="medium")
    parser.add_argument("--workers", type=int, default=32, help="concurrent sends (deliver)")
    parser.add_argument("--profile", type=Path, help="cProfile the client and intake into DIR")
    parser.add_argument("--root", type=Path, default=Path(".var/bench-outreach"))
    args = parser.parse_args()
    shutil.rmtree(args.root, ignore_errors=True)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    stack = Stack(args.root, env={"notifier": {"BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS": "0"}})
    info = stack.up()
    worker: subprocess.Popen[bytes] | None = None
    try:
        if args.profile is not None:
            notifier = stack.service("notifier")
            notifier.argv = [
                *profiled("breachmatch_notifier.cli", "breachmatch-notifier",
                          args.profile / "intake.prof"),
                "serve",
            ]  # fmt: skip
            stack.kill9("notifier")
            stack.restart("notifier")
        data = write_dataset(args.root / "data", *_SCALES[args.scale])
        env = {**os.environ, **info.env, "BREACHMATCH_LOG_FORMAT": "json"}
        results = args.root / "results.json"
        for command in (ingest_command(data), check_command(data, results)):
            subprocess.run([str(_BIN / command[0]), *command[1:]], env=env, check=True,
                           capture_output=True)  # fmt: skip
        notices = sum(1 for match in data.expected if match.strength == "strong")
        print(f"scale {args.scale}: {data.patients:,} patients, {notices:,} strong matches")
        intake = psutil.Process(stack.service("notifier").process.pid)  # type: ignore[union-attr]
        nats = psutil.Process(stack.nats.pid)  # type: ignore[union-attr]
        sink = psutil.Process(stack.service("smtp-sink").process.pid)  # type: ignore[union-attr]
        reference = Floor.measure().mult
        for number, name in enumerate(("submit", "resubmit")):
            output = args.profile / f"client-{number}.prof" if args.profile else None
            notify = [*profiled("breachmatch.cli", "breachmatch", output)]
            notify.extend(notify_command(results)[1:])
            before = cpu_seconds({"intake": [intake], "nats": [nats]})
            client_before, started = children_cpu(), time.monotonic()
            subprocess.run(notify, env=env, check=True, capture_output=True)
            wall = time.monotonic() - started
            after = cpu_seconds({"intake": [intake], "nats": [nats]})
            spent = {"client": children_cpu() - client_before}
            spent |= {party: after[party] - before[party] for party in before}
            report(name, wall, spent, notices)

        notifier_env = stack.service("notifier").env
        worker_env = {
            **os.environ,
            **notifier_env,
            "BREACHMATCH_NATS_TLS_DIR": notifier_env["BREACHMATCH_TLS_DIR"],
            "BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS": str(args.workers),
            # Ports of its own: the default ones may be another stack's on a shared machine.
            "BREACHMATCH_HEALTH_ADDR": f"127.0.0.1:{free_port()}",
            "BREACHMATCH_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        }
        log = (args.root / "logs" / "bench-worker.log").open("ab")
        parties = {"intake": [intake], "nats": [nats], "sink": [sink]}
        before, started = cpu_seconds(parties), time.monotonic()
        worker = subprocess.Popen([str(_BIN / "breachmatch-notifier"), "worker"], env=worker_env,
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        parties["workers"] = [psutil.Process(worker.pid)]
        before["workers"] = 0.0
        expected = notices + 1  # + the new-breach alert to the tenant's DPO
        count = 0
        while count < expected and time.monotonic() - started < TIMEOUT and worker.poll() is None:
            time.sleep(0.1)
            count = sum(1 for _ in info.mail_dir.glob("*.eml")) if info.mail_dir.exists() else 0
        after = cpu_seconds(parties)
        report("deliver", time.monotonic() - started,
               {party: after[party] - before[party] for party in parties}, notices)  # fmt: skip
        ids: Counter[str] = Counter()
        for path in info.mail_dir.glob("*.eml"):
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if not str(message["To"]).startswith("dpo@"):
                ids[str(message["Message-ID"])] += 1
        duplicated = sum(n - 1 for n in ids.values())
        print(
            f"exactly once: {len(ids):,} distinct notices of {notices:,} "
            f"(lost {notices - len(ids)}, duplicated {duplicated}); "
            f"scalar mult {reference * 1e6:.0f} us; load average {os.getloadavg()[0]:.1f}"
        )
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        stack.down()


if __name__ == "__main__":
    main()
