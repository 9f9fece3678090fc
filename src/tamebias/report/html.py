"""``tamebias report``: one self-contained HTML page for runs, sweeps and diagnoses. Every
figure is embedded as a base64 PNG; the page has no scripts and loads nothing from a network.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..api import restore_run
from ..evaluation.selection import record_score
from ..rundir import DEMO_FILE, DIAGNOSE_FILE, SWEEP_FILE, RunDir
from ..sweep import chosen_record
from ..training.log import read_json_lines
from .figures import label_free_lines, plot_confusion, plot_curves, subplots
from .shift_figures import plot_per_class
from .tsne import tsne_report

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left;font-size:.92em}th{background:#f3f3f3}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555}.note{color:#8a4b00}.small{font-size:.85em;color:#666}
"""


def _png(draw: Callable[[io.BytesIO], None]) -> str:
    buffer = io.BytesIO()
    draw(buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(data: str, caption: str) -> str:
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _file_figure(path: Path, caption: str) -> str:
    return _figure(base64.b64encode(path.read_bytes()).decode("ascii"), caption)


def _table(rows: list[tuple[str, Any]] | list[list[Any]], header: list[str] | None = None
           ) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _validator_curves(history: list[dict[str, Any]]) -> Callable[[io.BytesIO], None] | None:
    records = [r for r in history if r.get("validators")]
    if len(records) < 2:
        return None

    def draw(buffer: io.BytesIO) -> None:
        figure, axes = subplots(figsize=(8, 3.4))
        steps = [r["global_step"] for r in records]
        for name in records[0]["validators"]:
            values = [r["validators"].get(name) for r in records]
            low, high = min(values), max(values)
            scaled = [(v - low) / (high - low) if high > low else 0.5 for v in values]
            axes.plot(steps, scaled, ".-", label=name)
        accuracy = [r["target_accuracy"] for r in records]
        if None not in accuracy:  # an unlabeled target has no accuracy to draw
            low, high = min(accuracy), max(accuracy)
            axes.plot(steps, [(a - low) / (high - low) if high > low else 0.5
                              for a in accuracy], "k--", lw=2,
                      label="target accuracy (analysis)")
        axes.set_xlabel("step")
        axes.set_ylabel("min-max scaled within run")
        axes.set_title("validators over training (higher is better)")
        axes.legend(fontsize=7, ncol=3)
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=100)

    return draw


def run_section(run_dir: Path) -> str:
    result = json.loads(RunDir(run_dir).result.read_text())
    protocol, config, target = result["protocol"], result.get("config", {}), result["target"]
    classes = protocol["classes"]
    selected = result.get("selected") or {}
    card = [
        ("method", result["method"] + (" (analysis only: uses target labels)"
                                       if result["analysis_only"] else "")),
        ("task", result["task"]),
        ("target test accuracy", f"{_percent(target['accuracy'])} (mean per class "
                                 f"{_percent(target['mean_class_accuracy'])})"),
        ("model selection", f"{result['selection']} — picked {selected.get('stage')} step "
                            f"{selected.get('step')}"),
        ("last model accuracy", _percent(result.get("final_target_accuracy"))),
        ("oracle-best accuracy (analysis)", _percent(result.get("oracle_best_target_accuracy"))),
        ("source validation accuracy", _percent((result.get("source_val") or {}).get(
            "accuracy"))),
        ("backbone", config.get("model", {}).get("backbone", "?")),
        ("seed", config.get("train", {}).get("seed", "?")),
        ("steps", result["steps"]),
        ("input", protocol["input"]),
        ("subsets", protocol.get("subset")),
        ("source train / val", f"{protocol['source_train']} / {protocol['source_val']}"),
        ("target train (unlabeled) / test", f"{protocol['target_train']} / "
                                            f"{protocol['target_test']}"),
        ("batch size", config.get("data", {}).get("batch_size", "?")),
        ("speed", f"{result['train_images_per_second']:.0f} train images/s, wall "
                  f"{result['wall_seconds']:.1f} s"),
        ("machine", ", ".join(f"{k} {v}" for k, v in result["machine"].items())),
        ("method config", json.dumps(config.get("method", {}))),
    ]
    parts = [f"<h2>Run: {html.escape(result['method'])} on {html.escape(result['task'])}</h2>",
             f'<p class="small">{html.escape(str(run_dir))}</p>', "<h3>Protocol</h3>",
             _table(card)]
    metrics = RunDir(run_dir).metrics
    if metrics.exists():
        records = read_json_lines(metrics)
        parts += ["<h3>Training curves</h3>", _figure(
            _png(lambda b: plot_curves(records, b)), "training metrics and evaluations")]
    curves = _validator_curves(result["history"])
    if curves is not None:
        parts.append(_figure(_png(curves), "unsupervised validators at each evaluation"))
    if target.get("accuracy") is None:  # no labeled target evaluation set
        parts += ["<h3>No target accuracy</h3>",
                  f"<p>{html.escape(target.get('note', 'no labeled target set'))}</p>",
                  "<ul>" + "".join(f"<li>{html.escape(line[2:])}</li>"
                                   for line in label_free_lines(result)) + "</ul>"]
        return "\n".join(parts)
    parts += [
        "<h3>Target accuracy per class</h3>",
        _figure(_png(lambda b: plot_per_class(target["per_class_accuracy"], classes, b)),
                "target test accuracy per class (selected model)"),
        _table([[c, f"{100 * a:.1f}"] for c, a in zip(classes, target["per_class_accuracy"],
                                                        strict=True)], ["class", "accuracy %"]),
        "<h3>Confusion matrix</h3>",
        _figure(_png(lambda b: plot_confusion(target["confusion"], classes, b,
                                              f"{result['method']} (target test)")),
                "confusion matrix on the target test split (rows: true class)"),
    ]
    tsne = RunDir(run_dir).tsne
    if tsne.exists():
        parts += ["<h3>t-SNE before / after adaptation</h3>",
                  _file_figure(tsne, "t-SNE of source and target test features")]
    for diagnosis in (run_dir / "diagnose", run_dir):
        if (diagnosis / DIAGNOSE_FILE).exists():
            parts.append(diagnose_section(diagnosis, level=3))
            break
    return "\n".join(parts)


def diagnose_section(folder: Path, level: int = 2) -> str:
    report = json.loads((folder / DIAGNOSE_FILE).read_text())
    heading = f"h{level}"
    rows = [[name, f"{report['pixels'][key]:.3f}", f"{report['features'][key]:.3f}"]
            for key, name in (("proxy_a_distance", "proxy A-distance (0 same, 2 separable)"),
                              ("domain_classifier_error", "domain classifier error"),
                              ("mmd2", "MMD² (RBF, median heuristic)"))]
    shift = report["label_shift"]
    classes = report["protocol"]["classes"]
    proportions = [[c, f"{p:.3f}", f"{q:.3f}", f"{t:.3f}"] for c, p, q, t in zip(
        classes, shift["source_class_proportions"], shift["target_class_proportions"],
        report["analysis_target_test_class_proportions"], strict=True)]
    images = [[name, stats["count"], " ".join(f"{v:.3f}" for v in stats["mean"]),
               " ".join(f"{v:.3f}" for v in stats["std"]), f"{stats['mean_image_contrast']:.3f}"]
              for name, stats in report["images"].items()]
    parts = [
        f"<{heading}>Diagnosis: {html.escape(report['source'])} → "
        f"{html.escape(report['target'])}</{heading}>",
        f"<p>Model: {html.escape(report['model'])}; {report['samples_per_domain']} images per "
        "domain; target training images used without labels.</p>",
        _table(rows, ["measure", "pixels", "features"]),
        "<p>Label shift (BBSE; valid only when p(x|y) is the same in both domains):</p>",
        _table(proportions, ["class", "source", "target BBSE estimate",
                             "target test (analysis)"]),
        _table(images, ["domain", "images", "mean", "std", "mean contrast"]),
    ]
    for name in report.get("figures", []):
        if (folder / name).exists():
            parts.append(_file_figure(folder / name, f"diagnosis: {name}"))
    return "\n".join(parts)


def sweep_section(folder: Path) -> str:
    sweep = json.loads((folder / SWEEP_FILE).read_text())
    runs, rows = sweep["runs"], sweep["rows"]
    validators = [row["validator"] for row in rows]
    table = [[r["validator"], r["runs"],
              "n/a" if r["rank_correlation"] is None else f"{r['rank_correlation']:+.2f}",
              f"{r['picked_accuracy']:.2f}", f"{r['oracle_best_accuracy']:.2f}",
              f"{r['pick_vs_oracle_gap']:.2f}"] for r in rows]

    def scatter(buffer: io.BytesIO) -> None:
        columns = min(3, len(validators))
        lines = -(-len(validators) // columns)
        figure, axes = subplots(lines, columns, figsize=(4.2 * columns, 3.4 * lines),
                                squeeze=False)
        for axis in axes.flat[len(validators):]:
            axis.axis("off")
        for axis, row in zip(axes.flat, rows, strict=False):
            points = [(record_score(chosen, row["validator"]), 100 * chosen["target_accuracy"])
                      for run in runs if (chosen := chosen_record(
                          run["history"], row["validator"], row.get("score_at", "pick")))]
            axis.scatter(*zip(*points, strict=True), s=24)
            best = max(points)
            axis.scatter([best[0]], [best[1]], s=90, facecolors="none", edgecolors="red",
                         label="validator's pick")
            axis.axhline(row["oracle_best_accuracy"], color="gray", ls="--", lw=1,
                         label="oracle-best")
            correlation = row["rank_correlation"]
            axis.set_title(f"{row['validator']} at {row.get('score_at', 'pick')} (Spearman "
                           f"{'n/a' if correlation is None else f'{correlation:+.2f}'})",
                           fontsize=10)
            axis.set_xlabel("validator score (higher is better)")
            axis.set_ylabel("target accuracy % (analysis)")
            axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=90)

    run_rows = [[Path(r["run_dir"]).name, json.dumps(r["params"]), r["seed"],
                 _percent(r["final_target_accuracy"])] for r in runs]
    return "\n".join([
        f"<h2>Sweep: {html.escape(sweep['method'])} on {html.escape(sweep['task'])}</h2>",
        f"<p>{len(runs)} runs; grid {html.escape(json.dumps(sweep['grid']))}; seeds "
        f"{sweep['seeds']}. Each validator scores every run at the evaluation it picks "
        "within the run and picks the best-scoring run. Target accuracy is used for analysis "
        "only.</p>",
        _table(table, ["validator", "runs", "rank corr.", "picked %", "oracle-best %",
                       "gap (points)"]),
        _figure(_png(scatter), "validator score versus oracle target accuracy, per run"),
        "<h3>Runs</h3>",
        _table(run_rows, ["run", "parameters", "seed", "final target accuracy (analysis)"]),
    ])


def demo_section(folder: Path) -> str:
    """The demo's table (gain over source only, selection rules), then each of its runs."""
    demo = json.loads((folder / DEMO_FILE).read_text())
    rows = [[row["recipe"] + (" (analysis)" if row["analysis_only"] else ""),
             f"{row['accuracy']:.2f}", "" if row["gain"] is None else f"{row['gain']:+.2f}",
             row["selection"], f"{row['wall_seconds']:.0f}"] for row in demo["rows"]]
    rules = "; ".join(f"<b>{html.escape(name)}</b>: {html.escape(text)}"
                      for name, text in demo["selection_rules"].items())
    parts = [f"<h2>Demo: {html.escape(demo['task'])}, {demo['steps']} steps, seed "
             f"{demo['seed']}</h2>",
             _table(rows, ["recipe", "target accuracy %", f"gain over {demo['baseline']}",
                           "selected by", "wall s"]),
             f"<p>Models picked by {rules}. Total {demo['wall_seconds']:.0f} s on "
             f"{demo['threads']} CPU thread(s).</p>"]
    for row in demo["rows"]:
        run_dir = folder / row["recipe"]  # the demo's layout, wherever the folder moved
        if not RunDir(run_dir).result.exists():
            run_dir = Path(row["run_dir"])
        parts.append(run_section(run_dir))
    return "\n".join(parts)


def compute_tsne(run_dir: Path, count: int = 300, data_root: str | None = None) -> Path:
    """``RUN/tsne.png`` as ``tamebias tsne`` draws it: beside the run's own source stage when
    it has one (ADDA), else the adapted model alone."""
    after = restore_run(run_dir, "selected", data_root)
    before = (restore_run(run_dir, "stage:source", data_root)
              if RunDir(run_dir).stage("source").exists() else None)
    return tsne_report(after, before, RunDir(run_dir).tsne, count, 0,
                       ("source only", after.config.method.name))


def write_report(paths: list[str | Path], output: str | Path,
                 title: str = "tamebias report", tsne: bool = False,
                 data_root: str | None = None) -> Path:
    """One HTML file for run directories, sweep directories (``sweep.json``) and diagnosis
    folders (``diagnose.json``), in the order given. ``tsne`` computes ``tsne.png`` for runs
    that have none (slow: a t-SNE per run)."""
    sections = []
    for path in map(Path, paths):
        if tsne and RunDir(path).is_finished() and not RunDir(path).tsne.exists():
            compute_tsne(path, data_root=data_root)
        if (path / SWEEP_FILE).exists():
            sections.append(sweep_section(path))
        elif (path / DEMO_FILE).exists():
            sections.append(demo_section(path))
        elif RunDir(path).is_finished():
            sections.append(run_section(path))
        elif (path / DIAGNOSE_FILE).exists():
            sections.append(diagnose_section(path))
        else:
            raise FileNotFoundError(
                f"{path} is neither a finished run (result.json), a sweep (sweep.json), a demo "
                "(demo.json) nor a diagnosis (diagnose.json); pass folders written by tamebias "
                "fit, sweep, demo or diagnose")
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"small\">tamebias {__version__}, "
            f"{stamp}. Self-contained: every figure is embedded.</p>"
            + "\n".join(sections) + "</body></html>\n")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(page, encoding="utf-8")
    return output
