"""Preprocessing shared by training, evaluation and the app: small callable transforms (MONAI style).

A lesion input is built from the key axial slice (largest ROI area) and the ROI mask on it; with
``neighbour_slices`` = n > 0 also from the n slices on each side of it (a "2.5-D" slab, every
transform applied to each slice alike, the key slice's ROI setting the crop)::

    CropToContext      mask bounding box + `context_px` (the export's patch margin), clipped to the slice
    [RandomHUNoise]    training only: extra correlated noise, in HU, at native resolution
    Denoise            optional: bilateral or non-local-means, in HU (the paper's "noise reduction")
    CropSquareResize   a square of side max(min, extent x scale + 2 x margin) mm around the ROI -> size x size
    [RandomHUJitter]   training only: contrast-phase variation (scale about the liver HU + offset)
    WindowToChannels   three HU windows x (2n + 1) slices -> channels in 0..1 (the paper's "normalise to 0-1")
    Clahe              optional: contrast-limited adaptive histogram equalisation (the paper's "contrast enhancement")
    [RandomAffine]     training only: rotation, zoom, shift, horizontal/vertical flips
    [RandomGamma]      training only: intensity jitter in the 0..1 channels
    ToTensor           float32 (C, size, size)

Transforms in brackets are `training_only`; `Compose` skips them unless called with ``train=True``.
`build_preprocess(config)` returns the pipeline for a `PreprocessConfig`; the app calls
`prepare_lesion_input` (the same pipeline object, eval mode), and the dataset/evaluation path goes
through that very function, so a lesion classified in the app is prepared exactly as in training.

Arrays follow DESIGN.md: (z, y, x) / (y, x); HU as int16 on input, float32 inside.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from liverview.annotations.dataset_format import MARGIN_XY_PX, MARGIN_Z_SLICES
from liverview.annotations.measurements import select_key_slice_by_area
from liverview.imaging.contrast_phase import ContrastPhase

#: HU used to fill crop regions outside the available context when it holds no tissue at all.
DEFAULT_FILL_HU = 100.0
#: Liver parenchyma in the portal-venous phase: the pivot of the contrast-jitter scale.
LIVER_PIVOT_HU = 100.0

Sample = dict[str, Any]

# ------------------------------------------------------------------------------------------------
# configuration
# ------------------------------------------------------------------------------------------------


#: The phases a model may read (every contrast phase but "unknown").
PHASE_NAMES = tuple(p.value for p in ContrastPhase if p is not ContrastPhase.UNKNOWN)


@dataclass(frozen=True)
class HUWindow:
    """A (0028,1050) Window Center / (0028,1051) Window Width pair in HU, mapped linearly to 0..1."""

    name: str
    center: float
    width: float

    @property
    def low(self) -> float:
        return self.center - self.width / 2.0


#: Default channels. Liver W170/L70 (the portal-venous reading optimum, same as the viewer's preset)
#: spreads the small differences that separate the classes (cyst ~5 HU, metastasis/hemangioma core
#: ~40-55, HCC mosaic ~70-80, liver ~100) over the full range; it saturates at 155 HU, so the
#: abdomen window W400/L40 keeps enhancement near blood pool (hemangioma nodules 150-170 HU) and fat
#: apart; the wide window W1500/L150 keeps calcification, air and bone unclipped so nothing in the
#: crop is lost. Three channels also fit torchvision's 3-channel stems unchanged.
DEFAULT_WINDOWS: tuple[HUWindow, ...] = (
    HUWindow("liver", 70.0, 170.0),
    HUWindow("abdomen", 40.0, 400.0),
    HUWindow("wide", 150.0, 1500.0),
)

DENOISE_METHODS = ("none", "bilateral", "nlmeans")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation (the paper: rotation, flips, zoom, shift; plus intensity and noise jitter)."""

    rotation_deg: float = 180.0  # lesions have no preferred in-plane orientation
    zoom: float = 0.10  # scale factor drawn from 1 +- zoom
    shift: float = 0.06  # fraction of the image size, each axis
    hflip: bool = True
    vflip: bool = True
    affine_probability: float = 0.9
    hu_offset: float = 8.0  # +- HU added (scanner calibration, contrast timing)
    hu_scale: float = 0.08  # contrast scaled by 1 +- hu_scale about the liver HU
    noise_hu: float = 8.0  # up to this much extra correlated noise (sd, HU)
    gamma: float = 0.10  # gamma drawn from exp(+- gamma) on the 0..1 channels

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        return cls(**_checked_fields(cls, data))


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that turns an ROI on a slice into the network input; stored in every model bundle.

    Slices: the key slice alone (``neighbour_slices`` 0, the published method) or with its
    ``neighbour_slices`` neighbours on each side, at most the export's z margin so a dataset patch
    holds them; slices beyond the end of the series repeat the last one there.

    Crop: a square of side ``max(crop_min_mm, extent_mm * crop_scale + 2 * crop_margin_mm)`` centred on
    the ROI's bounding box, ``extent_mm`` being the longer side of that box. Only ``context_px`` pixels
    around the ROI are used (the margin of the training-dataset export), so the app, which has the
    whole slice, sees exactly what training saw; the rest of the square is filled with the median HU
    of that context ring.
    """

    size: int = 224
    windows: tuple[HUWindow, ...] = DEFAULT_WINDOWS
    context_px: int = MARGIN_XY_PX
    neighbour_slices: int = 0
    crop_scale: float = 1.25
    crop_margin_mm: float = 4.0
    crop_min_mm: float = 20.0
    denoise: str = "none"
    bilateral_sigma_hu: float = 25.0
    bilateral_sigma_mm: float = 1.5
    nlm_h_hu: float = 12.0
    clahe: bool = False
    clahe_clip_limit: float = 2.0
    clahe_tiles: int = 4
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    #: Contrast phases the network reads, in this order ((): the key series alone, as before phases).
    #: Each phase gives its slices' channels; a phase the lesion was not read on is zeros, and one
    #: presence channel per phase (1 read, 0 missing) says so: a missing phase is never a zero image
    #: that looks like data.
    phases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Lists (from JSON or a caller) become tuples: the config must stay hashable for the cache.
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "phases", tuple(self.phases))
        unknown = [p for p in self.phases if p not in PHASE_NAMES]
        if unknown or len(set(self.phases)) != len(self.phases):
            raise ValueError(f"phases {list(self.phases)} must be distinct names out of {list(PHASE_NAMES)}")
        if self.denoise not in DENOISE_METHODS:
            raise ValueError(f"denoise must be one of {DENOISE_METHODS}, not {self.denoise!r}")
        if self.size < 16:
            raise ValueError(f"input size {self.size} is too small (at least 16 pixels)")
        if not self.windows:
            raise ValueError("at least one HU window is needed")
        if not 0 <= self.neighbour_slices <= MARGIN_Z_SLICES:
            raise ValueError(f"neighbour_slices must be 0..{MARGIN_Z_SLICES} (the training export keeps "
                             f"{MARGIN_Z_SLICES} slice(s) around each lesion), not {self.neighbour_slices}")

    @property
    def slab_slices(self) -> int:
        """Slices the input is built from: the key slice and its neighbours."""
        return 2 * self.neighbour_slices + 1

    @property
    def input_slices(self) -> int:
        """Slices the pipeline transforms together: every phase's slab, phase after phase."""
        return self.slab_slices * max(1, len(self.phases))

    @property
    def channels(self) -> int:
        return len(self.windows) * self.input_slices + len(self.phases)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the network input."""
        return (self.channels, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["windows"] = [asdict(w) for w in self.windows]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Inverse of `to_dict`; unknown keys raise ValueError (a newer bundle format)."""
        values = _checked_fields(cls, data)
        if "windows" in values:
            values["windows"] = tuple(HUWindow(**w) if isinstance(w, dict) else HUWindow(*w)
                                      for w in values["windows"])
        if "augment" in values and isinstance(values["augment"], dict):
            values["augment"] = AugmentConfig.from_dict(values["augment"])
        return cls(**values)


def _checked_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return dict(data)


# ------------------------------------------------------------------------------------------------
# transforms
# ------------------------------------------------------------------------------------------------


class Transform:
    """A callable on a sample dict. Randomised transforms set `training_only` and use the given rng."""

    training_only = False

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class SelectKeySlice(Transform):
    """(z, y, x) patch -> the slice with the largest mask area (ties: the one nearest the middle), with
    `neighbour_slices` slices on each side as a (2n + 1, y, x) slab when n > 0."""

    def __init__(self, neighbour_slices: int = 0) -> None:
        self.neighbour_slices = int(neighbour_slices)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        hu, mask = sample["hu"], sample["mask"]
        if mask.ndim == 2:
            return sample
        z = select_key_slice(mask)
        spacing = tuple(float(s) for s in sample["spacing_mm"])
        return {**sample, "hu": select_slab(hu, z, self.neighbour_slices), "mask": mask[z],
                "spacing_yx": spacing[-2:], "key_z": z}


def select_slab(hu_zyx: np.ndarray, z: int, neighbour_slices: int) -> np.ndarray:
    """Slice `z` of a (z, y, x) array, or with n = `neighbour_slices` > 0 the (2n + 1, y, x) slab of
    slices z - n .. z + n; indices past either end of the array repeat the end slice. The app passes
    the whole series and the dataset an exported patch: both give the same slab (module docstring)."""
    if neighbour_slices <= 0:
        return hu_zyx[z]
    index = np.clip(np.arange(z - neighbour_slices, z + neighbour_slices + 1), 0, hu_zyx.shape[0] - 1)
    return np.stack([hu_zyx[i] for i in index])


def _per_slice(function, hu: np.ndarray) -> np.ndarray:
    """`function` on a (y, x) slice, or on each slice of a (k, y, x) slab."""
    if hu.ndim == 2:
        return function(hu)
    return np.stack([function(s) for s in hu])


def select_key_slice(mask_zyx: np.ndarray) -> int:
    """Index of the slice with the largest mask area; ties go to the slice nearest the lesion's middle."""
    areas = mask_zyx.reshape(mask_zyx.shape[0], -1).sum(axis=1)
    return select_key_slice_by_area({z: int(a) for z, a in enumerate(areas)})


def _mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1), inclusive."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if len(ys) == 0:
        raise ValueError("the ROI mask is empty")
    return int(ys[0]), int(ys[-1]), int(xs[0]), int(xs[-1])


class CropToContext(Transform):
    """Keep the ROI's bounding box plus `context_px` pixels (clipped to the slice).

    Why: the training-dataset export keeps only this margin around each lesion; cutting the app's
    whole slice the same way makes both paths see identical pixels.
    """

    def __init__(self, context_px: int = MARGIN_XY_PX) -> None:
        self.context_px = int(context_px)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        hu, mask = sample["hu"], sample["mask"]
        if hu.shape[-2:] != mask.shape or mask.ndim != 2 or hu.ndim not in (2, 3):
            raise ValueError(f"slice {hu.shape} and mask {mask.shape} must be 2-D arrays of the same shape "
                             f"(or a (k, y, x) slab over a (y, x) mask)")
        y0, y1, x0, x1 = _mask_bbox(mask)
        c = self.context_px
        ys = slice(max(0, y0 - c), min(hu.shape[-2], y1 + 1 + c))
        xs = slice(max(0, x0 - c), min(hu.shape[-1], x1 + 1 + c))
        return {**sample, "hu": np.asarray(hu[..., ys, xs], dtype=np.float32),
                "mask": np.asarray(mask[ys, xs], dtype=bool)}


class RandomHUNoise(Transform):
    """Training only: add correlated Gaussian noise (sd up to `max_sigma_hu`) at native resolution."""

    training_only = True

    def __init__(self, max_sigma_hu: float = 8.0, grain_px: float = 0.8) -> None:
        self.max_sigma_hu = float(max_sigma_hu)
        self.grain_px = float(grain_px)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if self.max_sigma_hu <= 0 or rng is None:
            return sample
        sigma = rng.uniform(0.0, self.max_sigma_hu)
        hu = sample["hu"]
        white = rng.standard_normal(hu.shape).astype(np.float32)
        grain = _per_slice(lambda w: cv2.GaussianBlur(w, (0, 0), self.grain_px, borderType=cv2.BORDER_REFLECT), white)
        std = float(grain.std()) or 1.0
        return {**sample, "hu": hu + grain * np.float32(sigma / std)}


class Denoise(Transform):
    """Edge-preserving noise reduction in HU: bilateral filter or non-local means (OpenCV)."""

    def __init__(self, method: str = "bilateral", sigma_hu: float = 25.0, sigma_mm: float = 1.5,
                 nlm_h_hu: float = 12.0) -> None:
        if method not in DENOISE_METHODS:
            raise ValueError(f"unknown denoising method {method!r}")
        self.method = method
        self.sigma_hu = float(sigma_hu)
        self.sigma_mm = float(sigma_mm)
        self.nlm_h_hu = float(nlm_h_hu)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if self.method == "none":
            return sample
        pixel_mm = math.sqrt(float(sample["spacing_yx"][0]) * float(sample["spacing_yx"][1]))
        return {**sample, "hu": _per_slice(lambda hu: self._denoise(hu, pixel_mm), sample["hu"])}

    def _denoise(self, hu: np.ndarray, pixel_mm: float) -> np.ndarray:
        if self.method == "bilateral":
            sigma_px = max(self.sigma_mm / pixel_mm, 0.5)
            d = int(2 * math.ceil(2 * sigma_px) + 1)
            return cv2.bilateralFilter(hu.astype(np.float32), d, self.sigma_hu, sigma_px, borderType=cv2.BORDER_REFLECT)
        # NLM needs integers: 12-bit CT range shifted to uint16 with L1 distances, so `h` is in HU.
        u16 = np.clip(np.rint(hu + 1024.0), 0, 65535).astype(np.uint16)
        out16 = cv2.fastNlMeansDenoising(u16, h=[self.nlm_h_hu], templateWindowSize=5, searchWindowSize=13,
                                         normType=cv2.NORM_L1)
        return out16.astype(np.float32) - 1024.0


class CropSquareResize(Transform):
    """Resample a square of physical side max(min_mm, extent x scale + 2 x margin_mm) centred on the
    ROI to size x size pixels (bilinear; anti-aliased when shrinking). Outside the available pixels
    the square is filled with the median HU of the context around the ROI."""

    def __init__(self, size: int = 224, scale: float = 1.25, margin_mm: float = 4.0, min_mm: float = 20.0) -> None:
        self.size = int(size)
        self.scale = float(scale)
        self.margin_mm = float(margin_mm)
        self.min_mm = float(min_mm)

    def square_mm(self, mask: np.ndarray, spacing_yx: Sequence[float]) -> tuple[float, float, float]:
        """(centre_y_px, centre_x_px, side_mm) of the crop for this mask."""
        y0, y1, x0, x1 = _mask_bbox(mask)
        sy, sx = float(spacing_yx[0]), float(spacing_yx[1])
        extent = max((y1 - y0 + 1) * sy, (x1 - x0 + 1) * sx)
        side = max(self.min_mm, extent * self.scale + 2.0 * self.margin_mm)
        return (y0 + y1) / 2.0, (x0 + x1) / 2.0, side

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        hu, mask = sample["hu"], sample["mask"]
        sy, sx = (float(s) for s in sample["spacing_yx"])
        cy, cx, side = self.square_mm(mask, (sy, sx))
        n = self.size
        ay, ax = side / (n * sy), side / (n * sx)  # source pixels per output pixel
        matrix = np.array([[ax, 0.0, cx + (0.5 / n - 0.5) * side / sx],
                           [0.0, ay, cy + (0.5 / n - 0.5) * side / sy]], dtype=np.float64)

        def resample(hu_slice: np.ndarray) -> np.ndarray:
            background = hu_slice[~mask]
            fill = float(np.median(background)) if background.size else DEFAULT_FILL_HU
            src = hu_slice.astype(np.float32)
            if max(ax, ay) > 1.5:
                # Shrinking: low-pass first so the bilinear sampling does not alias the noise texture.
                src = cv2.GaussianBlur(src, (0, 0), sigmaX=max((ax - 1) / 2, 0.01), sigmaY=max((ay - 1) / 2, 0.01),
                                       borderType=cv2.BORDER_REPLICATE)
            flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            return cv2.warpAffine(src, matrix, (n, n), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)

        out = _per_slice(resample, hu)
        out_mask = cv2.warpAffine(mask.astype(np.uint8), matrix, (n, n), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)
        return {**sample, "hu": out, "mask": out_mask, "crop_side_mm": side, "pixel_mm": side / n}


class RandomHUJitter(Transform):
    """Training only: contrast scaled about the liver HU by 1 +- scale, plus an offset of +- offset_hu."""

    training_only = True

    def __init__(self, offset_hu: float = 8.0, scale: float = 0.08, pivot_hu: float = LIVER_PIVOT_HU) -> None:
        self.offset_hu = float(offset_hu)
        self.scale = float(scale)
        self.pivot_hu = float(pivot_hu)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if rng is None:
            return sample
        k = np.float32(1.0 + rng.uniform(-self.scale, self.scale))
        b = np.float32(rng.uniform(-self.offset_hu, self.offset_hu))
        p = np.float32(self.pivot_hu)
        return {**sample, "hu": (sample["hu"] - p) * k + p + b}


class WindowToChannels(Transform):
    """HU -> one channel per window (per window and slice for a slab, window-major: every slice of the
    first window, then of the second...), linear from window low (0) to high (1), clipped."""

    def __init__(self, windows: Sequence[HUWindow] = DEFAULT_WINDOWS) -> None:
        self.windows = tuple(windows)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        hu = sample["hu"].astype(np.float32)
        slices = [hu] if hu.ndim == 2 else list(hu)
        channels = [np.clip((s - np.float32(w.low)) / np.float32(w.width), 0.0, 1.0)
                    for w in self.windows for s in slices]
        return {**sample, "image": np.stack(channels).astype(np.float32)}


class Clahe(Transform):
    """Contrast-limited adaptive histogram equalisation of every channel (16-bit, so no banding)."""

    def __init__(self, clip_limit: float = 2.0, tiles: int = 4) -> None:
        self.clip_limit = float(clip_limit)
        self.tiles = int(tiles)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=(self.tiles, self.tiles))
        image = sample["image"]
        out = np.empty_like(image)
        for c in range(image.shape[0]):
            u16 = np.rint(image[c] * 65535.0).astype(np.uint16)
            out[c] = clahe.apply(u16).astype(np.float32) / 65535.0
        return {**sample, "image": out}


class RandomAffine(Transform):
    """Training only: rotation, zoom, shift (reflected borders) and horizontal/vertical flips."""

    training_only = True

    def __init__(self, rotation_deg: float = 180.0, zoom: float = 0.1, shift: float = 0.06, hflip: bool = True,
                 vflip: bool = True, probability: float = 0.9) -> None:
        self.rotation_deg = float(rotation_deg)
        self.zoom = float(zoom)
        self.shift = float(shift)
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)
        self.probability = float(probability)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if rng is None:
            return sample
        image = sample["image"]
        c, h, w = image.shape
        # Draw every number whatever happens, so the random stream does not depend on the branch.
        apply = rng.uniform() < self.probability
        angle = rng.uniform(-self.rotation_deg, self.rotation_deg)
        scale = 1.0 + rng.uniform(-self.zoom, self.zoom)
        tx, ty = rng.uniform(-self.shift, self.shift, size=2) * (w, h)
        flip_h = self.hflip and rng.uniform() < 0.5
        flip_v = self.vflip and rng.uniform() < 0.5
        hwc = np.ascontiguousarray(image.transpose(1, 2, 0))
        if apply:
            matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, scale)
            matrix[:, 2] += (tx, ty)
            hwc = cv2.warpAffine(hwc, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            if hwc.ndim == 2:
                hwc = hwc[:, :, None]
        if flip_h:
            hwc = hwc[:, ::-1]
        if flip_v:
            hwc = hwc[::-1]
        return {**sample, "image": np.ascontiguousarray(hwc.reshape(h, w, c).transpose(2, 0, 1))}


class RandomGamma(Transform):
    """Training only: per-image gamma exp(+- max_log_gamma) on the 0..1 channels (intensity jitter)."""

    training_only = True

    def __init__(self, max_log_gamma: float = 0.1) -> None:
        self.max_log_gamma = float(max_log_gamma)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if rng is None or self.max_log_gamma <= 0:
            return sample
        gamma = np.float32(math.exp(rng.uniform(-self.max_log_gamma, self.max_log_gamma)))
        return {**sample, "image": np.power(np.clip(sample["image"], 0.0, 1.0), gamma)}


class ToTensor(Transform):
    """float32 (C, H, W) torch tensor, values clipped to 0..1."""

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        import torch

        image = np.clip(sample["image"], 0.0, 1.0).astype(np.float32, copy=False)
        return {**sample, "tensor": torch.from_numpy(np.ascontiguousarray(image))}


class Compose:
    """Apply transforms in order; `training_only` ones only when called with ``train=True``."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = tuple(transforms)

    def __call__(self, sample: Sample, train: bool = False, rng: np.random.Generator | None = None) -> Sample:
        if train and rng is None:
            rng = np.random.default_rng()
        for transform in self.transforms:
            if transform.training_only and not train:
                continue
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(t) for t in self.transforms)
        return f"Compose(\n  {inner}\n)"


class LesionPreprocess:
    """The pipeline for one `PreprocessConfig`: slice + ROI mask -> float32 tensor (C, size, size)."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        aug = config.augment
        steps: list[Transform] = [CropToContext(config.context_px), RandomHUNoise(aug.noise_hu)]
        if config.denoise != "none":
            steps.append(Denoise(config.denoise, config.bilateral_sigma_hu, config.bilateral_sigma_mm,
                                 config.nlm_h_hu))
        steps += [CropSquareResize(config.size, config.crop_scale, config.crop_margin_mm, config.crop_min_mm),
                  RandomHUJitter(aug.hu_offset, aug.hu_scale),
                  WindowToChannels(config.windows)]
        if config.clahe:
            steps.append(Clahe(config.clahe_clip_limit, config.clahe_tiles))
        steps += [RandomAffine(aug.rotation_deg, aug.zoom, aug.shift, aug.hflip, aug.vflip, aug.affine_probability),
                  RandomGamma(aug.gamma), ToTensor()]
        self.pipeline = Compose(steps)
        self.select_key_slice = SelectKeySlice(config.neighbour_slices)

    def run(self, hu_slice: np.ndarray, mask: np.ndarray, spacing_yx: Sequence[float], train: bool = False,
            rng: np.random.Generator | None = None, present: Sequence[bool] | None = None) -> Sample:
        """The whole sample dict (tensor plus intermediate crop/mask), for inspection and Grad-CAM overlays.

        `hu_slice` is the key slice (y, x), or with ``neighbour_slices`` > 0 the slab from `select_slab`
        ((2n + 1, y, x)); for a multiphase config the phases' slabs one after the other (`stack_phases`),
        with `present` saying which phases were read (all when None). `mask` is the ROI on the key slice.
        Every slice goes through the same crop and augmentation, so the phases stay in register."""
        hu = np.asarray(hu_slice)
        expected = self.config.input_slices
        if (hu.ndim == 2 and expected != 1) or (hu.ndim == 3 and hu.shape[0] != expected):
            raise ValueError(f"this preprocessing takes {expected} slice(s) (the key slice and "
                             f"{self.config.neighbour_slices} on each side), not an array of shape {hu.shape}")
        sample = {"hu": hu, "mask": np.asarray(mask, dtype=bool),
                  "spacing_yx": (float(spacing_yx[0]), float(spacing_yx[1]))}
        sample = self.pipeline(sample, train=train, rng=rng)
        if self.config.phases:
            sample["tensor"] = mark_phases(sample["tensor"], self.config, present)
        return sample

    def __call__(self, hu_slice: np.ndarray, mask: np.ndarray, spacing_yx: Sequence[float], train: bool = False,
                 rng: np.random.Generator | None = None, present: Sequence[bool] | None = None):
        return self.run(hu_slice, mask, spacing_yx, train, rng, present)["tensor"]

    def __repr__(self) -> str:
        return f"LesionPreprocess({self.pipeline!r})"


def stack_phases(config: PreprocessConfig, slabs: dict[str, np.ndarray]) -> tuple[np.ndarray, list[bool]]:
    """The multiphase input for `LesionPreprocess`: each of `config.phases`' slab (2n + 1, y, x) (or (y, x)
    slice), phase after phase, and which were there. A missing phase takes the place of another's
    slab so the crop runs; `mark_phases` then zeros its channels and flags it."""
    if not slabs:
        raise ValueError("no phase to read")
    filler = next(iter(slabs.values()))
    present = [p in slabs for p in config.phases]
    parts = [np.asarray(slabs.get(p, filler)) for p in config.phases]
    parts = [part[None] if part.ndim == 2 else part for part in parts]
    return np.concatenate(parts, axis=0), present


def mark_phases(tensor, config: PreprocessConfig, present: Sequence[bool] | None):
    """Zero the channels of the phases not read and append one presence channel per phase."""
    import torch

    present = [True] * len(config.phases) if present is None else list(present)
    if len(present) != len(config.phases):
        raise ValueError(f"{len(present)} presence flags for {len(config.phases)} phases")
    per_phase, total = config.slab_slices, config.input_slices
    for index, here in enumerate(present):
        if not here:
            for w in range(len(config.windows)):
                start = w * total + index * per_phase
                tensor[start:start + per_phase] = 0.0
    flags = torch.tensor(present, dtype=tensor.dtype)[:, None, None].expand(len(present), *tensor.shape[1:])
    return torch.cat([tensor, flags], dim=0)


@functools.lru_cache(maxsize=8)
def build_preprocess(config: PreprocessConfig | None = None) -> LesionPreprocess:
    """The (cached, shared) pipeline object for `config`: training, evaluation and the app all use it."""
    return LesionPreprocess(config or PreprocessConfig())


def prepare_lesion_input(hu_slice: np.ndarray, mask: np.ndarray, spacing_yx: Sequence[float],
                         config: PreprocessConfig | None = None):
    """The network input for the ROI `mask` (bool, (y, x)) on the axial slice `hu_slice` ((y, x) HU, int16
    or float; the (2n + 1, y, x) slab of `select_slab` when the config has ``neighbour_slices`` n > 0):
    float32 torch tensor (channels, size, size) in 0..1, deterministic (no augmentation).

    `spacing_yx` is the pixel spacing in mm, (0028,0030) Pixel Spacing (row, column). The app passes
    the whole slice; the dataset passes an exported patch slice; both give the same tensor.
    Raises ValueError for an empty mask or mismatched shapes.
    """
    return build_preprocess(config or PreprocessConfig())(hu_slice, mask, spacing_yx, train=False)


def prepare_lesion_patch(hu_zyx: np.ndarray, mask_zyx: np.ndarray, spacing_zyx: Sequence[float],
                         config: PreprocessConfig | None = None):
    """Network input for a 3-D lesion patch: its key slice (largest ROI area, with the config's neighbour
    slices) through `prepare_lesion_input`."""
    config = config or PreprocessConfig()
    z = select_key_slice(np.asarray(mask_zyx, dtype=bool))
    return prepare_lesion_input(select_slab(np.asarray(hu_zyx), z, config.neighbour_slices), mask_zyx[z],
                                tuple(spacing_zyx)[-2:], config)


__all__ = [
    "AugmentConfig", "Clahe", "Compose", "CropSquareResize", "CropToContext", "DEFAULT_WINDOWS", "Denoise",
    "HUWindow", "LesionPreprocess", "PreprocessConfig", "RandomAffine", "RandomGamma", "RandomHUJitter",
    "RandomHUNoise", "SelectKeySlice", "ToTensor", "Transform", "WindowToChannels", "build_preprocess",
    "prepare_lesion_input", "prepare_lesion_patch", "select_key_slice", "select_key_slice_by_area", "select_slab",
]
