"""Start-up against a NATS cluster that is still electing its JetStream meta leader.

Services and NATS start together (a Deployment rollout next to a new
StatefulSet, `make deploy-smoke`): the first server up has no quorum, so
JetStream answers "temporarily unavailable" or nothing, and an R3 stream
cannot be placed until three servers are up. `bus.connect` and
`bus.ensure_owned` must wait that out — one log line per backoff step, no
traceback — and give up only after their bound, in one line. A real
three-server cluster (`NatsCluster`: mutual TLS on client and route ports, the
production users), held below its quorum.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from breachmatch import bus, logs
from breachmatch.keys import make_operator_keys
from breachmatch.reachability import EXIT_UNREACHABLE, NotReadyError
from breachmatch_dev import DevPki
from breachmatch_dev.nats_server import NatsCluster

WAITING = "JetStream not ready; waiting"


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    stream = io.StringIO()
    logs.configure_logging("test", level="INFO", fmt="json", stream=stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logs.configure_logging("test", fmt="console", stream=io.StringIO())


@pytest.fixture
def cluster(tmp_path: Path, dev_pki: DevPki) -> Iterator[NatsCluster]:
    with NatsCluster(tmp_path, dev_pki) as running:
        running.start(0)  # one of three: no quorum, no meta leader
        yield running


async def _until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (a log line to appear; the caller bounds the wait)."""
    while not condition():  # noqa: ASYNC110 (the condition is a log line, not an event)
        await asyncio.sleep(0.05)


async def test_setup_waits_for_the_quorum_and_then_completes(
    cluster: NatsCluster,
    monkeypatch: pytest.MonkeyPatch,
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    monkeypatch.setenv("BREACHMATCH_NATS_REPLICAS", "3")
    first = cluster.servers[0]

    async def setup() -> Any:
        nc, js = await bus.connect(
            first.url, "startup-test", first.client_tls("ingest"), give_up_after=60
        )
        await bus.ensure_owned(js, "ingest", give_up_after=60)
        return nc, js

    task = asyncio.create_task(setup())
    async with asyncio.timeout(15):
        await _until(lambda: any(line["event"] == WAITING for line in log_lines()))
    assert not task.done()

    started = time.monotonic()
    await asyncio.to_thread(cluster.start, 1, 2)
    async with asyncio.timeout(30):
        nc, js = await task
    try:
        info = await js.stream_info(bus.STREAM_BREACHES)
        assert info.config.num_replicas == 3
        assert info.cluster is not None
        assert len(info.cluster.replicas or []) == 2  # the leader and two followers
    finally:
        await nc.close()

    waiting = [line for line in log_lines() if line["event"].endswith("not ready; waiting")]
    steps = [line["step"] for line in waiting if line["event"] == WAITING]
    assert steps == list(range(1, len(steps) + 1))
    assert all(line["server"] == first.url for line in waiting)
    assert not [line for line in log_lines() if "exception" in line]
    # Backoff doubles up to 4 s: a handful of lines, not one per attempt.
    assert len(waiting) <= 8 + (time.monotonic() - started) / 4


async def test_without_a_quorum_setup_gives_up_after_its_bound_in_one_line(
    cluster: NatsCluster, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    first = cluster.servers[0]
    started = time.monotonic()
    with pytest.raises(NotReadyError) as gave_up:
        await bus.connect(first.url, "startup-test", first.client_tls("ingest"), give_up_after=3)
    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 5
    message = str(gave_up.value)
    assert "\n" not in message
    assert message.startswith(f"JetStream at {first.url} did not become ready")
    assert "gave up after 3 s" in message
    # Each probe waits up to 2 s for an answer the leaderless server never gives.
    steps = [line["step"] for line in log_lines() if line["event"] == WAITING]
    assert steps == list(range(1, len(steps) + 1))
    assert 1 <= len(steps) <= 3


def test_a_command_exits_unreachable_with_one_line_when_no_leader_is_elected(
    cluster: NatsCluster, dev_pki: DevPki, tmp_path: Path
) -> None:
    keys = make_operator_keys(tmp_path / "keys")
    first = cluster.servers[0]
    bindir = Path(sys.executable).parent
    argv = [
        str(bindir / "breachmatch-ingest"), "retract", "no-leader", "--reason", "r",
        "--signing-key", str(keys.signing_key), "--nats-url", first.url,
        "--nats-tls-dir", str(dev_pki.service_dir("ingest")), "--connect-timeout", "3",
    ]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env={"HOME": str(tmp_path)}
    )
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    last = done.stderr.splitlines()[-1]
    assert f"JetStream at {first.url} did not become ready" in last
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) <= 8
