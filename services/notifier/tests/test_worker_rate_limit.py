"""Two `breachmatch-notifier worker` processes share one provider rate limit.

Each process is started with ``BREACHMATCH_RATE_LIMIT_EMAIL=5``, as every
replica of a Deployment is: five notices a second for the deployment, not
for each process. Both workers send (each holds at most two notices at a
time, so neither can take the whole queue), every notice goes out exactly
once, and the counters in the shared KV bucket show at most five notices in
any one-second window — so 30 notices take at least five windows and span
seconds at the sink, where two private limits would have let them through at
ten a second.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from nats.js.errors import NotFoundError

from breachmatch import bus
from breachmatch_notifier.ledger import SENT

from .conftest import SETTLE_TIMEOUT, SETTLED_LINE, Harness, Patient

BREACH = "alles-2025"
RATE = 5
PATIENTS = [
    Patient(ref=f"P-{n}", name=f"Kirsten {chr(65 + n)}. Jensen", email=f"patient{n}@example.dk")
    for n in range(30)
]


def sent_by(log_path: Path) -> int:
    """How many notices a worker process says it sent (its JSON log)."""
    total = 0
    for line in log_path.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == SETTLED_LINE:
                total += event.get("sent_email", 0)
    return total


async def both_fetching(harness: Harness, processes: int) -> None:
    """Return once ``processes`` workers wait on the queue (pull requests outstanding)."""
    async with asyncio.timeout(SETTLE_TIMEOUT):
        while True:
            try:
                info = await harness.js.consumer_info(
                    bus.STREAM_OUTREACH, bus.CONSUMER_NOTIFIER_WORKERS
                )
            except NotFoundError:  # created by the first worker to start
                info = None
            if info is not None and (info.num_waiting or 0) >= processes:
                return
            await asyncio.sleep(0.1)


async def test_two_worker_processes_together_keep_to_the_shared_limit(harness: Harness) -> None:
    await harness.publish_breach(BREACH, PATIENTS)
    logs = [harness.root / f"worker-{n}.log" for n in range(2)]
    workers = []
    try:
        for log_path in logs:
            with log_path.open("wb") as log:
                workers.append(
                    await asyncio.create_subprocess_exec(
                        *harness.notifier_command,
                        "worker",
                        env=harness.worker_env(
                            BREACHMATCH_NOTIFIER_WORKERS_PER_PROCESS="2",
                            BREACHMATCH_RATE_LIMIT_EMAIL=str(RATE),
                        ),
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                )
        await both_fetching(harness, len(workers))
        keys = await harness.queue_notices(BREACH, PATIENTS, PATIENTS)
        settled = await harness.settled(BREACH, len(PATIENTS))
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            await asyncio.wait_for(worker.wait(), 30)

    assert {entry.state for entry in settled.values()} == {SENT}
    delivered = harness.smtp.by_key()
    assert {key: len(copies) for key, copies in delivered.items()} == dict.fromkeys(keys, 1)
    assert all(sent_by(log_path) > 0 for log_path in logs)  # both replicas sent

    rates = await bus.key_value(harness.js, bus.KV_NOTIFIER_RATES)
    windows = [int((await rates.get(key)).value or b"0") for key in await rates.keys()]
    assert max(windows) <= RATE  # no window of the two together above the limit
    assert sum(windows) >= len(PATIENTS)  # and every notice was counted
    # At the sink: 30 notices at five a second over both take more than four
    # seconds, less the time a notice takes from its grant to its DATA.
    arrivals = harness.smtp.arrivals
    assert max(arrivals) - min(arrivals) >= len(PATIENTS) / RATE - 3
