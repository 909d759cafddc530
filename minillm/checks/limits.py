"""A time limit for one call of a learner's function, so an infinite loop cannot hang a notebook.

A thread cannot stop a Python loop from outside, so the limit is enforced by interrupting the
*main* thread, where a Jupyter kernel runs the learner's code:

- ``"alarm"`` (Linux, macOS): ``signal.setitimer(ITIMER_REAL)`` delivers ``SIGALRM``, whose handler
  raises :class:`CaseTimeout` between two bytecodes of the running loop. The timer repeats every
  ``_REPEAT`` seconds; if the call is still running at the second interrupt (a loop that swallows
  the exception with a bare ``except:``), a trace function is installed on the running frames that
  raises again on every line, including inside the ``except`` block, so the exception escapes.
- ``"interrupt"`` (Windows, or wherever ``setitimer`` is missing): a watchdog thread calls
  ``_thread.interrupt_main(SIGINT)`` when the time is up; a temporary ``SIGINT`` handler turns that
  (and only that — a real Ctrl-C stays a ``KeyboardInterrupt``) into :class:`CaseTimeout`.
- ``"none"`` (called from a thread other than the main one, where signal handlers cannot be set): no
  limit can be enforced; the call runs to completion.

Either way a call stuck inside one long C function (a huge matmul) is interrupted only when that
function returns. The previous handlers and any pending ``ITIMER_REAL`` timer are restored afterwards.
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..validation import check_choice, check_float

__all__ = ["CaseTimeout", "CallOutcome", "available_strategy", "call_with_time_limit", "time_limit"]

_REPEAT = 0.25  # seconds between repeated interrupts once the limit has passed


class _Escalation:
    """Raise :class:`CaseTimeout` on every traced line of the running frames (see the docstring)."""

    def __init__(self) -> None:
        self.on = False
        self.previous_trace = None
        self.frames: dict[int, tuple[Any, Any]] = {}  # id -> (frame, its f_trace before)

    def tracer(self, frame, event, arg):  # noqa: ARG002 — sys.settrace signature
        if not self.on:
            return None
        if event == "line":  # a trace function that raises is removed: start() re-installs it
            raise CaseTimeout()
        return self.tracer

    def start(self, frame) -> None:
        """(Re-)install the tracer on ``frame`` and its callers; called at each repeated interrupt."""
        if not self.on:
            self.on = True
            self.previous_trace = sys.gettrace()
        sys.settrace(self.tracer)
        while frame is not None:  # frames already running need their own f_trace
            self.frames.setdefault(id(frame), (frame, frame.f_trace))
            frame.f_trace = self.tracer
            frame = frame.f_back

    def stop(self) -> None:
        if self.on:
            self.on = False
            sys.settrace(self.previous_trace)
            for frame, previous in self.frames.values():  # give debuggers/coverage theirs back
                frame.f_trace = previous
            self.frames.clear()


class CaseTimeout(BaseException):
    """Raised inside learner code whose call ran past its time limit.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that ``except Exception:`` in learner code
    does not swallow it.
    """


def available_strategy() -> str:
    """How :func:`time_limit` can interrupt code in the current thread: alarm, interrupt or none."""
    if threading.current_thread() is not threading.main_thread():
        return "none"
    if hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM"):
        return "alarm"
    return "interrupt"


@contextlib.contextmanager
def _alarm(seconds: float, state: dict) -> Iterator[None]:
    armed = {"on": True}
    escalation = _Escalation()

    def on_alarm(signum, frame):  # noqa: ARG001 — signal handler signature
        if armed["on"]:  # a SIGALRM still pending after the call returned is ignored
            if state["fired"]:
                escalation.start(frame)
            state["fired"] = True
            raise CaseTimeout()

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds, _REPEAT)
    start = time.monotonic()
    try:
        yield
    finally:
        armed["on"] = False
        escalation.stop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)  # runs a pending handler first (ignored)
        if previous_delay > 0:  # someone else's timer was pending: give it back what is left
            remaining = max(previous_delay - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


@contextlib.contextmanager
def _interrupt(seconds: float, state: dict) -> Iterator[None]:
    done = threading.Event()
    requested = threading.Event()
    escalation = _Escalation()

    def on_sigint(signum, frame):  # noqa: ARG001
        if done.is_set():
            return  # our own interrupt, arriving after the call returned: ignore it
        if requested.is_set():
            if state["fired"]:
                escalation.start(frame)
            state["fired"] = True
            raise CaseTimeout()
        raise KeyboardInterrupt  # a real Ctrl-C / kernel interrupt

    def watchdog():
        if done.wait(seconds):
            return
        requested.set()
        while True:  # repeat, in case learner code swallows the first one with a bare except
            _thread.interrupt_main(signal.SIGINT)
            if done.wait(_REPEAT):
                return

    previous_handler = signal.signal(signal.SIGINT, on_sigint)
    thread = threading.Thread(target=watchdog, name="minillm-check-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        escalation.stop()
        thread.join()
        signal.signal(signal.SIGINT, previous_handler)  # runs a pending handler first (ignored)


@contextlib.contextmanager
def time_limit(seconds: float | None, strategy: str | None = None) -> Iterator[dict]:
    """Run the ``with`` body under a time limit; yields a dict whose ``"fired"`` says if it ran out.

    ``CaseTimeout`` propagates out of the body when the limit is hit (the caller catches it).
    ``seconds=None`` or ``strategy="none"`` disables the limit. ``strategy`` defaults to
    :func:`available_strategy` (tests force ``"interrupt"`` to exercise the Windows path).
    """
    check_float("seconds", seconds, low=0, low_inclusive=False, allow_none=True)  # 0 would disarm
    state = {"fired": False, "strategy": "none"}
    strategy = check_choice("strategy", strategy or available_strategy(), ("alarm", "interrupt", "none"))
    if seconds is None or strategy == "none" or threading.current_thread() is not threading.main_thread():
        yield state
        return
    state["strategy"] = strategy
    manager = _alarm if strategy == "alarm" else _interrupt
    with manager(float(seconds), state):
        yield state


@dataclass
class CallOutcome:
    """What happened when a learner's function was called under a time limit."""

    value: Any = None
    error: BaseException | None = None  # the exception the function raised, if any
    timed_out: bool = False
    still_running: bool = False  # the thread fallback could not stop the call
    seconds: float = 0.0


def call_with_time_limit(fn: Callable, args: tuple = (), kwargs: dict | None = None,
                         seconds: float | None = None, strategy: str | None = None) -> CallOutcome:
    """Call ``fn(*args, **kwargs)``; never raises for the function's own errors or a timeout.

    In the main thread the call is interrupted after ``seconds`` (see :func:`time_limit`). In any
    other thread it runs in a daemon worker thread that is abandoned (left running) after
    ``seconds``, so the caller still gets an answer. ``KeyboardInterrupt`` (the learner pressing
    stop) propagates.
    """
    kwargs = kwargs or {}
    check_float("seconds", seconds, low=0, low_inclusive=False, allow_none=True)
    strategy = check_choice("strategy", strategy or available_strategy(), ("alarm", "interrupt", "none"))
    if threading.current_thread() is not threading.main_thread():
        strategy = "none"  # signal handlers can only be set in the main thread
    start = time.monotonic()
    if seconds is not None and strategy == "none":
        return _call_in_thread(fn, args, kwargs, seconds, start)
    outcome = CallOutcome()
    try:
        with time_limit(seconds, strategy) as state:
            outcome.value = fn(*args, **kwargs)
    except CaseTimeout:
        outcome.timed_out = True
    except (Exception, SystemExit) as exc:  # noqa: BLE001 — the learner's bug is reported, not raised
        outcome.error = exc
    if state["fired"]:  # also when learner code swallowed the CaseTimeout and returned
        outcome.timed_out, outcome.value, outcome.error = True, None, None
    outcome.seconds = time.monotonic() - start
    return outcome


def _call_in_thread(fn: Callable, args: tuple, kwargs: dict, seconds: float, start: float) -> CallOutcome:
    outcome = CallOutcome()

    def run():
        try:
            outcome.value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            outcome.error = exc

    worker = threading.Thread(target=run, name="minillm-check-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        return CallOutcome(timed_out=True, still_running=True, seconds=time.monotonic() - start)
    outcome.seconds = time.monotonic() - start
    return outcome
