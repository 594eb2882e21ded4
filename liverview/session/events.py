"""What a `Session` tells its listeners: one typed event per kind of change."""
from __future__ import annotations

import enum
from dataclasses import dataclass

from liverview.annotations.store import ChangeEvent


class SessionEventKind(enum.Enum):
    STUDY_SCANNED = "study_scanned"            # a folder's series are known (`Session.scan`)
    PHASES_DECIDED = "phases_decided"          # the contrast phase of every series (`Session.phases`)
    SERIES_OPENED = "series_opened"            # a volume and its annotations are open
    SERIES_CLOSED = "series_closed"
    ANNOTATIONS_CHANGED = "annotations_changed"  # `SessionEvent.change` says what
    SELECTION_CHANGED = "selection_changed"
    READERS_SHOWN = "readers_shown"            # which readers' lesions are visible
    TASKS_CHANGED = "tasks_changed"            # a background task started or ended


@dataclass(frozen=True)
class SessionEvent:
    kind: SessionEventKind
    #: The annotation store's own event, for ANNOTATIONS_CHANGED.
    change: ChangeEvent | None = None

    @property
    def geometry_changed(self) -> bool:
        return self.change is not None and self.change.geometry_changed
