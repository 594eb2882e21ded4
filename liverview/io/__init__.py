"""DICOM input: scan folders/zips/DICOMDIRs into series and load them as int16 HU volumes (Qt-free).

Typical use::

    from liverview.io import scan_paths, load_series
    scan = scan_paths("/media/cdrom")          # headers only: series + skipped files with reasons
    volume = load_series(scan.series[0])       # Volume: int16 (z, y, x), spacing_mm, geometry, UIDs
"""
from __future__ import annotations

from liverview.io.headers import FileHeader, FrameRef, read_header
from liverview.io.series import ScanResult, SeriesInfo, group_series, plane_name, scan_paths
from liverview.io.sources import SkippedFile, SourceError, collect_files
from liverview.io.pixels import FrameDecodeError
from liverview.io.volume import Volume, allocate_volume, fill_volume, load_series, pick_series, read_slice

__all__ = [
    "FileHeader", "FrameDecodeError", "FrameRef", "ScanResult", "SeriesInfo", "SkippedFile", "SourceError",
    "Volume", "allocate_volume", "collect_files", "fill_volume", "group_series", "load_series", "pick_series",
    "plane_name", "read_header", "read_slice", "scan_paths",
]
