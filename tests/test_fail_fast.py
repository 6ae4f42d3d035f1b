"""Every command pointed at a dead address gives up in bounded time and says where.

The real console scripts, each aimed at a port nothing listens on: they must
exit with status 69 (`reachability.EXIT_UNREACHABLE`) within their
``--connect-timeout`` (plus start-up), naming the address, without a
traceback and without a line per retry.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from breachmatch.keys import make_operator_keys
from breachmatch.reachability import EXIT_UNREACHABLE
from breachmatch_dev import DevPki
from breachmatch_dev.nats_server import free_port

BIN = Path(sys.executable).parent
GIVE_UP_AFTER = 3.0
#: Generous: interpreter start-up on a loaded 2-core machine, plus the timeout itself.
BOUND = GIVE_UP_AFTER + 30.0


@pytest.fixture(scope="module")
def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"


def _commands(dev_pki: DevPki, tmp: Path, dead: str) -> dict[str, list[str]]:
    keys = make_operator_keys(tmp / "keys")
    tenants = tmp / "tenants.json"
    tenants.write_text(json.dumps({"tenants": {"hospital-a": {"alert_email": "a@b.example"}}}))
    dump = tmp / "dump.csv"
    dump.write_text("cpr,email\n0101011234,someone@example.dk\n")
    patients = tmp / "patients.csv"
    patients.write_text("patient_id,cpr\np1,0101011234\n")
    nats = ["--nats-url", f"tls://{dead}", "--connect-timeout", str(GIVE_UP_AFTER)]
    # The operator's ingest commands join NATS as the ingest service (`bus.connect`).
    as_ingest = ["--nats-tls-dir", str(dev_pki.service_dir("ingest"))]
    probes = ["--health-addr", "off", "--metrics-addr", "off"]
    hospital = [
        "--matcher", dead, "--tls-dir", str(dev_pki.tenant_dir("hospital-a")),
        "--state-dir", str(tmp / "state"), "--retries", "3",
    ]  # fmt: skip
    return {
        "ingest": [
            "breachmatch-ingest", "ingest", str(dump), "--breach-id", "dead-nats",
            "--title", "t", "--organisation", "o", "--oprf-key-dir", str(keys.oprf_dir),
            "--signing-key", str(keys.signing_key), "--workers", "0", *probes, *nats, *as_ingest,
        ],
        "retract": [
            "breachmatch-ingest", "retract", "dead-nats", "--reason", "r",
            "--signing-key", str(keys.signing_key), *nats, *as_ingest,
        ],
        "matcher": [
            "breachmatch-matcher", "serve", "--tls-dir", str(dev_pki.service_dir("matcher")),
            "--oprf-key-dir", str(keys.oprf_dir), "--verify-key", str(keys.verify_key),
            "--notifier-statement", str(keys.notifier_statement),
            "--grpc-addr", "127.0.0.1:0", "--workers", "1", *probes, *nats,
        ],
        "notifier": [
            "breachmatch-notifier", "serve", "--tls-dir", str(dev_pki.service_dir("notifier")),
            "--notifier-secret-key", str(keys.notifier_secret_key),
            "--verify-key", str(keys.verify_key),
            "--tenants-file", str(tenants), "--grpc-addr", "127.0.0.1:0", *probes, *nats,
        ],
        "check": ["breachmatch", "check", "--patients", str(patients), *hospital],
        "status": ["breachmatch", "status", "--notifier", dead, *hospital],
    }  # fmt: skip


def test_every_command_gives_up_on_a_dead_address_with_one_clear_line(
    dev_pki: DevPki, tmp_path: Path, dead_address: str
) -> None:
    commands = _commands(dev_pki, tmp_path, dead_address)
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "BREACHMATCH_NOTIFIER_DRY_RUN": "1"}
    started = time.monotonic()
    running = {
        name: subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, argv in commands.items()
    }
    outcomes = {}
    for name, process in running.items():
        _, err = process.communicate(timeout=BOUND * 2)
        outcomes[name] = (process.returncode, time.monotonic() - started, err)
    for name, (code, seconds, err) in outcomes.items():
        assert code == EXIT_UNREACHABLE, (name, code, err)
        assert seconds < BOUND, (name, seconds)
        assert dead_address in err.splitlines()[-1], (name, err)
        assert "Traceback" not in err, (name, err)
        # Retries are logged once per doubling, not once per attempt (~6 per second).
        assert len(err.splitlines()) <= 8, (name, err)
