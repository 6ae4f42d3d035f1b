"""What commands do at the edges: --version, and a reader that goes away.

The real console scripts as subprocesses (the behaviour at issue lives in how
the interpreter exits, which an in-process call cannot show).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nacl.signing
import pytest

from breachmatch.keys import KeyRing
from breachmatch.pipes import EXIT_CLOSED_PIPE

BIN = Path(sys.executable).parent
COMMANDS = ("breachmatch", "breachmatch-ingest", "breachmatch-matcher", "breachmatch-notifier")
TIMEOUT = 60


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_version(command: str) -> None:
    done = subprocess.run(
        [str(BIN / command), "--version"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{command} 0.1.0"


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """``breachmatch-matcher keys list | head -0``: exit 141 as cat or grep would, and no
    BrokenPipeError traceback. 200 keys print more than stdout's buffer, so the failing
    write happens mid-listing, as with a long report."""
    ring = KeyRing.load(tmp_path)
    signing_key = nacl.signing.SigningKey.generate()
    for _ in range(200):
        ring.new_key(signing_key)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte is written
    try:
        done = subprocess.run(
            [str(BIN / "breachmatch-matcher"), "keys", "--oprf-key-dir", str(tmp_path), "list"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
        )
    finally:
        os.close(write_end)
    assert done.returncode == EXIT_CLOSED_PIPE
    assert done.stderr == ""
