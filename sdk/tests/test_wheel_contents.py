"""The hospital's SDK wheel holds the SDK and nothing of the dev scaffolding.

`breachmatch_dev` (dev PKI, a `DEV_ADMIN` NATS runner, the local stack, data
generators) is its own distribution under dev/. This builds the `breachmatch`
wheel the way a release would, from a copy of sdk/ (so the build leaves
nothing in the work tree), and reads what a hospital would install.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[1]
DEV_IMPORT = re.compile(rb"^\s*(from|import)\s+breachmatch_dev\b", re.MULTILINE)


@pytest.fixture(scope="module")
def sdk_wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    work = tmp_path_factory.mktemp("wheel")
    shutil.copytree(
        SDK,
        work / "sdk",
        ignore=shutil.ignore_patterns("tests", "*.egg-info", "build", "__pycache__"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(work / "out"),
            str(work / "sdk"),
        ],
        check=True,
    )
    (wheel,) = (work / "out").glob("breachmatch-*.whl")
    return zipfile.ZipFile(wheel)


def test_sdk_wheel_holds_the_sdk(sdk_wheel: zipfile.ZipFile) -> None:
    names = set(sdk_wheel.namelist())
    assert {
        "breachmatch/cli.py",
        "breachmatch/oprf.py",
        "breachmatch/py.typed",
        "breachmatch/v1/matcher_pb2.py",
        "breachmatch/v1/matcher_pb2.pyi",
    } <= names


def test_sdk_wheel_has_no_dev_scaffolding(sdk_wheel: zipfile.ZipFile) -> None:
    names = sdk_wheel.namelist()
    assert not [n for n in names if n.startswith(("breachmatch/dev/", "breachmatch_dev/"))]
    assert not [n for n in names if "/tests/" in n or n.startswith("tests/")]


def test_sdk_code_never_imports_the_dev_package(sdk_wheel: zipfile.ZipFile) -> None:
    importing = [
        n
        for n in sdk_wheel.namelist()
        if n.endswith(".py") and DEV_IMPORT.search(sdk_wheel.read(n))
    ]
    assert importing == []
