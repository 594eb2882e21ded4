"""Whether another process (the writer of a lock or a staging folder) still runs."""
from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when process `pid` exists (also when it belongs to another user: it is alive, just not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["pid_alive"]
