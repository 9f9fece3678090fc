"""The method registry: name -> Method subclass."""

from __future__ import annotations

from ..config import MethodConfig
from ..models.classifier import Classifier
from ..registry import lookup
from .adda import ADDA
from .base import DataNeeds, Method, Stage, StepContext
from .cycada import CyCADA, CyCADAPixel
from .dann import DANN
from .oracle import Oracle
from .source_only import SourceOnly

METHODS: dict[str, type[Method]] = {
    "source_only": SourceOnly,
    "oracle": Oracle,
    "dann": DANN,
    "adda": ADDA,
    "cycada": CyCADA,
    "cycada_pixel": CyCADAPixel,
}


def build_method(config: MethodConfig, classifier: Classifier) -> Method:
    method = lookup(METHODS, config.name, "method")(config, classifier)
    method.freeze()
    return method


__all__ = ["METHODS", "DataNeeds", "Method", "Stage", "StepContext", "build_method"]
