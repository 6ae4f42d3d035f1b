"""A command whose reader goes away (``breachmatch status | head``) ends quietly.

Python ignores SIGPIPE, so writing to a closed pipe raises BrokenPipeError
wherever the write happens — mid-report, or at exit when stdout is flushed —
and the user gets a traceback for what the shell considers normal. Every
command's ``main`` is wrapped in `quiet_on_closed_pipe`: stdout is pointed at
/dev/null (so the flush at exit cannot fail again) and the command exits with
141, the status a process killed by SIGPIPE has, as ``cat`` or ``grep`` would.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

#: 128 + SIGPIPE: what shells report for a writer whose reader left.
EXIT_CLOSED_PIPE = 141

_P = ParamSpec("_P")


def quiet_on_closed_pipe(main: Callable[_P, int]) -> Callable[_P, int]:
    @functools.wraps(main)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> int:
        try:
            status = main(*args, **kwargs)
            sys.stdout.flush()  # a late EPIPE surfaces here, not at interpreter exit
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return EXIT_CLOSED_PIPE
        return status

    return run
