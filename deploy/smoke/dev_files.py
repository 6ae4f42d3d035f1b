"""The dev overlay's git-ignored secret files, generated the way deploy/README.md describes.

The smoke runs the overlay with real key material, made fresh for each run in
a temp copy of deploy/ (never in the working tree): the dev PKI's certificate
per service including NATS (``breachmatch_dev.pki``), the operator's OPRF ring,
signing and sealing keys (``breachmatch.keys``), and channel credentials. The
credentials are empty files: the SMTP sink takes no login, and an empty pair
is what the notifier reads as "no SMTP AUTH". Every file the overlay's
generators name must then exist, so a generator added later without a file
here fails the smoke with its path instead of a kustomize error.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from breachmatch.keys import OperatorKeyFiles, make_operator_keys
from breachmatch_dev.pki import DevPki, make_dev_pki

#: Names the certificates must carry: the Services' DNS names inside the pod
#: network, the headless Service's pod names for NATS routes, and localhost for
#: the CLIs on the host that dial the published ports.
SERVER_NAMES = (
    "localhost", "127.0.0.1", "nats", "*.nats-headless", "matcher", "notifier", "ingest"
)  # fmt: skip
TLS_SERVICES = ("nats", "matcher", "notifier", "ingest")
CHANNEL_FILES = ("smtp-username", "smtp-password", "sms-gateway-token")
TENANT = "hospital-a"


@dataclass
class DevFiles:
    """What the host-side CLIs need of the same material the pods mount."""

    pki: DevPki
    keys: OperatorKeyFiles


def write_dev_files(secrets_dir: Path, work: Path) -> DevFiles:
    """Fill the overlay's `secrets_dir`/files from a dev PKI and operator keys made under `work`."""
    files = secrets_dir / "files"
    pki = make_dev_pki(work / "pki", tenants=(TENANT,), server_names=SERVER_NAMES)
    keys = make_operator_keys(work / "keys")
    for service in TLS_SERVICES:
        target = files / "tls" / service
        target.mkdir(parents=True, exist_ok=True)
        for name in ("ca.crt", "tls.crt", "tls.key"):
            shutil.copyfile(pki.service_dir(service) / name, target / name)
    ring = sorted(keys.oprf_dir.glob("*.json"))
    if len(ring) != 1:
        raise SystemExit(f"deploy-smoke: expected one OPRF key in {keys.oprf_dir}, found {ring}")
    (files / "oprf").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ring[0], files / "oprf" / "current.json")
    for source in (keys.signing_key, keys.verify_key, keys.notifier_secret_key,
                   keys.notifier_public_key, keys.notifier_statement):  # fmt: skip
        shutil.copyfile(source, files / source.name)
    (files / "channels").mkdir(parents=True, exist_ok=True)
    for name in CHANNEL_FILES:
        (files / "channels" / name).write_bytes(b"")
    _check_complete(secrets_dir)
    return DevFiles(pki, keys)


def _check_complete(secrets_dir: Path) -> None:
    doc = yaml.safe_load((secrets_dir / "kustomization.yaml").read_text())
    generators = (doc.get("secretGenerator") or []) + (doc.get("configMapGenerator") or [])
    missing = [
        entry.split("=", 1)[-1]
        for generator in generators
        for entry in generator.get("files") or []
        if not (secrets_dir / entry.split("=", 1)[-1]).is_file()
    ]
    if missing:
        raise SystemExit(f"deploy-smoke: no generated file for {', '.join(missing)}")
