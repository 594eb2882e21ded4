"""The bundled demo study: a synthetic portal-venous abdominal CT with labelled liver lesions.

``write_demo_study(out_dir)`` writes ``out_dir/dicom/IM0001.dcm …`` and
``out_dir/ground-truth.json`` (liverview annotation format, version 1). The same seed and shape
always give byte-identical pixel data and the same UIDs.

Command line: ``liverview-demo DIR [--seed N] [--force]`` or ``python -m liverview.synth.demo DIR``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from liverview.atomic_write import write_json_atomic
from liverview.synth.acquisition import simulate_acquisition, to_int16_hu
from liverview.synth.dicom_writer import PatientInfo, SeriesPlacement, make_series_placement, write_ct_series
from liverview.synth.lesions import LesionClass, LesionSpec, insert_lesion, place_lesions
from liverview.synth.phantom import make_abdomen_phantom
from liverview.progress import Progress, ShouldStop, check_stop, scale_progress

logger = logging.getLogger(__name__)

DEFAULT_SEED = 20261128
DEMO_SHAPE_ZYX = (60, 512, 512)
#: Physical size the demo always covers (lung bases to below the liver tip, 40 cm field of view);
#: a smaller ``shape_zyx`` gives coarser voxels over the same anatomy.
DEMO_EXTENT_MM_ZYX = (180.0, 400.0, 400.0)
#: Fixed so the files do not change from one run to the next.
DEMO_STUDY_DATETIME = datetime(2026, 11, 28, 9, 41, 0)
GROUND_TRUTH_NAME = "ground-truth.json"
DICOM_DIR_NAME = "dicom"
#: Changing what the generator draws must change this, so old and new studies never share UIDs.
GENERATOR_VERSION = "1"

# (class, smallest, largest diameter in mm), largest first so the big ones still find room.
_DEMO_LESIONS: tuple[tuple[LesionClass, float, float], ...] = (
    (LesionClass.HCC, 42.0, 55.0),
    (LesionClass.HEMANGIOMA, 26.0, 38.0),
    (LesionClass.METASTASIS, 18.0, 28.0),
    (LesionClass.BENIGN_CYST, 12.0, 22.0),
    (LesionClass.METASTASIS, 12.0, 18.0),
    (LesionClass.METASTASIS, 10.0, 14.0),
)


@dataclass
class DemoVolume:
    """The demo's image (int16 HU, z from inferior to superior) with everything known about it."""

    hu: np.ndarray
    spacing_mm_zyx: tuple[float, float, float]
    organ_masks: dict[str, np.ndarray]
    lesions: list[LesionSpec]
    lesion_masks: list[np.ndarray]


@dataclass
class DemoStudy:
    """Where a written demo study lies and how it is identified."""

    out_dir: Path
    dicom_dir: Path
    ground_truth_path: Path
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: list[str]
    lesions: list[LesionSpec]


def demo_spacing(shape_zyx: tuple[int, int, int]) -> tuple[float, float, float]:
    """Voxel size that makes ``shape_zyx`` cover :data:`DEMO_EXTENT_MM_ZYX`."""
    return tuple(extent / n for extent, n in zip(DEMO_EXTENT_MM_ZYX, shape_zyx, strict=True))  # type: ignore[return-value]


def build_demo_volume(
    seed: int = DEFAULT_SEED,
    shape_zyx: tuple[int, int, int] = DEMO_SHAPE_ZYX,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> DemoVolume:
    """Generate the demo image in memory: phantom, lesions, then scanner blur and noise."""
    spacing = demo_spacing(shape_zyx)
    anatomy_seq, placement_seq, noise_seq = np.random.SeedSequence(seed).spawn(3)

    phantom = make_abdomen_phantom(
        shape_zyx,
        spacing,
        np.random.default_rng(anatomy_seq),
        progress=scale_progress(progress, 0.0, 0.6),
        should_stop=should_stop,
    )

    _report(progress, 0.6, "Placing liver lesions")
    placement_rng = np.random.default_rng(placement_seq)
    requests = [(cls, float(placement_rng.uniform(lo, hi))) for cls, lo, hi in _DEMO_LESIONS]
    specs = place_lesions(phantom.masks["liver"], spacing, requests, placement_rng)
    lesion_masks = []
    for spec in specs:
        lesion_masks.append(insert_lesion(phantom.hu, phantom.masks["liver"], spec, spacing))
        check_stop(should_stop)

    _report(progress, 0.8, "Simulating scanner blur and noise")
    simulate_acquisition(phantom.hu, spacing, np.random.default_rng(noise_seq))
    hu = to_int16_hu(phantom.hu)
    _report(progress, 1.0, "Image ready")
    return DemoVolume(
        hu=hu, spacing_mm_zyx=spacing, organ_masks=phantom.masks, lesions=specs, lesion_masks=lesion_masks
    )


def write_demo_study(
    out_dir: Path,
    seed: int = DEFAULT_SEED,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    shape_zyx: tuple[int, int, int] = DEMO_SHAPE_ZYX,
    overwrite: bool = False,
) -> DemoStudy:
    """Generate the demo study and write it under ``out_dir``.

    The series goes to a hidden temporary folder first and is renamed to ``dicom/`` only when
    complete, so a cancelled or failed run leaves no half-written study. An existing demo in
    ``out_dir`` is replaced only with ``overwrite=True`` (and only if ``dicom/`` holds nothing
    but ``IM*.dcm`` files); otherwise FileExistsError is raised.
    Raises :class:`~liverview.progress.Cancelled` when ``should_stop()`` returns True.
    """
    out_dir = Path(out_dir)
    dicom_dir = out_dir / DICOM_DIR_NAME
    truth_path = out_dir / GROUND_TRUTH_NAME
    _check_target(dicom_dir, truth_path, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)

    volume = build_demo_volume(seed, shape_zyx, scale_progress(progress, 0.0, 0.6), should_stop)
    identity = make_series_placement(
        ["liverview-demo", GENERATOR_VERSION, str(seed), "x".join(map(str, shape_zyx))],
        DEMO_STUDY_DATETIME,
    )
    partial = Path(tempfile.mkdtemp(prefix=".dicom-partial-", dir=out_dir))
    try:
        sop_uids = write_ct_series(
            volume.hu,
            volume.spacing_mm_zyx,
            partial,
            PatientInfo(),
            f"Portal venous {volume.spacing_mm_zyx[0]:g} mm (synthetic)",
            identity,
            progress=scale_progress(progress, 0.6, 0.97),
            should_stop=should_stop,
        )
        check_stop(should_stop)
        if dicom_dir.exists():
            shutil.rmtree(dicom_dir)  # _check_target made sure it is an earlier demo
        os.replace(partial, dicom_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise

    _report(progress, 0.98, "Writing ground truth")
    document = make_ground_truth(volume.lesions, volume.lesion_masks, identity, sop_uids)
    write_json_atomic(truth_path, document)
    _report(progress, 1.0, "Demo study ready")
    logger.info("demo study (seed %d) written to %s", seed, out_dir)
    return DemoStudy(
        out_dir=out_dir,
        dicom_dir=dicom_dir,
        ground_truth_path=truth_path,
        study_instance_uid=identity.study_instance_uid,
        series_instance_uid=identity.series_instance_uid,
        frame_of_reference_uid=identity.frame_of_reference_uid,
        sop_instance_uids=sop_uids,
        lesions=volume.lesions,
    )


def make_ground_truth(
    lesions: Sequence[LesionSpec],
    lesion_masks: Sequence[np.ndarray],
    identity: SeriesPlacement,
    sop_instance_uids: Sequence[str],
) -> dict[str, Any]:
    """liverview annotation document (format version 1) with one polygon ROI per lesion slice.

    Polygons are the outer contours of each slice's mask (cv2.findContours, simple chain) in
    pixel coordinates: x = column, y = row, at pixel centres. A slice where a lobulated lesion
    falls apart into pieces gets one ROI per piece. ``slice_index`` counts slices in the order of
    their position along the slice normal, which is the array order.
    """
    entries = []
    for number, (spec, mask) in enumerate(zip(lesions, lesion_masks, strict=True), start=1):
        rois = []
        for k in np.flatnonzero(mask.any(axis=(1, 2))):
            contours, _ = cv2.findContours(mask[k].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for contour in contours:
                rois.append(
                    {
                        "slice_index": int(k),
                        "sop_instance_uid": sop_instance_uids[k],
                        "kind": "polygon",
                        "points_xy": [[float(x), float(y)] for x, y in contour[:, 0, :]],
                    }
                )
        entries.append(
            {
                "id": f"L{number}",
                "label": spec.lesion_class.value,
                "reader": "ground-truth",
                "confidence": "certain",
                "note": "",
                "rois": rois,
                "synth": spec.to_dict(),
            }
        )
    return {
        "format": "liverview.annotations",
        "version": 1,
        "study_instance_uid": identity.study_instance_uid,
        "series_instance_uid": identity.series_instance_uid,
        "frame_of_reference_uid": identity.frame_of_reference_uid,
        "source": "liverview-demo synthetic ground truth",
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lesions": entries,
    }


#: The multiphase demo: one simulated patient with a lesion of each class, seen in four contrast phases.
MULTIPHASE_SEED = 11
MULTIPHASE_PHASES = ("non_contrast", "arterial", "portal_venous", "delayed")
#: Rows and columns of the four-phase demo: the phantom's body (about 300 x 216 mm) at the simulator's
#: finest pixels (0.66 mm).
MULTIPHASE_MATRIX_YX = (384, 512)


@dataclass
class MultiphaseDemo:
    dicom_dir: Path
    series_dirs: dict[str, Path]
    ground_truth_path: Path
    n_lesions: int


def write_multiphase_demo(out_dir: Path, seed: int = MULTIPHASE_SEED, overwrite: bool = False) -> MultiphaseDemo:
    """Write a simulated four-phase liver CT study (non-contrast, arterial, portal-venous, delayed: one
    series each, one study and Frame of Reference, the scanner's small differences between phases) with
    a lesion of each class, as ``out_dir/dicom/<phase>/IM*.dcm``, and its ground truth (outlined on the
    portal-venous series) as ``out_dir/ground-truth.json``. It is the simulator's patient (docs/synth.md),
    a slab through the liver, in a field of view of the whole abdomen."""
    from liverview.synth.simulator import SimulatorConfig, patient_document, simulate_patient, write_patient_study

    out_dir = Path(out_dir)
    dicom_dir, truth_path = out_dir / DICOM_DIR_NAME, out_dir / GROUND_TRUTH_NAME
    if (dicom_dir.exists() or truth_path.exists()) and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a demo study ({DICOM_DIR_NAME}/ or {GROUND_TRUTH_NAME}); "
                              "choose an empty folder or allow overwriting")
    # The whole abdomen, not the training data's slab around the liver: the phase detector finds the
    # aorta from the vertebra, so with it in view the demo's phases are read from its images too.
    config = SimulatorConfig(phases=MULTIPHASE_PHASES, diameter_mm=(15.0, 30.0), matrix_yx_px=MULTIPHASE_MATRIX_YX)
    patient = simulate_patient(seed, list(LesionClass), config, centre_xy_mm=(0.0, 0.0))
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".dicom-partial-", dir=out_dir))
    try:
        folders = write_patient_study(patient, partial)
        if dicom_dir.exists():
            shutil.rmtree(dicom_dir)
        os.replace(partial, dicom_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    document = patient_document(patient)
    write_json_atomic(truth_path, document.to_dict())
    return MultiphaseDemo(dicom_dir, {phase: dicom_dir / folder.name for phase, folder in folders.items()},
                          truth_path, len(document.lesions))


def _check_target(dicom_dir: Path, truth_path: Path, overwrite: bool) -> None:
    exists = dicom_dir.exists() or truth_path.exists()
    if exists and not overwrite:
        raise FileExistsError(
            f"{dicom_dir.parent} already holds a demo study ({dicom_dir.name}/ or {truth_path.name}); "
            "choose an empty folder or allow overwriting"
        )
    if dicom_dir.exists():
        foreign = [
            p.name for p in dicom_dir.iterdir() if not (p.is_file() and p.name.startswith("IM") and p.suffix == ".dcm")
        ]
        if foreign:
            raise FileExistsError(
                f"{dicom_dir} contains files the demo did not write ({', '.join(sorted(foreign)[:3])}…); "
                "refusing to replace it"
            )


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``liverview-demo DIR [--seed N] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="liverview-demo",
        description="Write the synthetic liverview demo CT study (DICOM series + ground-truth lesions).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  liverview-demo build/demo                           then: liverview build/demo/dicom\n"
               "  liverview-demo build/demo-4phase --multiphase       then: liverview build/demo-4phase/dicom",
    )
    parser.add_argument("out_dir", type=Path, help="folder to write dicom/ and ground-truth.json into")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--force", action="store_true", help="replace a demo study already in the folder")
    parser.add_argument("--multiphase", action="store_true",
                        help="a simulated four-phase study (non-contrast, arterial, portal-venous, delayed) with a "
                             "lesion of each class, instead of the portal-venous abdomen")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.multiphase:
            seed = MULTIPHASE_SEED if args.seed == DEFAULT_SEED else args.seed
            multiphase = write_multiphase_demo(args.out_dir, seed=seed, overwrite=args.force)
            print(f"Wrote {len(multiphase.series_dirs)} series ({', '.join(multiphase.series_dirs)}) to "
                  f"{multiphase.dicom_dir}")
            print(f"Wrote ground truth for {multiphase.n_lesions} lesions to {multiphase.ground_truth_path}")
            return 0
        study = write_demo_study(args.out_dir, seed=args.seed, overwrite=args.force)
    except FileExistsError as exc:
        print(f"liverview-demo: {exc} (use --force to replace it)", file=sys.stderr)
        return 1
    print(f"Wrote {len(study.sop_instance_uids)} CT slices to {study.dicom_dir}")
    print(f"Wrote ground truth for {len(study.lesions)} lesions to {study.ground_truth_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
