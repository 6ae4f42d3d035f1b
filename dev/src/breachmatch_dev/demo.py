"""`make demo`: the whole flow on one machine, with the real processes.

Starts the local stack (`breachmatch_dev.stack`), writes a synthetic Danish
hospital and a leak that overlaps it, and then does what the people in
docs/architecture.md do — with the same command-line tools they use:

1. the operator ingests the leak (``breachmatch-ingest``),
2. the hospital checks its patients (``breachmatch check``),
3. the hospital sends notices for its strong matches (``breachmatch notify``),
4. the notifier delivers them to the local SMTP sink,

prints a summary, checks the matches against the generator's ground truth,
and stops everything it started. ``--scale alles`` runs it at the size of the
2025 Alles Lægehus leak (130,000 patients, 57,000 leaked records), ``--scale
medium`` at its proportions and a sixth of its size (for profiling); both run
two notifier processes, as the Deployment runs replicas.

The summary times each phase in wall seconds and in CPU seconds (the tools
it ran plus every process of the stack), beside the libsodium floor for
the same OPRF work measured in the same run (`breachmatch_dev.floor`): on a
shared machine the seconds alone say little, the ratio says what the code
costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from breachmatch_dev.dumps import Dataset, write_dataset
from breachmatch_dev.floor import Floor
from breachmatch_dev.stack import NATS, Stack, StackInfo

BREACH_ID = "alles-laegehus-demo"
_SCALES = {
    "small": (2_000, 600, 400),
    # Alles Lægehus's proportions at a sixth of its size (~3,200 notices), for profiling.
    "medium": (21_000, 7_300, 2_000),
    "alles": (130_000, 45_000, 12_000),
}
_BIN = Path(sys.executable).parent


def ingest_command(data: Dataset) -> tuple[str, ...]:
    """The operator's ingest of the synthetic leak (the demo's, and the crash trials')."""
    return (
        "breachmatch-ingest", str(data.leak), "--breach-id", BREACH_ID,
        "--title", "Alles Lægehus patient records (demo)",
        "--organisation", "Alles Lægehus (synthetic)", "--breach-date", "2025-09-01",
        "--description-da", "Patientjournaler med CPR-numre, kontaktoplysninger, "
        "henvisninger og journalnotater blev offentliggjort på en lækageside.",
        "--description-en", "Patient records with CPR numbers, contact details, referrals "
        "and journal notes published on a leak site.",
        "--verified", "--sensitive",
    )  # fmt: skip


def check_command(data: Dataset, results_path: Path) -> tuple[str, ...]:
    """The hospital's check of its patients, with the matches written to ``results_path``."""
    return (
        "breachmatch", "check", "--patients", str(data.hospital_csv),
        "--breach", BREACH_ID, "--json", str(results_path),
    )  # fmt: skip


def notify_command(results_path: Path) -> tuple[str, ...]:
    """The hospital's notices for the strong matches in ``results_path``."""
    return (
        "breachmatch",
        "notify",
        "--from",
        str(results_path),
        "--channels",
        "email,digital_post",
    )


def run_tool(info: StackInfo, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of the project's CLIs against the stack, as its users do; fail loudly."""
    env = {**os.environ, **info.env, "BREACHMATCH_LOG_FORMAT": "json"}
    done = subprocess.run(
        [str(_BIN / tool), *args], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"demo: {tool} {args[0]} failed with exit code {done.returncode}")
    return done


def _mail_count(directory: Path) -> int:
    """Messages the sink has stored: a plain listing, since globbing 19,000 names into
    Paths five times a second took a tenth of a core from the processes being measured."""
    if not directory.exists():
        return 0
    with os.scandir(directory) as entries:
        return sum(entry.name.endswith(".eml") for entry in entries)


def _wait_for_mail(info: StackInfo, expected: int, timeout: float) -> int:
    """Delivery is asynchronous (JetStream work queue): wait for the sink to hold them."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = _mail_count(info.mail_dir)
        if count >= expected:
            return count
        time.sleep(0.2)
    return count


Match = tuple[str, str, tuple[str, ...], tuple[str, ...]]


def found_matches(results: dict[str, Any]) -> set[Match]:
    """(patient, strength, keys, categories) per match in a `check --json` report."""
    return {
        (
            m["patient_id"],
            m["strength"],
            tuple(sorted(m["matched_keys"])),
            tuple(sorted(m["categories"])),
        )
        for m in results["matches"]
    }


def expected_matches(data: Dataset) -> set[Match]:
    """The same, from the generator's ground truth."""
    return {
        (m.patient_id, m.strength, tuple(sorted(m.matched_keys)), tuple(sorted(m.categories)))
        for m in data.expected
    }


def _summary(outcome: Outcome) -> bool:
    results, data, info = outcome.results, outcome.data, outcome.info
    matches = results["matches"]
    found, truth = found_matches(results), expected_matches(data)
    strengths = Counter(m["strength"] for m in matches)
    categories = Counter(c for m in matches for c in m["categories"])
    print("\n== breachmatch demo ==")
    print(f"breach     {BREACH_ID}: {data.leaked_rows:,} leaked rows, ingested as tokens only")
    print(f"hospital   {data.patients:,} patients checked by private set intersection")
    print(f"matches    {len(matches):,} patients  (strong {strengths['strong']:,}, "
          f"medium {strengths['medium']:,})")  # fmt: skip
    print("categories " + ", ".join(f"{name} {n:,}" for name, n in categories.most_common()))
    print(f"notices    {outcome.delivered:,} e-mails delivered: one per strong match plus the")
    print(f"           new-breach alert to the hospital's DPO; read them in {info.mail_dir}")
    _print_phases(outcome)
    ok = found == truth
    print(f"truth      {'exactly the expected matches' if ok else 'MISMATCH with ground truth'}")
    if not ok:
        print(f"           {len(truth - found):,} expected matches missing, "
              f"{len(found - truth):,} unexpected")  # fmt: skip
    return ok


def _print_phases(outcome: Outcome) -> None:
    """Wall and CPU seconds per phase, beside the libsodium floor for the phase's OPRF work."""
    floor, cores = outcome.floor, os.cpu_count() or 1
    floors = {
        "ingest": (
            outcome.leaked_tokens * floor.ingest_per_token,
            f"{outcome.leaked_tokens:,} leaked tokens × (h2g + 1 mult)",
        ),
        "check": (
            outcome.evaluations * (floor.client_per_key + floor.matcher_per_key),
            f"{outcome.evaluations:,} patient keys × (client h2g + 4 mults + 2 adds"
            " + matcher 2 mults + 1 add)",
        ),
    }
    print(f"phases     {'wall s':>8}{'CPU s':>9}{'floor CPU s':>13}{'CPU/floor':>11}")
    for name, phase in outcome.phases.items():
        work, what = floors.get(name, (0.0, "no OPRF work: the SMTP sink's own speed bounds it"))
        ratio = f"{phase.cpu / work:>10.2f}x" if work else f"{'—':>11}"
        work_text = f"{work:>13.1f}" if work else f"{'—':>13}"
        print(f"  {name:<9}{phase.wall:>8.1f}{phase.cpu:>9.1f}{work_text}{ratio}  {what}")
    wall = sum(p.wall for p in outcome.phases.values())
    cpu = sum(p.cpu for p in outcome.phases.values())
    work = sum(w for w, _ in floors.values())
    print(
        f"  {'total':<9}{wall:>8.1f}{cpu:>9.1f}{work:>13.1f}{'—':>11}  "
        f"the floor's OPRF work alone needs ≥ {work / cores:.1f} s wall on {cores} cores; "
        f"load average {outcome.load:.1f}"
    )
    print(f"           {floor.describe()}")
    notify = outcome.phases.get("notify")
    if notify is not None and outcome.strong:
        # Which process the notices cost: the hospital's CLI, the notifier, the sink, NATS.
        spent = sorted(notify.by_party.items(), key=lambda party: -party[1])
        shares = ", ".join(
            f"{'breachmatch notify ×2' if name == 'tools' else name} "
            f"{1000 * seconds / outcome.strong:.2f}"
            for name, seconds in spent
            if seconds >= 0.01
        )
        print(f"           notify CPU ms per notice: {shares}")


@dataclass(frozen=True)
class Phase:
    #: Wall-clock seconds.
    wall: float
    #: CPU seconds of the tools the phase ran and of every process of the stack.
    cpu: float
    #: The same per party: "tools" (the CLIs this demo ran) and each stack component.
    by_party: dict[str, float] = field(default_factory=dict)


class _CpuMeter:
    """CPU seconds so far of this process's reaped children (the CLI tools and their
    pools) and of the stack's live processes (services, their worker pools, NATS),
    per party: ``tools`` and each component by name."""

    def __init__(self, stack: Stack) -> None:
        self._stack = stack

    def seconds(self) -> dict[str, float]:
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        parties = {"tools": reaped.ru_utime + reaped.ru_stime}
        pids = {p.name: p.process.pid for p in self._stack.services if p.process is not None}
        if self._stack.nats is not None:
            pids[NATS] = self._stack.nats.pid
        for name, pid in pids.items():
            parties[name] = 0.0
            try:
                process = psutil.Process(pid)
                tree = [process, *process.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for member in tree:
                try:
                    times = member.cpu_times()
                except psutil.NoSuchProcess:
                    continue
                parties[name] += times.user + times.system
        return parties


class _Phases:
    def __init__(self, meter: _CpuMeter) -> None:
        self._meter = meter
        self.done: dict[str, Phase] = {}
        self._name = ""
        self._wall = 0.0
        self._cpu: dict[str, float] = {}

    def start(self, name: str) -> None:
        self._name, self._wall, self._cpu = name, time.monotonic(), self._meter.seconds()

    def stop(self) -> None:
        now = self._meter.seconds()
        spent = {party: seconds - self._cpu.get(party, 0.0) for party, seconds in now.items()}
        self.done[self._name] = Phase(time.monotonic() - self._wall, sum(spent.values()), spent)


@dataclass
class Outcome:
    """What one run of the flow produced, for the summary and the end-to-end test."""

    info: StackInfo
    data: Dataset
    results: dict[str, Any]
    strong: int
    delivered: int
    #: Per phase: ingest, check, notify (submit until delivered).
    phases: dict[str, Phase]
    #: libsodium's speed, measured at the start and at the end of the run.
    floor: Floor
    #: Tokens the ingest evaluated (filter entries), and keys the check sent to the matcher.
    leaked_tokens: int
    evaluations: int
    #: One-minute load average at the end of the run.
    load: float


def run_flow(root: Path, patients: int, leaked: int, strangers: int, notifiers: int = 1) -> Outcome:
    """Run the whole flow on a fresh stack under `root`; the stack is stopped on return.

    ``notifiers`` notifier processes share the queue, as the Deployment's
    replicas do: one Python process takes intake and delivery on one core, and
    at the larger scales the notices outnumber what one core sends in time.
    """
    stack = Stack(root)
    if stack.pids_file.exists():
        stack.down()  # a previous run that was interrupted
    # Each run tells the story from the start: a fresh JetStream store and a
    # fresh hospital state (the PKI and operator keys are reused).
    for stale in ("mail", "hospital-a", "digital-post-outbox", "nats", "logs"):
        shutil.rmtree(root / stale, ignore_errors=True)
    floor = Floor.measure()
    print("starting nats-server, matcher, notifier, ingest and an SMTP sink ...")
    info = stack.up()
    for _ in range(notifiers - 1):
        stack.start_replica("notifier")
    phases = _Phases(_CpuMeter(stack))
    try:
        # The leak as such dumps come: journal notes with an unquoted ";",
        # trailing empty cells left out, a placeholder row and a broken one.
        data = write_dataset(
            root / "data", patients, leaked, strangers, fillers=True, ragged=True, short=True
        )
        print(f"ingesting the leak ({data.leaked_rows:,} rows) ...")
        ingest_report = root / "ingest-report.json"
        phases.start("ingest")
        run_tool(info, *ingest_command(data), "--json-report", str(ingest_report))
        phases.stop()
        results_path = root / "results.json"
        print(f"checking {data.patients:,} patients ...")
        phases.start("check")
        run_tool(info, *check_command(data, results_path))
        phases.stop()
        results = json.loads(results_path.read_text())
        print("submitting sealed notices ...")
        phases.start("notify")
        notify = notify_command(results_path)
        out = run_tool(info, *notify).stdout
        print("  " + out.strip().splitlines()[-1] if out.strip() else "")
        # Submitting again must send nothing twice.
        run_tool(info, *notify)
        strong = sum(1 for m in results["matches"] if m["strength"] == "strong")
        expected_mail = strong + 1  # + the notifier's new-breach alert to the tenant
        delivered = _wait_for_mail(info, expected_mail, timeout=120 + strong / 20)
        phases.stop()
        load = os.getloadavg()[0]
        floor = floor.averaged_with(Floor.measure())
    finally:
        stack.down()
        print("stack stopped")
    return Outcome(
        info,
        data,
        results,
        strong,
        delivered,
        phases.done,
        floor,
        leaked_tokens=int(json.loads(ingest_report.read_text())["entries"]),
        evaluations=int(results["summary"]["evaluations"]),
        load=load,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="run the whole breachmatch flow locally")
    parser.add_argument("--root", type=Path, default=Path(".var/demo"))
    parser.add_argument("--scale", choices=sorted(_SCALES), default="small")
    parser.add_argument(
        "--notifiers",
        type=int,
        help="notifier processes (default: 1 at --scale small, else 2): one Python process "
        "delivers on one core, a second lets delivery use both",
    )
    args = parser.parse_args()
    notifiers = args.notifiers or (1 if args.scale == "small" else min(2, os.cpu_count() or 1))
    outcome = run_flow(args.root, *_SCALES[args.scale], notifiers=notifiers)
    ok = _summary(outcome)
    if not ok or outcome.delivered != outcome.strong + 1:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
