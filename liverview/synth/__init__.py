"""Synthetic CT studies: an abdominal phantom, liver lesions, and a DICOM writer.

The pieces compose: :func:`make_abdomen_phantom` gives a noise-free volume with organ masks,
:func:`insert_lesion` paints lesions described by :class:`LesionSpec`,
:func:`simulate_acquisition` adds the scanner's blur and noise, :func:`write_ct_series` writes
DICOM. :func:`write_demo_study` chains them into the bundled demo study.
"""

from __future__ import annotations

from liverview.synth.acquisition import simulate_acquisition, to_int16_hu
from liverview.synth.dicom_writer import (
    PatientInfo,
    SeriesPlacement,
    make_series_placement,
    write_ct_series,
)
from liverview.synth.lesions import (
    LesionClass,
    LesionSpec,
    insert_lesion,
    lesion_footprint,
    place_lesions,
    sample_lesion_spec,
)
from liverview.synth.phantom import Phantom, make_abdomen_phantom

# The demo's names load on first use: importing liverview.synth.demo here would make
# ``python -m liverview.synth.demo`` import that module twice (runpy warns about it).
_DEMO_NAMES = frozenset(
    {"DEFAULT_SEED", "DemoStudy", "DemoVolume", "build_demo_volume", "make_ground_truth", "write_demo_study"}
)


def __getattr__(name: str) -> object:
    if name in _DEMO_NAMES:
        from liverview.synth import demo

        return getattr(demo, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_SEED",
    "DemoStudy",
    "DemoVolume",
    "LesionClass",
    "LesionSpec",
    "PatientInfo",
    "Phantom",
    "SeriesPlacement",
    "build_demo_volume",
    "insert_lesion",
    "lesion_footprint",
    "make_abdomen_phantom",
    "make_ground_truth",
    "make_series_placement",
    "place_lesions",
    "sample_lesion_spec",
    "simulate_acquisition",
    "to_int16_hu",
    "write_ct_series",
    "write_demo_study",
]
