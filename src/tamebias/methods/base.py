"""The method contract: a method is an ``nn.Module`` that owns its networks and returns
stages; a stage's step function makes explicit updates through ``ctx.update``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar, Protocol

from torch import Tensor, nn

from ..config import MethodConfig, OptimConfig
from ..data.batch import DomainBatch
from ..models.classifier import Classifier


@dataclass(frozen=True)
class DataNeeds:
    """What a method's steps read. ``labeled_target`` feeds the whole labeled target training
    set (the oracle); methods without it never see a target label. ``target_shots`` feeds the
    k-shot labeled target images of semi-supervised DA (``data.target_shots``) as the batch's
    ``labeled_target``; a method without it that trains on labeled source gets them appended
    to its source batch instead (S+T)."""

    target: bool = True
    labeled_target: bool = False
    source: bool = True  # the oracle trains on target labels alone
    strong_target: bool = False  # a strongly augmented second view of the target batch
    target_shots: bool = False

    def restrict(self, batch: DomainBatch) -> DomainBatch:
        """``batch`` with the parts these needs do not read set to None (a stage that
        declares ``DataNeeds(source=False)`` gets no source batch: source-free adaptation)."""
        return DomainBatch(
            batch.source if self.source else None,
            batch.target if self.target else None,
            batch.labeled_target if self.labeled_target or self.target_shots else None)


class StepContext(Protocol):
    """What the trainer hands a step: where it is, and how to apply an update."""

    step: int  # step within the stage, from 0
    global_step: int
    progress: float  # step / stage length, in [0, 1)

    def update(self, optimizer: str, loss: Tensor) -> None:
        """Zero the named optimizer's gradients, backpropagate ``loss``, clip and step."""

    def autocast(self) -> AbstractContextManager: ...


StepFunction = Callable[[DomainBatch, StepContext], dict[str, Tensor]]


@dataclass
class Stage:
    """A phase of training: ``steps`` calls of ``step``, driving the named optimizers over
    the given modules. ``optim`` is one config for all, or one per optimizer name.
    ``on_start`` runs once when the stage begins (not again on resume). Stages with
    ``evaluate=False`` (e.g. training an image translator) are not model-selection candidates.
    ``needs``, when set, narrows the method's data needs for this stage: the loop hands the
    step only those parts of the batch (SHOT's adaptation stage reads target alone)."""

    name: str
    step: StepFunction
    optimizers: dict[str, Sequence[nn.Module]]
    optim: OptimConfig | dict[str, OptimConfig]
    steps: int
    on_start: Callable[[], None] | None = None
    evaluate: bool = True
    needs: DataNeeds | None = None

    def optim_config(self, optimizer: str) -> OptimConfig:
        if isinstance(self.optim, dict):
            return self.optim[optimizer]
        return self.optim


class Method(nn.Module):
    """Base class. Subclasses set ``Config`` (a ``MethodConfig`` dataclass with the paper's
    defaults), ``description`` (one line), ``needs``, and implement ``stages``.
    Modules listed in ``frozen_modules`` take no gradients and stay in eval mode even when
    the method is put in train mode (their BatchNorm statistics must not move)."""

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    description: ClassVar[str] = ""
    needs: ClassVar[DataNeeds] = DataNeeds()
    analysis_only: ClassVar[bool] = False  # trained with target labels: never a headline
    frozen_modules: ClassVar[tuple[str, ...]] = ()
    selection: ClassVar[str | None] = None  # forces a model-selection rule when set
    images_only: ClassVar[bool] = False  # works on pixels: refused on feature vectors
    # routes source and target forwards to their own domain-specific norms (model.norm=dsbn)
    domain_aware: ClassVar[bool] = False
    # settings outside the method section that the method's default form uses, as dotted
    # keys (e.g. ``{"model.norm": "bn"}``); ``load_config`` applies each one only where the
    # run leaves that key unset, and the run's config.json records the value used
    part_defaults: ClassVar[dict[str, object]] = {}
    # submodules loaded from another run before the first stage (init.weights, set by
    # build_method); ``stages`` leaves out the stages whose result they already are
    initialized: tuple[str, ...] = ()

    def __init__(self, config: MethodConfig, classifier: Classifier) -> None:
        super().__init__()
        self.config = config
        self.classifier = classifier
        self.num_classes = classifier.num_classes

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    def load_initial(self, name: str, weights: dict[str, Tensor]) -> None:
        """Load submodule ``name`` (dotted, e.g. ``classifier.backbone``) from another run's
        weights (``init.weights``), before the first stage."""
        self.get_submodule(name).load_state_dict(weights)

    def predict(self, images: Tensor) -> Tensor:
        """Class logits of the model being adapted (used for evaluation)."""
        return self.classifier(images)

    def features(self, images: Tensor) -> Tensor:
        """The features the head sees (used for diagnosis and t-SNE)."""
        return self.classifier.features(images)

    def rule_updated(self) -> tuple[str, ...]:
        """Name prefixes of parameters that move by an explicit rule, not by gradients
        (e.g. an EMA teacher); they never take gradients."""
        return tuple(f"{name}.teacher." for name, module in self.named_children()
                     if getattr(module, "teacher", None) is not None)

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        for name in self.frozen_modules:
            getattr(self, name).eval()
        return self

    def freeze(self) -> None:
        for name in self.frozen_modules:
            getattr(self, name).requires_grad_(False)


def trainable_parameters(modules: Sequence[nn.Module]) -> Iterator[nn.Parameter]:
    """Unique parameters of ``modules`` that take gradients (frozen ones are left out)."""
    seen: set[int] = set()
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                yield parameter
