"""Facts about the built service images, checked rather than assumed.

`make images` prints, per image: its size, the user it runs as, whether the
service starts on a read-only root filesystem (the manifests demand
``readOnlyRootFilesystem: true``), and what a scan of every layer found. The
scan looks for what must never be baked into an image: private keys, the dev
PKI and key files under ``.var/``, test trees, dump-shaped data files, and the
identifiers of the synthetic hospital the demo and the tests use (generated
here with the demo's seed, so a copied demo file is caught whatever its name).
Any finding, a failed read-only start or a root user exits 1.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from breachmatch_dev.synthetic import DEMO_SEED, people

_DUMP_SUFFIXES = (".csv", ".tsv", ".ndjson", ".jsonl", ".xlsx", ".sql", ".sql.gz", ".csv.gz")
#: Key material itself, not the word: a PEM private key block with its base64
#: body, or an OPRF key file's secret (breachmatch.keys writes it as hex in JSON).
_PRIVATE_KEY = re.compile(
    rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=\s]{64}|\"secret\":\s*\"[0-9a-f]{64}\""
)
#: Identifier samples taken from the synthetic hospital (enough to catch a copied file).
_SAMPLE_SIZE = 200
#: Larger members are not content-scanned (wheels' shared objects are not data files).
_MAX_SCAN_BYTES = 8 * 1024 * 1024
#: The container's own /tmp (a tmpfs, the emptyDir of the manifests), not the host's.
_CONTAINER_TMP = "/tmp"  # noqa: S108
#: CPR-shaped tokens; each is looked up in a set, which keeps the scan linear.
_DIGITS = re.compile(rb"(?<!\d)\d{10}(?!\d)")
#: E-mail addresses, looked for only in files that hold one of the test domains
#: (a general e-mail pattern backtracks badly over binary files).
_EMAIL = re.compile(rb"[\w.+-]{1,64}@[\w-]+(?:\.[\w-]+)+")


@dataclass
class Facts:
    image: str
    size_mb: float = 0.0
    user: str = ""
    read_only_start: bool = False
    uid_inside: str = ""
    git_sha: str = ""
    findings: list[str] = field(default_factory=list)


def _podman(*args: str) -> str:
    return subprocess.run(
        ["podman", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _test_identifiers() -> set[bytes]:
    """CPRs and e-mail addresses of the demo's synthetic hospital (seeded, so the same ones).

    The demo's hospital is the first patients of `people` with the demo's seed,
    and a window of a population is the same whatever its length.
    """
    hospital = people(_SAMPLE_SIZE, seed=DEMO_SEED)
    return {value.encode() for p in hospital for value in (p.cpr, p.email)}


def _layer_members(archive: Path) -> Iterator[tuple[str, tarfile.TarFile, tarfile.TarInfo]]:
    """Every file of every layer of a docker-archive, with the layer it is in."""
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer_name in manifest[0]["Layers"]:
            layer_file = outer.extractfile(layer_name)
            if layer_file is None:
                continue
            with tarfile.open(fileobj=io.BytesIO(layer_file.read())) as layer:
                for member in layer:
                    if member.isfile():
                        yield layer_name, layer, member


def _is_our_test_file(name: str) -> bool:
    """A file of the project's test trees (third-party packages may ship their own tests)."""
    return "/tests/" in f"/{name}" and (
        "site-packages/" not in name or "site-packages/breachmatch" in name
    )


def _holds_identifier(data: bytes, identifiers: set[bytes], domains: set[bytes]) -> bool:
    if identifiers.intersection(_DIGITS.findall(data)):
        return True
    return any(domain in data for domain in domains) and bool(
        identifiers.intersection(_EMAIL.findall(data))
    )


def _scan(image: str, identifiers: set[bytes]) -> list[str]:
    findings: list[str] = []
    domains = {value.rsplit(b"@", 1)[1] for value in identifiers if b"@" in value}
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "image.tar"
        _podman("save", "--format", "docker-archive", "-o", str(archive), image)
        for _layer, layer, member in _layer_members(archive):
            name = member.name.lstrip("./")
            if name.endswith(".key"):
                findings.append(f"key file {name}")
            if "/.var/" in f"/{name}" or _is_our_test_file(name):
                findings.append(f"dev or test file {name}")
            if name.endswith(_DUMP_SUFFIXES) and "site-packages/" not in name:
                findings.append(f"dump-shaped file {name}")
            if member.size > _MAX_SCAN_BYTES:
                continue
            handle = layer.extractfile(member)
            data = handle.read() if handle else b""
            # Shared libraries embed public self-test keys (GnuTLS's FIPS tests);
            # a key an image must not carry is a file of its own, not code.
            if not data.startswith(b"\x7fELF") and _PRIVATE_KEY.search(data):
                findings.append(f"private key material in {name}")
            if _holds_identifier(data, identifiers, domains):
                findings.append(f"a synthetic test identifier in {name}")
    return findings


def _run_read_only(*args: str) -> subprocess.CompletedProcess[str]:
    """Run in the container as the manifests do: read-only root, /tmp a tmpfs, no network."""
    return subprocess.run(
        ["podman", "run", "--rm", "--read-only", "--tmpfs", _CONTAINER_TMP, "--network", "none",
         *args],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def facts_of(service: str, tag: str, identifiers: set[bytes]) -> Facts:
    image = f"breachmatch/{service}:{tag}"
    facts = Facts(image)
    facts.size_mb = int(_podman("image", "inspect", "--format", "{{.Size}}", image)) / 1e6
    facts.user = _podman("image", "inspect", "--format", "{{.Config.User}}", image)
    probe = _run_read_only(
        "--entrypoint", "/opt/venv/bin/python", image, "-c",
        f"import os, breachmatch_{service}.cli, breachmatch.build as b; "
        "print(os.getuid(), b.git_sha())",
    )  # fmt: skip
    if probe.returncode == 0:
        facts.uid_inside, facts.git_sha = probe.stdout.split()
    helps = _run_read_only(image, "--help")
    facts.read_only_start = probe.returncode == 0 and helps.returncode == 0
    facts.findings = _scan(image, identifiers)
    return facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="+")
    parser.add_argument("--tag", default="dev")
    args = parser.parse_args()
    identifiers = _test_identifiers()
    failed = False
    print(
        f"{'image':<28} {'size MB':>8} {'user':>12} {'uid':>6} {'read-only':>9} "
        f"{'revision':>12}  layer scan"
    )
    for service in args.services:
        facts = facts_of(service, args.tag, identifiers)
        scan = "clean" if not facts.findings else f"{len(facts.findings)} findings"
        print(
            f"{facts.image:<28} {facts.size_mb:>8.1f} {facts.user:>12} {facts.uid_inside:>6} "
            f"{'yes' if facts.read_only_start else 'NO':>9} {facts.git_sha[:12]:>12}  {scan}"
        )
        for finding in facts.findings[:20]:
            print(f"    {finding}")
        failed |= bool(facts.findings) or not facts.read_only_start
        failed |= facts.uid_inside in ("", "0") or facts.user.split(":")[0] in ("", "0", "root")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
