"""Crash trials: ingest → check → notify with a ``kill -9`` at a random moment.

    .venv/bin/python bench/chaos.py [--trials 20] [--seed N] [--patients 2000]

Each trial starts a fresh local stack (`breachmatch_dev.stack`: nats-server
with an empty store, matcher, notifier, ingest, SMTP sink; the dev PKI and
operator keys are made once and kept, as in `make demo`), writes a synthetic
hospital and leak (`breachmatch_dev.dumps`, a different seed per trial)
and runs the demo's own command lines: the operator's ``breachmatch-ingest``, the hospital's
``breachmatch check`` and ``breachmatch notify``. While that runs, one
component — the notifier, the nats-server, the matcher or the ingest service —
is killed with SIGKILL at a random moment of a phase it takes part in
(ingest, check, notify, or delivery, where the moment is a random share of
the expected e-mails having reached the sink), and started again with the
stack's own command line and environment (`Stack.restart`). A command that
failed because of the crash is run again, as an operator would.

Then the trial waits for delivery to settle: every ledger entry in a final
state and nothing left on the notifier's consumers (so no redelivery can
still come). It counts what the SMTP sink and the Digital Post outbox hold
per notice (the ``X-Breachmatch-Idempotency-Key`` of each e-mail, the file
name of each letter) and per recipient, against the generator's ground truth:

* **lost**: a strong match with no notice delivered and none held for review;
* **duplicated**: every delivery beyond the first of the same notice;
* **held**: notices whose outcome the notifier could not know (it stopped
  between recording its intent to send and the SMTP server's answer) and
  therefore did not send again. The trial reconciles them as the operator
  would — by their Message-ID in the relay's log, here the sink's own files —
  and prints how many had gone out. They are neither lost (they are listed for
  review, see the notifier's README) nor duplicated.

One table row per trial; the last line is ``trials N, lost L, duplicated D``
followed by the held count. This is not part of ``make test``: 20 trials take
a few minutes (``make chaos``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
from nats.js import JetStreamContext

from breachmatch import bus, logs
from breachmatch.identifiers import IdentifierError, normalise_email
from breachmatch_dev.demo import (
    BREACH_ID,
    check_command,
    expected_matches,
    found_matches,
    ingest_command,
    notify_command,
)
from breachmatch_dev.dumps import Dataset, write_dataset
from breachmatch_dev.nats_server import NatsServer
from breachmatch_dev.stack import NATS, TENANT, Stack, StackError, StackInfo
from breachmatch_notifier.channels import message_uuid
from breachmatch_notifier.channels.email import IDEMPOTENCY_HEADER
from breachmatch_notifier.ledger import HELD, TERMINAL, Ledger, LedgerEntry

_BIN = Path(sys.executable).parent
#: Short enough that a crashed notifier's notices come back within seconds.
ACK_WAIT_SECONDS = 3
#: A command that outlives this is stuck on a dead component: killed and run again.
COMMAND_TIMEOUT = 90.0
COMMAND_TRIES = 12
RERUN_PAUSE = 3.0
SETTLE_TIMEOUT = 120.0
STARTUP_TRIES = 3
POLL_SECONDS = 0.25

#: Which phases each component takes part in, and how likely it is picked.
PHASES: dict[str, tuple[str, ...]] = {
    "notifier": ("ingest", "notify", "delivery", "delivery"),
    NATS: ("ingest", "check", "notify", "delivery", "delivery"),
    "matcher": ("ingest", "check", "check"),
    "ingest": ("ingest",),
}
WEIGHTS = {"notifier": 3, NATS: 3, "matcher": 2, "ingest": 2}


@dataclass
class KillPlan:
    component: str
    phase: str
    #: Seconds into a command phase, or the share of expected e-mails for "delivery".
    at: float
    #: Seconds the component stays dead before it is restarted.
    down_for: float

    def describe(self) -> str:
        moment = f"{self.at:.0%} sent" if self.phase == "delivery" else f"+{self.at:.2f}s"
        return f"{self.phase} {moment}"


@dataclass
class Tally:
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    held: int = 0
    held_delivered: int = 0
    matches_ok: bool = True
    killed: bool = False
    reruns: int = 0
    notes: list[str] = field(default_factory=list)


class Killer(threading.Thread):
    """Waits for its phase, kills the component at the planned moment, restarts it."""

    def __init__(self, stack: Stack, plan: KillPlan, delivered: Callable[[], int], expected: int):
        super().__init__(daemon=True)
        self.stack = stack
        self.plan = plan
        self.delivered = delivered
        self.expected = expected
        self.phase_started: dict[str, threading.Event] = {
            name: threading.Event() for name in ("ingest", "check", "notify", "delivery")
        }
        self.done = threading.Event()
        self.killed = False
        self.error: BaseException | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()
        for event in self.phase_started.values():
            event.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the trial, not lost in a thread
            self.error = exc
        finally:
            self.done.set()

    def _run(self) -> None:
        plan = self.plan
        self.phase_started[plan.phase].wait()
        if self._cancelled.is_set():
            return
        if plan.phase == "delivery":
            target = max(1, int(plan.at * self.expected))
            while self.delivered() < target and not self._cancelled.is_set():
                time.sleep(0.005)
        elif self._cancelled.wait(plan.at):
            return
        if self._cancelled.is_set():
            return
        self.stack.kill9(plan.component)
        self.killed = True
        time.sleep(plan.down_for)
        self.stack.restart(plan.component)


def mail_files(info: StackInfo) -> list[Path]:
    return sorted(info.mail_dir.glob("*.eml")) if info.mail_dir.exists() else []


def run_command(info: StackInfo, argv: tuple[str, ...], killer: Killer, tally: Tally) -> None:
    """Run a CLI step; when the crash made it fail, run it again after a pause, as an operator
    would (services reconnect within seconds; their breach index catches up within ~20 s)."""
    env = {**os.environ, **info.env, "BREACHMATCH_LOG_FORMAT": "json"}
    tool, *args = argv
    failures: list[str] = []
    for _ in range(COMMAND_TRIES):
        try:
            done = subprocess.run(
                [str(_BIN / tool), *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            failures.append("timed out")
        else:
            if done.returncode == 0:
                break
            failures.append(f"exit {done.returncode}: {_last_line(done.stderr)}")
        if not killer.killed:
            raise RuntimeError(f"{tool} {args[0]} failed with nothing killed: {failures[-1]}")
        killer.done.wait(COMMAND_TIMEOUT)
        time.sleep(RERUN_PAUSE)
    else:
        raise RuntimeError(f"{tool} {args[0]} kept failing: {failures[-1]}")
    if failures:
        tally.reruns += len(failures)
        tally.notes.append(f"{tool} {args[0]} run {len(failures) + 1}x ({failures[-1]})")


def _last_line(text: str) -> str:
    """The last line a CLI wrote (its one-line error), shortened for the table."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    with contextlib.suppress(ValueError, AttributeError):  # a JSON log line: its event
        last = str(json.loads(last).get("event", last))
    return last[:60]


async def settle(nats_server: NatsServer, submitted: int) -> list[LedgerEntry]:
    """The ledger once every notice is final and the notifier's consumers hold nothing more."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    entries: list[LedgerEntry] = []
    while time.monotonic() < deadline:
        try:
            # The dev PKI's admin identity: reads the notifier's ledger and consumers.
            nc, js = await nats_server.connect("admin", "chaos-harness")
        except (nats.errors.Error, OSError):  # NATS restarting: ask again
            await asyncio.sleep(POLL_SECONDS)
            continue
        try:
            ledger = Ledger(await bus.key_value(js, bus.KV_OUTREACH_LEDGER), b"")
            while time.monotonic() < deadline:
                entries = await ledger.entries(TENANT, BREACH_ID)
                final = sum(entry.state in TERMINAL for entry in entries)
                if final == len(entries) >= submitted and await _consumers_idle(js):
                    return entries
                await asyncio.sleep(POLL_SECONDS)
        except nats.errors.Error:  # mid-read: connect and read again
            await asyncio.sleep(POLL_SECONDS)
        finally:
            await nc.close()
    return entries


async def _consumers_idle(js: JetStreamContext) -> bool:
    for stream, consumer in (
        (bus.STREAM_OUTREACH, bus.CONSUMER_NOTIFIER_WORKERS),
        (bus.STREAM_BREACHES, bus.CONSUMER_NOTIFIER_ALERTS),
    ):
        info = await js.consumer_info(stream, consumer)
        if info.num_pending or info.num_ack_pending:
            return False
    return True


def count(info: StackInfo, data: Dataset, entries: list[LedgerEntry], tally: Tally) -> None:
    """Compare what was delivered with the ground truth (see the module docstring)."""
    strong = {m.patient_id for m in data.expected if m.strength == "strong"}
    per_key: Counter[str] = Counter()
    per_recipient: Counter[str] = Counter()
    for path in mail_files(info):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        # Header values may be folded over lines: compare them without whitespace.
        per_key["".join(str(message[IDEMPOTENCY_HEADER]).split())] += 1
        per_recipient[str(message["To"])] += 1
    letters = {path.stem for path in info.outbox_dir.glob("*.xml")}

    tally.expected = len(strong) + 1  # + the new-breach alert to the hospital's DPO
    if len(entries) < len(strong):
        tally.lost += len(strong) - len(entries)
        tally.notes.append(f"{len(strong) - len(entries)} strong matches never submitted")
    alerts = sum(n for key, n in per_key.items() if key.startswith("alert-"))
    tally.delivered += min(alerts, 1)
    tally.duplicated += max(0, alerts - 1)
    tally.lost += alerts == 0
    for entry in entries:
        copies = per_key.get(entry.idempotency_key, 0)
        copies += str(message_uuid(entry.idempotency_key)) in letters
        tally.delivered += min(copies, 1)
        tally.duplicated += max(0, copies - 1)
        if entry.state == HELD:
            tally.held += 1
            tally.held_delivered += copies > 0
        elif copies == 0:
            tally.lost += 1
    # A person notified twice under two keys is a duplicate too.
    expected = set(_patient_addresses(data, strong).values()) - {""}
    twice = sum(n - 1 for address, n in per_recipient.items() if address in expected)
    tally.duplicated = max(tally.duplicated, twice)
    strangers = [a for a in per_recipient if a not in expected and not a.startswith("dpo@")]
    if strangers:
        tally.notes.append(f"{len(strangers)} e-mails to addresses that matched nothing")


def _patient_addresses(data: Dataset, patients: set[str]) -> dict[str, str]:
    """The normalised e-mail address of each patient in ``patients`` ("" if unusable)."""
    found: dict[str, str] = {}
    for person in data.hospital:
        if person.patient_id in patients:
            try:
                found[person.patient_id] = normalise_email(person.email)
            except IdentifierError:
                found[person.patient_id] = ""
    return found


def plan_kill(rng: random.Random, components: list[str]) -> KillPlan:
    weights = [WEIGHTS[name] for name in components]
    component = rng.choices(components, weights)[0]
    phase = rng.choice(PHASES[component])
    at = rng.uniform(0.05, 0.9) if phase == "delivery" else rng.uniform(0.0, 1.5)
    return KillPlan(component, phase, at, down_for=rng.uniform(0.0, 1.0))


def start(stack: Stack) -> StackInfo:
    """`Stack.up`, tried again when a service lost its free port to another process."""
    for _ in range(STARTUP_TRIES - 1):
        try:
            return stack.up()
        except StackError as exc:
            print(f"       stack did not start ({exc}); starting it again", flush=True)
    return stack.up()


#: What one trial leaves under the root; the next starts without it (PKI and keys stay).
TRIAL_STATE = ("mail", "hospital-a", "digital-post-outbox", "nats", "logs", "data")


def run_trial(root: Path, number: int, plan: KillPlan, sizes: tuple[int, int, int]) -> Tally:
    for stale in TRIAL_STATE:
        shutil.rmtree(root / stale, ignore_errors=True)
    stack = Stack(
        root,
        env={
            "notifier": {
                "BREACHMATCH_NOTIFIER_ACK_WAIT": str(ACK_WAIT_SECONDS),
                "BREACHMATCH_NOTIFIER_BACKOFF": "0.5,1,2",
            }
        },
    )
    tally = Tally()
    info = start(stack)
    killer: Killer | None = None
    try:
        patients, leaked, strangers = sizes
        data = write_dataset(root / "data", patients, leaked, strangers, seed=number)
        strong = sum(1 for m in data.expected if m.strength == "strong")
        killer = Killer(stack, plan, lambda: len(mail_files(info)), strong + 1)
        killer.start()
        results_path = root / "results.json"
        killer.phase_started["ingest"].set()
        run_command(info, ingest_command(data), killer, tally)
        killer.phase_started["check"].set()
        run_command(info, check_command(data, results_path), killer, tally)
        results = json.loads(results_path.read_text())
        tally.matches_ok = found_matches(results) == expected_matches(data)
        submitted = sum(1 for m in results["matches"] if m["strength"] == "strong")
        killer.phase_started["notify"].set()
        killer.phase_started["delivery"].set()
        run_command(info, notify_command(results_path), killer, tally)
        if not killer.done.wait(SETTLE_TIMEOUT):
            tally.notes.append("the planned kill never happened")
        if killer.error is not None:
            raise killer.error
        tally.killed = killer.killed
        assert stack.nats is not None
        entries = asyncio.run(settle(stack.nats, submitted))
        count(info, data, entries, tally)
    finally:
        if killer is not None:
            killer.cancel()
        stack.down()
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description="crash trials of the breachmatch stack")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="default: random, printed")
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--leaked", type=int, default=600)
    parser.add_argument("--strangers", type=int, default=400)
    parser.add_argument(
        "--components", default=",".join(PHASES), help="comma-separated, from: " + ", ".join(PHASES)
    )
    parser.add_argument("--root", type=Path, default=Path(".var/chaos"))
    args = parser.parse_args()
    components = [name.strip() for name in args.components.split(",") if name.strip()]
    unknown = sorted(set(components) - set(PHASES))
    if unknown or not components or args.trials < 1:
        parser.error(f"--components: unknown {unknown}" if unknown else "nothing to run")
    # The harness's own NATS connection says when the killed server drops it, and
    # asyncio warns on every TLS connection dropped: the table is the output.
    logs.configure_logging("chaos", level="ERROR")
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    print(f"crash trials: {args.trials}, seed {seed}, ack wait {ACK_WAIT_SECONDS}s")
    header = (
        f"{'trial':>5}  {'killed':<11} {'at':<16} {'notices':>7} {'sent':>5} "
        f"{'lost':>4} {'dup':>4} {'held':>9} {'secs':>5}  notes"
    )
    print(header)
    print("-" * len(header))
    totals = Tally()
    for number in range(1, args.trials + 1):
        plan = plan_kill(rng, components)
        started = time.monotonic()
        tally = run_trial(args.root, number, plan, (
            args.patients, args.leaked, args.strangers))  # fmt: skip
        seconds = time.monotonic() - started
        if not tally.matches_ok:
            tally.notes.append("check results differ from the ground truth")
        held = f"{tally.held} ({tally.held_delivered} out)" if tally.held else "0"
        killed = plan.component if tally.killed else f"({plan.component})"
        print(
            f"{number:>5}  {killed:<11} {plan.describe():<16} {tally.expected:>7} "
            f"{tally.delivered:>5} {tally.lost:>4} {tally.duplicated:>4} {held:>9} "
            f"{seconds:>5.1f}  {'; '.join(tally.notes)}",
            flush=True,
        )
        totals.lost += tally.lost
        totals.duplicated += tally.duplicated
        totals.held += tally.held
        totals.held_delivered += tally.held_delivered
    shutil.rmtree(args.root, ignore_errors=True)
    print(
        f"trials {args.trials}, lost {totals.lost}, duplicated {totals.duplicated}, "
        f"held for review {totals.held} ({totals.held_delivered} of them had gone out)"
    )


if __name__ == "__main__":
    main()
