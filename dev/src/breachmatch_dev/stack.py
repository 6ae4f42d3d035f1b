"""The embedded default: the whole stack as local processes under `.var/`.

`make demo`, `make up` / `make down` and the end-to-end test all run the same
stack: a real nats-server with JetStream, a dev PKI, operator keys, a tenants
file, the matcher, notifier and ingest services as separate processes, and a
local SMTP sink that stores what the notifier sends. Services are configured
the way Kubernetes configures them — through ``BREACHMATCH_*`` environment
variables — so the demo exercises the deployment's configuration surface too,
and with the deployment's security: each service serves gRPC with its own
certificate (``pki/services/<name>``) and presents the same one to NATS, which
admits only those certificates and only to their own subjects.

`up()` waits for each service's plaintext health port to report SERVING
(grpc.health.v1 Watch, no polling sleeps), then writes ``stack.env`` with the
`export` lines a hospital CLI needs and ``pids.json`` so `down()` can stop a
stack started by an earlier process.

`kill9()` and `restart()` crash a component and bring it back with the very
command line and environment it started with; the crash trials
(``bench/chaos.py``) use them, so what they test is the stack as it runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from breachmatch.keys import make_operator_keys
from breachmatch_dev.health import wait_serving
from breachmatch_dev.nats_server import NatsServer, free_port
from breachmatch_dev.pki import DevPki, make_dev_pki

TENANT = "hospital-a"
#: The component name `kill9` and `restart` take for the NATS server.
NATS = "nats-server"
_BIN = Path(sys.executable).parent


@dataclass
class ServiceProcess:
    name: str
    argv: list[str]
    env: dict[str, str]
    health_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None


@dataclass
class StackInfo:
    root: Path
    nats_url: str
    matcher_addr: str
    notifier_addr: str
    ingest_addr: str
    matcher_health_addr: str
    mail_dir: Path
    outbox_dir: Path
    tenant_dir: Path
    state_dir: Path
    pki: DevPki
    env: dict[str, str] = field(default_factory=dict)


class StackError(RuntimeError):
    pass


def _wait_serving(name: str, port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until the service's plaintext health port reports SERVING."""

    def alive() -> None:
        if process.poll() is not None:
            raise StackError(f"{name} exited with code {process.returncode} during start-up")

    if not wait_serving(port, timeout, alive):
        raise StackError(f"{name} did not become healthy within {timeout:.0f}s (see its log)")


class Stack:
    """Start, describe and stop the local stack rooted at `root` (normally `.var`).

    ``extra_tenants`` are added to the tenants file next to the demo hospital
    (tests give a second hospital its own limits this way); ``env`` gives extra
    environment per service name, over the stack's own settings.
    """

    def __init__(
        self,
        root: Path,
        env: Mapping[str, Mapping[str, str]] | None = None,
        extra_tenants: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.root = root.resolve()
        self.nats: NatsServer | None = None
        self.services: list[ServiceProcess] = []
        self._extra_env = {name: dict(values) for name, values in (env or {}).items()}
        self._extra_tenants = dict(extra_tenants or {})

    @property
    def pids_file(self) -> Path:
        return self.root / "pids.json"

    @property
    def env_file(self) -> Path:
        return self.root / "stack.env"

    def up(self, startup_timeout: float = 60.0) -> StackInfo:
        if self.pids_file.exists():
            raise StackError(f"a stack seems to be running ({self.pids_file}); run `make down`")
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        pki = make_dev_pki(self.root / "pki", tenants=(TENANT, "hospital-b"))
        keys = make_operator_keys(self.root / "keys")
        tenants_file = self.root / "tenants.json"
        tenants_file.write_text(
            json.dumps(
                {
                    "default_daily_budget": 2_000_000,
                    "tenants": {
                        TENANT: {
                            "organisation": "Hospital A (demo), Region Hovedstaden",
                            "contact_point": "Patientkontoret, tlf. 70 20 30 40, hverdage 9-15",
                            "daily_budget": 5_000_000,
                            # `make demo-alles` notifies ~25,000 strong matches at once.
                            "outreach_daily_limit": 100_000,
                            "alert_email": "dpo@hospital-a.example.dk",
                            "language": "da",
                        },
                        **self._extra_tenants,
                    },
                },
                indent=2,
            )
        )
        self.nats = NatsServer(self.root / "nats", pki)
        self.nats.start()
        mail_dir = self.root / "mail"
        outbox = self.root / "digital-post-outbox"
        outbox.mkdir(parents=True, exist_ok=True)
        smtp_port = free_port()
        common = {
            "BREACHMATCH_NATS_URL": self.nats.url,
            "BREACHMATCH_TENANTS_FILE": str(tenants_file),
            "BREACHMATCH_LOG_FORMAT": "json",
        }
        names = ("matcher", "notifier", "ingest")
        ports = {name: (free_port(), free_port()) for name in names}
        metrics = {name: f"127.0.0.1:{free_port()}" for name in names}

        def service(name: str, extra: dict[str, str]) -> ServiceProcess:
            grpc_port, health_port = ports[name]
            env = {
                **common,
                "BREACHMATCH_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
                "BREACHMATCH_HEALTH_ADDR": f"127.0.0.1:{health_port}",
                "BREACHMATCH_METRICS_ADDR": metrics[name],
                # The service's identity: its gRPC server certificate and NATS user.
                "BREACHMATCH_TLS_DIR": str(pki.service_dir(name)),
                **extra,
                **self._extra_env.get(name, {}),
            }
            return ServiceProcess(
                name, [str(_BIN / f"breachmatch-{name}"), "serve"], env, health_port,
                logs / f"{name}.log",
            )  # fmt: skip

        self.services = [
            service(
                "matcher",
                {
                    "BREACHMATCH_OPRF_KEY_DIR": str(keys.oprf_dir),
                    "BREACHMATCH_VERIFY_KEY": str(keys.verify_key),
                    "BREACHMATCH_NOTIFIER_STATEMENT": str(keys.notifier_statement),
                },
            ),
            service(
                "notifier",
                {
                    "BREACHMATCH_NOTIFIER_SECRET_KEY": str(keys.notifier_secret_key),
                    "BREACHMATCH_VERIFY_KEY": str(keys.verify_key),
                    "BREACHMATCH_SMTP_HOST": "127.0.0.1",
                    "BREACHMATCH_SMTP_PORT": str(smtp_port),
                    "BREACHMATCH_SMTP_STARTTLS": "off",
                    "BREACHMATCH_SMTP_FROM": "noreply@hospital-a.example.dk",
                    "BREACHMATCH_DIGITAL_POST_OUTBOX": str(outbox),
                },
            ),
            service(
                "ingest",
                {
                    "BREACHMATCH_OPRF_KEY_DIR": str(keys.oprf_dir),
                    "BREACHMATCH_SIGNING_KEY": str(keys.signing_key),
                },
            ),
        ]
        sink = ServiceProcess(
            "smtp-sink",
            [sys.executable, "-m", "breachmatch_dev.smtp_sink", "--port", str(smtp_port),
             "--dir", str(mail_dir)],
            {}, 0, logs / "smtp-sink.log",
        )  # fmt: skip
        self.services.insert(0, sink)  # started first, and stopped by a failed start too
        try:
            for proc in self.services:
                self._spawn(proc)
            for proc in self.services:
                if proc.health_port:
                    assert proc.process is not None
                    _wait_serving(proc.name, proc.health_port, proc.process, startup_timeout)
        except BaseException:
            self.down()
            raise
        info = StackInfo(
            root=self.root,
            nats_url=self.nats.url,
            matcher_addr=f"localhost:{ports['matcher'][0]}",
            notifier_addr=f"localhost:{ports['notifier'][0]}",
            ingest_addr=f"localhost:{ports['ingest'][0]}",
            matcher_health_addr=f"127.0.0.1:{ports['matcher'][1]}",
            mail_dir=mail_dir,
            outbox_dir=outbox,
            tenant_dir=pki.tenant_dir(TENANT),
            state_dir=self.root / "hospital-a",
            pki=pki,
        )
        info.env = {
            "BREACHMATCH_NATS_URL": info.nats_url,
            "BREACHMATCH_MATCHER": info.matcher_addr,
            "BREACHMATCH_NOTIFIER": info.notifier_addr,
            "BREACHMATCH_INGEST": info.ingest_addr,
            "BREACHMATCH_TLS_DIR": str(info.tenant_dir),
            # The operator's `breachmatch-ingest` CLI joins NATS as the ingest service.
            "BREACHMATCH_NATS_TLS_DIR": str(pki.service_dir("ingest")),
            "BREACHMATCH_STATE_DIR": str(info.state_dir),
            # Outside the state directory, as the SDK demands (see breachmatch.client.state).
            "BREACHMATCH_CACHE_KEY": str(self.root / "hospital-a-secrets" / "cache.key"),
            "BREACHMATCH_OPERATOR_KEY": str(keys.verify_key),
            "BREACHMATCH_OPRF_KEY_DIR": str(keys.oprf_dir),
            "BREACHMATCH_SIGNING_KEY": str(keys.signing_key),
            "MATCHER_HEALTH_ADDR": info.matcher_health_addr,
            # Prometheus endpoints: curl http://$MATCHER_METRICS_ADDR/metrics
            **{f"{name.upper()}_METRICS_ADDR": address for name, address in metrics.items()},
        }
        self.env_file.write_text(
            "# Written by `make up`: `source .var/stack.env`, then use the CLIs.\n"
            + "".join(f"export {k}={v}\n" for k, v in info.env.items())
        )
        self._write_pids()
        return info

    def _write_pids(self) -> None:
        pids = {p.name: p.process.pid for p in self.services if p.process}
        if self.nats is not None and self.nats.running:
            pids[NATS] = self.nats.pid
        self.pids_file.write_text(json.dumps(pids))

    def service(self, name: str) -> ServiceProcess:
        """A component's process, command line and environment, by name."""
        for proc in self.services:
            if proc.name == name:
                return proc
        raise StackError(f"no component {name!r} in this stack")

    def kill9(self, name: str) -> None:
        """SIGKILL one component (a service, the SMTP sink or `NATS`), as a crash would.

        The whole process group goes, worker pools included, as when a container dies.
        """
        if name == NATS:
            assert self.nats is not None
            self.nats.kill9()
            return
        process = self.service(name).process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: see `_spawn`
            process.wait()

    def restart(self, name: str, startup_timeout: float = 60.0) -> None:
        """Start a killed component again with its own command line and environment."""
        if name == NATS:
            assert self.nats is not None
            self.nats.start()
        else:
            proc = self.service(name)
            self._spawn(proc)
            if proc.health_port:
                assert proc.process is not None
                _wait_serving(proc.name, proc.health_port, proc.process, startup_timeout)
        self._write_pids()

    def start_replica(self, name: str, startup_timeout: float = 60.0) -> str:
        """Start one more instance of service ``name`` with its configuration; its address.

        It shares NATS (and so every stream, bucket and counter) with the
        first instance, as replicas behind a Kubernetes Service do.
        """
        first = self.service(name)
        grpc_port, health_port = free_port(), free_port()
        replica = ServiceProcess(
            f"{name}-{len(self.services)}",
            first.argv,
            {
                **first.env,
                "BREACHMATCH_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
                "BREACHMATCH_HEALTH_ADDR": f"127.0.0.1:{health_port}",
                "BREACHMATCH_METRICS_ADDR": f"127.0.0.1:{free_port()}",
            },
            health_port,
            first.log_path.with_name(f"{name}-{len(self.services)}.log"),
        )
        self._spawn(replica)
        self.services.append(replica)
        assert replica.process is not None
        _wait_serving(replica.name, health_port, replica.process, startup_timeout)
        return f"localhost:{grpc_port}"

    def _spawn(self, proc: ServiceProcess) -> None:
        env = {**os.environ, **proc.env}
        with proc.log_path.open("ab") as log:
            proc.process = subprocess.Popen(
                proc.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def down(self, timeout: float = 30.0) -> None:
        """Stop what this object started, or what `pids.json` records."""
        pids: dict[str, int] = {}
        if self.pids_file.exists():
            pids = json.loads(self.pids_file.read_text())
        for proc in self.services:
            if proc.process is not None:
                pids[proc.name] = proc.process.pid
        for name, pid in pids.items():
            if name != NATS:
                _terminate(pid, timeout)
        if self.nats is not None:
            self.nats.stop()
        elif NATS in pids:
            _terminate(pids[NATS], timeout)
        self.pids_file.unlink(missing_ok=True)
        self.env_file.unlink(missing_ok=True)


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait for the exit (pidfd: no polling), then SIGKILL if it hangs."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        readable, _, _ = select.select([pidfd], [], [], timeout)
        if not readable:
            os.kill(pid, signal.SIGKILL)
            select.select([pidfd], [], [], timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def main() -> None:
    """`python -m breachmatch_dev.stack up|down [--root .var]` (make up / make down)."""
    import argparse

    parser = argparse.ArgumentParser(description="local breachmatch stack")
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--root", type=Path, default=Path(".var"))
    args = parser.parse_args()
    stack = Stack(args.root)
    if args.action == "down":
        stack.down()
        print("stack stopped")
        return
    info = stack.up()
    print(f"stack running under {info.root}")
    print(f"  matcher   {info.matcher_addr} (health {info.matcher_health_addr})")
    print(f"  notifier  {info.notifier_addr}")
    print(f"  ingest    {info.ingest_addr}")
    print(f"  nats      {info.nats_url}")
    print(f"  mail      {info.mail_dir}")
    print(f"\n  source {stack.env_file}\n  breachmatch check --patients FILE")


if __name__ == "__main__":
    main()
