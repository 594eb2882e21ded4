"""Model bundles: the folder the app loads a classifier from, and inference on it.

Layout::

    model.json              what the network is and how to feed it (see `BUNDLE_KEYS`)
    weights.pt              the state_dict only (torch.save); read with torch.load(weights_only=True)
                            after its SHA-256 matched model.json, so a damaged or swapped file is refused
    MODEL_CARD.md           intended use, training data, metrics, known limits (`render_model_card`)
    training_history.json   optional: per-epoch losses/accuracies, for the report's curves

model.json keys: format, format_version, name, version, created, liverview_version, torch_version,
architecture, classes [{id, name, code}], input_size [C, H, W], preprocessing (PreprocessConfig),
gradcam_target_layer, weights {file, sha256, bytes}, sha256, training_data, training, metrics
(accuracy, macro_f1, ...), intended_use.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from liverview import __version__
from liverview.annotations.labels import BUILTIN_LABELS
from liverview.model.network import UnknownArchitectureError, build_network, get_architecture
from liverview.model.transforms import LesionPreprocess, PreprocessConfig, build_preprocess
from liverview.model.evaluate import uncertainty_table
from liverview.model.uncertainty import answer_from_copies

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "liverview.model"
BUNDLE_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.pt"
#: Flips for the test-time average and the uncertainty: the identity, then over W, H and both - the
#: flips training augments with.
FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, write) -> None:
    """Temp file + fsync + os.replace. The temp file is opened normally (not mkstemp) so the bundle
    gets the usual umask permissions and others sharing a model folder can read it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
    _write_atomic(path, lambda fh: fh.write(text.encode("utf-8") + b"\n"))


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
    state = cpu_state(getattr(model, "module", model))
    weights = folder / WEIGHTS_FILE
    _write_atomic(weights, lambda fh: torch.save(state, fh))
    sha = file_sha256(weights)
    info: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "name": name, "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "liverview_version": __version__,
        "torch_version": torch.__version__, "architecture": architecture, "classes": describe_classes(classes),
        "input_size": list(preprocess_config.input_shape), "preprocessing": preprocess_config.to_dict(),
        "gradcam_target_layer": get_architecture(architecture).gradcam_layer,
        "weights": {"file": WEIGHTS_FILE, "sha256": sha, "bytes": weights.stat().st_size}, "sha256": sha,
        "training_data": training_data or {}, "training": training or {}, "metrics": metrics or {},
        "intended_use": INTENDED_USE,
        "inference": {"flip_average": bool(flip_average), "flips": [list(d) for d in FLIP_DIMS] if flip_average else []},
    }
    if training_domain is not None:
        info["training_domain"] = dict(training_domain)
    if history is not None:
        write_json(folder / HISTORY_FILE, history)
    write_json(folder / MODEL_JSON, info)
    card = render_model_card(info, notes=card_notes)
    _write_atomic(folder / MODEL_CARD, lambda fh: fh.write(card.encode("utf-8")))
    log.info("wrote model bundle %s (%s, sha256 %s)", folder, architecture, sha[:12])
    return folder


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


def load_bundle(path: str | Path, device: str | torch.device = "cpu", *,
                expected_classes: Sequence[str] | None = None,
                expected_input_size: Sequence[int] | None = None) -> LoadedModel:
    """Verify and load a bundle. Checks, each failing with a specific `BundleError`: model.json and the
    weights file exist; the weights' SHA-256 equals model.json's (a corrupted or replaced file is
    never unpickled); the architecture is known; the classes and input size agree with the
    preprocessing, the weights and the caller's expectations; the weights fit the architecture."""
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
    input_size = [int(v) for v in info["input_size"]]
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
        raise BundleError(f"{weights} cannot be read as a weights file ({exc})") from exc
    if not isinstance(state, dict):
        raise BundleError(f"{weights} does not hold a state_dict")
    model = build_network(architecture, len(classes), config.channels)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{weights} does not fit a {architecture} with {len(classes)} classes "
                          f"({str(exc).splitlines()[0]})") from exc
    device = torch.device(device)
    model.to(device).eval()
    layer = str(info.get("gradcam_target_layer") or get_architecture(architecture).gradcam_layer)
    return LoadedModel(model=model, info=info, classes=classes, class_names=names, preprocess_config=config,
                       preprocess=build_preprocess(config), gradcam_target_layer=layer, device=device, path=folder)


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto": this process's GPU when there is one, else the CPU; or any torch device string.
    Nothing is hard-wired to CUDA: the model and every input go to this device."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
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


def _describe_slices(neighbours: int) -> str:
    if neighbours <= 0:
        return "key slice of the ROI"
    return (f"key slice of the ROI and {neighbours} slice{'s' if neighbours > 1 else ''} on each side "
            f"(2.5-D: every window of every slice is a channel)")


def _describe_slice_limit(neighbours: int) -> str:
    if neighbours <= 0:
        return "One axial slice per lesion (the slice with the largest outline)"
    return (f"{2 * neighbours + 1} adjacent axial slices per lesion around the one with the largest outline, "
            f"whatever their thickness: the rest of a larger lesion is not seen")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _describe_windows(windows: Sequence[dict[str, Any]]) -> str:
    return ", ".join(f"{w.get('name', '')} W{float(w['width']):g}/L{float(w['center']):g}" for w in windows)


#: The training settings the card lists (model.json keeps them all, run_dir among them).
CARD_TRAINING_KEYS = ("epochs_run", "best_epoch", "seed", "batch_size", "lr", "lr_schedule", "weight_average",
                      "optimizer", "loss", "monitor", "patience", "world_size", "device", "stopped_by")


def _describe_start(training: dict[str, Any]) -> str:
    start = training.get("initial_weights")
    if not start:
        return "trained from scratch"
    new = start.get("new_classes") or []
    return (f"fine-tuned from {start.get('name')} {start.get('version')}, weights SHA-256 "
            f"{str(start.get('sha256'))[:12]}..." + (f"; classes new to it: {', '.join(new)}" if new else ""))


def render_model_card(info: dict[str, Any], notes: Sequence[str] = ()) -> str:
    """MODEL_CARD.md for a bundle's model.json: intended use, model, data, metrics, limits."""
    classes = [c["id"] if isinstance(c, dict) else str(c) for c in info.get("classes", [])]
    metrics = info.get("metrics") or {}
    data = info.get("training_data") or {}
    training = info.get("training") or {}
    pre = info.get("preprocessing") or {}
    lines = [f"# Model card: {info.get('name', 'liverview model')} {info.get('version', '')}".rstrip(), "",
             f"Created {info.get('created', '?')} with liverview {info.get('liverview_version', '?')} and torch "
             f"{info.get('torch_version', '?')}.", "",
             "## Intended use", "", info.get("intended_use", INTENDED_USE), "",
             "Task: classify one outlined focal liver lesion on a contrast-enhanced (portal-venous) CT slice "
             f"into {', '.join(classes)}. The reader outlines the lesion; the model does not detect lesions.", "",
             "## Model", "",
             f"- Architecture: {info.get('architecture')} (torchvision, {_describe_start(training)})",
             f"- Input: {' x '.join(str(v) for v in info.get('input_size', []))} (channels x height x width), "
             f"values 0..1",
             f"- Preprocessing: {_describe_slices(int(pre.get('neighbour_slices', 0)))}, square crop of side max("
             f"{pre.get('crop_min_mm')} mm, extent x {pre.get('crop_scale')} + 2 x {pre.get('crop_margin_mm')} mm), "
             f"HU windows {_describe_windows(pre.get('windows', []))}, denoising {pre.get('denoise', 'none')}, CLAHE {'on' if pre.get('clahe') else 'off'}",
             "- Answer: " + ("the mean of the class probabilities of the input and its horizontal, vertical "
                             "and double flips (test metrics measured the same way)"
                             if (info.get("inference") or {}).get("flip_average") else "one pass per lesion"),
             f"- Grad-CAM target layer: `{info.get('gradcam_target_layer')}`",
             f"- Weights SHA-256: `{info.get('sha256', '')}`", "",
             "## Training data", ""]
    if data.get("description"):
        lines += [str(data["description"]), ""]
    if data.get("simulated"):
        lines += ["**The training data are simulated lesions**, not patient images. Performance on real CT is "
                  "unknown until measured on real, independently labelled cases.", ""]
    if data.get("n_training_only"):
        lines += [f"{data['n_training_only']} of the training lesions come from datasets given for training only; "
                  "validation and test use none of them.", ""]
    for key in ("n_lesions", "class_counts", "split_counts", "datasets"):
        if key in data:
            lines.append(f"- {key}: `{json.dumps(data[key], default=str)}`")
    if training:
        lines += ["", "## Training", ""] + [f"- {k}: `{json.dumps(v, default=str)}`" for k, v in training.items()
                                          if k in CARD_TRAINING_KEYS]
    lines += ["", "## Metrics (held-out test split)", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        for key in ("n", "accuracy", "macro_f1", "macro_precision", "macro_recall", "macro_roc_auc", "ece"):
            if key in metrics:
                lines.append(f"| {key} | {_fmt(metrics[key])} |")
        per_class = metrics.get("per_class") or {}
        if per_class:
            lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
            for name, m in per_class.items():
                lines.append(f"| {name} | {_fmt(m['precision'])} | {_fmt(m['recall'])} | {_fmt(m['f1'])} | "
                             f"{m['support']} |")
        cm = metrics.get("confusion_matrix")
        if cm:
            lines += ["", "Confusion matrix (rows: truth, columns: prediction):", "",
                      "| truth \\ predicted | " + " | ".join(classes) + " |",
                      "|---" * (len(classes) + 1) + "|"]
            lines += [f"| {classes[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(cm)]
        if metrics.get("by_uncertainty"):
            lines += ["", "By the uncertainty the app shows with each answer (from the answer's entropy and from how "
                          "the input's flipped copies agree):", ""] + uncertainty_table(metrics["by_uncertainty"])
            lines += ["", "Measured on the same held-out lesions as above; on other data, such as real scans, what a "
                          "level means is unmeasured."]
        if metrics.get("by_phases"):
            lines += ["", "By the contrast phases read (the same test lesions read on those phases only, the others "
                          "marked missing):", "", "| phases read | lesions | accuracy | macro-F1 |", "|---|---|---|---|"]
            lines += [f"| {' + '.join(row['phases'])} | {row['n']} | {_fmt(row['accuracy'])} | {_fmt(row['macro_f1'])} |"
                      for row in metrics["by_phases"]]
        baseline = metrics.get("baseline")
        if baseline:
            lines += ["", f"Classical baseline on the same split ({baseline.get('classifier', 'random forest')}): "
                          f"accuracy {_fmt(baseline.get('accuracy'))}, macro-F1 {_fmt(baseline.get('macro_f1'))}."]
    else:
        lines.append("Not evaluated.")
    lines += ["", "## Known limits", "",
              f"- {_describe_slice_limit(int(pre.get('neighbour_slices', 0)))}; "
              + (f"reads the contrast phases {', '.join(pre['phases'])} (any of them may be missing)."
                 if pre.get("phases") else "one contrast phase, no multi-phase information."),
              ("- Trained from scratch on the data above only" if not training.get("initial_weights") else
               "- Trained on the data above, starting from a model trained on other data (see that model's card)")
              + "; other scanners, phases, reconstruction kernels and lesion types (abscess, FNH, adenoma, ...) are "
              "outside what it has seen.",
              "- Probabilities are calibrated only as well as the ECE above says."]
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


__all__ = ["BUNDLE_FORMAT", "BUNDLE_KEYS", "BUNDLE_VERSION", "BundleError", "HISTORY_FILE", "INTENDED_USE",
           "LoadedModel", "MODEL_CARD", "MODEL_JSON", "WEIGHTS_FILE", "cpu_state", "describe_classes", "file_sha256",
           "load_bundle", "predict", "predict_lesion", "read_bundle_info", "render_model_card", "resolve_device",
           "save_bundle"]
