"""Study Root C-FIND at study, series and image level (PS3.4 C.6.2)."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum

from pydicom.dataset import Dataset
from pynetdicom import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from liverview.net.association import AssociationWatch, no_answer, open_association
from liverview.net.node import PacsNode
from liverview.net.status import CANCELLED, SUCCESS, is_pending, refusal, status_code
from liverview.progress import Cancelled, ShouldStop

FIND_MODEL = StudyRootQueryRetrieveInformationModelFind


class DatePreset(str, Enum):
    """The query form's study date choices."""

    TODAY = "today"
    YESTERDAY = "yesterday"
    LAST_WEEK = "last week"
    LAST_MONTH = "last month"
    ANY = "any"


def date_range_for(preset: DatePreset, today: dt.date) -> str:
    """(0008,0020) Study Date matching value for `preset`: ``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD`` or "" (any)."""
    start = {DatePreset.TODAY: today, DatePreset.YESTERDAY: today - dt.timedelta(days=1),
             DatePreset.LAST_WEEK: today - dt.timedelta(days=7),
             DatePreset.LAST_MONTH: today - dt.timedelta(days=31)}.get(preset)
    if start is None:
        return ""
    end = start if preset is DatePreset.YESTERDAY else today
    return start.strftime("%Y%m%d") if start == end else f"{start:%Y%m%d}-{end:%Y%m%d}"


@dataclass(frozen=True)
class StudyQuery:
    """What the user typed; empty fields match anything. `patient_name` may hold * and ? wildcards,
    `study_date` is ``YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``, ``-YYYYMMDD`` or ``YYYYMMDD-``."""

    patient_name: str = ""
    patient_id: str = ""
    accession_number: str = ""
    study_date: str = ""
    modality: str = ""
    study_description: str = ""


@dataclass(frozen=True)
class StudyMatch:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    accession_number: str
    modalities: tuple[str, ...]
    study_description: str
    n_series: int | None
    n_instances: int | None

    def to_json(self) -> dict:
        data = asdict(self)
        data["modalities"] = list(self.modalities)
        return data


@dataclass(frozen=True)
class SeriesMatch:
    study_uid: str
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    n_instances: int | None
    #: SOP Class UIDs of the series' instances, as far as the PACS told (empty: not told).
    sop_classes: tuple[str, ...]


@dataclass(frozen=True)
class ImageMatch:
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _count(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _values(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value in (None, ""):
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(str(v).strip() for v in items if str(v).strip())


def run_find(node: PacsNode, identifier: Dataset, on_match: Callable[[Dataset], None],
             should_stop: ShouldStop | None = None) -> None:
    """Send one C-FIND; `on_match` gets each answer as it arrives. C-CANCEL when `should_stop()` turns true."""
    watch = AssociationWatch()
    with open_association(node, [build_context(FIND_MODEL)], watch=watch) as assoc:
        context_id = assoc.accepted_contexts[0].context_id
        cancel_sent = False
        for status, answer in assoc.send_c_find(identifier, FIND_MODEL, msg_id=1):
            code = status_code(status)
            if is_pending(code):
                if answer is not None and not cancel_sent:
                    on_match(answer)
                if should_stop is not None and should_stop() and not cancel_sent:
                    assoc.send_c_cancel(1, context_id)
                    cancel_sent = True
                continue
            if code == CANCELLED or cancel_sent:
                raise Cancelled(f"The search on {node.name} was cancelled")
            if code == SUCCESS:
                return
            if code is None:
                raise no_answer(node, "search", watch)
            raise refusal(node, "search", status)


#: (0008,0005) of every query: ISO IR 192, UTF-8.
UTF8 = "ISO_IR 192"


def find_studies(node: PacsNode, query: StudyQuery, should_stop: ShouldStop | None = None,
                 on_match: Callable[[StudyMatch], None] | None = None) -> list[StudyMatch]:
    """Studies matching `query`; `on_match` sees each as it arrives."""
    ds = Dataset()
    # UTF-8, so that a name the default repertoire cannot hold (Иванов, Łukasz) is sent as written, not
    # as "??????", whose wildcards matched every patient, and answers come back with their letters.
    ds.SpecificCharacterSet = UTF8
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    ds.PatientName = query.patient_name
    ds.PatientID = query.patient_id
    ds.AccessionNumber = query.accession_number
    ds.StudyDate = query.study_date
    ds.StudyTime = ""
    ds.StudyDescription = query.study_description
    ds.ModalitiesInStudy = query.modality.upper()  # a code string: "ct" matched nothing
    ds.NumberOfStudyRelatedSeries = ""
    ds.NumberOfStudyRelatedInstances = ""
    found: list[StudyMatch] = []

    def collect(answer: Dataset) -> None:
        match = StudyMatch(study_uid=_text(answer, "StudyInstanceUID"), patient_name=_text(answer, "PatientName"),
                           patient_id=_text(answer, "PatientID"), study_date=_text(answer, "StudyDate"),
                           accession_number=_text(answer, "AccessionNumber"),
                           modalities=_values(answer, "ModalitiesInStudy"),
                           study_description=_text(answer, "StudyDescription"),
                           n_series=_count(answer, "NumberOfStudyRelatedSeries"),
                           n_instances=_count(answer, "NumberOfStudyRelatedInstances"))
        found.append(match)
        if on_match is not None:
            on_match(match)

    run_find(node, ds, collect, should_stop)
    return found


def find_series(node: PacsNode, study_uid: str, should_stop: ShouldStop | None = None) -> list[SeriesMatch]:
    """The series of one study, each with its instance count and SOP classes.

    (0008,0016) SOP Class UID is asked for at series level; PACS that leave it empty are asked per image
    (one C-FIND per such series), so a retrieve never proposes a SOP class blindly.
    """
    ds = Dataset()
    ds.SpecificCharacterSet = UTF8  # series descriptions in any script
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = ""
    ds.Modality = ""
    ds.SeriesNumber = ""
    ds.SeriesDescription = ""
    ds.NumberOfSeriesRelatedInstances = ""
    ds.SOPClassUID = ""
    answers: list[Dataset] = []
    run_find(node, ds, answers.append, should_stop)
    found = []
    for answer in answers:
        series_uid = _text(answer, "SeriesInstanceUID")
        sop_classes = _values(answer, "SOPClassUID")
        if not sop_classes:
            sop_classes = tuple(sorted({image.sop_class_uid for image in find_images(node, study_uid, series_uid, should_stop)
                                        if image.sop_class_uid}))
        found.append(SeriesMatch(study_uid=study_uid, series_uid=series_uid, modality=_text(answer, "Modality"),
                                 series_number=_count(answer, "SeriesNumber"),
                                 series_description=_text(answer, "SeriesDescription"),
                                 n_instances=_count(answer, "NumberOfSeriesRelatedInstances"),
                                 sop_classes=sop_classes))
    return sorted(found, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))


def find_images(node: PacsNode, study_uid: str, series_uid: str,
                should_stop: ShouldStop | None = None) -> list[ImageMatch]:
    """The instances of one series."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = ""
    ds.SOPClassUID = ""
    ds.InstanceNumber = ""
    found: list[ImageMatch] = []
    run_find(node, ds, lambda a: found.append(ImageMatch(_text(a, "SOPInstanceUID"), _text(a, "SOPClassUID"),
                                                         _count(a, "InstanceNumber"))), should_stop)
    return found
