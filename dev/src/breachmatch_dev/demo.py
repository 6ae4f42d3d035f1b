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
2025 Alles Lægehus leak (130,000 patients, 57,000 leaked records).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from breachmatch_dev.dumps import Dataset, write_dataset
from breachmatch_dev.stack import Stack, StackInfo

BREACH_ID = "alles-laegehus-demo"
_SCALES = {
    "small": (2_000, 600, 400),
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


def _wait_for_mail(info: StackInfo, expected: int, timeout: float) -> int:
    """Delivery is asynchronous (JetStream work queue): wait for the sink to hold them."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = len(list(info.mail_dir.glob("*.eml"))) if info.mail_dir.exists() else 0
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
    phases = outcome.phases
    print("seconds    " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in phases.items())
          + f" (total {sum(phases.values()):.1f})")  # fmt: skip
    ok = found == truth
    print(f"truth      {'exactly the expected matches' if ok else 'MISMATCH with ground truth'}")
    if not ok:
        print(f"           {len(truth - found):,} expected matches missing, "
              f"{len(found - truth):,} unexpected")  # fmt: skip
    return ok


@dataclass
class Outcome:
    """What one run of the flow produced, for the summary and the end-to-end test."""

    info: StackInfo
    data: Dataset
    results: dict[str, Any]
    strong: int
    delivered: int
    #: Wall-clock seconds per phase: ingest, check, notify (submit until delivered).
    phases: dict[str, float]


def run_flow(root: Path, patients: int, leaked: int, strangers: int) -> Outcome:
    """Run the whole flow on a fresh stack under `root`; the stack is stopped on return."""
    stack = Stack(root)
    if stack.pids_file.exists():
        stack.down()  # a previous run that was interrupted
    # Each run tells the story from the start: a fresh JetStream store and a
    # fresh hospital state (the PKI and operator keys are reused).
    for stale in ("mail", "hospital-a", "digital-post-outbox", "nats", "logs"):
        shutil.rmtree(root / stale, ignore_errors=True)
    print("starting nats-server, matcher, notifier, ingest and an SMTP sink ...")
    info = stack.up()
    try:
        # The leak as such dumps come: journal notes with an unquoted ";",
        # trailing empty cells left out, a placeholder row and a broken one.
        data = write_dataset(
            root / "data", patients, leaked, strangers, fillers=True, ragged=True, short=True
        )
        print(f"ingesting the leak ({data.leaked_rows:,} rows) ...")
        phases: dict[str, float] = {}
        started = time.monotonic()
        run_tool(info, *ingest_command(data))
        phases["ingest"] = time.monotonic() - started
        results_path = root / "results.json"
        print(f"checking {data.patients:,} patients ...")
        started = time.monotonic()
        run_tool(info, *check_command(data, results_path))
        phases["check"] = time.monotonic() - started
        results = json.loads(results_path.read_text())
        print("submitting sealed notices ...")
        started = time.monotonic()
        notify = notify_command(results_path)
        out = run_tool(info, *notify).stdout
        print("  " + out.strip().splitlines()[-1] if out.strip() else "")
        # Submitting again must send nothing twice.
        run_tool(info, *notify)
        strong = sum(1 for m in results["matches"] if m["strength"] == "strong")
        expected_mail = strong + 1  # + the notifier's new-breach alert to the tenant
        delivered = _wait_for_mail(info, expected_mail, timeout=120 + strong / 20)
        phases["notify"] = time.monotonic() - started
    finally:
        stack.down()
        print("stack stopped")
    return Outcome(info, data, results, strong, delivered, phases)


def main() -> None:
    parser = argparse.ArgumentParser(description="run the whole breachmatch flow locally")
    parser.add_argument("--root", type=Path, default=Path(".var/demo"))
    parser.add_argument("--scale", choices=sorted(_SCALES), default="small")
    args = parser.parse_args()
    outcome = run_flow(args.root, *_SCALES[args.scale])
    ok = _summary(outcome)
    if not ok or outcome.delivered != outcome.strong + 1:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
