"""Which build is running: one answer for metrics (`build_info`) and traces (the resource).

An operator joins dashboards, alerts and traces on the same facts — service,
version, Python, source revision — so they are computed here once. The
revision is not in an installed wheel; the image build passes it as
``BREACHMATCH_GIT_SHA`` (anything but a hex commit id reads as ``unknown``,
so a label never carries free text).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re

import prometheus_client

GIT_SHA_VARIABLE = "BREACHMATCH_GIT_SHA"
_HEX = re.compile(r"[0-9a-f]{7,40}")

BUILD_INFO = prometheus_client.Gauge(
    "breachmatch_build_info",
    "Always 1: which breachmatch service runs at which version (join on it in queries)",
    ["service", "version", "python", "git_sha"],
)


def version(service: str) -> str:
    """The installed version of ``breachmatch-<service>`` (of the SDK for anything else)."""
    try:
        return importlib.metadata.version(f"breachmatch-{service}")
    except importlib.metadata.PackageNotFoundError:
        return importlib.metadata.version("breachmatch")


def git_sha() -> str:
    """The source revision the image was built from, or ``unknown``."""
    text = os.environ.get(GIT_SHA_VARIABLE, "").strip().lower()
    return text if _HEX.fullmatch(text) else "unknown"


def python_version() -> str:
    return platform.python_version()


def publish_build_info(service: str) -> None:
    """Set ``breachmatch_build_info{service,version,python,git_sha} 1`` in this process."""
    BUILD_INFO.labels(service, version(service), python_version(), git_sha()).set(1)
