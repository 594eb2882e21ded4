"""Lesion measurements as a DICOM Comprehensive 3D SR, TID 1500 "Imaging Measurement Report".

One TID 1411 "Volumetric ROI Measurements" group per lesion: the outlines as SCOORD polygons on
the CT slices (original SOP Instance UIDs), finding type = the label's code (generic "Lesion"
without one), finding site = Liver, tracking id = lesion id, and the measurements of
`measure_lesion`: Long axis and Short axis (mm, RECIST slice), Area (mm2, largest outline),
Volume (ml) and Mean (HU for CT).
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pydicom

from liverview import __version__
from liverview.annotations.deid import Pseudonymizer
from liverview.annotations.document import AnnotationDocument
from liverview.annotations.export_common import (ExportError, check_document_matches, export_identity, resolve_label,
                                                  withheld_warnings)
from liverview.atomic_write import write_bytes_atomic
from liverview.annotations.export_seg import GENERIC_LESION, read_source_datasets
from liverview.annotations.labels import LIVER, CodedConcept, LabelTaxonomy
from liverview.annotations.measurements import measure_lesion
from liverview.io.volume import Volume

if TYPE_CHECKING:
    import highdicom as hd

# highdicom is imported inside the functions: it takes a noticeable time to import, and modules
# that merely list the export formats (menus, the CLI's --help) should not pay for it.
log = logging.getLogger(__name__)

SERIES_DESCRIPTION = "liverview lesion measurements"
SERIES_NUMBER = 902


def _coded(concept: CodedConcept) -> hd.sr.CodedConcept:
    import highdicom as hd

    return hd.sr.CodedConcept(concept.value, concept.scheme, concept.meaning)


def build_sr(volume: Volume, document: AnnotationDocument, taxonomy: LabelTaxonomy | None = None,
             pseudonymize: bool = True, reader: str | None = None,
             pseudonymizer: Pseudonymizer | None = None) -> hd.sr.Comprehensive3DSR:
    """The measurement report as a `highdicom.sr.Comprehensive3DSR` (not yet written)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    check_document_matches(volume, document)
    sources, _ = read_source_datasets(volume)
    if len(sources) != volume.shape[0]:
        raise ExportError("SR export supports series stored as one file per slice")
    identity = export_identity(volume, pseudonymize, pseudonymizer)
    taxonomy = taxonomy or LabelTaxonomy()
    hu = codes.UCUM.HounsfieldUnit if volume.is_hu else hd.sr.CodedConcept("1", "UCUM", "no units")
    groups = []
    for lesion in document.lesions:
        regions = []
        for roi in lesion.rois:
            if not 0 <= roi.slice_index < volume.shape[0] or len(roi.points_xy) < 3:
                continue
            src = sources[roi.slice_index]
            # SCOORD pixel coordinates put the top-left pixel's centre at (0.5, 0.5); ours at (0, 0).
            points = np.asarray(roi.points_xy, dtype=np.float64) + 0.5
            points = np.vstack([points, points[:1]])  # 2-D SCOORD has no POLYGON: a closed POLYLINE
            regions.append(hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=points.astype(np.float32),
                source_image=hd.sr.SourceImageForRegion(str(src.SOPClassUID), str(src.SOPInstanceUID))))
        if not regions:
            log.warning("lesion %s has no outline inside the series; left out of the SR", lesion.id)
            continue
        m = measure_lesion(volume, lesion)
        measurements = [
            hd.sr.Measurement(name=codes.SCT.LongAxis, value=m.long_axis_mm, unit=codes.UCUM.Millimeter),
            hd.sr.Measurement(name=codes.SCT.ShortAxis, value=m.short_axis_mm, unit=codes.UCUM.Millimeter),
            hd.sr.Measurement(name=codes.SCT.Area, value=m.area_mm2, unit=codes.UCUM.SquareMillimeter),
            hd.sr.Measurement(name=codes.SCT.Volume, value=m.volume_ml, unit=hd.sr.CodedConcept("ml", "UCUM", "milliliter")),
        ]
        if not math.isnan(m.mean):
            measurements.append(hd.sr.Measurement(name=codes.SCT.Mean, value=m.mean, unit=hu))
        label = resolve_label(lesion.label, taxonomy, document)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=pydicom.uid.generate_uid(entropy_srcs=[identity.study_uid, lesion.id]), identifier=lesion.id[:64]),
            referenced_regions=regions, finding_type=_coded(label.code or GENERIC_LESION),
            finding_sites=[hd.sr.FindingSite(_coded(LIVER))], measurements=measurements))
    if not groups:
        raise ExportError("no lesion has an outline on this series; nothing to measure in an SR")

    creator = reader or (document.readers()[0] if len(document.readers()) == 1 else "liverview")
    name = identity.reader_of(creator)
    context = hd.sr.ObservationContext(observer_person_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=name if "^" in name else name + "^")))
    report = hd.sr.MeasurementReport(observation_context=context,
                                     procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources, content=report, series_instance_uid=hd.UID(), series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="liverview", is_complete=True,
        series_description=SERIES_DESCRIPTION)
    sr.SoftwareVersions = __version__
    if pseudonymize:
        p = pseudonymizer or Pseudonymizer.from_user_key()
        p.deidentify_dataset(sr, uids="all")  # consistent with the SEG and the de-identified images
        sr.SeriesDescription = SERIES_DESCRIPTION
    return sr


def export_sr(volume: Volume, document: AnnotationDocument, out_path: str | os.PathLike[str],
              taxonomy: LabelTaxonomy | None = None, pseudonymize: bool = True, reader: str | None = None,
              pseudonymizer: Pseudonymizer | None = None) -> Path:
    """Write the TID 1500 measurement report to `out_path`; pseudonymised like `export_seg`."""
    with withheld_warnings():
        sr = build_sr(volume, document, taxonomy, pseudonymize, reader, pseudonymizer)
    out = Path(out_path)
    write_bytes_atomic(out, lambda tmp: sr.save_as(tmp, enforce_file_format=True))
    log.info("wrote measurement SR to %s", out)
    return out


__all__ = ["build_sr", "export_sr"]
