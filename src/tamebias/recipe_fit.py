"""The one recipe runner: a recipe's required runs first (deepest first; trained, or reused when
a finished run of the same config is in place), then the recipe's own run. ``fit --recipe``,
``bench`` and ``sweep`` differ only in where the runs go and what settings sit around them.

``fit --task NAME --recipe NAME`` puts the required runs in
``OUTPUT_DIR/recipes[/DIGEST]/TASK/RECIPE/seedSEED``: DIGEST names the extra settings (config
file and ``--set`` overrides) when there are any, so runs of different settings never share a
folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import tasks
from .api import RunResult, fit, run_data, run_identity
from .compose import load_config
from .config import ConfigError, RunConfig, read_config_file
from .methods import METHODS
from .recipes import recipe as find_recipe
from .recipes import recipe_overrides, required_recipes
from .registry import lookup
from .rundir import RunDir

DEFAULT_TASK = "mnist5k-ucidigits"  # the embedded pair: no download
DEFAULT_RECIPE = "adda+bn+aug+im"
# settings that change where data lives or how progress shows, not what a run computes
NEUTRAL_KEYS = ("data.root", "data.download", "train.progress", "train.threads",
                "train.tensorboard", "train.compile", "output_dir")

# (recipe, the runs placed so far) -> its run config
ConfigOf = Callable[[str, dict[str, Path]], RunConfig]


def fit_or_reuse(config: RunConfig, run_dir: Path, data: Any = None,
                 other: Callable[[Path, RunConfig], None] | None = None,
                 announce: Callable[[bool], None] | None = None):
    """``(RunResult, reused)``: the finished run of ``config`` in ``run_dir`` when there is one,
    else trained there (resumed when it stopped). A folder holding a run of another config
    goes to ``other`` (which may move it away), or is an error."""
    folder = RunDir(run_dir)
    saved = folder.config
    if saved.exists():
        earlier = folder.read_config(f"move {run_dir} away to train it again")
        if run_identity(earlier) != run_identity(config.to_dict()):
            if other is None:
                raise ConfigError(f"{run_dir} holds a run of other settings (a run made by an "
                                  "older tamebias?); move it away to train it again")
            other(run_dir, config)
    reused = saved.exists() and folder.is_finished()
    if announce:
        announce(reused)
    if reused:
        return RunResult.load(run_dir), True
    return fit(config, run_dir=run_dir, data=data), False


def required_runs(recipe: str, overrides: list[str]) -> list[str]:
    """The recipes whose runs ``recipe`` starts from, deepest first; none when your own
    ``init.weights`` replaces the recipe's start."""
    return [] if _mentions(overrides, "init.weights") else required_recipes(recipe)


def settings_for(recipe: str, overrides: list[str]) -> list[str]:
    """Your settings as a run that another recipe starts from takes them: all but
    ``init.weights`` and the method's name, and of the ``method.*`` settings those its own
    method has (``--set method.translate_steps=N`` tunes CyCADA, not its source-only run)."""
    fields = set(vars(METHODS[find_recipe(recipe).method].Config()))
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].strip()
        parts = key.split(".")
        if key in ("init.weights", "method", "method.name"):
            continue
        if parts[0] == "method" and len(parts) > 1 and parts[1] not in fields:
            continue
        kept.append(override)
    return kept


def same_data(first: RunConfig, second: RunConfig) -> bool:
    """Whether two configs read the same data (augmentation and batch size aside)."""
    def key(config: RunConfig) -> dict[str, Any]:
        values = config.to_dict()["data"]
        return {k: v for k, v in values.items() if k not in ("augment", "batch_size")}

    return key(first) == key(second)


def train_required(labels: list[str], config_of: ConfigOf, folder_of: Callable[[str], Path],
                   data: Any = None, data_config: RunConfig | None = None,
                   other: Callable[[Path, RunConfig], None] | None = None,
                   on_required: Callable[[str, Path, bool], None] | None = None,
                   ) -> dict[str, Path]:
    """Train (or reuse) the required runs ``labels`` (:func:`required_runs`: deepest first),
    each in ``folder_of(label)``; returns where each one is. ``data`` (decoded for
    ``data_config``) is shared with the runs that read the same data."""
    places: dict[str, Path] = {}
    for label in labels:
        folder = Path(folder_of(label))
        config = config_of(label, places)
        shared = data if data_config is not None and same_data(config, data_config) else None
        fit_or_reuse(config, folder, shared, other,
                     (lambda reused, label=label, folder=folder: on_required(
                         label, folder, reused)) if on_required else None)
        places[label] = folder
    return places


# -- fit --task --recipe --------------------------------------------------------------------

def _digest(base: str | Path | dict | None, overrides: list[str]) -> str | None:
    meaningful = [o for o in overrides if o.split("=", 1)[0].strip() not in NEUTRAL_KEYS]
    if base is None and not meaningful:
        return None
    if isinstance(base, (str, Path)):
        base = read_config_file(base)
    text = json.dumps([base, meaningful], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _mentions(overrides: list[str], *keys: str) -> bool:
    return any(o.split("=", 1)[0].strip() in keys for o in overrides)


def choose(task: str | None, recipe: str | None, base: Any, overrides: list[str]
           ) -> tuple[str | None, str | None]:
    """The task and recipe of a ``fit``: plain ``tamebias fit`` (no config file, no data
    pair, no method set) is ``DEFAULT_RECIPE`` on ``DEFAULT_TASK``; ``--task`` alone gets
    ``DEFAULT_RECIPE`` unless a method is set."""
    if base is None and task is None and not _mentions(overrides, "data.source", "data.target"):
        task = DEFAULT_TASK
    if base is None and recipe is None and not _mentions(overrides, "method", "method.name"):
        recipe = DEFAULT_RECIPE if task is not None else None
    return task, recipe


def _task_items(task: str | None) -> list[str]:
    return lookup(tasks.TASKS, task, "task").overrides() if task is not None else []


def required_places(task: str | None, recipe: str | None, base: Any = None,
                    overrides: list[str] | None = None,
                    locations: dict[str, Path] | None = None) -> dict[str, Path]:
    """Where :func:`fit_recipe` puts (or finds) each run ``recipe`` requires:
    ``locations[label]`` when given, else ``OUTPUT/recipes[/DIGEST]/TASK/LABEL/seedSEED``."""
    if recipe is None:
        return {}
    overrides = list(overrides or [])
    plain = load_config(base, [*_task_items(task), *recipe_overrides(recipe), *overrides])
    labels = required_runs(recipe, overrides)
    digest = _digest(base, overrides)
    root = Path(plain.output_dir) / ("recipes" + (f"/{digest}" if digest else "")) / (
        task or "custom")
    return {label: Path((locations or {}).get(label)
                        or root / label / f"seed{plain.train.seed}")
            for label in labels}


def recipe_config(task: str | None, recipe: str | None, base: Any = None,
                  overrides: list[str] | None = None,
                  places: dict[str, Path] | None = None) -> RunConfig:
    """The run config of ``recipe`` on ``task`` (either may be None), ``base`` (a config file or
    dict) underneath and ``overrides`` on top; the run it starts from is ``places[label]``,
    else where :func:`fit_recipe` puts it."""
    if recipe is None:
        return load_config(base, [*_task_items(task), *list(overrides or [])])
    find_recipe(recipe)  # an unknown name lists the choices
    if places is None:
        places = required_places(task, recipe, base, overrides)
    # the recipe's settings over the task's (e.g. its selection rule), yours over both
    return load_config(base, [*_task_items(task), *recipe_overrides(recipe, places),
                              *list(overrides or [])])


def fit_recipe(task: str | None, recipe: str | None, base: Any = None,
               overrides: list[str] | None = None, run_dir: str | Path | None = None,
               on_required: Callable[[str, Path, bool], None] | None = None, data: Any = None,
               locations: dict[str, Path] | None = None):
    """Train ``recipe`` on ``task`` after the runs it requires (``on_required(label, dir,
    reused)`` is told about each; ``locations`` places some of them); returns the main run's
    :class:`RunResult`."""
    overrides = list(overrides or [])
    places = required_places(task, recipe, base, overrides, locations)
    config = recipe_config(task, recipe, base, overrides, places)
    data = data or run_data(config)
    if recipe is not None:
        train_required(list(places), lambda label, _: recipe_config(
            task, label, base, settings_for(label, overrides), places),
            places.__getitem__, data, config, on_required=on_required)
    return fit(config, run_dir=run_dir, data=data)
