"""``tamebias fit --task NAME --recipe NAME``: a task's protocol (geometry, subsets, backbone,
steps) with a recipe's method and parts (today the variants of ``tasks.VARIANTS``, or any
method name). A recipe whose settings name another run (``{runs}/{suite}/{task}/LABEL/
seed{seed}``, e.g. ``adda+bn+aug`` starting from ``source_only+bn+aug``) gets that run first:
trained, or reused when a finished run of the same config is already there.

Required runs live in ``OUTPUT_DIR/recipes[/DIGEST]/TASK/LABEL/seedSEED``: DIGEST names the
extra settings (config file and ``--set`` overrides) when there are any, so runs of different
settings never share a folder.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import tasks
from .api import RunResult, fit, run_identity
from .compose import load_config
from .config import ConfigError, RunConfig, read_config_file
from .data.domain import prepare_data
from .methods import METHODS
from .registry import lookup
from .rundir import RunDir
from .tasks import VARIANTS, resolve_variant

DEFAULT_TASK = "mnist5k-ucidigits"  # the embedded pair: no download
DEFAULT_RECIPE = "adda+bn+aug"
# the runs a recipe's settings refer to, as bench lays them out
REQUIRED_RUN = re.compile(r"\{runs\}/\{suite\}/\{task\}/([^/]+)/seed\{seed\}")
# settings that change where data lives or how progress shows, not what a run computes
NEUTRAL_KEYS = ("data.root", "data.download", "train.progress", "train.threads",
                "train.tensorboard", "output_dir")


def required_recipes(recipe: str) -> list[str]:
    """The recipes whose runs ``recipe`` starts from, deepest first (each once)."""
    _, overrides = resolve_variant(recipe)
    order: list[str] = []
    for override in overrides:
        for label in REQUIRED_RUN.findall(override):
            for name in [*required_recipes(label), label]:
                if name not in order:
                    order.append(name)
    return order


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


def recipe_config(task: str | None, recipe: str | None, base: Any = None,
                  overrides: list[str] | None = None,
                  locations: dict[str, Path] | None = None) -> RunConfig:
    """The run config of ``recipe`` on ``task`` (either may be None), ``base`` (a config file or
    dict) underneath and ``overrides`` on top. ``{runs}``-style references to required runs
    point where :func:`fit_recipe` puts them, or to ``locations[label]``."""
    overrides = list(overrides or [])
    items: list[str] = []
    if task is not None:
        items += lookup(tasks.TASKS, task, "task").overrides()
    template: list[str] = []
    if recipe is not None:
        if recipe not in VARIANTS:
            lookup({**METHODS, **VARIANTS}, recipe, "recipe")
        method, template = resolve_variant(recipe)
        items.insert(0, f"method.name={method}")
    plain = load_config(base, [*items, *overrides])  # seed and output_dir, before templates
    digest = _digest(base, overrides)
    fields = {"runs": plain.output_dir, "suite": "recipes" + (f"/{digest}" if digest else ""),
              "task": task or "custom", "seed": plain.train.seed}
    place = {label: str(folder) for label, folder in (locations or {}).items()}
    template = [REQUIRED_RUN.sub(lambda m: place.get(m.group(1), m.group(0)), o)
                for o in template]
    formatted = [o.format(**fields) for o in template]
    return load_config(base, [*items, *formatted, *overrides])


def required_run_dir(config: RunConfig, task: str | None, label: str,
                     base: Any = None, overrides: list[str] | None = None) -> Path:
    digest = _digest(base, list(overrides or []))
    suite = "recipes" + (f"/{digest}" if digest else "")
    return (Path(config.output_dir) / suite / (task or "custom") / label
            / f"seed{config.train.seed}")


def _same_data(first: RunConfig, second: RunConfig) -> bool:
    """Whether two configs read the same data (augmentation and batch size aside)."""
    def key(config: RunConfig) -> dict[str, Any]:
        values = config.to_dict()["data"]
        return {k: v for k, v in values.items() if k not in ("augment", "batch_size")}

    return key(first) == key(second)


def fit_recipe(task: str | None, recipe: str | None, base: Any = None,
               overrides: list[str] | None = None, run_dir: str | Path | None = None,
               on_required: Callable[[str, Path, bool], None] | None = None, data: Any = None,
               locations: dict[str, Path] | None = None):
    """Train ``recipe`` on ``task`` after the runs it requires (``on_required(label, dir,
    reused)`` is told about each; ``locations`` places some of them); returns the main run's
    :class:`RunResult`."""
    overrides = list(overrides or [])
    locations = dict(locations or {})
    config = recipe_config(task, recipe, base, overrides, locations)
    data = data or prepare_data(config.data)
    for label in required_recipes(recipe) if recipe else []:
        required = recipe_config(task, label, base, overrides, locations)
        folder = locations.get(label) or required_run_dir(config, task, label, base, overrides)
        saved = RunDir(folder).config
        same = saved.exists() and run_identity(json.loads(saved.read_text())) == \
            run_identity(required.to_dict())
        if saved.exists() and not same:
            raise ConfigError(f"{folder} holds a {label} run of other settings (a run made by "
                              "an older tamebias?); move it away to train it again")
        reused = same and RunDir(folder).is_finished()
        if on_required:
            on_required(label, folder, reused)
        if not reused:
            fit(required, run_dir=folder, data=data if _same_data(required, config) else None)
        else:
            RunResult.load(folder)  # a readable record, or a clear error
    return fit(config, run_dir=run_dir, data=data)
