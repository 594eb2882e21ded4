"""Whether a series' values are Hounsfield units: (0008,0060) Modality, (0008,0016) SOP Class and
(0028,1054) Rescale Type, as real scanners write them.

PS3.3 C.11.1.1.2 defines "HU" and a few other terms, but vendors write "HU", "Hounsfield Units",
misspellings, lower case, or nothing. A CT Image Storage object is in HU unless its Rescale Type names
another unit: an unrecognised value there is taken as HU and the series carries a warning.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from enum import Enum

#: CT Image, Enhanced CT Image and Legacy Converted Enhanced CT Image Storage.
CT_IMAGE_STORAGE = frozenset({
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.2.1",
    "1.2.840.10008.5.1.4.1.1.2.2",
})

#: Defined terms of PS3.3 C.11.1.1.2 (and the spectral-CT ones) that name a unit other than HU.
NOT_HU_TERMS = {
    "OD": "optical density", "MGML": "mg/mL (material decomposition)", "Z_EFF": "effective atomic number",
    "ED": "electron density", "EDW": "electron density relative to water", "HU_MOD": "modified Hounsfield units",
    "PCT": "percent", "KEV": "keV",
}

_SPELLINGS = ("HU", "HOUNSFIELD", "HOUNSFIELDUNIT", "HOUNSFIELDUNITS")
#: How close a misspelling must be to one of `_SPELLINGS` (difflib ratio): "HOUNSFILED UNITS" is 0.93,
#: "HOUNDSFIELD" 0.95, and no defined term of another unit comes near.
_SPELLING_RATIO = 0.8


class HUStatus(str, Enum):
    HU = "hu"
    #: CT Image Storage with an unrecognised Rescale Type: read as HU, with a warning.
    ASSUMED = "assumed"
    NOT_HU = "not_hu"


@dataclass(frozen=True)
class UnitDecision:
    status: HUStatus
    #: The Rescale Type as found (stripped), "" when absent.
    rescale_type: str
    #: Why, in words a user can act on; "" for plain HU.
    reason: str

    @property
    def is_hu(self) -> bool:
        return self.status is not HUStatus.NOT_HU


def interpret_rescale_type(modality: str, sop_class_uid: str, rescale_type: str) -> UnitDecision:
    """Decide HU or not for one series from its first image's Modality, SOP Class and Rescale Type."""
    found = rescale_type.strip()
    quoted = f"Rescale Type (0028,1054) {found!r}" if found else "no Rescale Type (0028,1054)"
    if modality.upper() != "CT":
        return UnitDecision(HUStatus.NOT_HU, found, f"modality {modality or 'missing'}, expected CT ({quoted})")
    key = re.sub(r"[^A-Z_]", "", found.upper())
    if not found or _is_hounsfield(key):
        return UnitDecision(HUStatus.HU, found, "")
    if key in NOT_HU_TERMS:
        return UnitDecision(HUStatus.NOT_HU, found,
                            f"{quoted} means {NOT_HU_TERMS[key]}, expected HU (Hounsfield units)")
    if sop_class_uid in CT_IMAGE_STORAGE:
        return UnitDecision(HUStatus.ASSUMED, found,
                            f"{quoted} is not a known unit; read as Hounsfield units (CT Image Storage)")
    return UnitDecision(HUStatus.NOT_HU, found,
                        f"{quoted} is not a known unit and the object is not CT Image Storage "
                        f"(SOP Class {sop_class_uid or 'missing'}), expected HU (Hounsfield units)")


def _is_hounsfield(key: str) -> bool:
    letters = key.replace("_", "")
    if not letters:
        return False
    if letters in _SPELLINGS:
        return True
    return len(letters) > 4 and max(difflib.SequenceMatcher(None, letters, s).ratio()
                                    for s in _SPELLINGS[1:]) >= _SPELLING_RATIO


__all__ = ["CT_IMAGE_STORAGE", "HUStatus", "UnitDecision", "interpret_rescale_type"]
