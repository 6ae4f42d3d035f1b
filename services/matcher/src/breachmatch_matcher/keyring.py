"""The OPRF key ring as it is on disk now, so rotations need no restart.

`breachmatch-matcher keys new|retire` (or an updated Kubernetes Secret) changes
the key directory while matchers run. Every use asks `LiveKeyRing.get()`,
which compares a cheap fingerprint of the directory (name, inode, mtime and
size of each key file, following symlinks as Secret mounts use them) with the
last one and reloads on any difference. Key files are replaced by rename, so a
change always brings a new inode: the check cannot miss an update that lands
within the file system's timestamp granularity, as a directory mtime alone could.
"""

from __future__ import annotations

import os
from pathlib import Path

from breachmatch import logs
from breachmatch.keys import KeyRing

log = logs.get_logger(__name__)

_Fingerprint = tuple[tuple[str, int, int, int], ...]


def _fingerprint(directory: Path) -> _Fingerprint:
    entries: list[tuple[str, int, int, int]] = []
    with os.scandir(directory) as listing:
        for entry in listing:
            if entry.name.endswith(".json"):
                st = entry.stat()  # follows symlinks: Secret mounts swap their targets
                entries.append((entry.name, st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(sorted(entries))


class LiveKeyRing:
    """A `KeyRing` reloaded whenever its directory changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fingerprint = _fingerprint(directory)
        self._ring = KeyRing.load(directory)

    def get(self) -> KeyRing:
        """The ring as on disk now; while the directory cannot be loaded, the previous ring.

        The fingerprint is taken before loading: a change racing the load is
        seen by the next call and loaded then. A failed load is remembered
        under its fingerprint, so it is reported once, not on every call, and
        retried as soon as the directory changes again.
        """
        try:
            fingerprint = _fingerprint(self.directory)
        except OSError as exc:
            log.error(
                "oprf key directory unreadable; keeping the previous ring", error=type(exc).__name__
            )
            return self._ring
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            try:
                self._ring = KeyRing.load(self.directory)
            except (OSError, ValueError, KeyError) as exc:
                # A half-provisioned Secret must not take evaluation down.
                log.error(
                    "oprf key ring reload failed; keeping the previous ring",
                    error=type(exc).__name__,
                )
            else:
                log.info("oprf key ring reloaded", keys=len(self._ring.all()))
        return self._ring
