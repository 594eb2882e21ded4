"""The evaluation report: metrics JSON, PNG figures and a one-page report.md.

`write_report(out_dir, results, history, context)` is shared by the end of every training run and by
`liverview-evaluate`. It writes::

    metrics.json                every metric of every evaluated model (cnn, baseline, ...)
    predictions_<name>.csv      lesion uid, truth, prediction, class probabilities (and the uncertainty
                                the app would show, for the CNN)
    confusion_<name>.png        confusion matrix (counts, colour = row-normalised)
    roc_<name>.png              one-vs-rest ROC curves with their AUC
    reliability_<name>.png      reliability diagram + confidence histogram, with the ECE
    accuracy_curves.png         training/validation accuracy per epoch (when a history is given)
    loss_curves.png             training/validation loss per epoch
    report.md                   one page showing all of the above

matplotlib (the optional `train` extra) is imported lazily, with the Agg backend, only here.
"""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from liverview.model.bundle_format import write_json
from liverview.model.evaluation_result import EvaluationResult
from liverview.model.metrics import roc_curve_binary
from liverview.model.number_format import format_number

log = logging.getLogger(__name__)


#: Fewer test lesions than this, or a class with fewer than `FEW_PER_CLASS`, and the figures are flagged as
#: saying almost nothing: one lesion makes an accuracy of 0 or 1 and a macro-F1 of whatever it hit.
FEW_TEST_LESIONS = 20
FEW_PER_CLASS = 5


def _legend(ax: Any, **kwargs: Any) -> None:
    """A legend, where something is labelled (matplotlib warns on an empty one: a ROC plot of a test
    split without positives has no curve)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def too_few_to_tell(metrics: Mapping[str, Any]) -> str:
    """Why a test split's figures say almost nothing ("" when it is big enough to quote)."""
    n = int(metrics.get("n", 0))
    thin = [name for name, c in (metrics.get("per_class") or {}).items() if c.get("support", 0) < FEW_PER_CLASS]
    if n < FEW_TEST_LESIONS:
        return f"only {n} test lesion(s): these figures say almost nothing"
    if thin:
        return f"fewer than {FEW_PER_CLASS} test lesions of {', '.join(thin)}: their figures say little"
    return ""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(result: EvaluationResult, path: Path) -> Path:
    plt = _pyplot()
    cm = np.asarray(result.metrics["confusion_matrix"])
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    n = len(result.classes)
    fig, ax = plt.subplots(figsize=(1.3 * n + 2.2, 1.1 * n + 1.8), dpi=110)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{cm[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), result.classes, rotation=30, ha="right")
    ax.set_yticks(range(n), result.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{result.title}\naccuracy {result.metrics['accuracy']:.3f}, macro-F1 {result.metrics['macro_f1']:.3f}",
                 fontsize=10)
    return _save_figure(plt, fig, path)


def plot_roc(result: EvaluationResult, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.6), dpi=110)
    for i, name in enumerate(result.classes):
        positive = result.y_true == i
        auc = result.metrics["roc_auc"].get(name)
        if auc is None:
            continue
        fpr, tpr, _ = roc_curve_binary(result.probs[:, i], positive)
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    macro = result.metrics.get("macro_roc_auc")
    ax.set_title(f"{result.title}\none-vs-rest ROC" + (f", macro AUC {macro:.3f}" if macro is not None else ""),
                 fontsize=10)
    _legend(ax, loc="lower right", fontsize=8)
    return _save_figure(plt, fig, path)


def plot_reliability(result: EvaluationResult, path: Path) -> Path:
    plt = _pyplot()
    bins = result.metrics["reliability"]
    lower, upper = np.asarray(bins["lower"]), np.asarray(bins["upper"])
    centres, width = (lower + upper) / 2, upper - lower
    acc = np.array([a if a is not None else np.nan for a in bins["accuracy"]])
    conf = np.array([c if c is not None else np.nan for c in bins["confidence"]])
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 5.4), dpi=110, gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.bar(centres, np.nan_to_num(acc), width=width * 0.95, color="#4c72b0", alpha=0.85, label="accuracy")
    ax.bar(centres, np.nan_to_num(conf - acc), bottom=np.nan_to_num(acc), width=width * 0.95, color="#dd8452",
           alpha=0.5, label="gap to confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{result.title}\nreliability, ECE {result.metrics['ece']:.3f}", fontsize=10)
    _legend(ax, loc="upper left", fontsize=8)
    hist.bar(centres, bins["count"], width=width * 0.95, color="grey")
    hist.set_xlabel("confidence (top-class probability)")
    hist.set_ylabel("lesions")
    hist.set_xlim(0, 1)
    return _save_figure(plt, fig, path)


def plot_curves(history: Sequence[dict[str, Any]], key: str, path: Path, ylabel: str) -> Path:
    """Training and validation `key` ("accuracy" or "loss") per epoch; the best epoch marked."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.8), dpi=110)
    ax.plot(epochs, [h.get(f"train_{key}") for h in history], marker="o", ms=3, label=f"training {ylabel}")
    val = [h.get(f"val_{key}") for h in history]
    if any(v is not None for v in val):
        ax.plot(epochs, [np.nan if v is None else v for v in val], marker="o", ms=3, label=f"validation {ylabel}")
    if key == "accuracy" and any(h.get("val_macro_f1") is not None for h in history):
        ax.plot(epochs, [h.get("val_macro_f1") for h in history], ls=":", label="validation macro-F1")
    improved = [h["epoch"] for h in history if h.get("improved")]
    if improved:
        ax.axvline(improved[-1], color="grey", ls="--", lw=0.8, label=f"best epoch ({improved[-1]})")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(f"Training and validation {ylabel}", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    return _save_figure(plt, fig, path)


def _write_predictions(result: EvaluationResult, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        levels = result.uncertainty
        writer.writerow(["lesion_uid", "true", "predicted", *[f"p_{c}" for c in result.classes],
                         *(["uncertainty"] if levels is not None else [])])
        for i, (uid, t, p) in enumerate(zip(result.uids, result.y_true, result.probs)):
            writer.writerow([uid, result.classes[int(t)], result.classes[int(np.argmax(p))],
                             *[f"{v:.6f}" for v in p], *([levels[i]] if levels is not None else [])])


def uncertainty_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown table of `uncertainty.metrics_by_uncertainty` rows, for the report and the model card."""
    lines = ["| uncertainty shown | lesions | share of all | accuracy | macro-F1 |", "|---|---|---|---|---|"]
    lines += [f"| {r['uncertainty']} | {r['n']} | {r['coverage']:.1%} | {format_number(r['accuracy'])} | "
              f"{format_number(r['macro_f1'])} |" for r in rows]
    return lines


def write_report(out_dir: str | Path, results: dict[str, EvaluationResult],
                 history: Sequence[dict[str, Any]] | None = None, context: dict[str, Any] | None = None) -> Path:
    """Write metrics.json, the figures and report.md into `out_dir`; return the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    context = dict(context or {})
    figures: dict[str, dict[str, str]] = {}
    for name, result in results.items():
        _write_predictions(result, out / f"predictions_{name}.csv")
        figures[name] = {
            "confusion": plot_confusion(result, out / f"confusion_{name}.png").name,
            "roc": plot_roc(result, out / f"roc_{name}.png").name,
            "reliability": plot_reliability(result, out / f"reliability_{name}.png").name,
        }
    curves = {}
    if history:
        curves["accuracy"] = plot_curves(history, "accuracy", out / "accuracy_curves.png", "accuracy").name
        curves["loss"] = plot_curves(history, "loss", out / "loss_curves.png", "loss").name
    summary = {"context": context, "results": {name: {"title": r.title, **r.metrics} for name, r in results.items()}}
    if "cnn" in results:
        summary["macro_f1"] = results["cnn"].metrics["macro_f1"]
        summary["accuracy"] = results["cnn"].metrics["accuracy"]
    if history:
        summary["history"] = list(history)
    write_json(out / "metrics.json", summary)
    (out / "report.md").write_text(_render_report(results, figures, curves, history, context), encoding="utf-8")
    log.info("wrote evaluation report %s", out / "report.md")
    return out


def _render_report(results: dict[str, EvaluationResult], figures: dict[str, dict[str, str]], curves: dict[str, str],
                   history: Sequence[dict[str, Any]] | None, context: dict[str, Any]) -> str:
    lines = [f"# {context.get('title', 'Evaluation report')}", ""]
    if context.get("model"):
        lines.append(f"Model: **{context['model']}**" + (f" - bundle `{context['bundle']}`" if context.get("bundle")
                                                          else ""))
    if context.get("datasets"):
        lines.append(f"Data: {', '.join(f'`{d}`' for d in context['datasets'])}"
                     + (f", subset **{context['subset']}**" if context.get("subset") else ""))
    lines += ["", "Research and teaching only - not a medical device.", ""]
    if context.get("warning"):
        lines += [f"**Warning: {context['warning']}**", ""]
    if not results:
        lines.append("No lesions to evaluate.")
    else:
        lines += ["## Summary", "", "| model | lesions | accuracy | macro-F1 | macro ROC AUC | ECE | log loss |",
                  "|---|---|---|---|---|---|---|"]
        for r in results.values():
            m = r.metrics
            cells = [format_number(m[key]) for key in ("accuracy", "macro_f1", "macro_roc_auc", "ece", "log_loss")]
            lines.append(f"| {r.title} | {m['n']} | {cells[0]} | **{cells[1]}** | {' | '.join(cells[2:])} |")
        for r in results.values():
            if warning := too_few_to_tell(r.metrics):
                lines += ["", f"**{r.title}: {warning}.**"]
        for name, r in results.items():
            m = r.metrics
            lines += ["", f"## {r.title}", "", "| class | precision | recall | F1 | support | ROC AUC |",
                      "|---|---|---|---|---|---|"]
            for c in r.classes:
                pc = m["per_class"][c]
                scores = " | ".join(format_number(pc[key]) for key in ("precision", "recall", "f1"))
                lines.append(f"| {c} | {scores} | {pc['support']} | {format_number(m['roc_auc'].get(c))} |")
            lines += ["", "Confusion matrix (rows: truth, columns: prediction):", "",
                      "| truth \\ predicted | " + " | ".join(r.classes) + " |", "|---" * (len(r.classes) + 1) + "|"]
            lines += [f"| {r.classes[i]} | " + " | ".join(str(v) for v in row) + " |"
                      for i, row in enumerate(m["confusion_matrix"])]
            if m.get("by_uncertainty"):
                lines += ["", "By the uncertainty the app shows with each answer:", ""]
                lines += uncertainty_table(m["by_uncertainty"])
            fig = figures[name]
            lines += ["", f"![confusion matrix]({fig['confusion']}) ![ROC curves]({fig['roc']}) "
                          f"![reliability diagram]({fig['reliability']})"]
    if curves:
        best = [h for h in (history or []) if h.get("improved")]
        lines += ["", "## Training curves", ""]
        if best:
            b = best[-1]
            if b.get("val_loss") is None:
                lines.append(f"{len(history or [])} epochs; best epoch {b['epoch']}, chosen by the training loss and "
                             "accuracy: there was no validation split, so nothing here was measured on unseen lesions.")
            else:
                lines.append(f"{len(history or [])} epochs; best epoch {b['epoch']} (validation loss "
                             f"{format_number(b['val_loss'])}, macro-F1 {format_number(b['val_macro_f1'])}).")
        lines += ["", f"![accuracy curves]({curves['accuracy']}) ![loss curves]({curves['loss']})"]
    if context.get("split"):
        lines += ["", "## Data split (lesions per class)", "", "| subset | " + " | ".join(
            sorted({c for v in context["split"].values() for c in v})) + " |"]
        names = sorted({c for v in context["split"].values() for c in v})
        lines.append("|---" * (len(names) + 1) + "|")
        for subset, counts in context["split"].items():
            lines.append(f"| {subset} | " + " | ".join(str(counts.get(c, 0)) for c in names) + " |")
    if context.get("training"):
        lines += ["", "## Training settings", "", "```json", json.dumps(context["training"], indent=1), "```"]
    if context.get("preprocessing"):
        lines += ["", "<details><summary>Preprocessing</summary>", "", "```json",
                  json.dumps(context["preprocessing"], indent=1), "```", "</details>"]
    return "\n".join(lines) + "\n"


__all__ = ["plot_confusion", "plot_curves", "plot_reliability", "plot_roc", "uncertainty_table", "write_report"]
