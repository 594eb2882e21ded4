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
import torch.nn.functional as F
from torch import nn

from liverview.model._torchvision_compat import import_torchvision
from liverview.model.transforms import PreprocessConfig

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


#: HU range the enhancement measurement must read unclipped: water to enhancing tissue and vessels.
MEASURED_HU = (-100.0, 200.0)
#: Pixels of the 224 px crop (about 0.1-0.3 mm each): the lesion's rim, the gap to the liver around
#: it (partial volume, capsule), and the width of that liver ring.
RIM_PX, GAP_PX, RING_PX = 9, 5, 12
#: Numbers measured per phase (see `EnhancementMeasure`).
MEASURES_PER_PHASE = 7


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilation by a (2 radius + 1) square, as a row and a column pass (a square max pool costs the
    square of its width per pixel)."""
    rows = F.max_pool2d(mask, (2 * radius + 1, 1), 1, (radius, 0))
    return F.max_pool2d(rows, (1, 2 * radius + 1), 1, (0, radius))


class EnhancementMeasure(nn.Module):
    """What a radiologist reads across phases, measured on the network input without weights.

    Per phase, on its key slice in the narrowest window that holds `MEASURED_HU` unclipped: mean HU of
    the lesion, of the liver ring around it, their difference, rim minus core (peripheral or nodular
    enhancement, a dark centre), the lesion's HU spread, and the share of lesion pixels 20 HU brighter
    and darker than the ring; all / 100 HU, zero for a phase not read, followed by the phases' presence
    flags. The mask channel places lesion, rim and ring in the crop after every augmentation."""

    def __init__(self, config: PreprocessConfig) -> None:
        super().__init__()
        if config.mask_channel is None:
            raise ValueError("measuring enhancement needs the mask channel (PreprocessConfig.measure_enhancement)")
        covering = [i for i, w in enumerate(config.windows) if w.low <= MEASURED_HU[0] and w.high >= MEASURED_HU[1]]
        index = (min(covering, key=lambda i: config.windows[i].width) if covering
                 else max(range(len(config.windows)), key=lambda i: config.windows[i].width))
        window = config.windows[index]
        self.low, self.width = float(window.low), float(window.width)
        n_phases = max(1, len(config.phases))
        self.phase_channels = [index * config.input_slices + p * config.slab_slices + config.neighbour_slices
                               for p in range(n_phases)]
        self.mask_channel = config.mask_channel
        self.presence = list(range(config.mask_channel + 1, config.mask_channel + 1 + len(config.phases)))
        self.out_features = n_phases * MEASURES_PER_PHASE + len(self.presence)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x[:, self.mask_channel:self.mask_channel + 1] > 0.5).float()
        core = 1.0 - _dilate(1.0 - mask, RIM_PX)
        rim = mask - core
        near = _dilate(mask, GAP_PX)
        ring = _dilate(mask, GAP_PX + RING_PX) - near

        def mean(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
            return (values * where).sum((1, 2, 3)) / where.sum((1, 2, 3)).clamp_min(1.0)

        measures = []
        for channel in self.phase_channels:
            hu = (x[:, channel:channel + 1] * self.width + self.low) / 100.0
            lesion, liver = mean(hu, mask), mean(hu, ring)
            core_mean = torch.where(core.sum((1, 2, 3)) > 0, mean(hu, core), lesion)
            spread = mean((hu - lesion[:, None, None, None]) ** 2, mask).clamp_min(1e-6).sqrt()
            above = mean((hu > (liver + 0.2)[:, None, None, None]).float(), mask)
            below = mean((hu < (liver - 0.2)[:, None, None, None]).float(), mask)
            measures.append(torch.stack([lesion, liver, lesion - liver, mean(hu, rim) - core_mean, spread, above,
                                         below], 1))
        if self.presence:
            flags = x[:, self.presence, 0, 0]
            measures = [m * flags[:, i:i + 1] for i, m in enumerate(measures)] + [flags]
        return torch.cat(measures, 1)


class EnhancementFusion(nn.Module):
    """A torchvision network (the image: shape, margin, texture) fused late with `EnhancementMeasure`
    (the enhancement across phases): the backbone's embedding and a small MLP over the measurements
    are concatenated before one linear layer with a row per class. Grad-CAM reads the backbone."""

    def __init__(self, backbone: nn.Module, config: PreprocessConfig, num_classes: int) -> None:
        super().__init__()
        head = find_class_head(backbone)
        parent, _, attr = head.rpartition(".")
        last = dict(backbone.named_modules())[head]
        owner = dict(backbone.named_modules())[parent] if parent else backbone
        setattr(owner, attr, nn.Identity())
        self.backbone = backbone
        self.measure = EnhancementMeasure(config)
        self.mlp = nn.Sequential(nn.Linear(self.measure.out_features, 64), nn.ReLU(inplace=True),
                                 nn.Linear(64, 64), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(last.in_features + 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.cat([self.backbone(x), self.mlp(self.measure(x))], 1))


def build_network(name: str, num_classes: int, in_channels: int = 3,
                  preprocess: PreprocessConfig | None = None) -> nn.Module:
    """A freshly initialised network (no pretrained weights) with `num_classes` outputs, reading
    `in_channels` input channels (3 HU windows of one slice by default; more for a 2.5-D slab). A
    `preprocess` that measures enhancement gets the architecture inside `EnhancementFusion`."""
    model = get_architecture(name).build(num_classes)
    if in_channels != 3:
        _widen_stem(model, in_channels)
    if preprocess is not None and preprocess.measure_enhancement:
        model = EnhancementFusion(model, preprocess, num_classes)
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


def gradcam_target_layer(name: str, preprocess: PreprocessConfig | None = None) -> str:
    """Dotted module path of the Grad-CAM target layer of architecture `name` (inside
    `EnhancementFusion` when `preprocess` measures enhancement)."""
    layer = get_architecture(name).gradcam_layer
    return f"backbone.{layer}" if preprocess is not None and preprocess.measure_enhancement else layer


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


__all__ = ["ARCHITECTURES", "Architecture", "DEFAULT_ARCHITECTURE", "EnhancementFusion", "EnhancementMeasure", "TinyCNN", "UnknownArchitectureError",
           "build_network", "count_parameters", "find_class_head", "find_module", "get_architecture",
           "gradcam_target_layer"]
