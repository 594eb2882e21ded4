"""Progress reporting and cancellation for long synthetic-data jobs.

Long jobs are plain functions that take ``progress(fraction, message)`` and ``should_stop()``
callables (see docs/DESIGN: Threads); the GUI wraps them in a worker, tests call them directly.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[float, str], None]
StopFn = Callable[[], bool]


class GenerationCancelled(Exception):
    """Raised when ``should_stop()`` returned True; partial output has been removed."""


def check_stop(should_stop: StopFn | None) -> None:
    """Raise :class:`GenerationCancelled` if the caller asked to stop."""
    if should_stop is not None and should_stop():
        raise GenerationCancelled("synthetic study generation was cancelled")


def scale_progress(progress: ProgressFn | None, start: float, end: float) -> ProgressFn | None:
    """Map a sub-job's 0..1 progress onto ``start..end`` of the caller's progress."""
    if progress is None:
        return None
    span = end - start

    def report(fraction: float, message: str) -> None:
        progress(start + span * min(max(fraction, 0.0), 1.0), message)

    return report
