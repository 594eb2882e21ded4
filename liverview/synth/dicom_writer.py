"""Write a synthetic HU volume as a DICOM CT Image Storage series, one file per slice.

Storage choice: pixels are stored as **signed 16-bit integers equal to HU**
((0028,0103) Pixel Representation = 1, (0028,1052) Rescale Intercept = 0,
(0028,1053) Rescale Slope = 1). A viewer applying the modality LUT gets HU unchanged, and the
phantom's full range (-1024..3071) fits without an offset.

Geometry: axial slices with (0020,0037) Image Orientation (Patient) ``1\\0\\0\\0\\1\\0``; slice
``k`` of the ``(z, y, x)`` array is written at (0020,0032) Image Position (Patient)
``origin + k * spacing_z`` along +z (patient superior), so file order, (0020,0013) Instance Number
and the order of positions along the slice normal all agree with the array order.

UIDs are derived with :func:`pydicom.uid.generate_uid` from caller-given entropy, so writing the
same study twice gives the same UIDs (and, with the same pixels, byte-identical files).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from liverview import __version__
from liverview.progress import Progress, ShouldStop, check_stop

logger = logging.getLogger(__name__)

#: (center, width, explanation) written as (0028,1050)/(0028,1051)/(0028,1055); liver first.
DEFAULT_WINDOWS: tuple[tuple[float, float, str], ...] = ((60.0, 150.0, "LIVER"), (40.0, 400.0, "ABDOMEN"))


@dataclass(frozen=True)
class PatientInfo:
    """Identifying details written into every file (what de-identification has to remove).

    The defaults are realistic in form but fictitious; "DEMO" in the name and ID make that plain.
    Dates are DICOM DA strings (YYYYMMDD); names are PN strings (family^given^middle^prefix).
    """

    name: str = "DEMO^Hepatica"
    patient_id: str = "LV-DEMO-0001"
    birth_date: str = "19580412"
    sex: str = "F"
    accession_number: str = "LVDEMO20261128"
    referring_physician_name: str = "EXAMPLE^Referrer^^Dr"
    institution_name: str = "liverview Demo Hospital"


@dataclass(frozen=True)
class SeriesPlacement:
    """The UIDs and dates that place a series in a study and a frame of reference."""

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    study_datetime: datetime
    study_id: str = "1"
    series_number: int = 1
    #: When this series was acquired (Series/Acquisition/Content Time); the study's time by default.
    acquired: datetime | None = None

    def sop_instance_uid(self, index: int) -> str:
        """(0008,0018) SOP Instance UID of slice ``index``, stable for this series."""
        return generate_uid(entropy_srcs=[self.series_instance_uid, "sop", str(index)])


def make_series_placement(
    entropy_srcs: Sequence[str],
    study_datetime: datetime,
    series_number: int = 1,
) -> SeriesPlacement:
    """Derive study, series and frame-of-reference UIDs deterministically from ``entropy_srcs``.

    The same sources always give the same UIDs; include everything that makes the content
    different (seed, geometry, generator version) so different content never shares a UID.
    """
    sources = [str(s) for s in entropy_srcs]
    study = generate_uid(entropy_srcs=[*sources, "study"])
    return SeriesPlacement(
        study_instance_uid=study,
        series_instance_uid=generate_uid(entropy_srcs=[*sources, "series", str(series_number)]),
        frame_of_reference_uid=generate_uid(entropy_srcs=[*sources, "frame-of-reference"]),
        study_datetime=study_datetime,
        series_number=series_number,
    )


def write_ct_series(
    hu_int16_zyx: np.ndarray,
    spacing_mm_zyx: tuple[float, float, float],
    out_dir: Path,
    patient: PatientInfo,
    series_description: str,
    identity: SeriesPlacement,
    *,
    study_description: str = "CT ABDOMEN WITH IV CONTRAST",
    contrast_agent: str = "Iohexol 350 mgI/ml",
    windows: Sequence[tuple[float, float, str]] = DEFAULT_WINDOWS,
    origin_mm_xyz: tuple[float, float, float] | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> list[str]:
    """Write ``IM0001.dcm`` … into ``out_dir``; return the SOP Instance UIDs in slice order.

    ``hu_int16_zyx`` is int16 HU, slice 0 the most inferior. ``origin_mm_xyz`` is the
    Image Position (Patient) of slice 0's first pixel; by default the in-plane centre of the image
    is the patient-space origin and the top slice lies at z = 0. Existing files are never
    overwritten (FileExistsError). Raises Cancelled when ``should_stop()`` turns True;
    the files written so far are left for the caller to remove.
    """
    if hu_int16_zyx.dtype != np.int16 or hu_int16_zyx.ndim != 3:
        raise ValueError(f"expected an int16 (z, y, x) volume, got {hu_int16_zyx.dtype} {hu_int16_zyx.shape}")
    nz, ny, nx = hu_int16_zyx.shape
    dz, dy, dx = (float(v) for v in spacing_mm_zyx)
    if origin_mm_xyz is None:
        origin_mm_xyz = (-(nx - 1) / 2 * dx, -(ny - 1) / 2 * dy, -(nz - 1) * dz)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    uids = []
    for k in range(nz):
        check_stop(should_stop)
        uid = identity.sop_instance_uid(k)
        position = (origin_mm_xyz[0], origin_mm_xyz[1], origin_mm_xyz[2] + k * dz)
        ds = _slice_dataset(
            hu_int16_zyx[k],
            k,
            uid,
            position,
            (dz, dy, dx),
            patient,
            identity,
            series_description,
            study_description,
            contrast_agent,
            windows,
        )
        ds.save_as(out_dir / f"IM{k + 1:04d}.dcm", enforce_file_format=True, overwrite=False)
        uids.append(uid)
        if progress is not None:
            progress((k + 1) / nz, f"Writing slice {k + 1} of {nz}")
    logger.info("wrote %d CT slices to %s", nz, out_dir)
    return uids


def _slice_dataset(
    pixels: np.ndarray,
    index: int,
    sop_instance_uid: str,
    position_mm: tuple[float, float, float],
    spacing_mm_zyx: tuple[float, float, float],
    patient: PatientInfo,
    identity: SeriesPlacement,
    series_description: str,
    study_description: str,
    contrast_agent: str,
    windows: Sequence[tuple[float, float, str]],
) -> Dataset:
    dz, dy, dx = spacing_mm_zyx
    ny, nx = pixels.shape
    study_date = identity.study_datetime.strftime("%Y%m%d")
    study_time = identity.study_datetime.strftime("%H%M%S")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"LIVERVIEW_{__version__}"[:16]

    ds = Dataset()
    ds.file_meta = meta
    # SOP Common
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    # Patient
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = _age_string(patient.birth_date, identity.study_datetime.date())
    # General Study
    ds.StudyInstanceUID = identity.study_instance_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.ReferringPhysicianName = patient.referring_physician_name
    ds.StudyID = identity.study_id
    ds.AccessionNumber = patient.accession_number
    ds.StudyDescription = study_description
    # General Series
    ds.Modality = "CT"
    ds.SeriesInstanceUID = identity.series_instance_uid
    ds.SeriesNumber = identity.series_number
    acquired = identity.acquired or identity.study_datetime
    acquired_time = acquired.strftime("%H%M%S")
    ds.SeriesDate = study_date
    ds.SeriesTime = acquired_time
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    # Frame of Reference
    ds.FrameOfReferenceUID = identity.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    # General Equipment
    ds.Manufacturer = "liverview"
    ds.InstitutionName = patient.institution_name
    ds.ManufacturerModelName = "synthetic phantom"
    ds.SoftwareVersions = __version__
    # General Image / General Acquisition
    ds.InstanceNumber = index + 1
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.DerivationDescription = "Procedurally generated synthetic phantom; not a patient image"
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study_date
    ds.AcquisitionTime = acquired_time
    ds.ContentDate = study_date
    ds.ContentTime = acquired_time
    ds.BurnedInAnnotation = "NO"
    # Image Plane
    ds.PixelSpacing = [_ds(dy), _ds(dx)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [_ds(v) for v in position_mm]
    ds.SliceThickness = _ds(dz)
    ds.SpacingBetweenSlices = _ds(dz)
    ds.SliceLocation = _ds(position_mm[2])
    # Contrast/Bolus, unless the series was acquired without contrast (contrast_agent "")
    if contrast_agent:
        ds.ContrastBolusAgent = contrast_agent
        ds.ContrastBolusRoute = "IV"
    # CT Image
    ds.KVP = 120
    ds.DataCollectionDiameter = _ds(max(nx * dx, ny * dy))
    ds.ReconstructionDiameter = _ds(max(nx * dx, ny * dy))
    ds.ConvolutionKernel = "STANDARD"
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    # VOI LUT
    ds.WindowCenter = [_ds(c) for c, _, _ in windows]
    ds.WindowWidth = [_ds(w) for _, w, _ in windows]
    ds.WindowCenterWidthExplanation = [e for _, _, e in windows]
    # Image Pixel: signed 16-bit HU (see module docstring)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ny
    ds.Columns = nx
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters, without trailing zeros."""
    return pydicom.valuerep.format_number_as_ds(float(value))


def _age_string(birth_date: str, on: date) -> str:
    """(0010,1010) Patient's Age as nnnY on the study date."""
    born = datetime.strptime(birth_date, "%Y%m%d").date()
    years = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    return f"{years:03d}Y"
