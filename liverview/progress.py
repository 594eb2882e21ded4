"""Progress reporting and cancellation for every long job (loading, generation, training, export,
network transfers).

Long jobs are plain functions that take ``progress(fraction, message)`` and ``should_stop()``
callables (DESIGN.md: Threads, after Orange); the GUI wraps them in a worker, tests call them
directly. Every job stops the same way: by raising :class:`Cancelled`.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]
ShouldStop = Callable[[], bool]


class Cancelled(Exception):
    """The caller's ``should_stop()`` returned True; the job undid what it had half done."""


def check_stop(should_stop: ShouldStop | None, what: str = "the job") -> None:
    """Raise :class:`Cancelled` if the caller asked to stop."""
    if should_stop is not None and should_stop():
        raise Cancelled(f"{what} was cancelled")


def scale_progress(progress: Progress | None, start: float, end: float) -> Progress | None:
    """Map a sub-job's 0..1 progress onto ``start..end`` of the caller's progress."""
    if progress is None:
        return None
    span = end - start

    def report(fraction: float, message: str) -> None:
        progress(start + span * min(max(fraction, 0.0), 1.0), message)

    return report
