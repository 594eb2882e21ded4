"""The training-dataset folder: its one owner (layout, manifest, lesion lines, patches, lock).

The app's export, the simulator, training and the tests read and write datasets only through this
module. Layout (docs/dataset-format.md is the specification)::

    dataset.json        {"format": "liverview.dataset", "version": 2, "classes": [...], "patch": {...}, ...}
    lesions.jsonl       one JSON object per lesion
    patches/<lesion_uid>.npz
                        hu (int16, z y x), mask (bool, same shape), spacing_mm (float64 [3]),
                        bbox_zyx (int64 [3, 2]: start, stop in the source volume);
                        version 2 adds, for a lesion read on several contrast phases, one
                        hu_phase_<phase> (int16, same shape) per other phase: that series resampled
                        onto this patch's voxels by patient coordinates, and phase (the key series' phase)

Version 1 folders (no phases) are read as they are: their patches hold the key series only.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from liverview.atomic_write import write_bytes_atomic, write_json_atomic, write_text_atomic

DATASET_FORMAT = "liverview.dataset"
DATASET_VERSION = 2
MANIFEST_NAME = "dataset.json"
LINES_NAME = "lesions.jsonl"
PATCHES_DIR = "patches"
LOCK_NAME = ".export.lock"
#: Context around the lesion's bounding box: pixels in-plane, slices along z (clipped to the volume).
MARGIN_XY_PX = 16
MARGIN_Z_SLICES = 2
#: How each other phase's array is named inside a patch file.
PHASE_ARRAY_PREFIX = "hu_phase_"


class DatasetFormatError(ValueError):
    """A dataset folder, line or patch cannot be read or written; the message says which and why."""


@dataclass
class Patch:
    """One lesion's patch: the key series' HU around it at native resolution, the lesion mask, and the
    other contrast phases' HU resampled onto the same voxels."""

    hu: np.ndarray
    mask: np.ndarray
    spacing_mm: np.ndarray
    bbox_zyx: np.ndarray
    #: The key series' contrast phase ("unknown" for version-1 patches).
    phase: str = "unknown"
    #: Other phase -> int16 HU on this patch's voxels.
    phases: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def phase_names(self) -> list[str]:
        """Every phase the patch holds, the key series' first."""
        return [self.phase, *self.phases]

    def hu_of(self, phase: str) -> np.ndarray:
        return self.hu if phase == self.phase else self.phases[phase]


def patch_bbox(mask: np.ndarray, margin_xy: int = MARGIN_XY_PX, margin_z: int = MARGIN_Z_SLICES) -> np.ndarray:
    """[[z0, z1], [y0, y1], [x0, x1]] (half-open) of the mask's bounding box plus the margins,
    clipped to the volume. `mask` must not be empty."""
    bounds = []
    for axis, margin in zip(range(3), (margin_z, margin_xy, margin_xy)):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        bounds.append([max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + 1 + margin)])
    return np.asarray(bounds, dtype=np.int64)


def write_patch(path: Path, patch: Patch) -> None:
    """The patch as a compressed .npz, written atomically."""
    arrays = {"hu": np.ascontiguousarray(patch.hu, dtype=np.int16), "mask": np.ascontiguousarray(patch.mask, dtype=bool),
              "spacing_mm": np.asarray(patch.spacing_mm, dtype=np.float64),
              "bbox_zyx": np.asarray(patch.bbox_zyx, dtype=np.int64), "phase": np.asarray(patch.phase)}
    for name, hu in patch.phases.items():
        if hu.shape != patch.hu.shape:
            raise DatasetFormatError(f"{path}: phase {name} has shape {hu.shape}, the patch {patch.hu.shape}")
        arrays[PHASE_ARRAY_PREFIX + name] = np.ascontiguousarray(hu, dtype=np.int16)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its own options
    data = buffer.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    write_bytes_atomic(path, write)


def read_patch(path: Path) -> Patch:
    """A patch file, checked: hu and mask (z, y, x) alike, the mask not empty, every phase on the same voxels."""
    try:
        with np.load(path) as npz:
            hu, mask, spacing = npz["hu"], npz["mask"].astype(bool), npz["spacing_mm"]
            bbox = npz["bbox_zyx"] if "bbox_zyx" in npz else np.zeros((3, 2), dtype=np.int64)
            phase = str(npz["phase"]) if "phase" in npz else "unknown"
            phases = {key[len(PHASE_ARRAY_PREFIX):]: npz[key] for key in npz.files if key.startswith(PHASE_ARRAY_PREFIX)}
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise DatasetFormatError(f"patch {path} cannot be read ({exc})") from exc
    if hu.shape != mask.shape or hu.ndim != 3:
        raise DatasetFormatError(f"patch {path}: hu {hu.shape} and mask {mask.shape} must be (z, y, x) alike")
    if not mask.any():
        raise DatasetFormatError(f"patch {path}: the lesion mask is empty")
    for name, array in phases.items():
        if array.shape != hu.shape:
            raise DatasetFormatError(f"patch {path}: phase {name} {array.shape} is not on the patch's voxels {hu.shape}")
    return Patch(hu, mask, spacing, bbox, phase, phases)


def read_manifest(folder: Path, *, missing_ok: bool = False) -> dict[str, Any] | None:
    """dataset.json of `folder`, checked; None when there is none and `missing_ok` (a new dataset)."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        if missing_ok:
            return None
        if not Path(folder).is_dir():
            raise DatasetFormatError(f"{folder} is not a folder; give the folder written by the training-dataset export")
        raise DatasetFormatError(f"{folder} has no {MANIFEST_NAME}: not a liverview training dataset (export one "
                                 "with Export > Training dataset or liverview-export, or liverview-synth)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetFormatError(f"{path} cannot be read ({exc}); repair or move it") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise DatasetFormatError(f"{path} is not a liverview dataset manifest (format {DATASET_FORMAT!r} expected); "
                                 "choose another folder")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > DATASET_VERSION:
        raise DatasetFormatError(f"{path} has version {manifest.get('version')!r}, newer than this liverview reads "
                                 f"({DATASET_VERSION}); update liverview")
    return manifest


def iter_lesion_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-empty line of a lesions.jsonl; DatasetFormatError names a bad line."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path} line {number} is not valid JSON ({exc}); repair or move the file "
                                     "before adding to this dataset") from exc
        if not isinstance(record, dict):
            raise DatasetFormatError(f"{path} line {number} is not a liverview lesion record")
        yield number, record


def read_lesion_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a lesions.jsonl (empty list when there is none), each with its lesion_uid."""
    if not path.exists():
        return []
    records = []
    for number, record in iter_lesion_lines(path):
        if "lesion_uid" not in record:
            raise DatasetFormatError(f"{path} line {number} is not a liverview lesion record (no lesion_uid)")
        records.append(record)
    return records


def lines_text(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def append_lesion_lines(folder: Path, records: Iterable[dict[str, Any]]) -> None:
    """Add `records` to the folder's lesions.jsonl in one appending write, flushed to disk: a generator
    adding patient after patient never rewrites what is there (the index is rebuilt at the end)."""
    data = lines_text(records).encode("utf-8")
    fd = os.open(folder / LINES_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_for(records: Iterable[dict[str, Any]], classes: Iterable[dict[str, Any]], *, previous: dict | None = None,
                 now: Callable[[], str], liverview_version: str, **extra: Any) -> dict[str, Any]:
    """dataset.json for `records`: `classes` ({"id", "name", "code"}) in order, each with its lesion count,
    plus what the folder had before (created) and `extra` keys (description, simulator runs, ...)."""
    records = list(records)
    ordered: dict[str, dict[str, Any]] = {}
    for item in classes:
        ordered.setdefault(item["id"], {"id": item["id"], "name": item.get("name", item["id"]), "code": item.get("code")})
    counts: dict[str, int] = {}
    for record in records:
        label = record.get("label")
        if label is None:
            continue
        counts[label] = counts.get(label, 0) + 1
        ordered.setdefault(label, {"id": label, "name": record.get("label_name", label), "code": record.get("code")})
    for item in ordered.values():
        item["count"] = counts.get(item["id"], 0)
    phases = sorted({p for r in records for p in (r.get("phases") or {})} | {r["contrast_phase"] for r in records
                                                                             if r.get("contrast_phase")})
    return {
        "format": DATASET_FORMAT, "version": DATASET_VERSION,
        "created": (previous or {}).get("created", now()), "modified": now(), "liverview_version": liverview_version,
        "lesions": LINES_NAME, "patches": f"{PATCHES_DIR}/",
        "patch": {"margin_xy_px": MARGIN_XY_PX, "margin_z_slices": MARGIN_Z_SLICES, "resolution": "native"},
        "n_lesions": len(records), "n_unlabelled": sum(1 for r in records if r.get("label") is None),
        "contrast_phases": phases, "classes": list(ordered.values()), **extra,
    }


def write_dataset(folder: Path, lesions: Iterable[tuple[dict[str, Any], Patch]], classes: Iterable[dict[str, Any]], *,
                  now: Callable[[], str], liverview_version: str, **extra: Any) -> Path:
    """A new dataset folder made in one go from lesions held in memory (tests, benchmarks): each
    (lesion line, patch) becomes patches/<lesion_uid>.npz and a line naming it, then lesions.jsonl and
    dataset.json (`manifest_for` with `classes` and `extra`). The app's export adds to a folder under
    `DatasetFolderLock` instead."""
    folder = Path(folder)
    (folder / PATCHES_DIR).mkdir(parents=True, exist_ok=True)
    records = []
    for line, patch in lesions:
        record = {"format_version": DATASET_VERSION, "lesion_uid": line["lesion_uid"],
                  "file": f"{PATCHES_DIR}/{line['lesion_uid']}.npz", **line}
        write_patch(folder / record["file"], patch)
        records.append(record)
    write_text_atomic(folder / LINES_NAME, lines_text(records))
    write_json_atomic(folder / MANIFEST_NAME, manifest_for(records, classes, now=now,
                                                          liverview_version=liverview_version, **extra))
    return folder


class DatasetFolderLock:
    """Keeps two writers from merging lesions.jsonl into the same folder at once."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME

    def __enter__(self) -> DatasetFolderLock:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError as exc:
            raise DatasetFormatError(f"another export is writing to {self.path.parent} (lock file {self.path}); if "
                                     "none is running, delete the lock file and try again") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


__all__ = ["DATASET_FORMAT", "DATASET_VERSION", "DatasetFolderLock", "DatasetFormatError", "LINES_NAME", "LOCK_NAME",
           "MANIFEST_NAME", "MARGIN_XY_PX", "MARGIN_Z_SLICES", "PATCHES_DIR", "Patch", "lines_text", "manifest_for",
           "iter_lesion_lines", "patch_bbox", "read_lesion_lines", "read_manifest", "read_patch", "write_dataset",
           "write_patch"]
