"""Hounsfield units as real scanners write (0028,1054) Rescale Type."""
from __future__ import annotations

import pydicom
import pytest

from liverview.io import load_series, scan_paths
from liverview.io.hu import CT_IMAGE_STORAGE, HUStatus, interpret_rescale_type

CT = "1.2.840.10008.5.1.4.1.1.2"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.mark.parametrize("written", ["HU", "hu", " HU ", "", "Hounsfield Units", "HOUNSFIELD UNITS",
                                     "hounsfield unit", "Hounsfield", "H.U.", "HOUNSFILED UNITS", "Houndsfield units",
                                     "Hounsfeild"])
def test_spellings_of_hounsfield_units_are_hu(written):
    decision = interpret_rescale_type("CT", CT, written)
    assert decision.status is HUStatus.HU and decision.is_hu and decision.reason == ""


@pytest.mark.parametrize("written", ["US", "CT numbers", "Density", "1"])
def test_an_unrecognised_rescale_type_on_ct_image_storage_is_hu_with_a_warning(written):
    decision = interpret_rescale_type("CT", CT, written)
    assert decision.status is HUStatus.ASSUMED and decision.is_hu
    assert repr(written.strip()) in decision.reason and "read as Hounsfield units" in decision.reason


@pytest.mark.parametrize("written, unit", [("OD", "optical density"), ("MGML", "mg/mL"), ("Z_EFF", "atomic number"),
                                           ("ED", "electron density"), ("HU_MOD", "modified Hounsfield")])
def test_a_defined_term_of_another_unit_is_not_hu_and_says_what_was_found_and_expected(written, unit):
    decision = interpret_rescale_type("CT", CT, written)
    assert decision.status is HUStatus.NOT_HU
    assert repr(written) in decision.reason and unit in decision.reason and "expected HU" in decision.reason


def test_other_modalities_and_unknown_units_outside_ct_image_storage_are_not_hu():
    mr = interpret_rescale_type("MR", "1.2.840.10008.5.1.4.1.1.4", "")
    assert mr.status is HUStatus.NOT_HU and "modality MR, expected CT" in mr.reason
    sc = interpret_rescale_type("CT", SECONDARY_CAPTURE, "vendor units")
    assert sc.status is HUStatus.NOT_HU and SECONDARY_CAPTURE in sc.reason
    assert interpret_rescale_type("CT", SECONDARY_CAPTURE, "HU").is_hu
    assert CT in CT_IMAGE_STORAGE


def _rewrite(folder, rescale_type):
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        if rescale_type is None:
            del ds.RescaleType
        else:
            ds.RescaleType = rescale_type
        ds.save_as(path)


@pytest.mark.parametrize("written, status", [("Hounsfield Units", HUStatus.HU), (None, HUStatus.HU),
                                             ("hounsfeld", HUStatus.HU), ("CT NUMBER", HUStatus.ASSUMED),
                                             ("OD", HUStatus.NOT_HU)])
def test_a_real_series_with_vendor_rescale_type_loads_as_its_units(crlm_copy, written, status):
    _rewrite(crlm_copy, written)
    info = scan_paths(crlm_copy).series[0]
    volume = load_series(info)
    assert info.units.status is status
    assert volume.is_hu is (status is not HUStatus.NOT_HU)
    unit_warnings = [w for w in volume.warnings if "Rescale Type" in w]
    assert bool(unit_warnings) is (status is not HUStatus.HU)
