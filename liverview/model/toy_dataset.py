"""A small training dataset for smoke tests, benchmarks and architecture comparisons.

Each lesion is painted by the simulator (`liverview.synth.sample_lesion_spec` + `insert_lesion`) into a
small homogeneous block of liver parenchyma, given the scanner's blur and noise, and written in the
training-export format (dataset.json, lesions.jsonl, patches/<uid>.npz; see
`liverview.annotations.export_dataset`). It is *not* the simulator's dataset (`liverview-synth`,
whole phantom studies): no vessels, no neighbouring organs, one lesion per block. It exists so that
the pipeline can be exercised end to end in seconds without any other tool.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from liverview.progress import Progress
from liverview import __version__
from liverview.annotations.dataset_format import (DATASET_VERSION, PATCHES_DIR, Patch, lines_text, manifest_for,
                                                  patch_bbox, write_patch)
from liverview.annotations.storage import now_iso, write_json_atomic, write_text_atomic
from liverview.annotations.labels import BUILTIN_LABELS, LesionClass

log = logging.getLogger(__name__)



def write_toy_dataset(folder: str | Path, lesions_per_class: int = 6, seed: int = 0,
                      lesions_per_patient: int = 3, diameter_mm: tuple[float, float] = (8.0, 40.0),
                      spacing_mm: Sequence[float] = (2.5, 0.8, 0.8), noise_hu: tuple[float, float] = (8.0, 16.0),
                      classes: Sequence[LesionClass] = tuple(LesionClass),
                      progress: Progress | None = None) -> Path:
    """Write `lesions_per_class` simulated lesions of each class into `folder`; return the folder.

    Lesions are grouped into pseudo-patients of `lesions_per_patient` (mixed classes), so grouped
    splitting has something to do. Everything follows from `seed`.
    """
    from liverview.synth import insert_lesion, sample_lesion_spec, simulate_acquisition, to_int16_hu

    folder = Path(folder)
    (folder / PATCHES_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    plan = [c for c in classes for _ in range(lesions_per_class)]
    order = rng.permutation(len(plan))
    spacing = tuple(float(s) for s in spacing_mm)
    records = []
    for n, index in enumerate(order):
        lesion_class = plan[index]
        diameter = float(np.exp(rng.uniform(np.log(diameter_mm[0]), np.log(diameter_mm[1]))))
        half_mm = diameter * 0.75 + 15.0
        shape = tuple(int(np.ceil(2 * half_mm / s)) | 1 for s in spacing)
        centre = tuple((k - 1) / 2.0 * s for k, s in zip(shape, spacing))
        liver_hu = float(rng.uniform(95.0, 115.0))
        hu = np.full(shape, liver_hu, dtype=np.float32)
        liver = np.ones(shape, dtype=bool)
        spec = sample_lesion_spec(lesion_class, centre, diameter, int(rng.integers(0, 2**31 - 1)))
        mask = insert_lesion(hu, liver, spec, spacing)
        noise = float(rng.uniform(*noise_hu))
        simulate_acquisition(hu, spacing, rng, noise_sigma_hu=noise)
        if not mask.any():
            continue
        bbox = patch_bbox(mask)
        region = tuple(slice(int(a), int(b)) for a, b in bbox)
        patient = f"toy-{seed}-{n // lesions_per_patient:04d}"
        uid = hashlib.sha256(f"toy/{seed}/{n}".encode()).hexdigest()[:20]
        write_patch(folder / PATCHES_DIR / f"{uid}.npz",
                    Patch(to_int16_hu(hu)[region], mask[region], np.asarray(spacing), bbox, "portal_venous"))
        records.append({
            "format_version": DATASET_VERSION, "lesion_uid": uid, "file": f"patches/{uid}.npz",
            "lesion_id": f"L{n}", "label": lesion_class.value, "reader": "simulator", "confidence": "certain",
            "label_source": "simulator", "spacing_mm": list(spacing), "source_shape": list(shape),
            "bbox_zyx": bbox.tolist(), "lesion_bbox_zyx": patch_bbox(mask, 0, 0).tolist(),
            "n_voxels": int(mask.sum()), "patient": patient,
            "series_uid": f"2.25.{int(hashlib.sha256(patient.encode()).hexdigest()[:16], 16)}",
            "modality": "CT", "is_hu": True, "contrast_phase": "portal_venous", "phases": {},
            "synth": {**spec.to_dict(), "patient": {"noise_sigma_hu": round(noise, 2)}},
        })
        if progress is not None:
            progress((n + 1) / len(plan), "Simulating toy lesions")
    write_text_atomic(folder / "lesions.jsonl", lines_text(records))
    classes = [{"id": label.id, "name": label.name} for label in BUILTIN_LABELS if label.id in {c.value for c in classes}]
    write_json_atomic(folder / "dataset.json", manifest_for(
        records, classes, now=now_iso, liverview_version=__version__,
        description="toy dataset: simulated lesions in homogeneous liver blocks (liverview.model.toy_dataset)"))
    log.info("wrote %d toy lesions to %s", len(records), folder)
    return folder


__all__ = ["write_toy_dataset"]
