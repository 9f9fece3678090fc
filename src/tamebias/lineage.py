"""Run lineage: which runs a run was built from, and whether target labels reached it.

Every setting that starts a run from another run's weights goes through :func:`load_weights`
(the one loader) and is listed by :func:`weight_sources` (method settings named ``*_run``,
e.g. ``method.source_run`` / ``translator_run`` / ``pixel_run``, and a generic ``init.from``
section should one appear). :func:`lineage_of` records each parent run with its model-selection
rule and ``analysis_only`` mark; a run built from an analysis run (the oracle, a
``target_oracle`` selection, or a run itself built from one) is analysis too, so no target
label reaches a headline number through reused weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import Tensor

from .methods import METHODS
from .rundir import RunDir, RunFileError, write_json_atomic
from .training import checkpoint

LINEAGE_FILE = RunDir.LINEAGE


def weight_sources(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The (setting, path) pairs of a config (as a dict) that load another run's weights."""
    sources = [(f"method.{key}", value) for key, value in (config.get("method") or {}).items()
               if key.endswith("_run") and isinstance(value, str) and value]
    init = config.get("init")
    if isinstance(init, dict) and isinstance(init.get("from"), str) and init["from"]:
        sources.append(("init.from", init["from"]))
    return sources


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
    parents = [parent_record(setting, source, seen) for setting, source in
               weight_sources(config)]
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

