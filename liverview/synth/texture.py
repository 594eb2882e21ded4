"""Liver parenchymal texture: a smooth random field fixed to the patient, the same in every phase.

Real liver parenchyma is not uniform: after a 3 mm blur, which removes almost all of the image noise,
its attenuation still varies by about 5-6 HU on crlm-ct-1004 and hcc-tace-006
(`benchmarks/bench_realism.py`). The phantom's liver is uniform apart from its vessels, so without
this field the only texture it shows is noise.

The field is a Gaussian random field with a Gaussian covariance (standard deviation `sd_hu`,
correlation length `length_mm`), built from random Fourier features (Rahimi & Recht, NIPS 2007):
f(p) = sd * sqrt(2 / M) * sum_m cos(k_m . p + phi_m), k_m ~ N(0, I / length^2). It is a function of
the position in millimetres, so every phase of a patient, whatever its slice thickness and however
its grid lies, shows the same texture at the same place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Fourier features per field: enough for a field that looks Gaussian, few enough to be cheap.
_MODES = 48


@dataclass(frozen=True)
class LiverTexture:
    """One patient's parenchymal texture: `wave_mm` (M, 3) wave vectors in radians per mm along z, y, x,
    and `phase` (M,) offsets."""

    sd_hu: float
    length_mm: float
    wave_mm: np.ndarray
    phase: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, sd_hu: float, length_mm: float) -> LiverTexture:
        wave = rng.standard_normal((_MODES, 3)) / length_mm
        phase = rng.uniform(0.0, 2.0 * math.pi, size=_MODES)
        return cls(float(sd_hu), float(length_mm), wave, phase)

    def add_to(self, hu: np.ndarray, where: np.ndarray, spacing_mm_zyx: tuple[float, float, float],
               z_origin_mm: float = 0.0) -> None:
        """Add the field to `hu` (z, y, x) at the voxels of `where`, in place. Voxel (k, j, i) lies at
        (z_origin_mm + k dz, j dy, i dx) in the patient's frame."""
        if self.sd_hu <= 0.0:
            return
        dz, dy, dx = spacing_mm_zyx
        gain = self.sd_hu * math.sqrt(2.0 / _MODES)
        # cos(kz z + ky y + kx x + phi) = Re(e^{i(kz z + ky y + phi)} e^{i kx x}): per slice, one
        # (rows x modes) by (modes x columns) product instead of a cosine per voxel and mode.
        along_y = np.exp(1j * np.outer(np.arange(hu.shape[1]) * dy, self.wave_mm[:, 1]))
        along_x = np.exp(1j * np.outer(self.wave_mm[:, 2], np.arange(hu.shape[2]) * dx))
        for k in range(hu.shape[0]):
            if not where[k].any():
                continue
            offset = np.exp(1j * ((z_origin_mm + k * dz) * self.wave_mm[:, 0] + self.phase))
            field = ((along_y * offset) @ along_x).real
            hu[k][where[k]] += (gain * field[where[k]]).astype(hu.dtype)
