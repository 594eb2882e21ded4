"""The source images of a pseudonymised export, de-identified with the same UID map as its SEG and SR.

A pseudonymised SEG or SR remaps every UID, its references to the images included, so that it belongs
to the pseudonymised study and nothing in it points back at the hospital's. Sent out on its own it
can only be matched to its images by position; sent with the images written here it is a complete,
consistent study (the pixel data are copied as they are: burned-in text is not removed, and files that
say they carry it are refused).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pydicom

from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.export_common import ExportError, withheld_warnings
from liverview.atomic_write import write_bytes_atomic
from liverview.io.volume import Volume
from liverview.progress import Progress, ShouldStop, check_stop

log = logging.getLogger(__name__)


def _saver(ds: pydicom.Dataset) -> Callable[[str], None]:
    return lambda tmp: ds.save_as(tmp, enforce_file_format=True)


def export_deidentified_images(volume: Volume, folder: Path, pseudonymizer: Pseudonymizer,
                               progress: Progress | None = None, should_stop: ShouldStop | None = None) -> list[Path]:
    """Write the series' files into `folder` (created; numbered 0001.dcm, …), each de-identified as in
    `deid` with every UID remapped. Raises ExportError for a source file that cannot be read or says
    it carries burned-in annotation; `Cancelled` when asked to stop (files written so far remain)."""
    paths = list(dict.fromkeys(frame.path for frame in volume.info.frames))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, source in enumerate(paths, start=1):
        check_stop(should_stop, "writing the de-identified images")
        try:
            ds = pydicom.dcmread(source)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise ExportError(f"cannot re-read source image {number} of the series: {exc}") from exc
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            raise ExportError(f"source image {number} says it carries burned-in text (Burned In Annotation YES); "
                              "liverview does not remove text from pixels — export the SEG/SR without the images")
        with withheld_warnings():
            pseudonymizer.deidentify_dataset(ds, uids="all")
        out = folder / f"{number:04d}.dcm"
        write_bytes_atomic(out, _saver(ds))
        written.append(out)
        if progress is not None:
            progress(number / len(paths), f"De-identified image {number} of {len(paths)}")
    log.info("wrote %d de-identified image(s) to %s", len(written), folder)
    return written


__all__ = ["export_deidentified_images"]
