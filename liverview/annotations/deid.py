"""Pseudonymisation of everything liverview exports, after DICOM PS3.15 Annex E (Basic Application
Level Confidentiality Profile, code 113100 DCM).

Choices (docs/annotation-exports.md explains them):

- Patient's Name and Patient ID become one stable pseudonym, ``LV-`` + 10 hex digits of
  HMAC-SHA256(secret, Patient ID). The same patient gets the same pseudonym in every export from
  this installation, so a clinic can accumulate follow-up studies; without the secret the pseudonym
  cannot be reversed or recomputed from a Patient ID.
- Dates (DA, DT) are shifted back by a per-patient number of days (365-3650) instead of removed:
  the "Retain Longitudinal Temporal Information with Modified Dates Option" (113107). Intervals
  between one patient's studies survive, the calendar dates do not. Birth date is emptied.
- Patient characteristics (sex, age, size, weight) are emptied/removed as the Basic Profile says,
  unless `keep_patient_characteristics` (the "Retain Patient Characteristics Option", 113108).
- Names of staff (referring, performing, reading physicians, operators, content creator) are removed
  or emptied; readers of liverview annotations get a stable pseudonym (``reader-`` + 6 hex) so that
  inter-reader analyses still work.
- UIDs: the object's own Study Instance UID is remapped deterministically (`remap_uid`); references
  to the source images (Referenced SOP Instance UID, Series, Frame of Reference) are kept by default,
  because an exported segmentation is useless if it cannot find its images. `uids="all"` remaps
  every UID consistently instead (for de-identifying the images themselves).

The secret lives in ``user_data_dir()/pseudonym.key`` (32 random bytes, hex), created once.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from liverview import __version__
from liverview.paths import user_data_dir

log = logging.getLogger(__name__)

KEY_FILE_NAME = "pseudonym.key"
PSEUDONYM_PREFIX = "LV-"
READER_PREFIX = "reader-"

#: (0012,0064) De-identification Method Code Sequence values (PS3.16 CID 7050).
BASIC_PROFILE = ("113100", "DCM", "Basic Application Confidentiality Profile")
MODIFIED_DATES_OPTION = ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option")
PATIENT_CHARACTERISTICS_OPTION = ("113108", "DCM", "Retain Patient Characteristics Option")

# Basic Profile actions for the attributes that can reach our exports (PS3.15 Table E.1-1):
# Z = keep the element with an empty value (Type 2 in our IODs), X = remove. Patient's Name and ID
# get the pseudonym (D); dates are shifted (see module docstring).
_EMPTY = (
    "PatientBirthDate", "AccessionNumber", "ReferringPhysicianName", "StudyID", "ContentCreatorName",
    "PerformedProcedureCodeSequence",
)
_REMOVE = (
    # patient
    "PatientBirthTime", "PatientAddress", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "PatientBirthName", "PatientMotherBirthName", "MedicalRecordLocator", "PatientTelephoneNumbers",
    "PatientInsurancePlanCodeSequence", "PatientPrimaryLanguageCodeSequence", "PatientReligiousPreference",
    "MilitaryRank", "BranchOfService", "CountryOfResidence", "RegionOfResidence", "EthnicGroup",
    "Occupation", "AdditionalPatientHistory", "PatientComments", "PatientState", "SmokingStatus",
    "Allergies", "LastMenstrualDate", "MedicalAlerts", "SpecialNeeds", "ResponsiblePerson",
    "ResponsibleOrganization", "IssuerOfPatientID", "ReferencedPatientSequence",
    "PatientTransportArrangements", "CurrentPatientLocation", "AdmissionID", "IssuerOfAdmissionIDSequence",
    "ServiceEpisodeID", "AdmittingDiagnosesDescription", "IssuerOfAccessionNumberSequence",
    # institution, staff, devices
    "InstitutionName", "InstitutionAddress", "InstitutionCodeSequence", "InstitutionalDepartmentName",
    "InstitutionalDepartmentTypeCodeSequence", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianName", "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy", "PhysiciansOfRecord",
    "RequestingPhysician", "ScheduledPerformingPhysicianName", "OperatorsName", "OperatorIdentificationSequence",
    "ContentCreatorIdentificationCodeSequence", "VerifyingObserverName", "VerifyingOrganization",
    "PersonAddress", "PersonTelephoneNumbers", "OrderEnteredBy", "OrderEntererLocation",
    "OrderCallbackPhoneNumber", "StationName", "DetectorID", "GantryID", "PlateID", "CassetteID",
    "PerformedLocation", "ScheduledStudyLocation",
    # orders and free text
    "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest", "RequestedProcedureID",
    "ScheduledProcedureStepID", "PerformedProcedureStepID", "RequestAttributesSequence",
    "RequestedProcedureDescription", "RequestedProcedureComments", "ScheduledProcedureStepDescription",
    "PerformedProcedureStepDescription", "StudyComments", "ImageComments", "TextComments",
    "DerivationDescription", "ProtocolName", "StudyDescription", "SeriesDescription",
    "ReferencedStudySequence", "ProcedureCodeSequence", "RequestedProcedureCodeSequence",
    "ReasonForRequestedProcedureCodeSequence", "AdmittingDiagnosesCodeSequence",
)
_PATIENT_CHARACTERISTICS_EMPTY = ("PatientSex",)
_PATIENT_CHARACTERISTICS_REMOVE = ("PatientAge", "PatientSize", "PatientWeight", "PatientSexNeutered",
                                   "PregnancyStatus")
#: Type 1 in our IODs (Enhanced General Equipment), so it gets a dummy value instead of removal.
_DUMMY = {"DeviceSerialNumber": "0"}
# Dates that are identifying outright rather than shiftable.
_NOT_SHIFTED = {tag_for_keyword("PatientBirthDate")}

UidPolicy = Literal["study", "all", "keep"]


class PseudonymKeyError(RuntimeError):
    """The pseudonym key file exists but cannot be used; the message says which file and why."""


def _tags(keywords: Iterable[str]) -> set[int]:
    return {int(tag_for_keyword(k)) for k in keywords}  # type: ignore[arg-type]


_EMPTY_TAGS = _tags(_EMPTY)
_REMOVE_TAGS = _tags(_REMOVE)


class Pseudonymizer:
    """Stable, keyed pseudonyms and UID remapping for one installation's secret.

    >>> p = Pseudonymizer(b"test secret")
    >>> p.patient_pseudonym("CRLM-CT-1004") == p.patient_pseudonym("CRLM-CT-1004")
    True
    """

    def __init__(self, secret_or_salt: bytes | str) -> None:
        secret = secret_or_salt.encode("utf-8") if isinstance(secret_or_salt, str) else bytes(secret_or_salt)
        if not secret:
            raise ValueError("the pseudonymisation secret must not be empty")
        self._secret = secret

    @classmethod
    def from_user_key(cls, path: Path | None = None) -> Pseudonymizer:
        """The installation's pseudonymizer: `path` (default ``user_data_dir()/pseudonym.key``),
        created with 32 random bytes the first time."""
        return cls(load_or_create_key(path or user_data_dir() / KEY_FILE_NAME))

    @classmethod
    def from_key_file(cls, path: Path) -> Pseudonymizer:
        """The pseudonymizer of a key file someone chose (one shared across workstations): it must exist.
        A new key there would give every patient a new pseudonym, with nothing to say so."""
        if not Path(path).is_file():
            raise PseudonymKeyError(f"pseudonymisation key {path} does not exist; give the key file shared "
                                    "across your workstations (a new key would give every patient a new pseudonym)")
        return cls(load_or_create_key(path))

    def _digest(self, purpose: str, value: str) -> str:
        # A purpose prefix keeps pseudonyms, reader names, UIDs and date offsets independent.
        message = f"{purpose}\x00{value}".encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def patient_pseudonym(self, patient_id: str) -> str:
        """``LV-`` + 10 hex digits, stable per (secret, Patient ID); fits (0010,0020) LO and a PN."""
        return PSEUDONYM_PREFIX + self._digest("patient", patient_id.strip())[:10].upper()

    def reader_pseudonym(self, reader: str) -> str:
        """A stable stand-in for a reader's name, so agreement between readers can still be analysed."""
        return READER_PREFIX + self._digest("reader", reader.strip())[:6]

    def remap_uid(self, uid: str) -> str:
        """A new UID for `uid`, the same every time for this secret (references stay consistent)."""
        return str(generate_uid(entropy_srcs=[self._secret.hex(), str(uid)]))

    def date_offset_days(self, patient_id: str) -> int:
        """Days (negative, between -3650 and -365) added to every date of this patient."""
        return -(365 + int(self._digest("date", patient_id.strip())[:8], 16) % (3650 - 365 + 1))

    def shift_date(self, value: str, patient_id: str) -> str:
        """Shift a DA (YYYYMMDD) or the date part of a DT; values that are not dates become empty
        (an unparseable date may still be identifying)."""
        value = value.strip()
        if len(value) < 8:
            return ""
        try:
            day = dt.datetime.strptime(value[:8], "%Y%m%d").date()
        except ValueError:
            return ""
        try:
            shifted = day + dt.timedelta(days=self.date_offset_days(patient_id))
        except OverflowError:
            return ""
        return shifted.strftime("%Y%m%d") + value[8:]

    def deidentify_dataset(self, ds: Dataset, *, uids: UidPolicy = "study",
                           keep_patient_characteristics: bool = False) -> Dataset:
        """Apply the Basic Profile (with the options in the module docstring) to `ds` in place.

        Looks into every sequence. `uids`: "study" remaps only the object's own (0020,000D) Study
        Instance UID (references to other objects keep theirs); "all" remaps every UI element except
        class, transfer syntax and coding UIDs, consistently, so references still match; "keep"
        changes no UID. Returns `ds` for chaining.
        """
        identity = patient_identity(ds)
        pseudonym = self.patient_pseudonym(identity)
        empty = set(_EMPTY_TAGS)
        remove = set(_REMOVE_TAGS)
        if not keep_patient_characteristics:
            empty |= _tags(_PATIENT_CHARACTERISTICS_EMPTY)
            remove |= _tags(_PATIENT_CHARACTERISTICS_REMOVE)
        dummy = {int(tag_for_keyword(k)): v for k, v in _DUMMY.items()}  # type: ignore[arg-type]
        uid_keep = _tags(("SOPClassUID", "ReferencedSOPClassUID", "TransferSyntaxUID", "CodingSchemeUID",
                          "MediaStorageSOPClassUID", "ImplementationClassUID", "ContextGroupExtensionCreatorUID",
                          "ReferencedSOPClassUIDInFile", "MappingResourceUID"))

        seen: set[int] = set()

        def clean(dataset: Dataset, top: bool) -> None:
            # highdicom puts one item object into several sequences; cleaning it twice would remap its
            # UIDs twice (references to nothing) and shift its dates twice.
            if id(dataset) in seen:
                return
            seen.add(id(dataset))
            for elem in list(dataset):
                tag = int(elem.tag)
                if elem.tag.is_private:
                    del dataset[elem.tag]
                elif tag in remove:
                    del dataset[elem.tag]
                elif tag in empty:
                    dataset[elem.tag].value = [] if elem.VR == "SQ" else ""
                elif tag in dummy and elem.value not in (None, ""):
                    dataset[elem.tag].value = dummy[tag]
                elif elem.VR in ("DA", "DT") and tag not in _NOT_SHIFTED:
                    elem.value = _shift_values(elem, self, identity)
                elif elem.VR == "UI" and elem.value and tag not in uid_keep and (
                        uids == "all" or (uids == "study" and top and tag == 0x0020000D)):
                    elem.value = _map_values(elem.value, self.remap_uid)
                elif elem.VR == "SQ" and elem.value:
                    for item in elem.value:
                        clean(item, False)

        clean(ds, True)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta and "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # the file meta must name the same instance
        # Trailing caret: a one-component Person Name is otherwise ambiguous (PS3.5 6.2.1.2).
        ds.PatientName = pseudonym + "^"
        ds.PatientID = pseudonym
        mark_deidentified(ds, keep_patient_characteristics=keep_patient_characteristics, uids=uids)
        return ds


def deidentify_dataset(ds: Dataset, pseudonymizer: Pseudonymizer | None = None, *, uids: UidPolicy = "study",
                       keep_patient_characteristics: bool = False) -> Dataset:
    """`Pseudonymizer.deidentify_dataset` with this user's key unless `pseudonymizer` is given."""
    p = pseudonymizer or Pseudonymizer.from_user_key()
    return p.deidentify_dataset(ds, uids=uids, keep_patient_characteristics=keep_patient_characteristics)


def patient_identity(ds: Dataset) -> str:
    """What the pseudonym is computed from: (0010,0020) Patient ID, else the name, else the study UID
    (so patients without an ID never share one pseudonym)."""
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        # Same normalisation as io.headers, so a dataset and its loaded Volume get one pseudonym.
        value = str(ds.get(keyword, "") or "").strip().replace("\x00", "")
        if value:
            return value
    return "unknown"


def mark_deidentified(ds: Dataset, keep_patient_characteristics: bool = False, uids: UidPolicy = "study") -> None:
    """(0012,0062) Patient Identity Removed = YES, (0012,0063) method text, (0012,0064) codes."""
    ds.PatientIdentityRemoved = "YES"
    # (0012,0063) is LO, VM 1-n: several short values rather than one over-long sentence.
    ds.DeidentificationMethod = [f"liverview {__version__} PS3.15 Basic Profile", "dates shifted per patient",
                                 {"study": "study UID remapped, image refs kept", "all": "all UIDs remapped",
                                  "keep": "UIDs kept"}[uids]]
    codes = [BASIC_PROFILE, MODIFIED_DATES_OPTION]
    if keep_patient_characteristics:
        codes.append(PATIENT_CHARACTERISTICS_OPTION)
    items = []
    for value, scheme, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)


def _shift_values(elem: DataElement, p: Pseudonymizer, identity: str) -> object:
    if elem.value in (None, ""):
        return elem.value
    return _map_values(elem.value, lambda v: p.shift_date(str(v), identity))


def _map_values(value: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [fn(v) for v in value]
    return fn(value)


def load_or_create_key(path: Path) -> bytes:
    """The secret in `path` (64 hex digits); created once with `secrets` when missing.

    Created by hard-linking a complete temporary file into place, so two programs starting at once
    agree on one key and a crash never leaves half a key behind. A damaged key is an error, never
    silently replaced: a new key would give every patient a new pseudonym.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pseudonym.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)
                log.info("created pseudonymisation key %s", path)
            except FileExistsError:
                pass  # another process won the race; use its key
            except OSError:
                # File systems without hard links: fall back to "create if absent".
                if not path.exists():
                    os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise PseudonymKeyError(f"pseudonymisation key {path} is damaged (expected 64 hex digits); restore it "
                                f"from a backup - deleting it would change every patient's pseudonym")
    return key


__all__ = ["KEY_FILE_NAME", "PseudonymKeyError", "Pseudonymizer", "deidentify_dataset", "load_or_create_key",
           "mark_deidentified", "patient_identity"]
