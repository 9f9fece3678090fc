"""Figures and a readable summary for a finished run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..rundir import RunDir, write_text_atomic
from ..training.log import read_json_lines


def subplots(*grid: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """A figure and its axes, drawn off-screen without pyplot (no global backend is set)."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid, **kwargs)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    matrix = np.asarray(confusion, dtype=float)
    normalized = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(classes) + 2)
    figure, axes = subplots(figsize=(size, size))
    axes.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 12 else 0)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(classes) <= 20:
        for row in range(len(classes)):
            for column in range(len(classes)):
                axes.text(column, row, int(matrix[row, column]), ha="center", va="center",
                          fontsize=7, color="white" if normalized[row, column] > 0.5 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_curves(records: list[dict], path: Path) -> None:
    steps = [r for r in records if "event" not in r]
    evals = [r for r in records if r.get("event") == "eval"]
    figure, (left, right) = subplots(1, 2, figsize=(10, 3.6))
    keys = sorted({k for r in steps for k in r} - {"stage", "step", "global_step"})
    for key in keys:
        points = [(r["global_step"], r[key]) for r in steps if key in r]
        left.plot(*zip(*points, strict=True), label=key)
    left.set_xlabel("step")
    left.set_title("training metrics")
    if keys:
        left.legend(fontsize=8)
    if evals:
        x = [r["global_step"] for r in evals]
        if evals[0].get("target_accuracy") is not None:
            right.plot(x, [100 * (r["target_accuracy"] or 0) for r in evals], "o-",
                       label="target test")
        if evals[0].get("source_val_accuracy") is not None:
            right.plot(x, [100 * (r["source_val_accuracy"] or 0) for r in evals], "s-",
                       label="source val")
        right.legend(fontsize=8)
    right.set_xlabel("step")
    right.set_ylabel("accuracy %")
    right.set_title("evaluations")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_run_report(run_dir: str | Path) -> Path:
    """``summary.md`` plus ``confusion.png`` and ``curves.png`` for a finished run."""
    run_dir = Path(run_dir)
    folder = RunDir(run_dir)
    result = json.loads(folder.result.read_text())
    classes = result["protocol"]["classes"]
    target = result["target"]
    plot_curves(read_json_lines(folder.metrics), folder.curves)
    selected = result["selected"] or {}
    picked = (f"model picked by `{result['selection']}` at {selected.get('stage')} step "
              f"{selected.get('step')}" + (" — *analysis only (uses target labels)*"
                                           if result["analysis_only"] else ""))
    if target.get("accuracy") is None:  # no labeled target evaluation set
        return _write_unlabeled_summary(run_dir, result, picked)
    plot_confusion(target["confusion"], classes, folder.confusion,
                   f"{result['method']} on {result['task']} (target test)")
    per_class = " | ".join(f"{100 * a:.1f}" for a in target["per_class_accuracy"])
    lines = [
        f"# {result['method']} — {result['task']}",
        "",
        f"- target test accuracy: **{100 * target['accuracy']:.2f}%** "
        f"(mean per class {100 * target['mean_class_accuracy']:.2f}%), {picked}",
        *([f"- **transductive**: {evaluation_note(result['protocol'])}"]
          if result["protocol"].get("target_test_transductive") else []),
        *_run_lines(result),
        "",
        "| class | " + " | ".join(classes) + " |",
        "|---" * (len(classes) + 1) + "|",
        "| accuracy % | " + per_class + " |",
        "",
        f"![confusion]({RunDir.CONFUSION})",
        "",
        f"![curves]({RunDir.CURVES})",
        "",
        f"Files: `{RunDir.CONFIG}` (the full config; `tamebias fit --resume` this folder to "
        f"continue), `{RunDir.METRICS}`, `{RunDir.CHECKPOINT}` (last), `{RunDir.BEST}` "
        f"(selected), `{RunDir.RESULT}`.",
    ]
    write_text_atomic(folder.summary, "\n".join(lines) + "\n")
    return folder.summary


def _run_lines(result: dict) -> list[str]:
    """The summary's lines on source validation, protocol, budget and speed."""
    source = result["source_val"]
    return [
        "- source validation accuracy: "
        + (f"{100 * source['accuracy']:.2f}%" if source else "n/a"),
        f"- protocol: {json.dumps(result['protocol'])}",
        f"- {result['steps']} steps, {result['train_images_per_second']:.0f} train images/s, "
        f"wall {result['wall_seconds']:.1f} s on {result['machine']}",
    ]


def evaluation_note(protocol: dict) -> str:
    """One line on what the target accuracy was measured on (transductive use is named)."""
    note = protocol.get("target_evaluation") or "the target test split"
    shared = protocol.get("target_test_shared_files")
    if shared:
        note += f"; {shared} of the {protocol.get('target_test')} test images are also " \
                "unlabeled target training images"
    return note


def label_free_lines(result: dict) -> list[str]:
    """The selected model's label-free validator values and its target prediction statistics."""
    validators = (result.get("selected") or {}).get("validators") or {}
    lines = ["- label-free validators of the selected model (higher is better): "
             + (", ".join(f"{name} {value:.4f}" for name, value in validators.items())
                or "none recorded")]
    predictions = result.get("target_predictions")
    if predictions:
        shares = sorted(predictions["predicted_class_share"].items(), key=lambda kv: -kv[1])
        lines.append(
            f"- predictions on {predictions['count']} unlabeled target images: mean confidence "
            f"{predictions['mean_confidence']:.3f}, mean entropy "
            f"{predictions['mean_entropy']:.3f} nats; predicted class shares "
            + ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares[:20])
            + (", ..." if len(shares) > 20 else ""))
    return lines


def _write_unlabeled_summary(run_dir: Path, result: dict, picked: str) -> Path:
    lines = [
        f"# {result['method']} — {result['task']}",
        "",
        f"- **no target accuracy**: {result['target'].get('note', 'no labeled target set')}. "
        f"Only label-free measures are reported; {picked}.",
        *label_free_lines(result),
        *_run_lines(result),
        "",
        f"![curves]({RunDir.CURVES})",
        "",
        "Give a labeled evaluation set with `--set data.target_test=folder:PATH` (or list:FILE, "
        "npz:PATH) to measure accuracy.",
    ]
    write_text_atomic(RunDir(run_dir).summary, "\n".join(lines) + "\n")
    return RunDir(run_dir).summary
