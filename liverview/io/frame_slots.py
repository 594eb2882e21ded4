"""A small ring of frame-sized buffers shared with the worker processes that decode frames.

A worker that returned its decoded frame through the pool's pipe pickled half a megabyte per 512²
slice, pushed it through the kernel in 64 KB pieces and had the caller unpickle it: about a millisecond
of CPU a frame on each side, on the same two cores that decode. Workers write the frame into a slot of
a shared file mapping instead, and only the slot's number travels back.

The ring is a file in /dev/shm (memory), sized for the frames in flight, not for the volume: a few
megabytes, well inside the 64 MB a default container gives /dev/shm. Its space is reserved up front
(`posix_fallocate`), because writing to an mmap of a full tmpfs kills the process with SIGBUS instead
of raising. Where there is no /dev/shm or the space cannot be reserved, `open_slots` returns None and
frames come back through the pipe as before.

A process killed during a load (SIGKILL, a crash, the power) leaves its ring behind; the name carries the
owner's process id, and the next ring opened removes the rings of owners that are gone.
"""
from __future__ import annotations

import logging
import mmap
import os
import tempfile
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

SHM_DIR = "/dev/shm"
PREFIX = "liverview-frames-"


@dataclass(frozen=True)
class SlotRef:
    """Where a worker writes one frame: the ring's file, the slot and the frame's shape (int16)."""

    path: str
    slot: int
    shape: tuple[int, int]

    @property
    def offset(self) -> int:
        return self.slot * self.shape[0] * self.shape[1] * 2


class FrameSlots:
    """`count` int16 frames of `shape` in a shared file mapping; `close()` unmaps and removes it."""

    def __init__(self, path: str, count: int, shape: tuple[int, int]) -> None:
        self.path, self.count, self.shape = path, count, shape
        with open(path, "r+b") as fh:
            self._map = mmap.mmap(fh.fileno(), count * shape[0] * shape[1] * 2)
        self._frames = np.frombuffer(self._map, dtype=np.int16).reshape(count, *shape)

    def ref(self, index: int) -> SlotRef:
        """The slot of the `index`-th frame handed out: slots are reused round the ring."""
        return SlotRef(self.path, index % self.count, self.shape)

    def frame(self, ref: SlotRef) -> np.ndarray:
        """The frame a worker wrote into `ref` (a view: copy it before the slot comes round again)."""
        return self._frames[ref.slot]

    def close(self) -> None:
        del self._frames
        try:
            self._map.close()
        except BufferError:  # a caller still holds a view; the mapping goes with it
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def open_slots(count: int, shape: tuple[int, int]) -> FrameSlots | None:
    """A ring of `count` frames in /dev/shm, or None where that is not possible (no /dev/shm, no room)."""
    if not os.path.isdir(SHM_DIR) or not hasattr(os, "posix_fallocate"):
        return None
    remove_orphaned_rings()
    size = count * shape[0] * shape[1] * 2
    try:
        fd, path = tempfile.mkstemp(prefix=f"{PREFIX}{os.getpid()}-", dir=SHM_DIR)
    except OSError as exc:
        log.debug("no shared frame slots: %s", exc)
        return None
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        finally:
            os.close(fd)
        return FrameSlots(path, count, shape)
    except OSError as exc:
        log.debug("no shared frame slots (%d bytes): %s", size, exc)
        os.unlink(path)
        return None


def remove_orphaned_rings() -> list[str]:
    """Remove the rings whose owner process is gone (`liverview-frames-<pid>-…`); returns their names."""
    removed: list[str] = []
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return removed
    for name in names:
        owner = name[len(PREFIX):].split("-", 1)[0] if name.startswith(PREFIX) else ""
        if not owner.isdigit() or _alive(int(owner)):
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
        except OSError:  # another user's, or removed meanwhile
            pass
    return removed


def _alive(pid: int) -> bool:
    """Signal 0 asks whether a process exists without sending it anything."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    return True


class SlotWriter:
    """The worker's side: keeps the last ring it wrote to mapped (one load uses one ring)."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._map: mmap.mmap | None = None

    def frame(self, ref: SlotRef) -> np.ndarray:
        """A writable int16 view of the slot `ref`."""
        if ref.path != self._path:
            self.close()
            with open(ref.path, "r+b") as fh:
                self._map = mmap.mmap(fh.fileno(), 0)
            self._path = ref.path
        assert self._map is not None
        return np.frombuffer(self._map, dtype=np.int16, count=ref.shape[0] * ref.shape[1],
                             offset=ref.offset).reshape(ref.shape)

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still alive; the mapping goes with it
                pass
        self._map, self._path = None, None


__all__ = ["FrameSlots", "SlotRef", "SlotWriter", "open_slots", "remove_orphaned_rings"]
