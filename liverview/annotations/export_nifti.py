"""Lesions as a NIfTI-1 label map (+ JSON sidecar) and as a CSV lesion table.

NIfTI geometry. liverview's `Volume` is indexed (z, y, x) = (slice, row, column) and
`index_to_patient` gives DICOM patient coordinates (LPS: +x left, +y posterior, +z head):

    P_lps(z, y, x) = positions_mm[z] + x * dx * row_direction + y * dy * column_direction

NIfTI stores voxel (i, j, k) with i varying fastest and its affine maps (i, j, k) to RAS
(+x right, +y anterior, +z head). So the label map is stored as array[x, y, z] (i = column,
j = row, k = slice; the transpose of our (z, y, x) array) and

    affine_ras = diag(-1, -1, 1, 1) @ [[row_dir * dx, col_dir * dy, slice_step, positions_mm[0]], [0, 0, 0, 1]]

where slice_step = (positions_mm[-1] - positions_mm[0]) / (n - 1): the actual displacement between
slices, which is exact for gantry-tilted stacks too. sform and qform both carry it (code 1,
scanner), which is how 3D Slicer, ITK-SNAP and nibabel place images, so the labels lie on the
DICOM images opened from the same folder. Uneven slice spacing cannot be expressed in one affine;
the sidecar warns about it.
"""
from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from liverview import __version__
from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.document import AnnotationDocument, Lesion
from liverview.annotations.export_common import ExportError, check_document_matches, export_identity, resolve_label
from liverview.annotations.labels import LabelTaxonomy
from liverview.annotations.measurements import format_measurement, lesion_mask, measure_lesion
from liverview.atomic_write import write_bytes_atomic, write_json_atomic, write_text_atomic
from liverview.annotations.storage import now_iso
from liverview.io.volume import Volume

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "liverview.nifti-labels"
SIDECAR_VERSION = 1
#: Slices whose position differs from the even-spacing model by more than this fraction of the
#: spacing make the sidecar warn.
UNEVEN_TOLERANCE = 0.05
#: LPS (DICOM) to RAS (NIfTI): x and y change sign.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_affine(volume: Volume) -> np.ndarray:
    """4x4 affine from NIfTI voxel (i = column, j = row, k = slice) to RAS millimetres."""
    n = volume.shape[0]
    positions = np.asarray(volume.positions_mm, dtype=float)
    step = (positions[-1] - positions[0]) / (n - 1) if n > 1 else np.asarray(volume.normal) * volume.spacing_mm[0]
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(volume.row_direction) * volume.spacing_mm[2]
    lps[:3, 1] = np.asarray(volume.column_direction) * volume.spacing_mm[1]
    lps[:3, 2] = step
    lps[:3, 3] = positions[0]
    return LPS_TO_RAS @ lps


def slice_spacing_deviation_mm(volume: Volume) -> float:
    """Largest distance of a slice from where even spacing between the first and last puts it."""
    n = volume.shape[0]
    if n < 3:
        return 0.0
    positions = np.asarray(volume.positions_mm, dtype=float)
    expected = positions[0] + np.outer(np.arange(n), (positions[-1] - positions[0]) / (n - 1))
    return float(np.linalg.norm(positions - expected, axis=1).max())


def label_map(volume: Volume, lesions: Sequence[Lesion]) -> np.ndarray:
    """int16 (z, y, x): 0 background, k = the k-th of `lesions`. A label map holds one label per voxel,
    so lesions that overlap are refused (ExportError naming them) rather than losing voxels."""
    if len(lesions) > np.iinfo(np.int16).max:
        raise ExportError(f"{len(lesions)} lesions do not fit an int16 label map")
    labels = np.zeros(volume.shape, dtype=np.int16)
    for k, lesion in enumerate(lesions, start=1):
        mask = lesion_mask(volume, lesion)
        overlap = mask & (labels > 0)
        if overlap.any():
            others = ", ".join(lesions[int(v) - 1].id for v in np.unique(labels[overlap]))
            raise ExportError(f"lesion {lesion.id} overlaps lesion {others} in {int(overlap.sum())} voxel(s); a NIfTI "
                              f"label map holds one lesion per voxel — separate the outlines, or export the "
                              f"consensus or one reader")
        labels[mask] = k
    return labels


def maps_by_reader(document: AnnotationDocument) -> list[tuple[str | None, list[Lesion]]]:
    """One label map for a consensus or a single reader; one per reader when several readers' lesions
    are exported (their outlines of one finding overlap by nature)."""
    readers = sorted({lesion.reader for lesion in document.lesions})
    if len(readers) <= 1 or any(lesion.consensus is not None for lesion in document.lesions):
        return [(None, list(document.lesions))]
    return [(reader, [lesion for lesion in document.lesions if lesion.reader == reader]) for reader in readers]


def _nifti_paths(out_path: str | os.PathLike[str], suffix: str = "") -> tuple[Path, Path]:
    """The image (.nii.gz unless `out_path` says .nii) and sidecar paths, `suffix` added to the stem."""
    path = Path(out_path)
    name = path.name
    ending = next((e for e in (".nii.gz", ".nii") if name.endswith(e)), "")
    stem = name[: len(name) - len(ending)] + suffix
    return path.with_name(stem + (ending or ".nii.gz")), path.with_name(stem + ".json")


def export_nifti(volume: Volume, document: AnnotationDocument, out_path: str | os.PathLike[str],
                 taxonomy: LabelTaxonomy | None = None, pseudonymize: bool = True,
                 pseudonymizer: Pseudonymizer | None = None, numbers: dict[str, str] | None = None) -> list[Path]:
    """Write the label map to `out_path` (.nii.gz, or .nii for uncompressed) and a JSON sidecar next
    to it (same stem, .json); with several readers' lesions, one pair per reader, `-reader1`,
    `-reader2`, … added to the stem (`maps_by_reader`). Returns the paths written, image then sidecar.

    The sidecar: ``{"format": "liverview.nifti-labels", "version": 1, "image": NAME, "reader": R,
    "labels": {"k": {"lesion_id", "lesion_number", "label", "label_name", "code", "reader", "readers", "decided_by",
    "confidence", "label_source", "n_voxels"}}, "source": {patient, study_uid, series_uid, ...},
    "warnings": [...]}``.
    """
    check_document_matches(volume, document)
    identity = export_identity(volume, pseudonymize, pseudonymizer)
    numbers = document.lesion_numbers() if numbers is None else numbers
    warnings = []
    deviation = slice_spacing_deviation_mm(volume)
    if deviation > UNEVEN_TOLERANCE * volume.spacing_mm[0]:
        warnings.append(f"slices are unevenly spaced (up to {deviation:.2f} mm off an even grid); the NIfTI affine "
                        f"assumes even spacing, so labels drift by up to that much")
    maps = maps_by_reader(document)
    planned = []
    for number, (reader, lesions) in enumerate(maps, start=1):
        suffix = "" if reader is None else f"-reader{number}"
        planned.append((reader, lesions, label_map(volume, lesions), *_nifti_paths(out_path, suffix)))
    written: list[Path] = []
    for reader, lesions, labels, image_path, sidecar_path in planned:
        _write_image(volume, labels, image_path)
        entries = {}
        for k, lesion in enumerate(lesions, start=1):
            label = resolve_label(lesion.label, taxonomy, document)
            origin = lesion.consensus
            entries[str(k)] = {"lesion_id": lesion.id, "lesion_number": numbers.get(lesion.id, ""),
                               "label": label.id, "label_name": label.name,
                               "code": label.code_dict(), "reader": identity.reader_of(lesion.reader),
                               "readers": [identity.reader_of(r) for r in origin.readers] if origin else None,
                               "decided_by": identity.reader_of(origin.decided_by) if origin and origin.decided_by else None,
                               "confidence": lesion.confidence, "label_source": lesion.label_source,
                               "n_voxels": int((labels == k).sum())}
        sidecar = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, "image": image_path.name,
                   "reader": identity.reader_of(reader) if reader else None,
                   "created": now_iso(), "liverview_version": __version__, "labels": entries,
                   "source": {**identity.source_fields(), "modality": volume.modality, "is_hu": volume.is_hu,
                              "shape_zyx": list(volume.shape)},
                   "geometry": {"affine_ras": nifti_affine(volume).round(6).tolist(),
                                "voxel_order": "i=column, j=row, k=slice"},
                   "warnings": warnings}
        write_json_atomic(sidecar_path, sidecar)
        log.info("wrote NIfTI label map %s (%d lesions) and %s", image_path, len(entries), sidecar_path)
        written += [image_path, sidecar_path]
    return written


def _write_image(volume: Volume, labels: np.ndarray, image_path: Path) -> None:
    import nibabel as nib

    affine = nifti_affine(volume)
    image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), affine)
    image.header.set_data_dtype(np.int16)
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    image.header["descrip"] = b"liverview lesion labels"
    image.header["intent_name"] = b"LABELS"
    raw = image.to_bytes()
    data = gzip.compress(raw, compresslevel=6, mtime=0) if image_path.name.endswith(".gz") else raw

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    write_bytes_atomic(image_path, write)


CSV_COLUMNS = (
    "patient", "patient_name", "patient_birth_date", "study_uid", "series_uid", "lesion_id", "lesion_number", "reader", "label",
    "label_name", "code_value", "code_scheme", "code_meaning", "confidence", "label_source", "slices", "n_slices",
    "long_axis_mm", "short_axis_mm", "area_mm2", "volume_ml", "n_voxels", "is_hu", "mean_hu", "sd_hu", "min_hu",
    "max_hu", "ai_model", "ai_predicted", "ai_probability", "ai_accepted_by", "ai_outdated", "readers", "decided_by",
    "ai_uncertainty", "ai_outside_training", "ai_phases_read",
)
#: CSV column -> `LesionMeasurement` field, written with the lesion table's rounding.
MEASURED_COLUMNS = {"long_axis_mm": "long_axis_mm", "short_axis_mm": "short_axis_mm", "area_mm2": "area_mm2",
                    "volume_ml": "volume_ml", "mean_hu": "mean", "sd_hu": "sd", "min_hu": "min", "max_hu": "max"}
# Spreadsheets run text starting with these as formulas; notes and names are untrusted input.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def _number(value: float, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def lesion_rows(volume: Volume, document: AnnotationDocument, taxonomy: LabelTaxonomy | None = None,
                pseudonymize: bool = True, pseudonymizer: Pseudonymizer | None = None,
                numbers: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The CSV rows as dictionaries (column -> text), one per lesion in document order. `numbers`: what the
    app calls each lesion (L1, L2, … of the whole series, before any choice of readers; default: this
    document's own numbering); a consensus lesion, made for the export, has none."""
    identity = export_identity(volume, pseudonymize, pseudonymizer)
    numbers = document.lesion_numbers() if numbers is None else numbers
    rows = []
    for lesion in document.lesions:
        label = resolve_label(lesion.label, taxonomy, document)
        m = measure_lesion(volume, lesion)
        code = label.code
        ai = lesion.current_ai()
        origin = lesion.consensus
        rows.append({
            "patient": _text(identity.patient), "patient_name": _text(identity.patient_name),
            "patient_birth_date": _text(identity.patient_birth_date), "study_uid": identity.study_uid,
            "series_uid": identity.series_uid, "lesion_id": _text(lesion.id),
            "lesion_number": numbers.get(lesion.id, ""),
            "reader": _text(identity.reader_of(lesion.reader)), "label": _text(label.id),
            "label_name": _text(label.name), "code_value": _text(code.value if code else ""),
            "code_scheme": _text(code.scheme if code else ""), "code_meaning": _text(code.meaning if code else ""),
            "confidence": _text(lesion.confidence), "label_source": _text(lesion.label_source),
            "slices": ";".join(str(z) for z in lesion.slices()), "n_slices": str(m.n_slices),
            **{column: format_measurement(m, name) for column, name in MEASURED_COLUMNS.items()},
            "n_voxels": str(m.n_voxels), "is_hu": "yes" if volume.is_hu else "no",
            "ai_model": _text(ai.model_id if ai else ""), "ai_predicted": _text(ai.predicted if ai else ""),
            # Outside the training data a probability means nothing: left out, as the panel leaves it out.
            "ai_probability": _number(ai.probabilities.get(ai.predicted, float("nan")), 4)
            if ai and not ai.outside_training else "",
            "ai_accepted_by": _text(identity.reader_of(ai.accepted_by) if ai and ai.accepted_by else ""),
            "ai_outdated": "yes" if lesion.ai is not None and ai is None else "",
            "readers": _text(";".join(identity.reader_of(r) for r in origin.readers) if origin else ""),
            "decided_by": _text(identity.reader_of(origin.decided_by) if origin and origin.decided_by else ""),
            "ai_uncertainty": _text(ai.uncertainty if ai and ai.uncertainty else ""),
            "ai_outside_training": _text("; ".join(ai.outside_training) if ai else ""),
            "ai_phases_read": ";".join(ai.phases_read) if ai else "",
        })
    return rows


def export_csv(volume: Volume, document: AnnotationDocument, path: str | os.PathLike[str],
               taxonomy: LabelTaxonomy | None = None, pseudonymize: bool = True,
               pseudonymizer: Pseudonymizer | None = None, numbers: dict[str, str] | None = None) -> Path:
    """Write the lesion table (`CSV_COLUMNS`, UTF-8, comma-separated, one row per lesion).

    `slices` lists 0-based slice indexes (as in the annotation JSON) separated by ";". Measurements
    are those of `measure_lesion`: RECIST long/short axis on the slice where the outline is longest,
    the largest outline area, volume over all slices, voxel statistics (HU when `is_hu`).
    """
    check_document_matches(volume, document)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lesion_rows(volume, document, taxonomy, pseudonymize, pseudonymizer, numbers))
    out = Path(path)
    write_text_atomic(out, buffer.getvalue())
    log.info("wrote lesion table %s (%d lesions)", out, len(document.lesions))
    return out


__all__ = ["CSV_COLUMNS", "SIDECAR_FORMAT", "export_csv", "export_nifti", "label_map", "lesion_rows", "maps_by_reader",
           "nifti_affine", "slice_spacing_deviation_mm"]
