"""The training dataset: one patch per lesion at native resolution, plus one JSON line per lesion.

Layout of a dataset folder (docs/dataset-format.md is the specification)::

    dataset.json        {"format": "liverview.dataset", "version": 1, "classes": [...], ...}
    lesions.jsonl       one JSON object per lesion (see `lesion_record`)
    patches/<lesion_uid>.npz
                        hu (int16, z y x), mask (bool, same shape), spacing_mm (float64 [3]),
                        bbox_zyx (int64 [3, 2]: start, stop in the source volume)

Exporting more studies into the same folder adds to it; exporting a lesion again replaces its line
and patch (the lesion_uid is derived from the output series UID and the lesion id).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from liverview import __version__
from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.document import AnnotationDocument, Lesion
from liverview.annotations.export_common import (ExportError, ExportIdentity, check_document_matches,
                                                 export_identity, lesion_masks, resolve_label, write_bytes_atomic)
from liverview.annotations.labels import LabelTaxonomy
from liverview.annotations.storage import now_iso, write_json_atomic, write_text_atomic
from liverview.io.volume import Volume

log = logging.getLogger(__name__)

DATASET_FORMAT = "liverview.dataset"
DATASET_VERSION = 1
#: Context around the lesion's bounding box: pixels in-plane, slices along z (clipped to the volume).
MARGIN_XY_PX = 16
MARGIN_Z_SLICES = 2
LOCK_NAME = ".export.lock"


def patch_bbox(mask: np.ndarray, margin_xy: int = MARGIN_XY_PX, margin_z: int = MARGIN_Z_SLICES) -> np.ndarray:
    """[[z0, z1], [y0, y1], [x0, x1]] (half-open) of the mask's bounding box plus the margins,
    clipped to the volume. `mask` must not be empty."""
    bounds = []
    for axis, margin in zip(range(3), (margin_z, margin_xy, margin_xy)):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        bounds.append([max(0, int(hits[0]) - margin), min(mask.shape[axis], int(hits[-1]) + 1 + margin)])
    return np.asarray(bounds, dtype=np.int64)


def lesion_uid(identity: ExportIdentity, lesion: Lesion) -> str:
    """20 hex digits from the output series UID and the lesion id: stable across re-exports, unique
    across studies, and no patient data in the file name."""
    return hashlib.sha256(f"{identity.series_uid}/{lesion.id}".encode()).hexdigest()[:20]


def lesion_record(volume: Volume, lesion: Lesion, mask: np.ndarray, bbox: np.ndarray, uid: str,
                  identity: ExportIdentity, taxonomy: LabelTaxonomy | None,
                  document: AnnotationDocument | None) -> dict[str, Any]:
    """One line of lesions.jsonl."""
    label = resolve_label(lesion.label, taxonomy, document)
    tight = patch_bbox(mask, 0, 0)
    ai = None
    if lesion.ai is not None:
        ai = {"model_id": lesion.ai.model_id, "predicted": lesion.ai.predicted,
              "probability": lesion.ai.probabilities.get(lesion.ai.predicted),
              "probabilities": lesion.ai.probabilities}
    return {
        "format_version": DATASET_VERSION, "lesion_uid": uid, "file": f"patches/{uid}.npz",
        "lesion_id": lesion.id, "label": label.id, "label_name": label.name, "code": label.code_dict(),
        "reader": identity.reader_of(lesion.reader), "confidence": lesion.confidence,
        "label_source": lesion.label_source, "ai": ai,
        "spacing_mm": [float(s) for s in volume.spacing_mm], "source_shape": list(volume.shape),
        "bbox_zyx": bbox.tolist(), "lesion_bbox_zyx": tight.tolist(), "n_voxels": int(mask.sum()),
        "orientation": [float(v) for v in volume.row_direction + volume.column_direction],
        **identity.source_fields(), "modality": volume.modality, "is_hu": volume.is_hu,
        "liverview_version": __version__, "exported": now_iso(),
    }


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    data = buffer.getvalue()

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    write_bytes_atomic(path, write)


def read_lesion_lines(path: Path) -> list[dict[str, Any]]:
    """The records of an existing lesions.jsonl (empty list when there is none)."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportError(f"{path} line {number} is not valid JSON ({exc}); repair or move the file "
                              f"before adding to this dataset") from exc
        if not isinstance(record, dict) or "lesion_uid" not in record:
            raise ExportError(f"{path} line {number} is not a liverview lesion record")
        records.append(record)
    return records


def read_dataset_manifest(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ExportError(f"{path} is damaged ({exc}); repair or move it before adding to this dataset") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != DATASET_FORMAT:
        raise ExportError(f"{path.parent} holds something other than a liverview dataset; choose an empty folder")
    if not isinstance(manifest.get("version"), int) or manifest["version"] > DATASET_VERSION:
        raise ExportError(f"{path.parent} is a liverview dataset of version {manifest.get('version')!r}, newer "
                          f"than this liverview writes ({DATASET_VERSION}); update liverview")
    return manifest


class DatasetFolderLock:
    """Keeps two exports from merging lesions.jsonl into the same folder at once."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME

    def __enter__(self) -> DatasetFolderLock:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError as exc:
            raise ExportError(f"another export is writing to {self.path.parent} (lock file {self.path}); if none "
                              f"is running, delete the lock file and try again") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def export_dataset(volume: Volume, document: AnnotationDocument, out_dir: str | os.PathLike[str],
                   pseudonymize: bool = True, labelled_only: bool = True, taxonomy: LabelTaxonomy | None = None,
                   pseudonymizer: Pseudonymizer | None = None) -> int:
    """Add the lesions of `document` to the dataset folder `out_dir` (created when missing).

    `labelled_only` leaves out lesions without a label; lesions without an outline on the series
    are always left out. Returns the number of lesions written. Raises `ExportError`.
    """
    check_document_matches(volume, document)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patches").mkdir(exist_ok=True)
    taxonomy = taxonomy or LabelTaxonomy()
    identity = export_identity(volume, pseudonymize, pseudonymizer)
    with DatasetFolderLock(folder):
        manifest = read_dataset_manifest(folder / "dataset.json")
        lines_path = folder / "lesions.jsonl"
        records = {r["lesion_uid"]: r for r in read_lesion_lines(lines_path)}
        written = 0
        for lesion, mask in lesion_masks(volume, document, labelled_only=labelled_only):
            bbox = patch_bbox(mask)
            region = tuple(slice(int(a), int(b)) for a, b in bbox)
            uid = lesion_uid(identity, lesion)
            # Patches first, the index after: a crash leaves at most an unlisted patch, never a line
            # pointing at a missing file.
            _write_npz(folder / "patches" / f"{uid}.npz", {
                "hu": np.ascontiguousarray(volume.array[region], dtype=np.int16),
                "mask": np.ascontiguousarray(mask[region]),
                "spacing_mm": np.asarray(volume.spacing_mm, dtype=np.float64),
                "bbox_zyx": bbox,
            })
            records[uid] = lesion_record(volume, lesion, mask, bbox, uid, identity, taxonomy, document)
            written += 1
        write_text_atomic(lines_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records.values()))
        write_json_atomic(folder / "dataset.json", _manifest(manifest, records.values(), taxonomy, document))
    log.info("added %d lesion(s) to dataset %s (%d in total)", written, folder, len(records))
    return written


def _manifest(previous: dict[str, Any] | None, records, taxonomy: LabelTaxonomy,
              document: AnnotationDocument) -> dict[str, Any]:
    """dataset.json: classes are the union of what the folder had, this taxonomy, and the labels used,
    in a stable order (earlier classes keep their place), with per-class lesion counts."""
    classes: dict[str, dict[str, Any]] = {}
    for item in (previous or {}).get("classes", []):
        classes[item["id"]] = {"id": item["id"], "name": item.get("name", item["id"]), "code": item.get("code")}
    for label in taxonomy:
        info = resolve_label(label.id, taxonomy, document)
        classes.setdefault(label.id, {"id": label.id, "name": info.name, "code": info.code_dict()})
    counts: dict[str, int] = {}
    records = list(records)
    for record in records:
        if record.get("label") is None:
            continue
        counts[record["label"]] = counts.get(record["label"], 0) + 1
        classes.setdefault(record["label"], {"id": record["label"], "name": record.get("label_name", record["label"]),
                                             "code": record.get("code")})
    for item in classes.values():
        item["count"] = counts.get(item["id"], 0)
    return {
        "format": DATASET_FORMAT, "version": DATASET_VERSION,
        "created": (previous or {}).get("created", now_iso()), "modified": now_iso(),
        "liverview_version": __version__, "lesions": "lesions.jsonl", "patches": "patches/",
        "patch": {"margin_xy_px": MARGIN_XY_PX, "margin_z_slices": MARGIN_Z_SLICES, "resolution": "native"},
        "n_lesions": len(records), "n_unlabelled": sum(1 for r in records if r.get("label") is None),
        "classes": list(classes.values()),
    }


__all__ = ["DATASET_FORMAT", "DATASET_VERSION", "MARGIN_XY_PX", "MARGIN_Z_SLICES", "export_dataset",
           "lesion_record", "lesion_uid", "patch_bbox", "read_lesion_lines"]
