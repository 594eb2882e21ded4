"""The model bundle folder: its layout, its model.json, the checksum of its weights; read and write.

Layout::

    model.json              what the network is and how to feed it (see `BUNDLE_KEYS`)
    weights.pt              the state_dict only (torch.save); read with torch.load(weights_only=True)
                            after its SHA-256 matched model.json, so a damaged or swapped file is refused
    MODEL_CARD.md           intended use, training data, metrics, known limits (`model_card.render_model_card`)
    training_history.json   optional: per-epoch losses/accuracies, for the report's curves

model.json keys: format, format_version, name, version, created, liverview_version, torch_version,
architecture, classes [{id, name, code}], input_size [C, H, W], preprocessing (PreprocessConfig),
gradcam_target_layer, weights {file, sha256, bytes}, sha256, training_data, training, metrics
(accuracy, macro_f1, ...), intended_use.

This module only reads and writes files: turning the weights into a network on a device is
`inference.load_bundle`, writing a whole bundle for a trained network is `bundle_writer.save_bundle`.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from torch import nn

from liverview.atomic_write import write_bytes_atomic
from liverview.annotations.labels import BUILTIN_LABELS
from liverview.model.network import UnknownArchitectureError, get_architecture
from liverview.model.transforms import PreprocessConfig

BUNDLE_FORMAT = "liverview.model"
BUNDLE_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.pt"
MODEL_CARD = "MODEL_CARD.md"
HISTORY_FILE = "training_history.json"
BUNDLE_KEYS = ("format", "format_version", "name", "version", "created", "liverview_version", "torch_version",
               "architecture", "classes", "input_size", "preprocessing", "gradcam_target_layer", "weights", "sha256",
               "training_data", "training", "metrics", "intended_use")
INTENDED_USE = ("Research and teaching only. Not a medical device; not for diagnosis or treatment decisions. "
                "Outputs are suggestions for a trained reader to check.")


class BundleError(Exception):
    """A model bundle cannot be used; the message says which file, what is wrong and what to do."""


@dataclass
class BundleContents:
    """A bundle folder whose model.json was understood and whose weights matched their SHA-256."""

    folder: Path
    info: dict[str, Any]
    architecture: str
    classes: list[str]
    class_names: list[str]
    preprocess_config: PreprocessConfig
    gradcam_target_layer: str
    weights: Path
    state: dict[str, torch.Tensor]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """`write(file)` through the one atomic writer (normal permissions, so others sharing a model
    folder can read the bundle)."""
    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    write_bytes_atomic(path, to_file)


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
    _write_atomic(path, lambda fh: fh.write(text.encode("utf-8") + b"\n"))


def write_text(path: Path, text: str) -> None:
    """`text` as UTF-8, atomically (the model card)."""
    _write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


def write_weights(folder: Path, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Save `state` as the bundle's weights file; return model.json's {file, sha256, bytes} for it."""
    weights = folder / WEIGHTS_FILE
    _write_atomic(weights, lambda fh: torch.save(state, fh))
    return {"file": WEIGHTS_FILE, "sha256": file_sha256(weights), "bytes": weights.stat().st_size}


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def describe_classes(classes: Sequence[str]) -> list[dict[str, Any]]:
    """[{id, name, code}] from the label taxonomy (code None for labels without one)."""
    builtin = {label.id: label for label in BUILTIN_LABELS}
    out = []
    for class_id in classes:
        label = builtin.get(class_id)
        code = None
        if label is not None and label.code is not None:
            code = {"value": label.code.value, "scheme": label.code.scheme, "meaning": label.code.meaning}
        out.append({"id": class_id, "name": label.name if label else class_id, "code": code})
    return out


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of `module`'s state dict in the standard (contiguous) layout, whatever memory format
    it was trained in: what bundles and training checkpoints store."""
    return {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in module.state_dict().items()}


def read_bundle_info(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(bundle folder, parsed model.json), with `BundleError` for anything missing or malformed."""
    folder = Path(path)
    if folder.is_file() and folder.name == MODEL_JSON:
        folder = folder.parent
    if not folder.exists():
        raise BundleError(f"model bundle {folder} does not exist; choose a folder holding {MODEL_JSON} and "
                          f"{WEIGHTS_FILE}")
    if not folder.is_dir():
        raise BundleError(f"{folder} is a file; a model bundle is a folder holding {MODEL_JSON} and {WEIGHTS_FILE}")
    meta = folder / MODEL_JSON
    if not meta.is_file():
        raise BundleError(f"model bundle {folder} is incomplete: {MODEL_JSON} is missing")
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{meta} cannot be read ({exc}); the bundle is damaged, copy it again") from exc
    if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{meta} is not a liverview model description (format {BUNDLE_FORMAT!r} expected)")
    if not isinstance(info.get("format_version"), int) or info["format_version"] > BUNDLE_VERSION:
        raise BundleError(f"{meta} has format version {info.get('format_version')!r}, newer than this liverview "
                          f"reads ({BUNDLE_VERSION}); update liverview")
    missing = [key for key in ("architecture", "classes", "input_size", "preprocessing", "weights") if key not in info]
    if missing:
        raise BundleError(f"{meta} lacks {', '.join(missing)}; the bundle is incomplete")
    return folder, info


def read_bundle(path: str | Path, *, expected_classes: Sequence[str] | None = None,
                expected_input_size: Sequence[int] | None = None) -> BundleContents:
    """Read and verify a bundle folder. Checks, each failing with a specific `BundleError`: model.json
    and the weights file exist; the architecture is known; the classes and input size agree with the
    preprocessing and the caller's expectations; the weights' SHA-256 equals model.json's (a corrupted
    or replaced file is never unpickled) and the file holds a state_dict."""
    folder, info = read_bundle_info(path)
    meta = folder / MODEL_JSON
    weights_info = info["weights"] if isinstance(info["weights"], dict) else {}
    weights = folder / str(weights_info.get("file", WEIGHTS_FILE))
    if not weights.is_file():
        raise BundleError(f"model bundle {folder} is incomplete: the weights file {weights.name} is missing")
    architecture = str(info["architecture"])
    try:
        get_architecture(architecture)
    except UnknownArchitectureError as exc:
        raise BundleError(f"{meta}: {exc}. The bundle was made by a newer or different liverview") from None
    classes_info = info["classes"]
    if not isinstance(classes_info, list) or not classes_info:
        raise BundleError(f"{meta}: the class list is empty or malformed")
    classes = [str(c["id"]) if isinstance(c, dict) else str(c) for c in classes_info]
    names = [str(c.get("name", c.get("id"))) if isinstance(c, dict) else str(c) for c in classes_info]
    if expected_classes is not None and list(expected_classes) != classes:
        raise BundleError(f"{meta}: the model's classes {classes} differ from the expected {list(expected_classes)}")
    try:
        config = PreprocessConfig.from_dict(info["preprocessing"])
    except (TypeError, ValueError) as exc:
        raise BundleError(f"{meta}: the preprocessing parameters are not understood ({exc})") from exc
    try:
        input_size = [int(v) for v in info["input_size"]]
    except (TypeError, ValueError):
        raise BundleError(f"{meta}: the input size {info['input_size']!r} is not a list of whole numbers "
                          "[channels, height, width]") from None
    if input_size != list(config.input_shape):
        raise BundleError(f"{meta}: input size {input_size} does not match the preprocessing, which makes "
                          f"{list(config.input_shape)}")
    if expected_input_size is not None and list(expected_input_size) != input_size:
        raise BundleError(f"{meta}: input size {input_size} differs from the expected {list(expected_input_size)}")
    recorded = str(weights_info.get("sha256") or info.get("sha256") or "")
    if not recorded:
        raise BundleError(f"{meta} records no SHA-256 for {weights.name}; refusing unverified weights")
    actual = file_sha256(weights)
    if actual != recorded:
        raise BundleError(f"{weights} is corrupted or was replaced: its SHA-256 is {actual[:16]}..., model.json "
                          f"expects {recorded[:16]}...; copy the bundle again")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means an unusable file
        # Not torch's own words: they suggest loading with weights_only=False, which would run whatever
        # code the file holds.
        raise BundleError(f"{weights} cannot be read as a weights file ({type(exc).__name__}); the bundle is "
                          "damaged or not a liverview model: copy it again from where it was made") from exc
    if not isinstance(state, dict):
        raise BundleError(f"{weights} does not hold a state_dict")
    layer = str(info.get("gradcam_target_layer") or get_architecture(architecture).gradcam_layer)
    return BundleContents(folder=folder, info=info, architecture=architecture, classes=classes, class_names=names,
                          preprocess_config=config, gradcam_target_layer=layer, weights=weights, state=state)


__all__ = ["BUNDLE_FORMAT", "BUNDLE_KEYS", "BUNDLE_VERSION", "BundleContents", "BundleError", "HISTORY_FILE",
           "INTENDED_USE", "MODEL_CARD", "MODEL_JSON", "WEIGHTS_FILE", "cpu_state", "describe_classes", "file_sha256",
           "read_bundle", "read_bundle_info", "write_json", "write_text", "write_weights"]
