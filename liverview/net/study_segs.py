"""DICOM SEG objects that arrived with a retrieved study, found for the series they annotate."""
from __future__ import annotations

import logging
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from liverview.io.seg_import import is_seg_file

log = logging.getLogger(__name__)


def referenced_series(path: Path) -> set[str]:
    """(0008,1115) Referenced Series Sequence of a SEG: the series its frames were drawn on."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    found = {str(item.get("SeriesInstanceUID", "")) for item in ds.get("ReferencedSeriesSequence", [])}
    return found - {""}


def find_segs_for_series(study_dir: Path, series_uid: str) -> list[Path]:
    """The SEG files under `study_dir` that reference `series_uid`, in a stable order."""
    found = []
    for path in sorted(Path(study_dir).rglob("*.dcm")):
        try:
            if is_seg_file(path) and series_uid in referenced_series(path):
                found.append(path)
        except (OSError, InvalidDicomError, AttributeError) as exc:
            log.warning("%s: not readable as a SEG (%s)", path.name, type(exc).__name__)
    return found
