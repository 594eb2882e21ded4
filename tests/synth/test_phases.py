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


@pytest.mark.parametrize("phase, pattern", [(Phase.ARTERIAL, ImagePattern.ARTERIAL),
                                            (Phase.PORTAL_VENOUS, ImagePattern.ENHANCED),
                                            (Phase.DELAYED, ImagePattern.ENHANCED)])
def test_a_fatty_liver_under_a_strong_bolus_is_read_by_its_veins(phase, pattern):
    """A liver of 7 HU before contrast (severe steatosis) reaches only 65 HU in the portal-venous phase,
    under blood of 205 HU: aorta minus liver passes the arterial gap of 130 HU, which called this
    portal-venous series arterial. The veins in the liver, as bright as the aorta, say it is not."""
    phantom = make_abdomen_phantom(SHAPE, SPACING, np.random.default_rng(4), liver_hu=65.0, blood_pool_hu=205.0,
                                   phase=phase, top_s_mm=-10.0)
    hu = phantom.hu.copy()
    simulate_acquisition(hu, SPACING, np.random.default_rng(9), noise_sigma_hu=15.0)
    indices = sample_indices(SHAPE[0])
    enhancement = measure_enhancement(to_int16_hu(hu)[indices], indices, SPACING[1:], (1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    found, why = pattern_from_enhancement(enhancement)
    assert found is pattern, why
    assert enhancement.portal_vein_hu is not None and enhancement.portal_vein_hu > enhancement.liver_hu + 30
    if phase is Phase.PORTAL_VENOUS:
        assert enhancement.aorta_hu - enhancement.liver_hu >= 130 and "caught up" in why


def _lesion(cls, seed, liver=110.0, blood=175.0):
    from liverview.synth.lesions import Enhancement, sample_varied_lesion_spec

    return sample_varied_lesion_spec(cls, (50.0, 50.0, 50.0), 30.0, seed, Enhancement(liver, blood))


def test_a_lesion_keeps_its_shape_and_takes_its_class_time_attenuation_curve():
    from liverview.annotations.labels import LesionClass
    from liverview.synth.phases import lesion_in_phase

    liver = 110.0
    at = {phase: attenuation(phase, liver, 0.0) for phase in Phase}
    for seed in range(40):
        cyst = _lesion(LesionClass.BENIGN_CYST, seed)
        assert all(lesion_in_phase(cyst, phase, liver) == cyst for phase in Phase)
        for cls in LesionClass:
            spec = _lesion(cls, seed)
            assert lesion_in_phase(spec, Phase.PORTAL_VENOUS, liver) is spec
            for phase in Phase:
                moved = lesion_in_phase(spec, phase, liver)
                assert (moved.seed, moved.radii_mm_zyx, moved.centre_mm_zyx, moved.lobulation) == \
                    (spec.seed, spec.radii_mm_zyx, spec.centre_mm_zyx, spec.lobulation)
                assert moved == lesion_in_phase(spec, phase, liver)  # from the spec's seed alone
        hemangioma = _lesion(LesionClass.HEMANGIOMA, seed)
        arterial = lesion_in_phase(hemangioma, Phase.ARTERIAL, liver)
        if hemangioma.enhancing_hu is not None:
            # Nodules isodense to the aorta; the centre fills in by the delayed phase.
            assert arterial.enhancing_hu > at[Phase.ARTERIAL].aorta - 31 and arterial.core_hu < at[Phase.ARTERIAL].liver
            assert lesion_in_phase(hemangioma, Phase.DELAYED, liver).core_hu > at[Phase.DELAYED].liver
        hcc = _lesion(LesionClass.HCC, seed)
        # Washout in the portal-venous (recorded) and delayed phases.
        assert hcc.core_hu < liver and lesion_in_phase(hcc, Phase.DELAYED, liver).core_hu < at[Phase.DELAYED].liver
        assert lesion_in_phase(hcc, Phase.NON_CONTRAST, liver).core_hu < at[Phase.NON_CONTRAST].liver
    arterial_hcc = [lesion_in_phase(_lesion(LesionClass.HCC, s), Phase.ARTERIAL, liver).core_hu > at[Phase.ARTERIAL].liver
                    for s in range(400)]
    arterial_met = [lesion_in_phase(_lesion(LesionClass.METASTASIS, s), Phase.ARTERIAL, liver).core_hu
                    < at[Phase.ARTERIAL].liver for s in range(400)]
    # Arterial hyperenhancement in most HCC [HC1, HC2]; most metastases stay hypoattenuating.
    assert 0.78 < np.mean(arterial_hcc) < 0.92 and 0.84 < np.mean(arterial_met) < 0.96


def test_a_multiphase_dataset_holds_every_phase_of_each_lesion(tmp_path):
    """Patients rendered in four phases: each lesion's patch holds the other three on its own voxels,
    read through the app's export (outline carried, breathing aligned, resampled); a cyst stays water,
    an HCC is brighter in the arterial phase than in the portal-venous one."""
    from liverview.annotations.dataset_format import read_lesion_lines, read_manifest, read_patch
    from liverview.synth.simulator import SimulatorConfig, write_simulated_dataset

    phases = ("non_contrast", "arterial", "portal_venous", "delayed")
    config = SimulatorConfig(phases=phases, diameter_mm=(15.0, 30.0))
    write_simulated_dataset(tmp_path / "ds", 2, seed=5, config=config)
    assert read_manifest(tmp_path / "ds")["contrast_phases"] == sorted(phases)
    records = read_lesion_lines(tmp_path / "ds" / "lesions.jsonl")
    assert len(records) == 8
    for record in records:
        assert record["contrast_phase"] == "portal_venous" and set(record["phases"]) == set(phases) - {"portal_venous"}
        assert set(record["synth"]["patient"]["phases"]) == set(record["phases"])
        patch = read_patch(tmp_path / "ds" / record["file"])
        assert sorted(patch.phase_names) == sorted(phases)
        core = patch.mask & np.all([patch.hu_of(p) > -1000 for p in phases], axis=0)
        means = {p: float(patch.hu_of(p)[core].mean()) for p in phases}
        if record["label"] == "benign_cyst":
            assert max(means.values()) - min(means.values()) < 25.0
        if record["label"] == "hcc" and record["synth"]["enhancing_hu"] is not None:
            assert means["arterial"] > means["non_contrast"]


def test_a_simulated_patient_is_written_as_one_study_with_a_series_per_phase(tmp_path):
    from liverview.imaging.contrast_phase import detect_series_phases
    from liverview.io import load_series, scan_paths
    from liverview.synth.simulator import SimulatorConfig, patient_volume, simulate_patient, write_patient_study

    patient = simulate_patient(8, config=SimulatorConfig(phases=("arterial", "portal_venous"), diameter_mm=(15.0, 20.0)))
    folders = write_patient_study(patient, tmp_path / "study")
    assert sorted(folders) == ["arterial", "portal_venous"]
    scan = scan_paths([tmp_path / "study"])
    assert len(scan.series) == 2 and not scan.skipped
    assert len({s.study_uid for s in scan.series}) == 1 and len({s.frame_of_reference_uid for s in scan.series}) == 1
    phases = detect_series_phases(scan.series)
    assert sorted(d.phase.value for d in phases.values()) == ["arterial", "portal_venous"]
    for phase, folder in folders.items():
        written = load_series(folder)
        expected = patient_volume(patient, None if phase == "portal_venous" else phase)
        assert np.array_equal(written.array, expected.array) and written.series_uid == expected.series_uid
        assert np.allclose(written.positions_mm, expected.positions_mm, atol=1e-3)
