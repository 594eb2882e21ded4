"""A Volume made from an array (the simulator's, a resampling) has real geometry and identity and no
made-up file headers (#16)."""
from __future__ import annotations

import numpy as np

from liverview.io.headers import ImageFacts, SeriesIdentity
from liverview.io.volume import Volume

IDENTITY = SeriesIdentity(study_uid="1.2.3", series_uid="1.2.3.4", frame_of_reference_uid="1.2.3.5", modality="CT",
                          patient_name="", patient_id="SIM-1", patient_birth_date="", patient_sex="", study_date="",
                          study_time="", study_description="", series_description="phantom", series_number=1)


def test_geometry_identity_and_no_file_header():
    array = np.zeros((5, 8, 6), dtype=np.int16)
    volume = Volume.from_array(array, (2.5, 0.8, 0.7), IDENTITY, origin_mm=(10.0, -5.0, 100.0),
                               row_direction=(1.0, 0.0, 0.0), column_direction=(0.0, 0.0, -1.0))
    assert volume.shape == (5, 8, 6) and volume.spacing_mm == (2.5, 0.8, 0.7)
    assert volume.is_hu and volume.study_uid == "1.2.3" and volume.info.identity.patient_id == "SIM-1"
    # Slices stack along row x column = (1,0,0) x (0,0,-1) = (0,1,0): posterior.
    assert np.allclose(volume.positions_mm[4], (10.0, -5.0 + 4 * 2.5, 100.0))
    assert np.allclose(volume.index_to_patient(0, 2, 3), (10.0 + 3 * 0.7, -5.0, 100.0 - 2 * 0.8))
    assert all(frame.header is None and frame.path == "" for frame in volume.info.frames)
    again = Volume.from_array(array, (2.5, 0.8, 0.7), IDENTITY)
    assert again.sop_instance_uids == volume.sop_instance_uids and len(set(volume.sop_instance_uids)) == 5


def test_values_that_are_not_hu_say_so():
    mr = Volume.from_array(np.zeros((3, 4, 4), np.int16), (1, 1, 1),
                           SeriesIdentity(**{**IDENTITY.__dict__, "modality": "MR"}))
    assert not mr.is_hu and mr.info.image.sop_class_uid == ""
    monochrome1 = Volume.from_array(np.zeros((3, 4, 4), np.int16), (1, 1, 1), IDENTITY,
                                    image=ImageFacts(sop_class_uid="", rescale_type="HU", photometric="MONOCHROME1"))
    assert monochrome1.invert_display


def test_the_simulator_makes_no_file_headers():
    from liverview.synth.simulator import SimulatorConfig, patient_volume, simulate_patient

    volume = patient_volume(simulate_patient(3, config=SimulatorConfig(diameter_mm=(12.0, 20.0))))
    assert volume.is_hu and all(frame.header is None for frame in volume.info.frames)
