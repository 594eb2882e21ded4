"""Grad-CAM (Selvaraju et al., ICCV 2017) on the bundle's target layer.

The heatmap of class c is ReLU(sum_k w_k A_k), A_k the target layer's feature maps and w_k the
spatial mean of d(logit_c)/dA_k, upsampled to the input size and scaled to 0..1. The target layer
is `LoadedModel.gradcam_target_layer` (model.json "gradcam_target_layer"), a dotted module path.

Written here rather than taken from the `grad-cam` package: that package imports matplotlib, scipy,
scikit-learn and ttach at import time (about 150 MB more in the app bundle) for what is twenty lines
of arithmetic; we need only plain Grad-CAM on one layer. The pitfalls it handles are handled here:
- the caller may be inside `torch.no_grad()` or `torch.inference_mode()`: both are switched off
  locally (inference-mode tensors cannot join an autograd graph, so the input is a fresh tensor);
- frozen weights (requires_grad False) would leave no graph: the hook makes the captured feature maps
  a leaf that requires grad, so there is a graph from them to the logits whatever the weights;
- a later in-place op (ReLU(inplace=True), Hardswish(inplace=True)) would overwrite the captured
  activations: the hook hands the rest of the network a clone and keeps the original.

Only d(logit_c)/dA is computed (`torch.autograd.grad` to the captured maps), not a backward pass
through the whole network to the input and every weight: the map is the same, and it costs about a
third (26 against 85 ms per lesion on one CPU thread).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from liverview.model.inference import LoadedModel
from liverview.model.network import find_module


def compute_gradcam(loaded: LoadedModel, tensor: torch.Tensor,
                    class_index: int | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """(heatmap float32 (H, W) in 0..1 over the network input, class explained, softmax probabilities
    of this forward pass). `tensor` is one (C, H, W) input from `prepare_lesion_input`; `class_index`
    None explains the predicted class."""
    model = loaded.model
    layer = find_module(model, loaded.gradcam_target_layer)
    captured: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        maps = output.detach().requires_grad_(True)
        captured["maps"] = maps
        return maps.clone()

    handle = layer.register_forward_hook(keep)
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            logits = model(tensor.detach().clone().unsqueeze(0).to(loaded.device, dtype=torch.float32))
            index = int(logits.argmax(1).item()) if class_index is None else int(class_index)
            maps = captured["maps"]
            (gradient,) = torch.autograd.grad(logits[0, index], maps)
        with torch.no_grad():
            probabilities = torch.softmax(logits.detach().float(), dim=1)[0].cpu().numpy()
            weights = gradient.mean(dim=(2, 3), keepdim=True)
            cam = F.relu((weights * maps.detach()).sum(dim=1, keepdim=True))
            cam = F.interpolate(cam, size=tensor.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    finally:
        handle.remove()
    cam_np = cam.detach().cpu().numpy().astype(np.float32)
    peak = float(cam_np.max())
    return (cam_np / peak if peak > 0 else cam_np), index, probabilities.astype(np.float32)


__all__ = ["compute_gradcam"]
