"""Grad-CAM (Selvaraju et al., ICCV 2017) on the bundle's target layer.

The heatmap of class c is ReLU(sum_k w_k A_k), A_k the target layer's feature maps and w_k the
spatial mean of d(logit_c)/dA_k, upsampled to the input size and scaled to 0..1. The target layer
is `LoadedModel.gradcam_target_layer` (model.json "gradcam_target_layer"), a dotted module path.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from liverview.model.bundle import LoadedModel
from liverview.model.network import find_module


def compute_gradcam(loaded: LoadedModel, tensor: torch.Tensor, class_index: int | None = None) -> tuple[np.ndarray, int]:
    """(heatmap float32 (H, W) in 0..1 over the network input, class explained). `tensor` is one
    (C, H, W) input from `prepare_lesion_input`; `class_index` None explains the predicted class."""
    model = loaded.model
    layer = find_module(model, loaded.gradcam_target_layer)
    captured: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["maps"] = output

    handle = layer.register_forward_hook(keep)
    model.eval()
    try:
        with torch.enable_grad():
            x = tensor.unsqueeze(0).to(loaded.device, dtype=torch.float32).requires_grad_(False)
            logits = model(x)
            index = int(logits.argmax(1).item()) if class_index is None else int(class_index)
            model.zero_grad(set_to_none=True)
            logits[0, index].backward()
    finally:
        handle.remove()
    maps = captured["maps"]
    weights = maps.grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * maps).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tensor.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam.detach().cpu().numpy().astype(np.float32)
    peak = float(cam.max())
    return (cam / peak if peak > 0 else cam), index


__all__ = ["compute_gradcam"]
