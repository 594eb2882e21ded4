"""Network factory: torchvision classification architectures, built without pretrained weights.

Nothing can be downloaded on the machines liverview runs on, so every network is trained from
scratch (``weights=None``). Each architecture also names its Grad-CAM target layer: the dotted path
of the module (as in ``model.named_modules()`` of the bare network, not of a DDP wrapper) whose
output feature maps the heatmap is computed from - the last convolutional stage, where the maps are
still spatial (7 x 7 at 224 px) but already class-specific. The bundle stores this name; the app's
Grad-CAM resolves it with `find_module`.

Choice of the default (docs/model.md and benchmarks/results/model.json have the measurements):
MobileNetV3-Small. On the 2-core CPUs this project trains on it trains 3.6x faster than ResNet-18
(74 vs 21 images/s), answers 5x faster (8 vs 40 ms per lesion, 1 thread), is 7x smaller (6 vs 45 MB)
and reached the best test macro-F1 of the candidates in the same 15-epoch budget on the simulated
benchmark set. On the simulator's full 4000-lesion dataset MobileNetV3-Large, with the bundled
model's recipe, reached the same test macro-F1 (0.904 vs 0.906) at twice the inference time.
ResNet-18 stays available (``--arch resnet18``), e.g. for GPU training.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from liverview.model._torchvision_compat import import_torchvision

log = logging.getLogger(__name__)

DEFAULT_ARCHITECTURE = "mobilenet_v3_small"
BATCHNORM_MOMENTUM = 0.1


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable[[int], nn.Module]
    gradcam_layer: str
    description: str


def _torchvision_model(name: str, num_classes: int) -> nn.Module:
    tv = import_torchvision()
    model = getattr(tv.models, name)(weights=None, num_classes=num_classes)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            # torchvision's MobileNetV3 uses momentum 0.01, tuned for ImageNet's ~10^6 steps. Trained from
            # scratch on a few thousand lesions (a few hundred steps), its running statistics stay near
            # their initial values and eval-mode predictions collapse (measured: test macro-F1 0.10 on the
            # benchmark's toy set). PyTorch's default 0.1 tracks the batch statistics in time.
            module.momentum = BATCHNORM_MOMENTUM
    return model


class TinyCNN(nn.Module):
    """Four conv-BN-ReLU-pool blocks (16-128 channels): for tests and smoke runs, not for the app."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in (16, 32, 64, 128):
            layers.append(nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                        nn.ReLU(inplace=True), nn.MaxPool2d(2)))
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a for a in (
        Architecture("resnet18", lambda n: _torchvision_model("resnet18", n), "layer4",
                     "ResNet-18 (11.2 M parameters)"),
        Architecture("mobilenet_v3_small", lambda n: _torchvision_model("mobilenet_v3_small", n), "features.12",
                     "MobileNetV3-Small (1.5 M parameters): the default, fastest on CPU"),
        Architecture("mobilenet_v3_large", lambda n: _torchvision_model("mobilenet_v3_large", n), "features.16",
                     "MobileNetV3-Large (4.2 M parameters)"),
        Architecture("efficientnet_b0", lambda n: _torchvision_model("efficientnet_b0", n), "features.8",
                     "EfficientNet-B0 (4.0 M parameters)"),
        Architecture("tiny_cnn", lambda n: TinyCNN(n), "features.3",
                     "4-block CNN (0.1 M parameters): tests and smoke runs only"),
    )
}


class UnknownArchitectureError(ValueError):
    pass


def get_architecture(name: str) -> Architecture:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnknownArchitectureError(f"unknown architecture {name!r}; this liverview knows "
                                       f"{', '.join(sorted(ARCHITECTURES))}") from None


def build_network(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised network (no pretrained weights) with `num_classes` outputs, reading
    `in_channels` input channels (3 HU windows of one slice by default; more for a 2.5-D slab)."""
    model = get_architecture(name).build(num_classes)
    if in_channels != 3:
        _widen_stem(model, in_channels)
    return model


def _widen_stem(model: nn.Module, in_channels: int) -> None:
    """Replace the first convolution (torchvision's stems all read 3 channels) by one reading `in_channels`."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                setattr(parent, child_name, nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, bias=child.bias is not None, padding_mode=child.padding_mode))
                return
    raise ValueError(f"{type(model).__name__} has no convolution to read {in_channels} channels")


def gradcam_target_layer(name: str) -> str:
    """Dotted module path of the Grad-CAM target layer of architecture `name`."""
    return get_architecture(name).gradcam_layer


def find_module(model: nn.Module, dotted: str) -> nn.Module:
    """The submodule at `dotted` (e.g. "layer4", "features.12"); unwraps DistributedDataParallel."""
    model = getattr(model, "module", model)
    modules = dict(model.named_modules())
    if dotted not in modules:
        raise KeyError(f"the network has no module {dotted!r}")
    return modules[dotted]


def find_class_head(model: nn.Module) -> str:
    """Dotted path of the network's last fully connected layer, the one with a row per class."""
    names = [name for name, module in getattr(model, "module", model).named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no fully connected layer")
    return names[-1]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["ARCHITECTURES", "Architecture", "DEFAULT_ARCHITECTURE", "TinyCNN", "UnknownArchitectureError",
           "build_network", "count_parameters", "find_class_head", "find_module", "get_architecture",
           "gradcam_target_layer"]
