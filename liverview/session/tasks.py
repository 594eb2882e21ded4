"""Every background job of a session in one place, so that Cancel and Close see them all — loading,
phase detection, exports, PACS transfers alike."""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Task(Protocol):
    """What the registry needs of a job (the GUI's `BackgroundTask` is one)."""

    name: str

    def cancel(self) -> None: ...

    def is_running(self) -> bool: ...

    def wait(self, msecs: int = ...) -> bool: ...


class TaskRegistry:
    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._tasks: list[Task] = []
        self._on_change = on_change

    def add(self, task: Task) -> Task:
        self._tasks.append(task)
        self._changed()
        return task

    def discard(self, task: Task) -> None:
        if task in self._tasks:
            self._tasks.remove(task)
            self._changed()

    def running(self) -> list[Task]:
        return [task for task in self._tasks if task.is_running()]

    def cancel_all(self, keep: Callable[[Task], bool] = lambda task: False) -> list[Task]:
        """Ask every running task but those `keep` names to stop; returns the ones asked."""
        asked = [task for task in self.running() if not keep(task)]
        for task in asked:
            task.cancel()
        return asked

    def wait_all(self, msecs: int = 3000) -> bool:
        """Wait for the running tasks, `msecs` each at most; True when all ended."""
        return all(task.wait(msecs) for task in self.running())

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()
