"""What a run records, typed: one :class:`EvalRecord` per evaluation (in ``metrics.jsonl``,
the checkpoint and ``result.json``) and the :class:`RunResult` of a finished run
(``result.json``).

An evaluation record is a ``TypedDict``, not a dataclass: it is stored as plain data in the
checkpoint (loaded with ``weights_only``), in JSON lines and in every ``result.json`` already
written, and records of older runs lack keys that newer ones carry (``validators``, the
open-set metrics); a ``TypedDict`` types those keys for readers and tools while every stored
record stays readable as it is. The run result is a dataclass (the object ``fit`` returns)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from . import __version__
from .rundir import RunDir


class _EvalRecordKeys(TypedDict):
    stage: str
    step: int  # steps into the stage
    global_step: int  # steps into the run
    target_accuracy: float | None  # None without a labeled target test set
    target_mean_class_accuracy: float | None
    source_val_accuracy: float | None  # None without a source validation set
    validators: dict[str, float]  # every unsupervised validator (evaluation/validators.py)


class EvalRecord(_EvalRecordKeys, total=False):
    """One evaluation of a run: test accuracy, source validation accuracy and the label-free
    validator scores that selection rules read (``evaluation/selection.py``)."""

    target_val_accuracy: float  # semi-supervised DA: the labeled target validation images
    # category shift (evaluation/openset.py METRICS), on the target test split
    target_h_score: float
    target_per_class_mean: float
    target_known_accuracy: float
    target_unknown_recall: float
    target_auroc: float | None


def eval_record(stage: str, step: int, global_step: int, target: Any, source: Any,
                validators: dict[str, float]) -> EvalRecord:
    """The record of one evaluation from the target test and source validation
    ``Evaluation`` objects (either None when that set is absent)."""
    return {"stage": stage, "step": step, "global_step": global_step,
            "target_accuracy": target.accuracy if target else None,
            "target_mean_class_accuracy": target.mean_class_accuracy if target else None,
            "source_val_accuracy": source.accuracy if source else None,
            "validators": validators}


@dataclass
class RunResult:
    """What a finished run reports; saved as ``result.json`` in its run directory."""

    run_dir: str
    method: str
    task: str
    selection: str
    analysis_only: bool
    target: dict[str, Any]  # Evaluation of the selected model on the target test split
    source_val: dict[str, Any] | None
    selected: EvalRecord | None  # the evaluation record the selection rule picked
    final_target_accuracy: float | None  # the last model, whatever the rule
    oracle_best_target_accuracy: float | None  # analysis only: best over evaluations
    history: list[EvalRecord]
    protocol: dict[str, Any]
    steps: int
    wall_seconds: float
    train_seconds: float
    train_images_per_second: float
    machine: dict[str, Any]
    tamebias_version: str = __version__
    config: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # training time per stage
    lineage: dict[str, Any] = field(default_factory=dict)  # lineage.py: the runs it reuses
    # what the selected model predicts on the unlabeled target training images (no labels)
    target_predictions: dict[str, Any] | None = None

    @property
    def accuracy(self) -> float | None:
        """Target test accuracy; None when the run had no labeled target evaluation set."""
        return self.target.get("accuracy")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self) -> None:
        RunDir(self.run_dir).write_json(RunDir.RESULT, self.to_dict())

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        return cls(**json.loads(RunDir(run_dir).result.read_text()))
