"""The hashed lock files in locks/ still match what the packages declare.

`make lock` compiles each `locks/<name>.in` into `locks/<name>.txt` (uv pip
compile --generate-hashes); `make venv` (so CI) installs from dev.txt and each
image from build.txt and its service's lock, all with --require-hashes. This
does not re-resolve (that needs the package index); it catches a lock gone
stale by hand: a dependency added to a pyproject or requirements-dev.txt, or a
range moved, without `make lock` fails here, before an install or an image
build does.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ROOT / "locks"
INPUTS = sorted(LOCKS.glob("*.in"))
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)(?P<rest>.*)$")


def _pyproject(directory: Path) -> dict[str, Any]:
    with (ROOT / directory / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)


def _local_packages() -> dict[NormalizedName, Path]:
    """The distributions built from this repository (never pinned: installed from source)."""
    makefile = (ROOT / "Makefile").read_text()
    (pkgs,) = re.findall(r"^PKGS\s*:=\s*(.+)$", makefile, re.MULTILINE)
    return {
        canonicalize_name(str(_pyproject(Path(p))["project"]["name"])): Path(p)
        for p in pkgs.split()
    }


def _declared(source: Path) -> list[Requirement]:
    """What a lock input asks for: its requirement lines, `-r` files, local packages' deps."""
    wanted: list[Requirement] = []
    for raw in source.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            wanted += _declared(source.parent / line[3:].strip())
        elif line.startswith("./"):
            dependencies = _pyproject(Path(line))["project"]["dependencies"]
            wanted += [Requirement(d) for d in dependencies]
        else:
            wanted.append(Requirement(line))
    return wanted


def _pins(lock: Path) -> dict[NormalizedName, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) for each requirement in a compiled lock."""
    pins: dict[NormalizedName, tuple[Version, int]] = {}
    for line in lock.read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"{lock.name}: not a pinned requirement: {line.strip()[:80]}"
        pins[canonicalize_name(match["name"])] = (
            Version(match["version"]),
            match["rest"].count("--hash=sha256:"),
        )
    return pins


def test_every_input_has_its_lock() -> None:
    assert {p.stem for p in INPUTS} == {"dev", "build", "ingest", "matcher", "notifier"}
    assert {p.stem for p in LOCKS.glob("*.txt")} == {p.stem for p in INPUTS}


def test_dev_lock_covers_every_local_package() -> None:
    lines = (LOCKS / "dev.in").read_text().splitlines()
    listed = {line.strip() for line in lines if line.startswith("./")}
    assert listed == {f"./{path}" for path in _local_packages().values()}


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_lock_pins_every_declared_dependency_in_range(source: Path) -> None:
    pins = _pins(source.with_suffix(".txt"))
    local = _local_packages()
    assert not set(pins) & set(local), "local packages install from source, not from a pin"
    stale = []
    for requirement in _declared(source):
        name = canonicalize_name(requirement.name)
        if name in local or (requirement.marker and not requirement.marker.evaluate()):
            continue
        if name not in pins:
            stale.append(f"{requirement} is not in {source.stem}.txt")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            stale.append(f"{requirement} but {source.stem}.txt pins {pins[name][0]}")
    assert stale == [], "run `make lock`: " + "; ".join(stale)


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_every_pin_has_hashes(source: Path) -> None:
    pins = _pins(source.with_suffix(".txt"))
    assert pins
    assert not [name for name, (_, hashes) in pins.items() if hashes == 0]


@pytest.mark.parametrize("source", [p for p in INPUTS if p.stem != "dev"], ids=lambda p: p.stem)
def test_image_locks_agree_with_the_dev_lock(source: Path) -> None:
    """What the images run is what CI tested: the same version of every package."""
    dev = _pins(LOCKS / "dev.txt")
    image = _pins(source.with_suffix(".txt"))
    assert {n: v for n, (v, _) in image.items() if dev.get(n, (None,))[0] != v} == {}


def test_build_lock_satisfies_every_build_backend_requirement() -> None:
    pins = _pins(LOCKS / "build.txt")
    for path in _local_packages().values():
        for spec in _pyproject(path)["build-system"]["requires"]:
            requirement = Requirement(spec)
            name = canonicalize_name(requirement.name)
            assert name in pins, f"{path}: {requirement} not in build.txt"
            assert requirement.specifier.contains(pins[name][0]), f"{path}: {requirement}"
