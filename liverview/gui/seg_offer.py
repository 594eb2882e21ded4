"""DICOM SEGs that arrive with a study — in its folder, or retrieved from a PACS with it — offered as
lesions of the series they reference ("2 segmentations arrived with this study — show?"), through the
existing SEG import. Each SEG is offered once."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QMessageBox, QWidget

from liverview.gui.workers import BackgroundTask
from liverview.io.seg_import import segs_for_series
from liverview.io.volume import Volume


class SegOffer(QObject):
    def __init__(self, parent: QWidget, current_volume: Callable[[], Volume | None],
                 import_seg: Callable[[Path], int], register_task: Callable[[BackgroundTask], None]) -> None:
        super().__init__(parent)
        self._parent = parent
        self._current_volume = current_volume
        self._import_seg = import_seg
        self._register_task = register_task
        self.offered: set[Path] = set()
        #: (file, series) pairs already read: opening the next series of a study, or the same study
        #: again, must not re-read every skipped file's header.
        self._looked: set[tuple[Path, str]] = set()
        self.box: QMessageBox | None = None
        self.task: BackgroundTask | None = None

    def look(self, paths: Iterable[str | Path], volume: Volume) -> BackgroundTask | None:
        """Read the headers of `paths` in the background; offer those SEGs that reference `volume`'s
        series and were not offered before (once the answer comes, if the series is still open)."""
        series_uid = volume.series_uid
        candidates = [Path(p) for p in paths if Path(p) not in self.offered and (Path(p), series_uid) not in self._looked]
        if not candidates:
            return None
        self._looked.update((path, series_uid) for path in candidates)
        task = BackgroundTask(lambda progress, should_stop, report: segs_for_series(candidates, series_uid), self,
                              name="seg-offer")
        self._register_task(task)
        task.finished.connect(lambda found: self._ask(found, series_uid))
        self.task = task
        task.start()
        return task

    def _ask(self, found: list[Path], series_uid: str) -> None:
        volume = self._current_volume()
        found = [path for path in found if path not in self.offered]
        if not found or volume is None or volume.series_uid != series_uid:
            return
        self.offered.update(found)
        n = len(found)
        box = QMessageBox(QMessageBox.Question, "Segmentations with this study",
                          f"{n} segmentation{'s' if n > 1 else ''} arrived with this study for "
                          "the open series — show them as lesions?", QMessageBox.Yes | QMessageBox.No, self._parent)
        box.setTextFormat(Qt.PlainText)
        box.button(QMessageBox.Yes).clicked.connect(lambda: [self._import_seg(path) for path in found])
        self.box = box
        box.show()


__all__ = ["SegOffer"]
