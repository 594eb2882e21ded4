"""What the scanner adds to an ideal attenuation map: partial-volume blur and noise."""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Lowest and highest HU a 12-bit CT reconstruction stores.
HU_MIN = -1024
HU_MAX = 3071


def simulate_acquisition(
    hu: np.ndarray,
    spacing_mm_zyx: tuple[float, float, float],
    rng: np.random.Generator,
    noise_sigma_hu: float = 12.0,
    blur_sigma_mm: float = 0.5,
    noise_grain_mm: float = 0.7,
) -> np.ndarray:
    """Blur edges and add spatially correlated noise to a float32 ``(z, y, x)`` HU volume, in place.

    The in-plane blur (``blur_sigma_mm``) stands for the system's point-spread function; a light
    blend with the neighbouring slices stands for the slice-sensitivity profile. Noise is white
    Gaussian noise smoothed over ``noise_grain_mm`` and rescaled so its standard deviation is
    ``noise_sigma_hu`` — a mottled texture rather than pixel-sized salt-and-pepper. Slices are
    processed one at a time, so memory stays at one extra slice. Returns ``hu``.
    """
    _, dy, dx = spacing_mm_zyx
    pixel_mm = math.sqrt(dy * dx)
    blur_px = blur_sigma_mm / pixel_mm
    grain_px = noise_grain_mm / pixel_mm
    noise_gain = np.float32(noise_sigma_hu / _smoothed_noise_sigma(grain_px))

    previous = hu[0].copy()
    for k in range(hu.shape[0]):
        current = hu[k].copy()
        following = hu[k + 1] if k + 1 < hu.shape[0] else current
        # 10 % from each neighbour: thin structures fade at slice boundaries as on a real
        # reconstruction, without smearing 3 mm slices into each other.
        mixed = 0.8 * current + 0.1 * previous + 0.1 * following
        if blur_px > 0.05:
            mixed = cv2.GaussianBlur(mixed, (0, 0), blur_px, borderType=cv2.BORDER_REPLICATE)
        white = rng.standard_normal(current.shape, dtype=np.float32)
        grain = cv2.GaussianBlur(white, (0, 0), grain_px, borderType=cv2.BORDER_REFLECT)
        hu[k] = mixed + grain * noise_gain
        previous = current
    return hu


def _smoothed_noise_sigma(grain_px: float) -> float:
    """Standard deviation of unit white noise after the same Gaussian blur (from its impulse response)."""
    size = 2 * int(math.ceil(4 * grain_px)) + 11
    impulse = np.zeros((size, size), dtype=np.float32)
    impulse[size // 2, size // 2] = 1.0
    response = cv2.GaussianBlur(impulse, (0, 0), grain_px, borderType=cv2.BORDER_REFLECT)
    return float(np.sqrt(np.sum(response.astype(np.float64) ** 2)))


def to_int16_hu(hu: np.ndarray) -> np.ndarray:
    """Round a float HU volume to int16, clipped to the range a CT image stores."""
    return np.clip(np.rint(hu), HU_MIN, HU_MAX).astype(np.int16)
