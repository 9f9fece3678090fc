"""Open-set evaluation: a rejection rule turns a K-way classifier into a (K+1)-way one whose
extra answer is "unknown" (label K), and the metrics of the open-set literature.

- ``known_accuracy``: mean per-class accuracy over the known (shared) classes present in the
  target test split; a rejected known sample counts as wrong.
- ``unknown_recall``: the fraction of target-private ("unknown") samples that are rejected.
- ``h_score``: the harmonic mean of the two (Fu et al., 2020; used by DANCE's successors);
  0 when both are 0, ``None`` when the target has no unknown samples.
- ``per_class_mean``: the mean per-class accuracy over the present known classes *and* the
  unknown class as one extra class, DANCE's own metric (Saito et al., arXiv:2002.07953).
- ``auroc``: the area under the ROC curve of the rejection score (entropy, or minus the
  confidence) separating unknown from known samples: threshold-free, so it tells a score that
  ranks unknowns well but sits on the wrong side of a fixed threshold from one that cannot
  tell them apart; ``None`` when the target has no unknown (or no known) samples.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .confusion import confusion_matrix

RULES = ("entropy", "confidence")
# the metrics a category-shift evaluation records (fractions); AUROC is None for old records
METRICS = ("h_score", "per_class_mean", "known_accuracy", "unknown_recall", "auroc")


@dataclass(frozen=True)
class RejectionRule:
    """``entropy``: reject when the softmax entropy (nats) is above ``threshold``;
    ``confidence``: reject when the largest softmax probability is below ``threshold``."""

    kind: str
    threshold: float

    def __post_init__(self) -> None:
        if self.kind not in RULES:
            raise ValueError(f"rejection rule must be one of {', '.join(RULES)}, "
                             f"got {self.kind!r}")

    def score(self, logits: Tensor) -> Tensor:
        """How unknown each sample looks (higher: more): its entropy, or minus its
        confidence."""
        if self.kind == "entropy":
            return entropy(logits)
        return -F.softmax(logits.float(), dim=1).amax(1)

    def reject(self, logits: Tensor) -> Tensor:
        """A boolean mask: True for samples answered "unknown"."""
        if self.kind == "entropy":
            return self.score(logits) > self.threshold
        return self.score(logits) > -self.threshold

    def predict(self, logits: Tensor) -> Tensor:
        """Class indices 0..K-1, or K ("unknown") where the rule rejects."""
        predictions = logits.argmax(1)
        return torch.where(self.reject(logits), logits.shape[1], predictions)

    def to_dict(self) -> dict:
        return asdict(self)


def default_threshold(kind: str, num_classes: int) -> float:
    """log(K)/2 for entropy (DANCE's rho), 0.5 for confidence."""
    return math.log(num_classes) / 2 if kind == "entropy" else 0.5


def make_rule(kind: str, num_classes: int, threshold: float | None = None) -> RejectionRule:
    return RejectionRule(kind, default_threshold(kind, num_classes) if threshold is None
                         else float(threshold))


def entropy(logits: Tensor) -> Tensor:
    """Softmax entropy per row, in nats."""
    log_probabilities = F.log_softmax(logits.float(), dim=1)
    return -(log_probabilities.exp() * log_probabilities).sum(1)


@dataclass
class OpenSetEvaluation:
    known_accuracy: float
    unknown_recall: float | None
    h_score: float | None
    per_class_mean: float
    accuracy: float  # over all samples, "unknown" counted as a class
    rejected_fraction: float
    per_class_accuracy: list[float | None]  # K + 1 entries; None for classes absent in the data
    confusion: list[list[int]]  # (K + 1) x (K + 1); rows true, columns predicted; K = unknown
    rejection: dict
    auroc: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def h_score(known: float, unknown: float) -> float:
    return 0.0 if known + unknown == 0 else 2 * known * unknown / (known + unknown)


def open_set_metrics(confusion: Tensor, rule: RejectionRule | None = None) -> OpenSetEvaluation:
    """Metrics from a (K+1) x (K+1) confusion matrix whose last row/column is "unknown"."""
    confusion = torch.as_tensor(confusion, dtype=torch.int64).cpu()
    total = confusion.sum(1)
    correct = confusion.diagonal()
    present = total > 0
    accuracy = correct.double() / total.clamp(min=1)
    per_class = [float(a) if p else None for a, p in zip(accuracy, present, strict=True)]
    known_present = present[:-1]
    known = float(accuracy[:-1][known_present].mean()) if known_present.any() else 0.0
    has_unknown = bool(present[-1])
    unknown = float(accuracy[-1]) if has_unknown else None
    count = int(total.sum())
    return OpenSetEvaluation(
        known_accuracy=known,
        unknown_recall=unknown,
        h_score=h_score(known, unknown) if unknown is not None else None,
        per_class_mean=float(accuracy[present].mean()) if present.any() else 0.0,
        accuracy=float(correct.sum()) / max(count, 1),
        rejected_fraction=float(confusion[:, -1].sum()) / max(count, 1),
        per_class_accuracy=per_class,
        confusion=confusion.tolist(),
        rejection=rule.to_dict() if rule else {},
    )


def evaluate_logits(logits: Tensor, labels: Tensor, rule: RejectionRule) -> OpenSetEvaluation:
    """Open-set metrics of K-way ``logits`` against labels in 0..K (K = unknown)."""
    classes = logits.shape[1] + 1
    if len(labels) and int(labels.max()) >= classes:
        raise ValueError(f"labels reach {int(labels.max())} but the model predicts "
                         f"{classes - 1} classes plus unknown")
    predictions = rule.predict(logits)
    result = open_set_metrics(confusion_matrix(predictions, labels.to(predictions.device),
                                               classes), rule)
    unknown = (labels == classes - 1).cpu()
    if 0 < int(unknown.sum()) < len(unknown):
        from sklearn.metrics import roc_auc_score

        result.auroc = float(roc_auc_score(unknown.numpy(),
                                           rule.score(logits).float().cpu().numpy()))
    return result
