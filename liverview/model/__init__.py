"""The CNN: transforms shared by training and the app, training, evaluation, inference, Grad-CAM and
model bundles. The only package that imports torch/torchvision (lazily where start-up matters).

Importing this package is cheap: the names below load their module (and torch) on first use, so the
window can open before torch is imported. docs/model.md describes the pipeline.

    from liverview.model import load_bundle, predict, prepare_lesion_input
    loaded = load_bundle(path, "cpu")                       # BundleError with a clear message on any problem
    x = prepare_lesion_input(hu_slice, roi_mask, spacing_yx, loaded.preprocess_config)
    probabilities = predict(loaded, x)[0]                   # in loaded.classes order
"""
from __future__ import annotations

import importlib

_LAZY = {
    "PreprocessConfig": "transforms", "AugmentConfig": "transforms", "HUWindow": "transforms",
    "build_preprocess": "transforms", "prepare_lesion_input": "transforms", "prepare_lesion_patch": "transforms",
    "BundleError": "bundle_format", "LoadedModel": "inference", "load_bundle": "inference", "predict": "inference",
    "predict_lesion": "inference", "save_bundle": "bundle_writer",
    "compute_gradcam": "gradcam",
    "ARCHITECTURES": "network", "build_network": "network", "gradcam_target_layer": "network",
    "TrainConfig": "train", "train_model": "train", "resume_training": "train",
    "evaluate_bundle": "evaluate",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = sorted(_LAZY)
