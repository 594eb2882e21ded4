"""Saving a trained network as a complete bundle: weights, model.json and the model card.

The folder's format is `bundle_format`'s; this module decides what a new bundle records (the
training data, metrics, how it answers) and renders its card (`model_card`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from liverview import __version__
from liverview.model.bundle_format import (BUNDLE_FORMAT, BUNDLE_VERSION, HISTORY_FILE, INTENDED_USE, MODEL_CARD,
                                           MODEL_JSON, cpu_state, describe_classes, write_json, write_text,
                                           write_weights)
from liverview.model.inference import FLIP_DIMS
from liverview.model.model_card import render_model_card
from liverview.model.network import get_architecture
from liverview.model.transforms import PreprocessConfig

log = logging.getLogger(__name__)


def save_bundle(folder: str | Path, model: nn.Module, *, architecture: str, classes: Sequence[str],
                preprocess_config: PreprocessConfig, metrics: dict[str, Any] | None = None,
                training_data: dict[str, Any] | None = None, training: dict[str, Any] | None = None,
                name: str = "liverview-lesion-classifier", version: str = "0.0.0",
                history: list[dict[str, Any]] | None = None, card_notes: Sequence[str] = (),
                flip_average: bool = False, training_domain: dict[str, Any] | None = None) -> Path:
    """Write a bundle for `model` (a bare network or a DDP wrapper) into `folder`; return the folder.
    `training_domain`: what the training data covered (`domain.TrainingDomain.to_dict`); a bundle
    without it is taken as trained on the portal-venous simulator.
    `flip_average`: the model answers with the mean over the input and its flips (`predict_lesions`);
    its metrics must have been measured that way."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = write_weights(folder, cpu_state(getattr(model, "module", model)))
    sha = weights["sha256"]
    info: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "name": name, "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "liverview_version": __version__,
        "torch_version": torch.__version__, "architecture": architecture, "classes": describe_classes(classes),
        "input_size": list(preprocess_config.input_shape), "preprocessing": preprocess_config.to_dict(),
        "gradcam_target_layer": get_architecture(architecture).gradcam_layer,
        "weights": weights, "sha256": sha,
        "training_data": training_data or {}, "training": training or {}, "metrics": metrics or {},
        "intended_use": INTENDED_USE,
        "inference": {"flip_average": bool(flip_average), "flips": [list(d) for d in FLIP_DIMS] if flip_average else []},
    }
    if training_domain is not None:
        info["training_domain"] = dict(training_domain)
    if history is not None:
        write_json(folder / HISTORY_FILE, history)
    write_json(folder / MODEL_JSON, info)
    write_text(folder / MODEL_CARD, render_model_card(info, notes=card_notes))
    log.info("wrote model bundle %s (%s, sha256 %s)", folder, architecture, sha[:12])
    return folder


__all__ = ["save_bundle"]
