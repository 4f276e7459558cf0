"""How a :mod:`landscape.cli` command ends: exit statuses, the one-line ``error:`` message, and
SIGTERM handled like Ctrl-C.

=====  ===========================================================================
 0     success
 1     bad data or files, a failed computation: one ``error:`` line on stderr
 2     usage: malformed flags (argparse's message)
 130   interrupted (Ctrl-C, SIGINT)
 143   terminated (SIGTERM, e.g. a scheduler's preemption)
=====  ===========================================================================

Every failure prints one line, never a traceback: a user mistake (:class:`CLIError`, a
``ValueError`` from a library check, a missing or existing file, a failed write) as its message;
anything unexpected as ``error: <type>: <message> (run with SAMLAB_DEBUG=1 for the
traceback)``. ``SAMLAB_DEBUG=1`` (or ``LANDSCAPE_TRACEBACK=1``) shows the traceback instead.

SIGTERM raises :class:`Terminated` in the main thread, so a command unwinds as on Ctrl-C: the
surface file is flushed after every chunk and closed on the way out (its ``done`` mask says
what is computed), and the same command resumes it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from landscape.cli.inputs import CLIError
from landscape.mpi.failure import DEBUG_VARIABLES

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DEBUG_HINT = "run with SAMLAB_DEBUG=1 for the traceback"

#: what a user can act on from the message alone (no hint to the traceback)
EXPECTED = (CLIError, ValueError, FileNotFoundError, FileExistsError, PermissionError)


class Terminated(BaseException):
    """SIGTERM arrived: the command stops as on Ctrl-C (exit status 143)."""


def debugging() -> bool:
    """Whether the traceback is wanted (``SAMLAB_DEBUG`` or ``LANDSCAPE_TRACEBACK`` set)."""
    return any(os.environ.get(name, "") not in ("", "0") for name in DEBUG_VARIABLES)


def error_message(err: BaseException) -> str:
    """One line describing ``err`` (its message; type and the debug hint when unexpected)."""
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and not isinstance(err, EXPECTED):
        # A failed read or write: name the file and the cause (no space left, read-only, ...).
        if err.filename is not None and err.strerror:
            return f"{err.filename}: {err.strerror}"
        if err.strerror:  # e.g. landscape.io.atomic.AtomicWriteError: the whole message
            return " ".join(err.strerror.split())
        if text:
            return text
    if isinstance(err, EXPECTED) and text:
        return text
    if isinstance(err, MemoryError):
        return f"out of memory ({text or 'MemoryError'}); use a smaller grid, subset or batch"
    return f"{type(err).__name__}: {text or 'no message'} ({DEBUG_HINT})"


def interrupt_status(err: BaseException) -> int | None:
    """130 for Ctrl-C, 143 for SIGTERM, ``None`` for any other exception."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(err, Terminated):
        return EXIT_TERMINATED
    return None


def interrupt_message(status: int, resumable: bool) -> str:
    """The line printed when a command is stopped (``status`` 130 or 143)."""
    what = "interrupted (Ctrl-C)" if status == EXIT_INTERRUPTED else "terminated (SIGTERM)"
    if resumable:
        return (
            f"{what}; every point computed so far is kept in the file: rerun the same "
            "command to resume"
        )
    return f"{what}; rerun the same command to start again"


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


def _redeliver_dropped(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """An ``sys.unraisablehook`` for :func:`sigterm_as_exception`: Python drops an exception
    raised where it cannot propagate (a signal arriving inside a finalizer or weakref
    callback) and prints it with a traceback. A dropped :class:`Terminated` is silenced and the
    signal sent again shortly, so the command still stops; anything else goes to ``previous``."""

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, Terminated):
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
            return
        previous(unraisable)

    return hook


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` inside the block (main thread only; restored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = _redeliver_dropped(previous_hook)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


def run_command(body: Callable[[], int], interrupted: Callable[[int], str]) -> int:
    """Run a command line's ``body`` (after argparse) so that it ends in one line: its status;
    on Ctrl-C / SIGTERM the line ``interrupted(status)`` and 130 / 143; on any other exception
    one ``error:`` line (:func:`error_message`) and 1, or the traceback when
    :func:`debugging`. samlab's command lines (``python -m samlab.train.forecast``,
    ``python -m samlab.demo``) end through it."""
    try:
        with sigterm_as_exception():
            return body()
    except (KeyboardInterrupt, Terminated) as err:
        status = interrupt_status(err)
        print(interrupted(status), file=sys.stderr, flush=True)
        return status
    except Exception as err:
        if debugging():
            raise
        print(f"error: {error_message(err)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
