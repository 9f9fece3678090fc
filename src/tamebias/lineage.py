"""Run lineage: which runs a run was built from, and whether target labels reached it.

A run starts from another run's weights through one setting, ``init.weights =
"RUN:module,..."`` (:func:`parse_init`), applied by :func:`initialize` through
:func:`load_weights` (the one loader) before the first stage; configs of older versions name
the run in method settings (``method.source_run``, ``translator_run``, ``pixel_run``), read as
``init.weights`` (``legacy.py``). :func:`lineage_of` records each parent run with its
model-selection rule and ``analysis_only`` mark; a run built from an analysis run (the oracle, a
``target_oracle`` selection, or a run itself built from one) is analysis too, so no target
label reaches a headline number through reused weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from .legacy import upgrade
from .methods import METHODS
from .rundir import RunDir, RunFileError, write_json_atomic
from .training import checkpoint

LINEAGE_FILE = RunDir.LINEAGE
INIT_SETTING = "init.weights"
# RUN:module,module (dotted submodule names); a RUN without them loads the classifier
_MODULES = re.compile(r"^(?P<run>.+):(?P<modules>[A-Za-z_][\w.]*(?:,[A-Za-z_][\w.]*)*)$")
DEFAULT_MODULES = ("classifier",)


def parse_init(value: str) -> tuple[str, tuple[str, ...]]:
    """``"RUN:module,module"`` -> (RUN, modules); a bare ``RUN`` loads the classifier."""
    match = _MODULES.match(value.strip())
    if match is None:
        return value.strip(), DEFAULT_MODULES
    return match["run"], tuple(match["modules"].split(","))


def weight_sources(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The (setting, path) pairs of a config (as a dict) that load another run's weights."""
    init = _upgraded(config).get("init")
    if isinstance(init, dict) and isinstance(init.get("weights"), str) and init["weights"]:
        return [(INIT_SETTING, parse_init(init["weights"])[0])]
    return []


def _upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """A config of an older version in today's shape (as far as it reads)."""
    try:
        return upgrade(config)
    except ValueError:
        return config


def checkpoint_of(source: str | Path, setting: str) -> Path:
    """The weights file a setting names: a run folder's ``best.pt`` if it kept one, else its
    ``checkpoint.pt``; or a checkpoint file itself."""
    path = Path(source)
    if path.is_dir():
        folder = RunDir(path)
        path = folder.best if folder.best.exists() else folder.checkpoint
    if not checkpoint.exists(path):
        raise FileNotFoundError(f"{setting}: no checkpoint at {path}; give a finished run "
                                "directory or a checkpoint file")
    return path


def load_weights(source: str | Path, setting: str, prefix: str = "") -> dict[str, Tensor]:
    """The method weights under ``prefix`` (prefix removed) of another run or checkpoint file:
    the one place a run reads another run's weights."""
    path = checkpoint_of(source, setting)
    state = checkpoint.load_latest(path)["method"]
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError(f"{setting}: {path} holds no {prefix.rstrip('.') or 'method'} weights")
    return weights


def initialize(method: Any, value: str, setting: str = INIT_SETTING) -> None:
    """Load the submodules ``value`` names (``RUN:module,...``) from that run's weights into
    ``method``, each through ``method.load_initial``."""
    run, modules = parse_init(value)
    names = [name for name, _ in method.named_modules() if name]
    for name in modules:
        if name not in names:
            shown = ", ".join(n for n in names if n.count(".") <= 1)
            raise ValueError(f"{setting}: method {method.config.name} has no module {name!r}; "
                             f"its modules: {shown}")
    state = load_weights(run, setting)
    for name in modules:
        part = {key[len(name) + 1:]: value for key, value in state.items()
                if key.startswith(name + ".")}
        if not part:
            raise ValueError(f"{setting}: {run} holds no {name} weights")
        try:
            method.load_initial(name, part)
        except RuntimeError as error:  # torch's key / shape mismatch report
            first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
            raise ValueError(
                f"{setting}: the {name} weights of {run} do not fit this run's network (a "
                f"different backbone, input size, class count or model.norm?): {first}"
            ) from None


def own_analysis(config: dict[str, Any]) -> list[str]:
    """Why a run's own settings make it analysis only (empty: they do not)."""
    method = (config.get("method") or {}).get("name", "source_only")
    kind = METHODS.get(method)
    reasons = []
    if kind is not None and kind.analysis_only:
        reasons.append(f"method {method} trains on target labels")
    selection = (kind.selection if kind is not None and kind.selection else
                 (config.get("train") or {}).get("selection"))
    if selection == "target_oracle":
        reasons.append("model selected with target labels (target_oracle)")
    return reasons


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def parent_record(setting: str, source: str, seen: frozenset[Path] = frozenset()
                  ) -> dict[str, Any]:
    """What a run built from ``source`` records about it: the path, its method, selection
    rule, ``analysis_only`` mark (its own or inherited) and, in turn, its parents."""
    weights = checkpoint_of(source, setting)
    run = weights.parent.resolve()
    record: dict[str, Any] = {"setting": setting, "path": str(source), "run": str(run),
                              "weights": weights.name}
    config = _read(RunDir(run).config)
    if isinstance(config, dict):
        config = _upgraded(config)  # a run of an older version
    if not isinstance(config, dict):  # a bare checkpoint file: nothing says how it was made
        record.update(method=None, selection=None, analysis_only=False, known=False,
                      reasons=[], parents=[])
        return record
    method = (config.get("method") or {}).get("name")
    kind = METHODS.get(method)
    if run in seen:
        raise RunFileError(f"{setting}: {run} is built from itself (a cycle of runs)")
    lineage = lineage_of(config, seen | {run})
    result = _read(RunDir(run).result)
    reasons = list(lineage["reasons"])
    if isinstance(result, dict) and result.get("analysis_only") and not reasons:
        reasons.append("its result is marked analysis only")
    record.update(
        method=method,
        selection=(kind.selection if kind is not None and kind.selection else
                   (config.get("train") or {}).get("selection")),
        analysis_only=bool(reasons), known=True, reasons=reasons,
        parents=lineage["parents"],
    )
    return record


def lineage_of(config: dict[str, Any], seen: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """A run's lineage from its config (as a dict): its parents and whether it is analysis
    only, with the reasons (its own, and each analysis parent's)."""
    config = _upgraded(config)
    parents = [parent_record(setting, source, seen) for setting, source in
               weight_sources(config)]
    init = config.get("init")
    if parents and isinstance(init, dict) and init.get("weights"):
        parents[0]["modules"] = list(parse_init(init["weights"])[1])
    reasons = own_analysis(config)
    for parent in parents:
        if parent["analysis_only"]:
            reasons.append(f"built from the analysis run {parent['run']} ({parent['setting']}: "
                           f"{'; '.join(parent['reasons'])})")
    return {"parents": parents, "analysis_only": bool(reasons), "reasons": reasons}


def write_lineage(run_dir: str | Path, lineage: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / LINEAGE_FILE, lineage)


def lineage_for(config: dict[str, Any], run_dir: str | Path | None) -> dict[str, Any]:
    """The lineage a run records: the one written when it started (a resumed run was built
    from the parents it started with, even if their folders changed since), else computed
    from ``config`` now."""
    if run_dir is not None:
        saved = Path(run_dir) / LINEAGE_FILE
        if saved.exists() and checkpoint.exists(RunDir(run_dir).checkpoint):
            recorded = _read(saved)
            if isinstance(recorded, dict) and "parents" in recorded:
                return recorded
    return lineage_of(config)

