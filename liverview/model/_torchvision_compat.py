"""Import torchvision beside a CPU-only torch build whose wheel does not match torchvision's ops.

PyPI's torchvision 0.28.0 is a CUDA build; beside the small CPU build of torch 2.13.0 its compiled
ops library cannot load, and `import torchvision` fails while registering fake kernels for
`torchvision::nms` ("operator torchvision::nms does not exist"). Declaring the two op schemas first
lets models and transforms import; only torchvision.ops' C++ kernels (nms, roi_align, ...) stay
unavailable, and classification does not use them. This module acts only when the ops are missing,
so with a matching torch/torchvision pair it does nothing.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def ensure_torchvision_ops() -> None:
    """Define the missing `torchvision::nms`/`qnms` schemas (once) so `import torchvision` works."""
    global _library
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if not missing:
        return
    try:
        import torchvision  # noqa: F401 - a matching build registers its own ops here
        return
    except RuntimeError:
        pass
    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
    for name in missing:
        if not _op_exists(name):
            _library.define(_SCHEMAS[name])
    log.info("torchvision's compiled ops are unavailable with this torch build; declared %s", ", ".join(missing))


def import_torchvision():
    """`torchvision`, importable whatever the torch build (see the module docstring)."""
    ensure_torchvision_ops()
    import torchvision

    return torchvision
