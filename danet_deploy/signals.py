"""Signals that stop a command end it like Ctrl-C does, so that its clean-up runs.

Python's default for SIGTERM and SIGHUP is to die at once, which skips every ``finally``:
a half-written export's temporary directory, a temporary file, a Lava worker group would
be left behind. Inside :func:`signals_end_the_run` they raise ``SystemExit(128 + signal)``
instead (the exit status a shell reports for a signal).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

STOPPING = (signal.SIGTERM, signal.SIGHUP)


@contextmanager
def signals_end_the_run() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``SystemExit`` while the block runs (main thread only: only
    it can set handlers; elsewhere the block runs unchanged)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOPPING}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
