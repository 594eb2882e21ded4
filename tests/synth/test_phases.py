"""The phantom in each contrast phase: one anatomy, the phase's attenuation, and the detector reads it."""
from __future__ import annotations

import numpy as np
import pytest

from liverview.imaging.contrast_phase import ImagePattern, measure_enhancement, pattern_from_enhancement, sample_indices
from liverview.synth.acquisition import simulate_acquisition, to_int16_hu
from liverview.synth.phantom import make_abdomen_phantom
from liverview.synth.phases import TABLES, Phase, attenuation

SHAPE = (24, 192, 192)
SPACING = (5.0, 400.0 / 192, 400.0 / 192)


@pytest.fixture(scope="module")
def phantoms():
    return {phase: make_abdomen_phantom(SHAPE, SPACING, np.random.default_rng(4), liver_hu=115.0,
                                        blood_pool_hu=180.0, phase=phase, top_s_mm=-10.0) for phase in Phase}


def test_every_phase_has_the_same_anatomy_and_the_portal_venous_one_is_the_original(phantoms):
    reference = phantoms[Phase.PORTAL_VENOUS]
    for phantom in phantoms.values():
        for name, mask in reference.masks.items():
            assert np.array_equal(phantom.masks[name], mask), name
    default = make_abdomen_phantom(SHAPE, SPACING, np.random.default_rng(4), liver_hu=115.0, blood_pool_hu=180.0,
                                   top_s_mm=-10.0)
    assert np.array_equal(default.hu, reference.hu)


def test_vessels_and_liver_take_each_phases_attenuation(phantoms):
    for phase, phantom in phantoms.items():
        expected = attenuation(phase, 115.0, 0.0, 180.0 / TABLES[Phase.PORTAL_VENOUS].portal_vein)
        aorta = phantom.hu[phantom.masks["aorta"]]
        assert np.median(aorta) == pytest.approx(expected.aorta, abs=0.5)
        liver_only = phantom.masks["liver"] & ~phantom.masks["hepatic_vessels"]
        assert np.median(phantom.hu[liver_only]) == pytest.approx(expected.liver, abs=0.5)
        assert phantom.liver_hu == pytest.approx(expected.liver)
    by_phase = {phase: float(np.median(p.hu[p.masks["aorta"]])) for phase, p in phantoms.items()}
    # The blood pool peaks in the arterial phase and is unenhanced before the injection.
    assert by_phase[Phase.ARTERIAL] > by_phase[Phase.PORTAL_VENOUS] > by_phase[Phase.DELAYED] > by_phase[Phase.NON_CONTRAST]


@pytest.mark.parametrize("phase, pattern", [(Phase.NON_CONTRAST, ImagePattern.NON_CONTRAST),
                                            (Phase.ARTERIAL, ImagePattern.ARTERIAL),
                                            (Phase.PORTAL_VENOUS, ImagePattern.ENHANCED),
                                            (Phase.DELAYED, ImagePattern.ENHANCED)])
def test_the_detector_reads_the_simulated_phase_from_the_images(phantoms, phase, pattern):
    hu = phantoms[phase].hu.copy()
    simulate_acquisition(hu, SPACING, np.random.default_rng(9), noise_sigma_hu=15.0)
    hu = to_int16_hu(hu)
    indices = sample_indices(SHAPE[0])
    enhancement = measure_enhancement(hu[indices], indices, SPACING[1:], (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    assert pattern_from_enhancement(enhancement)[0] is pattern
    assert enhancement.liver_hu == pytest.approx(phantoms[phase].liver_hu, abs=12.0)
