"""Signals that stop a command end it like Ctrl-C does, so that its clean-up runs.

Python's default for SIGTERM and SIGHUP is to die at once, which skips every ``finally``:
a half-written export's temporary directory, a temporary file, a Lava worker group would
be left behind. Inside :func:`signals_end_the_run` they raise ``SystemExit(128 + signal)``
instead (the exit status a shell reports for a signal).
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

STOPPING = (signal.SIGTERM, signal.SIGHUP)
_received: list[int] = []  # the signals that asked the run to stop


def raise_if_stopped() -> None:
    """Raise the ``SystemExit`` a signal asked for, if it was lost: a handler that fires inside
    a garbage-collection callback (a weakref's, a ``__del__``) has its exception ignored by
    Python, and the run would go on. Called before anything is committed (``outputs``)."""
    if _received:
        raise SystemExit(128 + _received[0])


@contextmanager
def signals_end_the_run() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``SystemExit`` while the block runs (main thread only: only
    it can set handlers; elsewhere the block runs unchanged). One that was lost in a callback
    is raised at the next commit, or when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame) -> None:
        _received.append(signum)
        raise SystemExit(128 + signum)

    def quiet(unraisable) -> None:  # the lost SystemExit is ours: no traceback, it is raised again
        if not (_received and isinstance(unraisable.exc_value, SystemExit)):
            hook(unraisable)

    hook, sys.unraisablehook = sys.unraisablehook, quiet
    previous = {sig: signal.signal(sig, stop) for sig in STOPPING}
    try:
        yield
        raise_if_stopped()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = hook
