"""The ``tamebias`` command line: fit, eval, list, demo, bench."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import ConfigError
from .demo import DEMO_STEPS
from .errors import TrainingDiverged
from .registry import UnknownNameError
from .rundir import RunDir

app = typer.Typer(
    help="tamebias: tame dataset bias with domain adaptation. Train on labeled source data and "
    "unlabeled target data; get a model that works on the target, and a report.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)

Overrides = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Dotted override, e.g. --set method.steps=2000 "
                 "--set data.source=usps (repeatable; checked against the typed config)."),
]
DataRoot = Annotated[
    str | None,
    typer.Option("--data-root", help="Folder with the datasets (default: $TAMEBIAS_DATA, "
                 "else ~/.cache/tamebias/data)."),
]


def _fail(error: Exception) -> None:
    errors.print(f"[bold red]error:[/] {error}", highlight=False)
    raise typer.Exit(2)


# what a user can cause and fix: a one-line message and exit code 2, never a traceback (the
# package's own errors derive from ValueError; a diverged run keeps its last good checkpoint)
USER_ERRORS = (ValueError, FileNotFoundError, TrainingDiverged)


@contextmanager
def user_errors(*more: type[Exception]) -> Iterator[None]:
    """The one handler of the commands: the errors a user can fix end in ``_fail``."""
    try:
        yield
    except (*USER_ERRORS, *more) as error:
        _fail(error)


def _with_root(overrides: list[str] | None, root: str | None) -> list[str]:
    return [*(overrides or []), *([f"data.root={root}"] if root else [])]


def _result_table(title: str, results) -> Table:
    table = Table(title=title)
    for column in ("method", "target acc %", "per class %", "selected by", "img/s", "wall s"):
        table.add_column(column, no_wrap=True)
    for result in results:
        labeled = result.accuracy is not None
        table.add_row(
            result.method + (" (analysis)" if result.analysis_only else ""),
            f"{100 * result.accuracy:.2f}" if labeled else "n/a (no labels)",
            f"{100 * result.target['mean_class_accuracy']:.2f}" if labeled else "n/a",
            result.selection, f"{result.train_images_per_second:.0f}",
            f"{result.wall_seconds:.0f}",
        )
    table.caption = "runs: " + ", ".join(result.run_dir for result in results)
    return table


RecipeFile = Annotated[Path | None, typer.Option(
    help="A TOML file of more recipes (experiments), e.g. benchmarks/experiments.toml; "
         "--recipe/--methods may then name them.")]


@app.command()
def fit(
    config: Annotated[Path | None, typer.Argument(help="A .toml or .json run config.")] = None,
    overrides: Overrides = None,
    data_root: DataRoot = None,
    run_dir: Annotated[Path | None, typer.Option(help="Where to write the run.")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the run in this folder from its last checkpoint, with its saved config."
    )] = None,
    task: Annotated[str | None, typer.Option(
        help="A task (tamebias list tasks): its data pair, geometry, backbone and steps. "
             "Default with no config file and no data.source/target: mnist5k-ucidigits. "
             "A segmentation task (tamebias list seg-tasks) trains a segmenter.")
    ] = None,
    recipe: Annotated[str | None, typer.Option(
        help="A method or recipe (tamebias list recipes): the method and its parts; runs "
             "it starts from are trained first (or reused). Default with no config file and "
             "no method set: adda+bn+aug+im; on a segmentation task a segmentation method "
             "(tamebias list seg-methods), default dacs.")] = None,
    recipe_file: RecipeFile = None,
    nproc: Annotated[int, typer.Option(
        "--nproc", help="Train data-parallel on N processes (starts torchrun: one process per "
        "GPU, or N CPU processes); data.batch_size stays the global batch.")] = 1,
) -> None:
    """Train one run: a method on a source->target pair, with evaluation and checkpoints.
    Plain `tamebias fit` adapts on the embedded pair (mnist5k -> ucidigits) with
    adda+bn+aug+im."""
    from . import api
    from .recipe_fit import choose, fit_recipe
    from .recipes import load_recipe_file
    from .report.figures import write_run_report
    from .training import distributed

    if nproc > 1 and not distributed.launched():  # this command again, under torchrun
        arguments = [*([str(config)] if config else []),
                     *(item for value in overrides or [] for item in ("--set", value))]
        for option, value in (("--data-root", data_root), ("--run-dir", run_dir),
                              ("--resume", resume), ("--task", task), ("--recipe", recipe),
                              ("--recipe-file", recipe_file)):
            arguments += [option, str(value)] if value is not None else []
        with user_errors():
            raise typer.Exit(distributed.launch(nproc, ["fit", *arguments]))

    def required(label: str, folder: Path, reused: bool) -> None:
        console.print(f"{'reusing' if reused else 'training'} the {label} run it starts from: "
                      f"{folder}")

    if _segmentation_fit(config, overrides, data_root, run_dir, resume, task, recipe):
        return

    with user_errors():  # e.g. a missing model.pretrained weights file
        if recipe_file is not None:
            load_recipe_file(recipe_file)
        if resume is not None:
            if not RunDir(resume).is_run():
                raise ConfigError(f"{resume} is not a run directory (no {RunDir.CONFIG})")
            if config is not None:
                raise ConfigError("--resume continues a run with its saved config; "
                                  "do not pass another config file")
            result = api.fit(None, _with_root(overrides, data_root), run_dir=resume)
        else:
            task, recipe = choose(task, recipe, config, overrides or [])
            result = fit_recipe(task, recipe, config, _with_root(overrides, data_root),
                                run_dir=run_dir, on_required=required)
    if not distributed.is_writer():  # rank 0 reports the data-parallel run
        return
    write_run_report(result.run_dir)
    console.print(_result_table(f"result: recipe {recipe}" if recipe else "result", [result]))
    _evaluation_notes(result)


def _evaluation_notes(result) -> None:
    """Say what the accuracy was measured on when that is not a held-out labeled split."""
    from .report.figures import evaluation_note, label_free_lines

    if result.accuracy is None:
        console.print(f"[bold]no target accuracy:[/] {escape(result.target.get('note', ''))}")
        for line in label_free_lines(result.to_dict()):
            console.print(escape(line))
    elif result.protocol.get("target_test_transductive"):
        console.print(f"[bold]transductive:[/] {escape(evaluation_note(result.protocol))}")


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    dataset: Annotated[str | None, typer.Option(
        help="Evaluate on this dataset instead of the run's target (converted to its geometry)."
    )] = None,
    split: Annotated[str, typer.Option(help="train or test")] = "test",
    which: Annotated[str, typer.Option(
        help="selected (best.pt) or last (checkpoint.pt)")] = "selected",
    data_root: DataRoot = None,
) -> None:
    """Evaluate a trained run: accuracy, per-class accuracy and confusion matrix."""
    from .api import evaluate_run

    with user_errors():
        result = evaluate_run(run_dir, dataset, split, data_root, which)
    console.print(f"accuracy {100 * result.accuracy:.2f}%  mean per class "
                  f"{100 * result.mean_class_accuracy:.2f}%  ({result.count} images)")
    table = Table("class", "accuracy %")
    for index, value in enumerate(result.per_class_accuracy):  # "unknown" under a shift
        table.add_row(result.classes[index] if result.classes else str(index),
                      f"{100 * value:.1f}")
    console.print(table)
    if result.open_set:  # a category-shift run: the rule and the open-set metrics
        open_set, rule = result.open_set, result.open_set["rejection"]
        shown = {key: "n/a" if open_set[key] is None else f"{100 * open_set[key]:.2f}%"
                 for key in ("h_score", "per_class_mean", "known_accuracy", "unknown_recall")}
        console.print(f"open set (reject when {rule['kind']} passes {rule['threshold']:.3f}): "
                      f"H-score {shown['h_score']}  per-class mean {shown['per_class_mean']}  "
                      f"known {shown['known_accuracy']}  unknown recall "
                      f"{shown['unknown_recall']}  AUROC "
                      f"{'n/a' if open_set['auroc'] is None else format(open_set['auroc'], '.3f')}")


@app.command("adabn")
def adabn_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run whose model has batch norm.")],
    which: Annotated[str, typer.Option(
        help="selected (best.pt) or last (checkpoint.pt)")] = "selected",
    data_root: DataRoot = None,
) -> None:
    """AdaBN: recompute batch-norm statistics on the run's unlabeled target training images
    and report target accuracy before and after (writes RUN/adabn.pt and RUN/adabn.json)."""
    from .api import adabn

    with user_errors():
        summary = adabn(run_dir, data_root, which)
    console.print(
        f"AdaBN on {summary['layers']} batch-norm layers over {summary['target_images']} target "
        f"images: target accuracy {100 * summary['before']['accuracy']:.2f}% -> "
        f"{100 * summary['after']['accuracy']:.2f}%  (weights: {run_dir / 'adabn.pt'})")
    before, after = summary["validators"]["before"], summary["validators"]["after"]
    console.print("without target labels (higher is better): " + ", ".join(
        f"{name} {before[name]:.4f} -> {after[name]:.4f}" for name in before))


def _segmentation_fit(config: Path | None, overrides: list[str] | None, data_root: str | None,
                      run_dir: Path | None, resume: Path | None, task: str | None,
                      recipe: str | None) -> bool:
    """``fit`` on a segmentation task (``tamebias list seg-tasks``) or ``--resume`` of a
    segmentation run: the task's protocol, ``--recipe`` a segmentation method (default
    ``dacs``; its source stage runs for the task's source steps unless ``init=RUN`` names a
    finished source-only run). False when this is not a segmentation fit."""
    import json

    from .segbench import SEG_TASKS, task_config
    from .training.segmentation import fit_segmentation, load_seg_config

    saved = None
    if resume is not None and (resume / RunDir.CONFIG).exists():
        try:
            saved = json.loads((resume / RunDir.CONFIG).read_text())
        except (OSError, ValueError):  # unreadable: the classification path names the fault
            return False
        if not isinstance(saved, dict) or saved.get("kind") != "segmentation":
            return False
    elif task not in SEG_TASKS:
        return False
    with user_errors():
        if config is not None:
            raise ConfigError("a segmentation fit takes --task and --set, not a config file")
        items = _with_root(overrides, data_root)
        if saved is not None:
            saved.pop("kind", None)
            run_config, folder = load_seg_config(items, saved), resume
        else:
            method = recipe or "dacs"
            source = ([f"method.source_steps={SEG_TASKS[task].source_steps}"]
                      if method not in ("source_only", "oracle") else [])
            run_config = task_config(task, method, items, source)
            folder = run_dir or Path("runs") / task / method
        result = fit_segmentation(run_config, folder)
    console.print(f"{run_config.task} {run_config.method.name}: target mIoU "
                  f"{100 * result['miou']:.2f}%  pixel accuracy "
                  f"{100 * result['pixel_accuracy']:.2f}%  ({result['selection']}; run: {folder})")
    return True


@app.command("list")
def list_registered(
    what: Annotated[str, typer.Argument(
        help="datasets, backbones, methods, recipes, tasks, shifts, segmenters, "
             "seg-methods, seg-tasks, or all")] = "all",
    full: Annotated[bool, typer.Option(
        "--full", help="Whole descriptions; for recipes their method, overrides and the "
        "runs they start from.")] = False,
) -> None:
    """List datasets, backbones, methods, recipes and benchmark tasks, and the segmentation
    models, methods and tasks (``tamebias segment``), one line each."""
    from .data.datasets import DATASETS
    from .data.shift import PRESETS
    from .methods import METHODS
    from .methods.segmentation import SEGMENTATION_METHODS
    from .models.backbones import BACKBONES
    from .models.segmenters import SEGMENTER_NOTES
    from .recipes import RECIPES
    from .segbench import SEG_TASKS
    from .tasks import TASKS

    def shown(recipe) -> str:
        if not full:
            return recipe.summary
        parts = [recipe.method, *recipe.overrides, *(
            f"init.weights=<{need.recipe} run>:{','.join(need.modules)}"
            for need in recipe.requires)]
        return f"{recipe.summary} ({' '.join(parts)})"

    sections = {
        "datasets": {**{n: d.description for n, d in DATASETS.items()},
                     "folder:PATH": "your images: one sub-folder per class (ImageFolder; Office,"
                     " VisDA, DomainNet layout); optional train/ and test/; a relative PATH"
                     " not in the working directory is read from under the data root",
                     "npz:PATH": "arrays x (uint8 N x H x W [x C]) and y (int64): a file, or a "
                     "folder with train.npz / test.npz; float x (N x D) is feature vectors "
                     "(model.backbone=mlp); no y: unlabeled",
                     "list:FILE": "an image list, lines 'relative/path [label]' (Office / "
                     "DomainNet / VisDA split files); paths next to the list or under the root",
                     "images:PATH": "every image under PATH, unlabeled (a target training set)"},
        "backbones": {n: b.description for n, b in BACKBONES.items()},
        "methods": {n: m.description for n, m in METHODS.items()},
        "recipes": {n: shown(r) for n, r in RECIPES.items()},
        "tasks": {n: t.description for n, t in TASKS.items()},
        "shifts": {n: p.description for n, p in PRESETS.items()},
        "segmenters": dict(SEGMENTER_NOTES),
        "seg-methods": {n: m.description for n, m in SEGMENTATION_METHODS.items()},
        "seg-tasks": {n: t.description for n, t in SEG_TASKS.items()},
    }
    what = "recipes" if what == "variants" else what  # the former name
    if what != "all" and what not in sections:
        _fail(UnknownNameError(f"nothing called {what!r} to list; choose from "
                               f"{', '.join(sections)} or all"))
    for name, entries in sections.items():
        if what not in ("all", name):
            continue
        table = Table(title=name, show_header=False, title_justify="left")
        room = console.width - max(map(len, entries), default=0) - 7  # borders and padding
        for key, description in entries.items():
            if not full and len(description) > room:  # one line each
                description = description[:max(room - 1, 10)] + "…"
            table.add_row(f"[bold]{escape(key)}[/]", escape(description))
        console.print(table)


@app.command()
def demo(
    steps: Annotated[int, typer.Option(help="Training steps per recipe.")] = DEMO_STEPS,
    output: Annotated[Path | None, typer.Option(help="Folder for the demo's runs.")] = None,
    seed: int = 0,
    recipes: Annotated[str | None, typer.Option(
        help="Comma-separated recipes (default: source_only+bn+aug, adda+bn+aug+im, "
             "fixmatch+bn+aug, oracle).")] = None,
    overrides: Overrides = None,
) -> None:
    """Adaptation on MNIST-5k -> UCI digits (shipped with pip packages, no download): source
    only, adaptation recipes and the oracle, with each recipe's gain over source only."""
    from .demo import DEMO_RECIPES, run_demo

    output = output or Path("runs") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    chosen = tuple(recipes.split(",")) if recipes else DEMO_RECIPES
    with user_errors():
        record = run_demo(output, steps, seed, chosen, overrides,
                          on_start=lambda name, text: console.print(f"[bold]{name}[/]: {text}"))
    console.print(_demo_table(record))
    console.print(f"Open {output}/*/summary.md, or one page: tamebias report {output}")


def _demo_table(record: dict) -> Table:
    table = Table(title=f"demo: {record['task']}, {record['steps']} steps, seed "
                        f"{record['seed']} (target test accuracy)")
    for column in ("recipe", "target acc %", "gain (points)", "selected by", "wall s"):
        table.add_column(column, no_wrap=True)
    for row in record["rows"]:
        gain = "" if row["gain"] is None else f"{row['gain']:+.2f}"
        table.add_row(row["recipe"] + (" (analysis)" if row["analysis_only"] else ""),
                      f"{row['accuracy']:.2f}", gain, row["selection"],
                      f"{row['wall_seconds']:.0f}")
    rules = "; ".join(f"{name}: {text}" for name, text in record["selection_rules"].items())
    table.caption = (f"gain over {record['baseline']}. Models picked by {rules}; no target "
                     f"labels except the oracle's. Total {record['wall_seconds']:.0f} s on "
                     f"{record['threads']} CPU thread(s).")
    return table


@app.command()
def tsne(
    run_dir: Annotated[Path, typer.Argument(help="A finished (adapted) run directory.")],
    before: Annotated[Path | None, typer.Option(
        help="A source-only run to show beside it (default: this run's own source stage, "
             "when it has one, as ADDA does).")] = None,
    count: Annotated[int, typer.Option(help="Test images per domain.")] = 500,
    output: Annotated[Path | None, typer.Option(help="PNG path (default RUN/tsne.png); the "
                                                "2-D coordinates go beside it as .npz.")] = None,
    data_root: DataRoot = None,
    seed: int = 0,
) -> None:
    """t-SNE of source and target test features, before and after adaptation, colored by
    domain and by class."""
    from .api import restore_run
    from .report.tsne import tsne_report

    with user_errors():
        after = restore_run(run_dir, "selected", data_root)
        if before is not None:
            baseline = restore_run(before, "selected", data_root)
        elif RunDir(run_dir).stage("source").exists():
            baseline = restore_run(run_dir, "stage:source", data_root)
        else:
            baseline = None
            errors.print("no --before run and no source stage in this run: drawing the adapted "
                         "model alone (pass --before RUN of a source-only run for the pair)")
        path = tsne_report(after, baseline, output or run_dir / "tsne.png", count, seed,
                           ("source only", after.config.method.name))
    console.print(f"wrote {path} and {path.with_suffix('.npz')}")


@app.command()
def bench(
    suite: Annotated[str, typer.Option(
        help="Results file name (and default task list).")] = "digits",
    tasks: Annotated[str | None, typer.Option(help="Comma-separated task names "
                                              "(default: the suite's).")] = None,
    methods: Annotated[str, typer.Option(
        help="Comma-separated methods or recipes (tamebias list recipes); runs a recipe "
        "starts from are trained first (or reused), whatever the order.")
    ] = "source_only,oracle",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0,1,2",
    overrides: Overrides = None,
    data_root: DataRoot = None,
    results_dir: Annotated[Path, typer.Option(help="Where the results tables go.")] = Path(
        "benchmarks/results"),
    runs_dir: Annotated[Path, typer.Option(help="Where the runs go.")] = Path("runs/bench"),
    tables_only: Annotated[bool, typer.Option(
        help="Only rewrite <suite>.md from <suite>.json; train nothing.")] = False,
    replace_runs: Annotated[bool, typer.Option(
        help="When a run folder holds a run of another config, keep it under a config-hash "
        "name and train the new config in its place (without it the bench stops).")] = False,
    recipe_file: RecipeFile = None,
    workers: Annotated[int, typer.Option(
        help="Rows (task x method) trained at once, in worker processes.")] = 1,
) -> None:
    """Run tasks x methods x seeds and write benchmarks/results/<suite>.json and .md."""
    from .bench import rewrite_table, run_bench
    from .recipes import load_recipe_file
    from .tasks import SUITES

    if recipe_file is not None:
        with user_errors():
            load_recipe_file(recipe_file)
    if tables_only:
        with user_errors():
            console.print(f"wrote {rewrite_table(suite, results_dir)}")
        return

    task_names = tasks.split(",") if tasks else SUITES.get(suite)
    if not task_names:
        _fail(UnknownNameError(f"no suite {suite!r}; pass --tasks or use one of "
                               f"{', '.join(SUITES)}"))

    def show(row: dict) -> None:
        method = row["method"] + (" (analysis)" if row["analysis_only"] else "")
        console.print(f"{row['task']:<20} {method:<14} {row['accuracy_mean']:6.2f} ± "
                      f"{row['accuracy_std']:.2f}  ({row['train_images_per_second']:.0f} img/s, "
                      f"{row['wall_seconds']:.0f} s)"
                      + (f"  H {row['h_score_mean']:.2f}" if row.get("h_score_mean") is not None
                         else "")
                      + (f"  per-class {row['per_class_mean_mean']:.2f}"
                         if row.get("per_class_mean_mean") is not None else ""))

    with user_errors():
        run_bench(suite, task_names, methods.split(","), [int(s) for s in seeds.split(",")],
                  _with_root(overrides, data_root), results_dir, runs_dir, on_row=show,
                  replace_runs=replace_runs, workers=workers)
    console.print(f"wrote {results_dir / (suite + '.json')} and {results_dir / (suite + '.md')}")




@app.command()
def translate(
    run_dir: Annotated[Path | None, typer.Argument(
        help="A run of a pixel-level method (cycada); leave out with --few-shot.")] = None,
    output: Annotated[Path | None, typer.Option(
        help="PNG path for the grids (default RUN/translation.png).")] = None,
    count: Annotated[int, typer.Option(help="Test images per row.")] = 12,
    export: Annotated[Path | None, typer.Option(
        "--export", help="Also write the source training set translated to the target style "
        "as PATH.npz (x uint8, y int64); train any method on it with data.source=npz:PATH.")
    ] = None,
    which: Annotated[str, typer.Option(
        help="last (checkpoint.pt), selected (best.pt) or stage:translate")] = "last",
    judge: Annotated[Path | None, typer.Option(
        help="Another run whose classifier reads the source test images before and after "
        "translation (e.g. an oracle trained on labeled target images): how many translations "
        "keep their class, and the most frequent flips. A diagnosis, not a selection rule.")
    ] = None,
    few_shot: Annotated[list[Path] | None, typer.Option(
        "--few-shot", help="A fewshot_pixel run (FUNIT / COCO-FUNIT); repeat to draw several "
        "side by side: rows of source test images, one column per example, the last one all "
        "K together; prints each run's judges.")] = None,
    examples: Annotated[str | None, typer.Option(
        help="With --few-shot: the dataset the examples come from (name, folder:PATH, "
        "npz:PATH); default each run's own K target examples.")] = None,
    shots: Annotated[int, typer.Option(help="With --examples: how many examples.")] = 5,
    data_root: DataRoot = None,
) -> None:
    """Show what a run's image translator learned: rows of source, source->target and its
    cycle reconstruction, then target, target->source and its reconstruction."""
    from .translation import export_translated, judge_translation, translation_grids

    if few_shot:
        from .fewshot_translation import fewshot_grids, fewshot_judges

        with user_errors():
            path = fewshot_grids(list(few_shot), examples, output, min(count, 8), shots,
                                 data_root, which)
            console.print(f"wrote {path}")
            for run in few_shot:
                verdict = fewshot_judges(run, data_root, which)
                kept = verdict["content_preservation"]
                console.print(
                    f"{run} ({verdict['translator']}, K={verdict['shots']}): content "
                    f"preservation {'n/a' if kept is None else f'{100 * kept:.2f}%'}, style "
                    f"distance {verdict['style_distance']:.3f}, target accuracy "
                    f"{100 * verdict['accuracy']:.2f}%")
        return
    if run_dir is None:
        errors.print("error: give a run folder, or --few-shot RUN")
        raise typer.Exit(2)
    with user_errors():
        path = translation_grids(run_dir, output, count, data_root, which)
        console.print(f"wrote {path}")
        if export is not None:
            console.print(f"wrote {export_translated(run_dir, export, data_root, which)}")
        if judge is not None:
            verdict = judge_translation(run_dir, judge, data_root, which)
            console.print(
                f"judge {judge} on {verdict['images']} source {verdict['split']} images: "
                f"{100 * verdict['source_accuracy']:.2f}% as they are, "
                f"{100 * verdict['translated_accuracy']:.2f}% translated to the target style")
            flips = ", ".join(f"{f['label']}->{f['read_as']} {f['count']}"
                              for f in verdict["flips"])
            console.print(f"most frequent flips (label->read as): {flips or 'none'}")


@app.command()
def diagnose(
    source: Annotated[str | None, typer.Option(help="Source dataset (name, npz:PATH, "
                                               "folder:PATH).")] = None,
    target: Annotated[str | None, typer.Option(help="Target dataset.")] = None,
    task: Annotated[str | None, typer.Option(
        help="A benchmark task (tamebias list tasks) instead of --source/--target.")] = None,
    run: Annotated[Path | None, typer.Option(
        help="Measure with this trained run's features (and its source/target).")] = None,
    output: Annotated[Path, typer.Option(help="Folder for diagnose.json and the PNGs.")] = Path(
        "diagnose"),
    steps: Annotated[int, typer.Option(
        help="Steps of the quick source-only model trained when no --run is given.")] = 500,
    samples: Annotated[int, typer.Option(help="Images per domain measured.")] = 1000,
    no_tsne: Annotated[bool, typer.Option("--no-tsne", help="Skip the t-SNE figure.")] = False,
    overrides: Overrides = None,
    data_root: DataRoot = None,
    seed: int = 0,
) -> None:
    """How shifted is the target? Proxy A-distance and MMD (pixels and features), a BBSE
    estimate of the target class proportions, image statistics, sample grids and a t-SNE."""
    from .diagnosis import diagnose as run_diagnose

    with user_errors():
        report = run_diagnose(source, target, run=run, task=task, output=output,
                              overrides=overrides, steps=steps, samples=samples,
                              data_root=data_root, seed=seed, tsne=not no_tsne)
    table = Table(title=f"shift {report['source']} -> {report['target']}")
    for column in ("measure", "pixels", "features"):
        table.add_column(column)
    for key, name in (("proxy_a_distance", "proxy A-distance (0..2)"),
                      ("domain_classifier_error", "domain classifier error"),
                      ("mmd2", "MMD^2 (RBF)")):
        table.add_row(name, f"{report['pixels'][key]:.3f}", f"{report['features'][key]:.3f}")
    console.print(table)
    estimate = report["label_shift"]["target_class_proportions"]
    console.print("BBSE target class proportions: " + " ".join(f"{v:.2f}" for v in estimate))
    console.print(f"source val accuracy {100 * report['source_val_accuracy']:.1f}%; "
                  f"wrote {output / 'diagnose.json'} and {', '.join(report['figures'])}")


@app.command()
def sweep(
    method: Annotated[str, typer.Option(
        help="The method or recipe to tune (tamebias list methods, tamebias list recipes).")],
    grid: Annotated[list[str] | None, typer.Option(
        help="A hyperparameter and its values, e.g. --grid method.domain_weight=0.1,0.3,1.0 "
             "(repeatable; the grid is their product).")] = None,
    task: Annotated[str | None, typer.Option(
        help="A benchmark task (tamebias list tasks), e.g. mnist-usps; else use --set "
             "data.source=... data.target=...")] = None,
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds (each config x seed is "
                                       "one run).")] = "0",
    random_search: Annotated[int | None, typer.Option(
        "--random", help="Draw this many distinct configurations of the grid at random.")
    ] = None,
    search_seed: Annotated[int, typer.Option(help="Seed of the random draw.")] = 0,
    sweep_dir: Annotated[Path | None, typer.Option(
        help="Where the runs and sweep.json go (default runs/sweep/TASK-METHOD).")] = None,
    results: Annotated[Path | None, typer.Option(
        help="Validator table (JSON, .md beside it; rows merged by task, method, validator). "
             "Default SWEEP_DIR/validators.json.")] = None,
    score_at: Annotated[str, typer.Option(
        help="pick: judge each run at the evaluation the validator picks within it; last: at "
             "its final evaluation.")] = "pick",
    workers: Annotated[int, typer.Option(
        help="Trials trained at once on this machine (worker processes sharing the study).")
    ] = 1,
    sampler: Annotated[str, typer.Option(
        help="grid: every configuration of the grid (or --random N of them); tpe: Optuna's "
             "TPE proposes --trials configurations from the grid's values.")] = "grid",
    trials: Annotated[int | None, typer.Option(help="Configurations to try with --sampler "
                                               "tpe.")] = None,
    storage: Annotated[str | None, typer.Option(
        help="The Optuna study's database URL (default sqlite:///SWEEP_DIR/optuna.db); e.g. "
             "postgresql://user@host/db for workers on many machines.")] = None,
    objective: Annotated[str, typer.Option(
        help="The label-free validator a trial is scored by (TPE's target, pruning): "
             "source_val, entropy, im, snd or dev.")] = "source_val",
    prune: Annotated[bool, typer.Option(
        "--prune", help="Stop trials whose objective falls below the median of earlier "
        "trials at the same evaluation (Optuna MedianPruner).")] = False,
    overrides: Overrides = None,
    data_root: DataRoot = None,
) -> None:
    """Grid, random or TPE search over a method's hyperparameters and seeds, run as an Optuna
    study (resumable; --workers N at once); every run scored by every unsupervised validator,
    with the rank correlation to oracle target accuracy and the gap between each validator's
    pick and the oracle's (target labels: analysis only)."""
    from .sweep import run_sweep

    name = (task or "custom") + f"-{method}"
    sweep_dir = sweep_dir or Path("runs") / "sweep" / name

    def show(run: dict) -> None:
        if "diverged" in run:
            errors.print(f"{run['run_dir']}: diverged, left out of the scores")
            return
        console.print(f"{run['run_dir']}: final target accuracy "
                      f"{100 * (run['final_target_accuracy'] or 0):.2f}% (analysis)")

    from .search import WorkerError

    with user_errors(ImportError, WorkerError):
        record = run_sweep(method, list(grid or []), [int(s) for s in seeds.split(",")],
                           sweep_dir, task, _with_root(overrides, data_root), random_search,
                           search_seed, results, on_run=show, score_at=score_at,
                           workers=workers, sampler=sampler, trials=trials, storage=storage,
                           objective=objective, prune=prune)
    table = Table(title=f"validators on {record['task']} / {method} ({len(record['runs'])} runs, "
                        f"scored at {score_at})")
    for column in ("validator", "rank corr.", "picked %", "oracle-best %", "gap (points)"):
        table.add_column(column)
    for row in sorted(record["rows"], key=lambda r: r["pick_vs_oracle_gap"]):
        correlation = row["rank_correlation"]
        table.add_row(row["validator"], "n/a" if correlation is None else f"{correlation:+.2f}",
                      f"{row['picked_accuracy']:.2f}", f"{row['oracle_best_accuracy']:.2f}",
                      f"{row['pick_vs_oracle_gap']:.2f}")
    console.print(table)
    console.print(f"wrote {sweep_dir / 'sweep.json'} and "
                  f"{results or sweep_dir / 'validators.json'} (+ .md)")


@app.command()
def report(
    paths: Annotated[list[Path], typer.Argument(
        help="Run directories, sweep directories (sweep.json) or diagnose folders.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")] = Path(
        "report.html"),
    title: Annotated[str, typer.Option(help="Page title.")] = "tamebias report",
    tsne: Annotated[bool, typer.Option(
        "--tsne", help="Compute RUN/tsne.png for runs without one (needs their data).")] = False,
    data_root: DataRoot = None,
) -> None:
    """One self-contained HTML page (figures embedded, nothing loaded from a network): protocol
    card, training curves, per-class accuracy, confusion matrix, t-SNE and diagnosis when
    present, and for a sweep the validator-versus-oracle scatter."""
    from .report.html import write_report

    with user_errors(KeyError):
        path = write_report(paths, output, title, tsne, data_root)
    console.print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


@app.command("predict")
def predict_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    inputs: Annotated[list[Path], typer.Argument(
        help="Folders (one sub-folder per class, or images directly inside), .npz files "
             "(x uint8, optional y) or image files.")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write every prediction to a .csv or .json file.")] = None,
    which: Annotated[str, typer.Option(
        help="selected (best.pt), last (checkpoint.pt) or adabn")] = "selected",
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Predict new images with a trained run, through its own preprocessing: path, class name
    (or unknown, for category-shift runs by their rejection rule) and confidence."""
    from .prediction import predict, write_predictions

    with user_errors():
        if batch_size < 1:
            raise ValueError("--batch-size must be positive")
        result = predict(run_dir, inputs, batch_size, which, device, progress=True)
        if output is not None:
            write_predictions(result, output, run_dir)
    table = Table("prediction", "images", title=f"{len(result.rows)} images, {run_dir}")
    for name, count in sorted(result.counts.items(), key=lambda item: -item[1]):
        table.add_row(name, str(count))
    console.print(table)
    if result.accuracy is not None:
        console.print(f"accuracy {100 * result.accuracy:.2f}% on the {len(result.labeled)} "
                      "labeled images")
    if output is not None:
        console.print(f"wrote {output}")
    elif len(result.rows) <= 20:
        for row in result.rows:
            console.print(f"{row['path']}  {row['prediction']}  {row['confidence']:.3f}")


@app.command("export")
def export_command(
    run_dir: Annotated[Path, typer.Argument(help="A finished run directory.")],
    format: Annotated[str, typer.Option("--format", "-f", help="onnx or torchscript")] = "onnx",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="The model file (default RUN/model.onnx or RUN/model.pt).")
    ] = None,
    which: Annotated[str, typer.Option(
        help="selected (best.pt), last (checkpoint.pt) or adabn")] = "selected",
) -> None:
    """Export the run's classifier (input: N x C x H x W floats in [0, 1]; output: logits) with
    its preprocessing and class names as metadata (inside the file and as FILE.json)."""
    from .export import export_run

    with user_errors():
        path = export_run(run_dir, format, output, which)
    console.print(f"wrote {path} and {path}.json")


@app.command("segment")
def segment(
    task: Annotated[str, typer.Option(help="A segmentation task (scenes-mnist-usps, "
                                           "scenes-mnist-photo, scenes-mnist-bold, "
                                           "gta5-cityscapes).")] = "scenes-mnist-photo",
    methods: Annotated[str, typer.Option(help="Comma-separated segmentation methods.")] =
        "source_only,adabn,adaptseg,minent,advent,cbst,dacs,oracle",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds.")] = "0",
    output: Annotated[Path, typer.Option(help="Where the runs go.")] = Path("runs/segment"),
    results: Annotated[Path | None, typer.Option(
        help="Merge the rows into this JSON file (e.g. "
             "benchmarks/results/segmentation.json).")] = None,
    overrides: Overrides = None,
    data_root: DataRoot = None,
) -> None:
    """Semantic segmentation under domain shift: source only, then each adaptation method
    from its source-only run, and the oracle (analysis), per seed; rows with mIoU, pixel
    accuracy and per-class IoU (docs/segmentation.md)."""
    from .segbench import METHODS, merge_rows, run_task

    chosen = [name.strip() for name in methods.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown:
        _fail(ValueError(f"unknown segmentation method(s) {', '.join(unknown)}; valid: "
                         f"{', '.join(METHODS)}"))
    with user_errors():
        rows = run_task(task, chosen, [int(s) for s in seeds.split(",")], output,
                        list(overrides or []), data_root, say=console.print)
        if results is not None:
            merge_rows(results, rows)
    table = Table(title=f"{task}: target mIoU / pixel accuracy (%)")
    for column in ("method", "mIoU", "pixel acc", "seeds", "selected by"):
        table.add_column(column, no_wrap=True)
    for item in rows:
        table.add_row(item["method"] + (" (analysis)" if item["analysis_only"] else ""),
                      f"{item['miou_mean']:.2f} ± {item['miou_std']:.2f}",
                      f"{item['pixel_accuracy_mean']:.2f} ± {item['pixel_accuracy_std']:.2f}",
                      ",".join(map(str, item["seeds"])), item["selection"])
    console.print(table)
