"""tamebias: tame dataset bias with domain adaptation.

The public API is imported on first use (``tamebias.fit`` loads torch, ``import tamebias``
alone does not), so the command line answers ``--help`` without loading torch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "RunResult": "records", "evaluate_run": "api", "fit": "api",
    "RunConfig": "config", "load_config": "compose",
    "diagnose": "diagnosis",
    "export_run": "export",
    "load_run": "inference",
    "predict": "prediction",
    "fit_recipe": "recipe_fit",
    "export_translated": "translation", "judge_translation": "translation",
    "translation_grids": "translation",
}

__all__ = ["RunConfig", "RunResult", "__version__", "diagnose", "evaluate_run", "export_run",
           "export_translated", "fit", "fit_recipe", "judge_translation", "load_config",
           "load_run", "predict", "translation_grids"]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on demand
    from .api import evaluate_run, fit
    from .compose import load_config
    from .config import RunConfig
    from .diagnosis import diagnose
    from .export import export_run
    from .inference import load_run
    from .prediction import predict
    from .recipe_fit import fit_recipe
    from .records import RunResult
    from .translation import export_translated, judge_translation, translation_grids


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tamebias' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
