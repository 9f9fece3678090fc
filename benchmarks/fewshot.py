"""Few-shot pixel alignment rows (docs/fewshot.md): MNIST -> targets known from K unlabeled
images, with the identity translator (source-only reference), FUNIT and COCO-FUNIT.

Per seed, one FUNIT run trains the source model, the translator (on the seen styles only) and
the task stage of the first target / first K; one COCO-FUNIT run starts from that run's source
model (``init.weights=RUN:teacher``). Every other (target, K) is a task stage on those
translators (``init.weights=RUN:translator,teacher,judge``); the identity rows continue the
same source model on untranslated source for the same steps. Existing finished runs are
reused, only by the config they were made with (another one is refused). Rows: mean and std
over seeds of content preservation, style distance and target accuracy (``fewshot_judges``;
final models, no target label picks anything).

    python benchmarks/fewshot.py --seeds 0,1,2 --targets flowerblend,pinkoutline,usps \\
        --shots 1,5 --cycada-steps 2000 --runs-dir runs/fewshot \\
        --output benchmarks/results/fewshot.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

from tamebias.api import fit, run_identity
from tamebias.bench import changed_settings
from tamebias.compose import load_config
from tamebias.fewshot_translation import cycada_judges, fewshot_judges
from tamebias.legacy import upgrade
from tamebias.methods.fewshot import FewShotPixelConfig
from tamebias.recipes import FUNIT_GPU
from tamebias.rundir import RunDir
from tamebias.tasks import FEWSHOT_TARGETS

TRANSLATORS = ("identity", "funit", "coco_funit")


def common(args, target: str, shots: int, seed: int) -> list[str]:
    return [f"data.source={args.source}", f"data.target={FEWSHOT_TARGETS[target]}",
            "data.size=32", "data.channels=3", f"data.target_subset={shots}",
            "train.threads=1", "train.progress=false", "train.log_every=100",
            f"train.eval_every={args.task_steps}", f"method.steps={args.task_steps}",
            "train.selection=last", f"train.seed={seed}", f"data.subset_seed={seed}",
            "method.name=fewshot_pixel", f"method.source_steps={args.source_steps}",
            f"method.translate_steps={args.translate_steps}", *sizes(args), *args.set]


def sizes(args) -> list[str]:
    """--gpu-sizes: FUNIT's own network and translator batch (the ``+gpu`` recipes' settings,
    less their step counts, which --translate-steps / --task-steps give)."""
    if not args.gpu_sizes:
        return []
    return [item for item in FUNIT_GPU
            if not item.startswith(("method.translate_steps=", "method.steps="))]


TRAIN = True  # --tabulate-only: judge the finished runs, train nothing


def check_reuse(folder: Path, overrides: list[str], free: tuple[str, ...] = ()) -> None:
    """A run folder is reused only by the config it was made with: a run of another protocol
    (an earlier --source-steps, a default that moved since) is refused, naming what differs,
    never silently returned. ``free``: dotted settings the caller checks itself."""
    saved = RunDir(folder)
    if not saved.config.exists():
        return
    identities = [json.loads(run_identity(values)) for values in (
        upgrade(saved.read_config(f"move {folder} away")),
        load_config(None, overrides).to_dict())]
    for identity in identities:
        for dotted in free:
            section, key = dotted.split(".", 1)
            identity.get(section, {}).pop(key, None)
    if shown := changed_settings(*identities):
        raise SystemExit(f"{folder} holds a run of another config ({shown}); nothing was "
                         "deleted: choose another --runs-dir or move that run away")


def run(folder: Path, overrides: list[str], free: tuple[str, ...] = ()) -> Path:
    check_reuse(folder, overrides, free)
    if TRAIN and not RunDir(folder).result.exists():
        started = time.perf_counter()
        fit(None, overrides, run_dir=folder)
        print(f"{folder}: {time.perf_counter() - started:.0f} s", flush=True)
    return folder


# the settings of the task stage: a translator run's own task stage stands for its (target, K)
# row only if it trained with the ones asked now (a default may have moved since)
TASK_SETTINGS = ("steps", "source_share", "style_mix", "task_optim")
# what a translator run may differ in from the config asked now: its one task stage (keyed by
# trained_for) and that stage's target
TASK_STAGE = ("data.target", "data.target_subset", "train.eval_every",
              *(f"method.{key}" for key in TASK_SETTINGS))


def task_settings(method: dict) -> dict:
    defaults = dataclasses.asdict(FewShotPixelConfig())
    chosen = {key: method.get(key, defaults[key]) for key in TASK_SETTINGS}
    return json.loads(json.dumps(chosen))  # tuples as the saved config's lists


def trained_for(folder: Path, asked: dict) -> tuple[str, int] | None:
    """The (target, K) of a run's task stage, from its recorded config; None when its task
    stage ran with other task settings than ``asked``."""
    saved = upgrade(RunDir(folder).read_config())
    if task_settings(saved["method"]) != asked:
        return None
    data = saved["data"]
    names = {spec: short for short, spec in FEWSHOT_TARGETS.items()}
    return names.get(data["target"], data["target"]), int(data["target_subset"])


def seed_runs(args, seed: int) -> dict[tuple[str, int, str], Path]:
    base = Path(args.runs_dir) / f"s{seed}"
    first_target, first_shots = args.targets[0], args.shots[0]
    first = common(args, first_target, first_shots, seed)
    funit = run(base / "funit-translator", [*first, "method.translator=funit"], TASK_STAGE)
    coco = run(base / "coco-translator", [*first, "method.translator=coco_funit",
                                          f"init.weights={funit}:teacher"], TASK_STAGE)
    # a translator run also did one task stage: key it by the (target, K) it recorded, which
    # an earlier invocation with other --targets / --shots may have chosen
    asked = task_settings(load_config(None, first).to_dict()["method"])
    runs = {(*trained, name): folder for name, folder in (("funit", funit), ("coco_funit", coco))
            if (trained := trained_for(folder, asked)) is not None}
    for target in args.targets:
        for shots in args.shots:
            for translator in TRANSLATORS:
                if (target, shots, translator) in runs:
                    continue
                source = {"identity": f"{funit}:teacher,judge",
                          "funit": f"{funit}:translator,teacher,judge",
                          "coco_funit": f"{coco}:translator,teacher,judge"}[translator]
                runs[target, shots, translator] = run(
                    base / f"{translator}-{target}-{shots}shot",
                    [*common(args, target, shots, seed), f"method.translator={translator}",
                     f"init.weights={source}"])
    if args.cycada_steps:  # the many-shot reference: CycleGAN on every target training image
        for target in args.targets:
            overrides = [item for item in common(args, target, 0, seed)
                         if not item.startswith(("data.target_subset=", "method.name="))
                         and item not in sizes(args)]  # CycleGAN keeps its own sizes
            runs[target, 0, "cycada_pixel"] = run(
                base / f"cycada_pixel-{target}",
                [*overrides, "method.name=cycada", "method.feature_steps=0",
                 f"method.translate_steps={args.cycada_steps}"])
    return runs


def summary(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [value for value in values if value is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0


def show(row: dict, name: str, scale: float = 1.0) -> str:
    mean, std = row[f"{name}_mean"], row[f"{name}_std"]
    return "n/a" if mean is None else f"{scale * mean:.2f} +- {scale * std:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--targets", default="flowerblend,pinkoutline,usps")
    parser.add_argument("--shots", default="5")
    parser.add_argument("--source", default="mnist")
    parser.add_argument("--source-steps", type=int, default=500)
    parser.add_argument("--translate-steps", type=int, default=800)
    parser.add_argument("--task-steps", type=int, default=300)
    parser.add_argument("--cycada-steps", type=int, default=0,
                        help="also run pixel-only CyCADA on all unlabeled target images (the "
                        "many-shot reference) with this many translator steps (0: skip)")
    parser.add_argument("--runs-dir", default="runs/fewshot")
    parser.add_argument("--output", default="benchmarks/results/fewshot.json")
    parser.add_argument("--set", action="append", default=[],
                        help="an extra dotted override for every run")
    parser.add_argument("--gpu-sizes", action="store_true",
                        help="FUNIT's own network sizes and translator batch (the +gpu "
                        "recipes'); with --translate-steps 100000 --task-steps 5000 --set "
                        "train.device=cuda, a GPU run")
    parser.add_argument("--tabulate-only", action="store_true",
                        help="train nothing: rows from the runs that have finished")
    args = parser.parse_args()
    global TRAIN
    TRAIN = not args.tabulate_only
    args.targets = args.targets.split(",")
    args.shots = [int(value) for value in args.shots.split(",")]
    seeds = [int(value) for value in args.seeds.split(",")]
    judged: dict[tuple[str, int, str], list[dict]] = {}
    for seed in seeds:
        for key, folder in seed_runs(args, seed).items():
            if not RunDir(folder).result.exists():
                continue
            funit = Path(args.runs_dir) / f"s{seed}" / "funit-translator"
            verdict = (cycada_judges(folder, funit) if key[2] == "cycada_pixel"
                       else fewshot_judges(folder))
            verdict["seed"] = seed
            if key[2] in ("funit", "coco_funit"):  # the losses and sizes it trained with
                saved = upgrade(RunDir(folder).read_config())
                verdict["network"] = saved["method"].get("network")
            judged.setdefault(key, []).append(verdict)
    rows = []
    for (target, shots, translator), verdicts in sorted(judged.items()):
        count = shots or "all"  # cycada_pixel: every unlabeled target training image
        row = {"task": f"{args.source}-{target}-{count}shot", "target": FEWSHOT_TARGETS[target],
               "shots": count, "translator": translator, "seeds": [v["seed"] for v in verdicts],
               "runs": [v["run"] for v in verdicts]}
        if verdicts[0].get("network"):
            row["network"] = verdicts[0]["network"]
        for name in ("content_preservation", "style_distance", "accuracy"):
            values = [v[name] for v in verdicts]
            row[f"{name}_mean"], row[f"{name}_std"] = summary(values)
            row[name] = values
        rows.append(row)
    protocol = {
        "source": f"{args.source} train (labeled), 32x32 RGB (gray repeated)",
        "target": "K unlabeled target training images (data.target_subset=K, data.subset_seed"
                  " = seed); tested on the target's test split",
        "backbone": "lenet", "source_steps": args.source_steps,
        "translate_steps": args.translate_steps, "task_steps": args.task_steps,
        "cycada_translate_steps": args.cycada_steps or None,
        "translator": "methods/fewshot.py defaults (models/funit.py FewShotTranslatorConfig); "
                      "each translator row records its network and loss weights",
        "selection": "last (final model)", "seeds": seeds, "extra": [*sizes(args), *args.set],
        "judges": "fewshot_translation.fewshot_judges on the first 2,000 source and target "
                  "test images; content judge trained on seen styles with source labels only",
    }
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"protocol": protocol, "rows": rows}, indent=1) + "\n")
    print(f"wrote {path}")
    for row in rows:
        print(f"{row['task']:28s} {row['translator']:11s} "
              f"content {show(row, 'content_preservation', 100)}  "
              f"style {show(row, 'style_distance')}  accuracy {show(row, 'accuracy', 100)}")

if __name__ == "__main__":
    main()
