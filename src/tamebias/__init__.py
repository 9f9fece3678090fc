"""tamebias: tame dataset bias with domain adaptation."""

__version__ = "0.1.0"

from .api import RunResult, evaluate_run, fit  # noqa: E402
from .config import RunConfig, load_config  # noqa: E402
from .diagnosis import diagnose  # noqa: E402
from .export import export_run  # noqa: E402
from .inference import load_run  # noqa: E402
from .predict import predict  # noqa: E402
from .recipe_fit import fit_recipe  # noqa: E402
from .translation import export_translated, judge_translation, translation_grids  # noqa: E402

__all__ = ["RunConfig", "RunResult", "__version__", "diagnose", "evaluate_run",
           "export_run", "export_translated", "fit", "fit_recipe", "judge_translation",
           "load_config", "load_run", "predict", "translation_grids"]
