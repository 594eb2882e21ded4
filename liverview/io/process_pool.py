"""The worker processes that scan headers and decode compressed frames on every core.

Header parsing and JPEG 2000 / JPEG-LS decoding are CPU-bound Python (or hold the GIL between
calls), so threads do not help; processes do. One pool serves the whole process and is created on
first use. Callers hand it chunks of work in order and consume the results in the same order, so what
they see - order, progress, cancellation, per-file errors - is what the sequential loop gave.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, TypeVar, cast

from liverview.progress import ShouldStop, check_stop

if TYPE_CHECKING:
    import multiprocessing.context
    from concurrent.futures import Future, ProcessPoolExecutor

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: `LIVERVIEW_WORKERS=1` turns the pool off (debugging, or a machine where processes cannot start).
WORKERS_ENV = "LIVERVIEW_WORKERS"
#: Workers yield the CPU to the window: painting the first slice must not wait behind decoding the rest.
WORKER_NICENESS = 5

#: How often a worker looks whether the process that started it is still there (seconds).
OWNER_CHECK_S = 1.0

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()
#: Set by `declare_threads_outside_python`: this process runs threads `threading` does not list.
_threads_outside_python = False


def declare_threads_outside_python() -> None:
    """Say that this process runs threads Python's `threading` does not see (Qt's): forking it could
    copy a lock one of them holds, so workers are then started by a fork server or spawned."""
    global _threads_outside_python
    _threads_outside_python = True


def worker_count() -> int:
    """Processes worth starting: the cores this process may run on (or `LIVERVIEW_WORKERS`)."""
    override = os.environ.get(WORKERS_ENV)
    if override:
        return max(1, int(override))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def _pool_executor() -> ProcessPoolExecutor:
    # Imported on first use: a small folder or an uncompressed series never starts workers.
    from concurrent.futures import ProcessPoolExecutor

    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ProcessPoolExecutor(max_workers=worker_count(), mp_context=_context(),
                                        initializer=_start_worker, initargs=(os.getpid(),))
            atexit.register(shut_down)
        return _pool


def _context() -> multiprocessing.context.BaseContext:
    """fork where it is safe - a single-threaded POSIX process (the command-line tools) starts workers
    in milliseconds - else forkserver or spawn: forking a process that runs other threads (the GUI)
    can copy a lock some other thread holds."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1 and not _threads_outside_python:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["liverview.io.headers", "liverview.io.pixels"])
        return context
    return multiprocessing.get_context("spawn")


def _start_worker(owner: int) -> None:
    if hasattr(os, "nice"):  # POSIX; Windows workers keep the normal priority
        os.nice(WORKER_NICENESS)
    # A killed owner (kill -9, a crash) runs no exit handler to stop its workers, and a worker waiting
    # for its next task would wait for ever (a fork server's workers even keep the fork server alive):
    # each leaves once the process that made the pool is gone.
    if os.name == "posix":
        threading.Thread(target=_leave_with_owner, args=(owner, os.getppid()), name="owner-watch",
                         daemon=True).start()


def _leave_with_owner(owner: int, parent: int) -> None:
    """Signal 0 asks whether a POSIX process exists without sending it anything. An owner that has
    exited but is not reaped yet still exists (a zombie): a forked worker also sees that its parent
    changed, which happens the moment the owner exits."""
    while True:
        time.sleep(OWNER_CHECK_S)
        if parent == owner and os.getppid() != owner:
            os._exit(0)
        try:
            os.kill(owner, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:  # the id now belongs to another user's process: still wait, harmlessly
            pass


def shut_down(wait: bool = False) -> None:
    """Stop the worker processes (at exit, or when a worker died); with `wait`, until they are gone."""
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=wait, cancel_futures=True)
            _pool = None


def map_in_order(fn: Callable[[T], R], items: Iterable[T], should_stop: ShouldStop | None = None,
                 ahead: int | None = None, what: str = "the job") -> Generator[R, None, None]:
    """`fn(item)` for every item, computed by the worker processes, yielded in the items' order.

    The first `ahead` items are handed to the workers at once (they start while the caller does other
    work); then at most `ahead` items are submitted beyond the one being yielded (bounding the memory of
    results waiting to be consumed). `should_stop()` is checked before each result and raises
    `Cancelled`, dropping what is still queued, as does closing the generator. A worker that dies (a
    decoder crash) raises `concurrent.futures.process.BrokenProcessPool`; the pool is then recreated on
    next use.
    """
    results = _in_order(fn, items, should_stop, ahead or 2 * worker_count(), what)
    next(results)  # runs up to its first yield: the first items are submitted
    return cast("Generator[R, None, None]", results)


def _in_order(fn: Callable[[T], R], items: Iterable[T], should_stop: ShouldStop | None, ahead: int,
              what: str) -> Generator[R | None, None, None]:
    pool = _pool_executor()
    pending: list[Future] = []
    iterator = iter(items)
    exhausted = False

    def top_up() -> bool:
        while len(pending) < ahead:
            try:
                pending.append(pool.submit(fn, next(iterator)))
            except StopIteration:
                return True
        return False

    try:
        exhausted = top_up()
        yield None
        while True:
            if not exhausted:
                exhausted = top_up()
            if not pending:
                return
            check_stop(should_stop, what)
            future = pending.pop(0)
            yield future.result()
    except BaseException:
        for future in pending:
            future.cancel()
        if _is_broken(pool):
            shut_down()
        raise


def _is_broken(pool: ProcessPoolExecutor) -> bool:
    return bool(getattr(pool, "_broken", False))


def worker_pid(_: object = None) -> int:
    """The process id of the worker running it (a task for tests and diagnostics)."""
    return os.getpid()


def chunks(items: list[T], size: int) -> list[list[T]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
