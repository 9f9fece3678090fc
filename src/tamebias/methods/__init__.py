"""The method registry: name -> Method subclass."""

from __future__ import annotations

from ..config import ConfigError, MethodConfig
from ..models.classifier import Classifier
from ..models.norm import has_domain_norm
from ..registry import lookup
from .adda import ADDA
from .base import DataNeeds, Method, Stage, StepContext
from .cdan import CDAN
from .coral import CORAL
from .cycada import CyCADA
from .dan import DAN
from .dance import DANCE
from .dann import DANN
from .fewshot import FewShotPixel
from .mcc import MCC
from .mcd import MCD
from .mdd import MDD
from .mme import MME
from .oracle import Oracle
from .pac import PAC
from .selftrain import SelfTrainingMethod
from .shot import SHOT
from .source_only import SourceOnly
from .ssda import EntropyMinimization, SourceTarget

METHODS: dict[str, type[Method]] = {
    "source_only": SourceOnly,
    "oracle": Oracle,
    "dann": DANN,
    "adda": ADDA,
    "self_training": SelfTrainingMethod,
    "dance": DANCE,
    "cycada": CyCADA,
    "fewshot_pixel": FewShotPixel,  # few-shot pixel alignment (FUNIT / COCO-FUNIT)
    "cdan": CDAN,
    "mcc": MCC,
    "mdd": MDD,
    "mcd": MCD,
    "dan": DAN,
    "coral": CORAL,
    "shot": SHOT,  # source-free: its adaptation stage reads target alone
    # semi-supervised DA: these read the k labeled target shots (data.target_shots)
    "s+t": SourceTarget,
    "ent": EntropyMinimization,
    "mme": MME,
    "pac": PAC,
}


def build_method(config: MethodConfig, classifier: Classifier,
                 initialized: tuple[str, ...] = ()) -> Method:
    """The method of ``config`` around ``classifier``; ``initialized`` names the submodules
    ``init.weights`` will load before the first stage (its stages may skip their training)."""
    method_class = lookup(METHODS, config.name, "method")
    if has_domain_norm(classifier) and not method_class.domain_aware:
        aware = ", ".join(name for name, kind in METHODS.items() if kind.domain_aware)
        raise ConfigError(
            f"model.norm=dsbn needs a method that trains on both domains and routes each to "
            f"its own norms ({aware}); {config.name} does not")
    if method_class.images_only and getattr(
            classifier.backbone, "takes_vectors", False):
        raise ConfigError(
            f"{config.name} translates images pixel by pixel and cannot run on feature "
            "vectors (or the mlp backbone); for vectors use source_only, dann, adda, dance, "
            "self_training (and its recipes fixmatch, mean_teacher)")
    method = method_class(config, classifier)
    method.initialized = tuple(initialized)
    method.freeze()
    return method


__all__ = ["METHODS", "DataNeeds", "Method", "Stage", "StepContext", "build_method"]
