"""A local SMTP server that keeps what it receives, for the demo stack.

The demo must show real notices going out over real SMTP without sending
mail anywhere, so the notifier talks to this aiosmtpd server, which writes
every message to ``<dir>/<n>.eml`` (a person can open them) and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class MaildirHandler:
    """aiosmtpd handler: one .eml file per accepted message."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        start = len(list(directory.glob("*.eml")))
        self._numbers = itertools.count(start + 1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        path = self.directory / f"{next(self._numbers):06d}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(envelope.original_content or envelope.content)
        tmp.replace(path)
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description="local SMTP sink for the demo")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    controller = Controller(MaildirHandler(args.dir), hostname="127.0.0.1", port=args.port)
    controller.start()

    async def wait_for_signal() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait_for_signal())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
