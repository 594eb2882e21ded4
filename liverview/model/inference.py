"""Inference on a model bundle: the network on its device (`load_bundle`), and its answers.

The bundle's files are read and verified by `bundle_format.read_bundle`; this module turns them into
a network in eval mode and owns how the model answers: one pass per input, or the mean over the
input and its flips (`FLIP_DIMS`) for a bundle recorded with ``flip_average``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from liverview.model.bundle_format import BundleError, read_bundle
from liverview.model.network import build_network
from liverview.model.phase_reader import PHASE_READER_FILE, PhaseReader, PhaseReaderError
from liverview.model.transforms import LesionPreprocess, PreprocessConfig, build_preprocess
from liverview.model.uncertainty import answer_from_copies

#: Flips for the test-time average and the uncertainty: the identity, then over W, H and both - the
#: flips training augments with.
FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


@dataclass
class LoadedModel:
    """A bundle ready for inference: the network in eval mode on `device`, plus how to feed it."""

    model: nn.Module
    info: dict[str, Any]
    classes: list[str]
    class_names: list[str]
    preprocess_config: PreprocessConfig
    preprocess: LesionPreprocess
    gradcam_target_layer: str
    device: torch.device
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)
    #: The bundle's phase reader (`phase_reader.PhaseReader`), when it holds one fitted to these weights.
    phase_reader: PhaseReader | None = None

    @property
    def name(self) -> str:
        return str(self.info.get("name", self.path.name))

    @property
    def version(self) -> str:
        return str(self.info.get("version", ""))

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.info["input_size"])  # type: ignore[return-value]

    @property
    def flip_average(self) -> bool:
        """Whether the model's answer is the mean over the input and its flips (`predict_lesions`)."""
        return bool((self.info.get("inference") or {}).get("flip_average", False))


def load_bundle(path: str | Path, device: str | torch.device = "cpu", *,
                expected_classes: Sequence[str] | None = None,
                expected_input_size: Sequence[int] | None = None, phase_reader: bool = True) -> LoadedModel:
    """Verify and load a bundle: `bundle_format.read_bundle`'s checks, then the weights must fit the
    architecture (`BundleError` otherwise); the network goes to `device` in eval mode. `phase_reader`
    False leaves the bundle's phase reader out (fitting a new one)."""
    bundle = read_bundle(path, expected_classes=expected_classes, expected_input_size=expected_input_size)
    n_classes = len(bundle.classes)
    model = build_network(bundle.architecture, n_classes, bundle.preprocess_config.channels)
    try:
        model.load_state_dict(bundle.state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{bundle.weights} does not fit a {bundle.architecture} with {n_classes} classes "
                          f"({str(exc).splitlines()[0]})") from exc
    device = torch.device(device)
    model.to(device).eval()
    config = bundle.preprocess_config
    return LoadedModel(model=model, info=bundle.info, classes=bundle.classes, class_names=bundle.class_names,
                       preprocess_config=config, preprocess=build_preprocess(config),
                       gradcam_target_layer=bundle.gradcam_target_layer, device=device, path=bundle.folder,
                       phase_reader=_phase_reader(bundle.folder, bundle.classes, str(bundle.info.get("sha256") or ""))
                       if phase_reader else None)


def _phase_reader(folder: Path, classes: Sequence[str], sha256: str) -> PhaseReader | None:
    """The bundle's phase reader; refused (`BundleError`) when it was fitted to other weights or classes."""
    if not (folder / PHASE_READER_FILE).is_file():
        return None
    try:
        reader = PhaseReader.load(folder)
    except PhaseReaderError as exc:
        raise BundleError(str(exc)) from exc
    if reader.cnn_sha256 != sha256 or list(reader.classes) != list(classes):
        raise BundleError(f"{folder / PHASE_READER_FILE} was fitted to other weights or classes; fit it again "
                          "(python -m liverview.model.phase_reader_cli)")
    return reader


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto": this process's GPU when there is one, else the CPU; or any torch device string. Nothing is
    hard-wired to CUDA: the model and every input go to this device. Raises ValueError for a device that
    is not there, in words a user can act on."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as exc:  # torch's message lists every device type it knows, from ipu to meta
        raise ValueError(f"unknown device {preference!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("no CUDA device here (no NVIDIA GPU found, or this torch is built without CUDA); "
                             "use auto or cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif device.index >= torch.cuda.device_count():
            raise ValueError(f"there is no {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def predict(loaded: LoadedModel, tensors: torch.Tensor | Sequence[torch.Tensor], batch_size: int = 32) -> np.ndarray:
    """Class probabilities (softmax), float32 (N, n_classes) in `loaded.classes` order, for inputs made
    by `prepare_lesion_input` - one (C, H, W) tensor, a (N, C, H, W) batch or a list of tensors."""
    if isinstance(tensors, torch.Tensor):
        batch = tensors.unsqueeze(0) if tensors.ndim == 3 else tensors
    else:
        items = list(tensors)
        if not items:
            return np.zeros((0, len(loaded.classes)), dtype=np.float32)
        batch = torch.stack(items)
    expected = tuple(loaded.input_size)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
        raise ValueError(f"inputs of shape {tuple(batch.shape)} do not match the model's input {expected}; make "
                         f"them with prepare_lesion_input(..., loaded.preprocess_config)")
    model = loaded.model
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, batch.shape[0], batch_size):
            chunk = batch[start:start + batch_size].to(loaded.device, dtype=torch.float32)
            out.append(torch.softmax(model(chunk).float(), dim=1).cpu())
    return torch.cat(out).numpy().astype(np.float32)


def predict_flips(loaded: LoadedModel, tensors: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
    """Probabilities (len(FLIP_DIMS), N, n_classes) of the inputs as given and flipped along `FLIP_DIMS`
    (the flips training augments with, so the network has seen every orientation)."""
    batch = torch.stack(list(tensors)) if not isinstance(tensors, torch.Tensor) else tensors
    batch = batch.unsqueeze(0) if batch.ndim == 3 else batch
    n = batch.shape[0]
    probs = predict(loaded, torch.cat([torch.flip(batch, dims) if dims else batch for dims in FLIP_DIMS]))
    return probs.reshape(len(FLIP_DIMS), n, -1)


def predict_lesions(loaded: LoadedModel, tensors: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
    """The model's answer (N, n_classes): `predict`, or for a bundle with ``flip_average`` the mean of
    `predict_flips` (`uncertainty.answer_from_copies`, which the app and the evaluation also answer with)."""
    copies = predict_flips(loaded, tensors) if loaded.flip_average else predict(loaded, tensors)[None]
    return answer_from_copies(copies, loaded.flip_average)


def predict_lesion(loaded: LoadedModel, hu_slice: np.ndarray, mask: np.ndarray,
                   spacing_yx: Sequence[float]) -> dict[str, float]:
    """{class id: probability} for one ROI on one slice (what the app's "Classify" shows)."""
    tensor = loaded.preprocess(hu_slice, mask, spacing_yx)
    probs = predict_lesions(loaded, tensor)[0]
    return {c: float(p) for c, p in zip(loaded.classes, probs)}


__all__ = ["FLIP_DIMS", "LoadedModel", "load_bundle", "predict", "predict_flips", "predict_lesion", "predict_lesions",
           "resolve_device"]
