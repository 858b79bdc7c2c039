"""Signals that stop a command end it like Ctrl-C does, so that its clean-up runs.

Python's default for SIGTERM and SIGHUP is to die at once, which skips every ``finally``:
a half-written export's temporary directory, a temporary file, a Lava worker group would
be left behind. Inside :func:`signals_end_the_run` they raise ``SystemExit(128 + signal)``
instead (the exit status a shell reports for a signal). Inside :func:`stops_deferred` (an HDF5
write) a stop, Ctrl-C included, waits until the block has ended. Inside
:func:`interrupt_ends_at_once` (the command line's start-up) Ctrl-C ends the process at once.
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


@contextmanager
def stops_deferred() -> Iterator[None]:
    """A stop (SIGTERM, SIGHUP, Ctrl-C) that arrives while the block runs takes effect when it
    ends, as the handler in place before the block would have taken it.

    For HDF5 writes: a ``SystemExit`` raised inside h5py (its close included) left the file
    open, and h5py closed it at exit by writing into the closed Python file, printing a
    traceback. Masking the signal cannot help: torch's worker threads would receive it and
    Python would still run the handler in the main thread. Main thread only, as handlers are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: pending.append(signum))
        for sig in (*STOPPING, signal.SIGINT)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:  # delivered again to the handler it was meant for; it raises from here
            signal.raise_signal(pending[0])


@contextmanager
def interrupt_ends_at_once() -> Iterator[None]:
    """Ctrl-C while the block runs ends the process by SIGINT's own default action: at once,
    silently, with the status a shell reports for it (130).

    For the command line's start-up, which imports torch for a second or two and has written
    nothing yet: Python's handler would raise ``KeyboardInterrupt`` inside an import and print
    its traceback. Only Python's own handler is replaced (an ignored SIGINT, as in a background
    job, stays ignored); main thread only, as handlers are.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
