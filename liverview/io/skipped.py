"""`SkippedFile`: a file that did not become part of any series, and why."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SkippedFile:
    """A file that did not become part of any series, and why (shown to the user verbatim)."""

    path: str
    reason: str
