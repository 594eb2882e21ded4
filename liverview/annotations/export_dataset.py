"""The training-dataset export: one patch per lesion at native resolution, plus one JSON line per lesion.

The folder's format belongs to `liverview.annotations.dataset_format` (docs/dataset-format.md). Exporting
more studies into the same folder adds to it; exporting a lesion again replaces its line and patch
(the lesion_uid is derived from the output series UID and the lesion id). With `other_phases` every
lesion is also read on the study's other contrast phases (`PhaseSource`): its outline is carried to
each of those series by patient coordinates (`transfer.transfer_lesion`, breathing shift aligned) and
that series is resampled onto the patch's voxels.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liverview import __version__
from liverview.annotations.dataset_format import (DATASET_VERSION, PATCHES_DIR, DatasetFolderLock, DatasetFormatError,
                                                  Patch, lines_text, manifest_for, patch_bbox, read_lesion_lines,
                                                  read_manifest, write_patch)
from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.document import AnnotationDocument, Lesion
from liverview.annotations.export_common import (ExportError, ExportIdentity, check_document_matches,
                                                 export_identity, lesion_masks, resolve_label)
from liverview.annotations.labels import LabelTaxonomy
from liverview.atomic_write import write_json_atomic, write_text_atomic
from liverview.annotations.storage import now_iso
from liverview.annotations.transfer import TransferError, transfer_lesion
from liverview.imaging.align import sample_trilinear
from liverview.io.volume import Volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseSource:
    """Another series of the study, in another contrast phase, to read every lesion on as well."""

    phase: str
    volume: Volume
    decided_by: str = ""


def lesion_uid(identity: ExportIdentity, lesion: Lesion) -> str:
    """20 hex digits from the output series UID and the lesion id: stable across re-exports, unique
    across studies, and no patient data in the file name."""
    return hashlib.sha256(f"{identity.series_uid}/{lesion.id}".encode()).hexdigest()[:20]


def lesion_record(volume: Volume, lesion: Lesion, mask: np.ndarray, bbox: np.ndarray, uid: str,
                  identity: ExportIdentity, taxonomy: LabelTaxonomy | None,
                  document: AnnotationDocument | None, phase: str = "unknown",
                  phases: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One line of lesions.jsonl. `phase` is the key series' contrast phase; `phases` what each other
    phase's array in the patch was read from (series UID, breathing shift, how its phase was decided)."""
    label = resolve_label(lesion.label, taxonomy, document)
    tight = patch_bbox(mask, 0, 0)
    ai = None
    answer = lesion.current_ai()
    if answer is not None:
        ai = {"model_id": answer.model_id, "predicted": answer.predicted, "probability": answer.probability,
              "probabilities": answer.probabilities}
    return {
        "format_version": DATASET_VERSION, "lesion_uid": uid, "file": f"{PATCHES_DIR}/{uid}.npz",
        "lesion_id": lesion.id, "label": label.id, "label_name": label.name, "code": label.code_dict(),
        "reader": identity.reader_of(lesion.reader), "confidence": lesion.confidence,
        "label_source": lesion.label_source, "ai": ai,
        "readers": [identity.reader_of(r) for r in lesion.consensus.readers] if lesion.consensus else None,
        "decided_by": (identity.reader_of(lesion.consensus.decided_by)
                       if lesion.consensus and lesion.consensus.decided_by else None),
        "spacing_mm": [float(s) for s in volume.spacing_mm], "source_shape": list(volume.shape),
        "bbox_zyx": bbox.tolist(), "lesion_bbox_zyx": tight.tolist(), "n_voxels": int(mask.sum()),
        "orientation": [float(v) for v in volume.row_direction + volume.column_direction],
        **identity.source_fields(), "modality": volume.modality, "is_hu": volume.is_hu,
        "contrast_phase": phase, "phases": phases or {},
        "liverview_version": __version__, "exported": now_iso(),
    }


def resample_onto_patch(volume: Volume, bbox: np.ndarray, target: Volume, shift_mm: np.ndarray) -> np.ndarray:
    """`target`'s HU at the voxels `bbox` of `volume` (moved by `shift_mm`, the breathing shift), trilinear,
    int16; outside `target` -1024."""
    zs, ys, xs = np.meshgrid(*(np.arange(a, b, dtype=float) for a, b in bbox), indexing="ij")
    affine = volume.affine_mm
    points = np.stack([zs.ravel(), ys.ravel(), xs.ravel()], axis=1) @ affine[:3, :3].T + affine[:3, 3] + shift_mm
    values = sample_trilinear(target.array, target.patient_to_index(points)).reshape(zs.shape)
    return np.nan_to_num(values, nan=-1024.0).round().clip(-32768, 32767).astype(np.int16)


def read_on_phase(lesion: Lesion, volume: Volume, bbox: np.ndarray, source: PhaseSource) -> tuple[np.ndarray, tuple]:
    """`source`'s HU on the voxels `bbox` of `volume`, where `lesion` is outlined: the outline carried to
    `source` by patient coordinates and the breathing shift aligned (`transfer_lesion`), then resampled;
    with the shift (mm). Raises `TransferError` when the lesion cannot be carried there."""
    shift = transfer_lesion(lesion, volume, source.volume).shift_mm
    return resample_onto_patch(volume, bbox, source.volume, np.asarray(shift)), shift


def export_dataset(volume: Volume, document: AnnotationDocument, out_dir: str | os.PathLike[str],
                   pseudonymize: bool = True, labelled_only: bool = True, taxonomy: LabelTaxonomy | None = None,
                   pseudonymizer: Pseudonymizer | None = None, phase: str = "unknown",
                   other_phases: Sequence[PhaseSource] = ()) -> int:
    """Add the lesions of `document` to the dataset folder `out_dir` (created when missing).

    `labelled_only` leaves out lesions without a label; lesions without an outline on the series
    are always left out. `phase` is the series' contrast phase; `other_phases` adds each lesion as
    read on those series (a lesion that cannot be carried to one is written without it, with the
    reason in the log). Returns the number of lesions written. Raises `ExportError`.
    """
    check_document_matches(volume, document)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / PATCHES_DIR).mkdir(exist_ok=True)
    taxonomy = taxonomy or LabelTaxonomy()
    identity = export_identity(volume, pseudonymize, pseudonymizer)
    try:
        with DatasetFolderLock(folder):
            manifest = read_manifest(folder, missing_ok=True)
            lines_path = folder / (manifest or {}).get("lesions", "lesions.jsonl")
            records = {r["lesion_uid"]: r for r in read_lesion_lines(lines_path)}
            written = 0
            for lesion, mask in lesion_masks(volume, document, labelled_only=labelled_only):
                bbox = patch_bbox(mask)
                region = tuple(slice(int(a), int(b)) for a, b in bbox)
                uid = lesion_uid(identity, lesion)
                arrays, read_from = {}, {}
                for source in other_phases:
                    try:
                        arrays[source.phase], shift = read_on_phase(lesion, volume, bbox, source)
                    except TransferError as exc:
                        log.warning("lesion %s is exported without its %s phase: %s", lesion.id, source.phase, exc)
                        continue
                    read_from[source.phase] = {"series_uid": identity.remap_uid(source.volume.series_uid),
                                               "shift_mm": [round(v, 2) for v in shift],
                                               "decided_by": source.decided_by}
                # Patches first, the index after: a crash leaves at most an unlisted patch, never a line
                # pointing at a missing file.
                write_patch(folder / PATCHES_DIR / f"{uid}.npz", Patch(
                    volume.array[region], mask[region], np.asarray(volume.spacing_mm), bbox, phase, arrays))
                records[uid] = lesion_record(volume, lesion, mask, bbox, uid, identity, taxonomy, document,
                                             phase, read_from)
                written += 1
            write_text_atomic(lines_path, lines_text(records.values()))
            write_json_atomic(folder / "dataset.json", manifest_for(
                records.values(), _classes(manifest, taxonomy, document), previous=manifest, now=now_iso,
                liverview_version=__version__, **_kept_keys(manifest)))
    except DatasetFormatError as exc:
        raise ExportError(str(exc)) from exc
    log.info("added %d lesion(s) to dataset %s (%d in total)", written, folder, len(records))
    return written


def _classes(previous: dict[str, Any] | None, taxonomy: LabelTaxonomy,
             document: AnnotationDocument) -> list[dict[str, Any]]:
    """What the folder had, then this taxonomy: earlier classes keep their place."""
    classes = [{"id": item["id"], "name": item.get("name", item["id"]), "code": item.get("code")}
               for item in (previous or {}).get("classes", [])]
    for label in taxonomy:
        info = resolve_label(label.id, taxonomy, document)
        classes.append({"id": label.id, "name": info.name, "code": info.code_dict()})
    return classes


def _kept_keys(previous: dict[str, Any] | None) -> dict[str, Any]:
    """Keys another writer put in dataset.json (a description, the simulator's runs), carried over."""
    own = {"format", "version", "created", "modified", "liverview_version", "lesions", "patches", "patch",
           "n_lesions", "n_unlabelled", "contrast_phases", "classes"}
    return {k: v for k, v in (previous or {}).items() if k not in own}


__all__ = ["PhaseSource", "export_dataset", "lesion_record", "lesion_uid", "read_on_phase", "resample_onto_patch"]
