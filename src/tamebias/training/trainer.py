"""The one training loop: stages, steps, evaluation cadence, logging, checkpoints, resume.
Nothing method-specific lives here; a method says what to update, the loop says how."""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import OptimConfig, TrainConfig
from ..data.domain import DomainData, DomainStreams
from ..errors import TrainingDiverged
from ..evaluation.metrics import Evaluation, evaluate
from ..evaluation.openset import METRICS as OPEN_SET_METRICS
from ..evaluation.selection import ValidationProbe, selection_score
from ..methods.base import DataNeeds, Method, Stage, trainable_parameters
from ..models.norm import use_domain
from ..records import EvalRecord, eval_record
from ..rundir import RunDir
from . import checkpoint
from .log import JsonLines, ProgressBar
from .optim import build_optimizer, lr_scales, set_learning_rate
from .speed import autocast, autocast_dtype, compile_networks, note

__all__ = ["ON_EVALUATION", "Trainer", "TrainingDiverged"]

# called with every evaluation record of the runs trained in this context (a sweep's pruner,
# which may stop the run by raising)
ON_EVALUATION: contextvars.ContextVar[Callable[[EvalRecord], None] | None] = \
    contextvars.ContextVar("on_evaluation", default=None)


def finite_state(module: nn.Module) -> Tensor:
    """One on-device flag: every floating-point parameter and buffer of ``module`` is finite."""
    flags = [torch.isfinite(value).all() for value in module.state_dict().values()
             if value.is_floating_point()]
    return torch.stack(flags).all() if flags else torch.ones((), dtype=torch.bool)


class Context:
    """The ``StepContext`` the loop hands each step."""

    distributed: Any = None  # a data-parallel run's hooks (training/distributed.py)

    def __init__(
        self, optimizers: dict[str, torch.optim.Optimizer], configs: dict[str, OptimConfig],
        parameters: dict[str, list[nn.Parameter]], device: torch.device, amp: bool,
    ) -> None:
        self.optimizers = optimizers
        self.configs = configs
        self.parameters = parameters
        self.device = device
        self.amp = amp and device.type in ("cuda", "cpu")  # the trainer resolved it (speed.py)
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.step = self.global_step = 0
        self.progress = 0.0

    @classmethod
    def for_stage(cls, stage: Stage, device: torch.device, amp: bool = False,
                  optimizer_impl: str = "auto") -> Context:
        """Fresh optimizers over the trainable parameters of each of the stage's modules."""
        parameters = {name: list(trainable_parameters(modules))
                      for name, modules in stage.optimizers.items()}
        configs = {name: stage.optim_config(name) for name in stage.optimizers}
        optimizers = {name: build_optimizer(parameters[name], configs[name], lr_scales(modules),
                                            optimizer_impl)
                      for name, modules in stage.optimizers.items()}
        return cls(optimizers, configs, parameters, device, amp)

    def update(self, optimizer: str, loss: Tensor) -> None:
        if optimizer not in self.optimizers:
            raise KeyError(f"no optimizer {optimizer!r} in this stage: {sorted(self.optimizers)}")
        self.finite &= torch.isfinite(loss.detach())  # checked at log time: no sync per step
        chosen = self.optimizers[optimizer]
        chosen.zero_grad(set_to_none=True)
        loss.backward()
        if self.distributed is not None:  # data parallel: the ranks' gradients averaged
            self.distributed.reduce_gradients(self, optimizer)
        clip = self.configs[optimizer].clip_grad_norm
        if clip:
            torch.nn.utils.clip_grad_norm_(self.parameters[optimizer], clip)
        chosen.step()

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


@dataclass
class LoopReport:
    history: list[EvalRecord] = field(default_factory=list)  # one record per evaluation
    train_seconds: float = 0.0
    train_images: int = 0
    steps: int = 0
    selected: EvalRecord | None = None
    earlier_wall_seconds: float = 0.0  # spent by earlier processes on this run (resume)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # training time per stage


SCORES: dict[str, Callable[[EvalRecord], float]] = {
    "last": lambda record: float(record["global_step"]),
    "source_val": lambda record: record["source_val_accuracy"],
    # the few labeled target validation images of semi-supervised DA; never the test split
    "target_val": lambda record: record["target_val_accuracy"],
    "target_oracle": lambda record: record["target_accuracy"],
}


class Trainer:
    """Trains ``method`` on ``streams`` as ``config`` (the run's ``train`` section) says:
    cadences of logging, evaluation and checkpoints, mixed precision, the progress bar and the
    model-selection rule (the method's own rule, when it forces one, wins)."""

    def __init__(
        self, method: Method, data: DomainData, streams: DomainStreams,
        run_dir: str | Path | RunDir, device: torch.device, config: TrainConfig,
        rejection: Any = None,
    ) -> None:
        self.method, self.data, self.streams = method, data, streams
        self.folder = RunDir(run_dir)
        self.config, self.device = config, device
        self.selection = method.selection or config.selection
        # bf16 autocast where it pays (CUDA; a CPU with native bf16), else float32 and one note
        self.autocast_dtype, fallback = autocast_dtype(config.amp, device, config.cpu_bf16)
        note(fallback)
        self.amp = self.autocast_dtype is not None
        self.checkpoint_path, self.best_path = self.folder.checkpoint, self.folder.best
        self.metrics_log = JsonLines(self.folder.metrics)
        self.started = time.perf_counter()
        self.rejection = rejection  # an open-set RejectionRule under a category shift
        self.probe = ValidationProbe(data, device)  # unsupervised validators, every evaluation
        self.distributed: Any = None  # set by Distributed.attach (training/distributed.py)

    def _inference(self) -> contextlib.AbstractContextManager:
        """Evaluation forwards, split across the ranks of a data-parallel run."""
        if self.distributed is None:
            return contextlib.nullcontext()
        return self.distributed.sharded_inference(self.method)

    # -- evaluation -----------------------------------------------------------------------
    def evaluate(self) -> tuple[Evaluation | None, Evaluation | None]:
        """Target test and source validation metrics (each None when that set is absent)."""
        self.method.eval()
        with torch.inference_mode(), autocast(self.device, self.autocast_dtype):
            target = None
            if self.data.target_test is not None:
                with use_domain(self.method, "target"):
                    target = evaluate(self.method.predict, self.data.target_test, self.device,
                                      rejection=self.rejection)
            with use_domain(self.method, "source"):
                source = (
                    evaluate(self.method.predict, self.data.source_val, self.device)
                    if self.data.source_val is not None else None
                )
        self.method.train()
        return target, source

    def target_val_accuracy(self) -> float:
        """Accuracy on the labeled target validation images (semi-supervised DA)."""
        assert self.data.target_val is not None
        self.method.eval()
        with torch.no_grad(), use_domain(self.method, "target"):
            accuracy = evaluate(self.method.predict, self.data.target_val, self.device).accuracy
        self.method.train()
        return accuracy

    # -- checkpoints ----------------------------------------------------------------------
    def save(self, stage: int, stage_step: int, optimizers: dict, report: LoopReport,
             best_score: float | None, finite: Tensor) -> None:
        # never replace a good checkpoint with a diverged model (a loss or a weight not finite)
        if not bool(finite & finite_state(self.method)):
            raise self._diverged(stage, stage_step)
        checkpoint.save_generation({
            "method": self.method.state_dict(),
            "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
            "stage": stage, "stage_step": stage_step,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
            "history": report.history, "selected": report.selected, "best_score": best_score,
            "train_seconds": report.train_seconds, "train_images": report.train_images,
            "steps": report.steps, "stage_seconds": report.stage_seconds,
            "wall_seconds": report.earlier_wall_seconds + time.perf_counter() - self.started,
        }, self.checkpoint_path)

    def _diverged(self, stage: Stage | int, step: int) -> TrainingDiverged:
        name = stage.name if isinstance(stage, Stage) else f"#{stage + 1}"
        older = checkpoint.previous(self.checkpoint_path)
        kept = (f"the last good checkpoint is kept at {self.checkpoint_path}"
                + (f" (and the one before at {older.name})" if older.exists() else "")
                if self.checkpoint_path.exists() else "no checkpoint had been written yet")
        self.metrics_log.write({"event": "diverged", "stage": name, "step": step})
        return TrainingDiverged(
            f"a loss or a weight became NaN or infinite in stage {name!r} by step {step}; "
            f"training stopped and {kept}. Lower the learning rate, enable clipping "
            "(method.optim.clip_grad_norm), or check the inputs."
        )

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> LoopReport:
        stages = [stage for stage in self.method.stages() if stage.steps > 0]
        self.stage_count = len(stages)
        if not stages:
            raise ValueError("nothing to train: every stage of this method has 0 steps")
        report, best_score = LoopReport(), None
        if self.config.compile:  # the first steps of each stage then include compilation
            note(f"torch.compile: {', '.join(compile_networks(self.method))}")
        start_stage, start_step, saved_optimizers = 0, 0, {}
        if checkpoint.exists(self.checkpoint_path):  # the newest usable generation
            state = checkpoint.load_latest(self.checkpoint_path, self.device, repair=True)
            self.method.load_state_dict(state["method"])
            torch.set_rng_state(state["rng"].cpu())
            if state.get("cuda_rng") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"].cpu())
            start_stage, start_step = state["stage"], state["stage_step"]
            saved_optimizers, best_score = state["optimizers"], state["best_score"]
            report = LoopReport(state["history"], state["train_seconds"],
                                state["train_images"], state["steps"], state["selected"],
                                state["wall_seconds"], state.get("stage_seconds", {}))
        total = sum(stage.steps for stage in stages)
        offsets = [sum(stage.steps for stage in stages[:i]) for i in range(len(stages))]
        self.metrics_log.keep_until(
            offsets[start_stage] + start_step if start_stage < len(stages) else total)
        current = min(start_stage, len(stages) - 1)  # a finished run resumes past its end
        bar = ProgressBar(total, stages[current].name, self.config.progress)
        bar.advance_to(offsets[current] + start_step, stages[current].name, {})
        try:
            for index, stage in enumerate(stages):
                if index < start_stage:
                    continue
                resume_step = start_step if index == start_stage else 0
                best_score = self._run_stage(
                    index, stage, offsets[index], resume_step,
                    saved_optimizers if resume_step else {}, report, best_score, bar,
                )
        finally:
            bar.close()
        return report

    def _run_stage(self, index: int, stage: Stage, offset: int, first_step: int,
                   saved_optimizers: dict, report: LoopReport, best_score: float | None,
                   bar: ProgressBar) -> float | None:
        if first_step == 0 and stage.on_start is not None:
            stage.on_start()
        ctx = Context.for_stage(stage, self.device, self.amp, self.config.optimizer_impl)
        ctx.distributed = self.distributed
        optimizers, configs = ctx.optimizers, ctx.configs
        for name, state in saved_optimizers.items():
            optimizers[name].load_state_dict(state)
        if first_step == 0 and stage.evaluate:
            best_score = None  # candidates come from the last evaluated stage only
        score = self.selection_score()
        train = self.config
        window = LogWindow(first_step)
        self.method.train()
        started = time.perf_counter()
        for step in range(first_step, stage.steps):
            ctx.step, ctx.global_step = step, offset + step
            ctx.progress = step / stage.steps
            for name, optimizer in optimizers.items():
                set_learning_rate(optimizer, configs[name].schedule, ctx.progress)
            batch = self.streams.batch(offset + step)
            if stage.needs is not None:  # e.g. a source-free stage: no source batch at all
                batch = stage.needs.restrict(batch)
            window.add(stage.step(batch, ctx))
            report.train_images += self._images_read(batch, stage.needs or self.method.needs)
            report.steps += 1
            done = step + 1
            last = done == stage.steps
            if done % train.log_every == 0 or last:
                self._log(stage, offset, done, window, ctx, bar)
            evaluating = stage.evaluate and (done % train.eval_every == 0 or last)
            pausing = evaluating or last or done % train.checkpoint_every == 0
            if pausing:  # evaluation and checkpoints are not training time
                self._pause(stage, done, ctx, report, started)
            if evaluating:
                best_score = self._evaluate_and_select(stage, offset, done, report, best_score,
                                                       score)
            if last:
                self._end_stage(index, stage, report, best_score, ctx)
            elif done % train.checkpoint_every == 0:
                self.save(index, done, optimizers, report, best_score, ctx.finite)
            if pausing:
                started = time.perf_counter()
        return best_score

    # -- the parts of a stage ---------------------------------------------------------------
    @staticmethod
    def _images_read(batch: Any, needs: DataNeeds) -> int:
        """Images the stage reads in ``batch`` (by its ``needs``), not every stream drawn."""
        return sum(len(part) for part, used in (
            (batch.source, needs.source), (batch.target, needs.target),
            (batch.labeled_target, needs.labeled_target or needs.target_shots))
            if used and part is not None)

    def _log(self, stage: Stage, offset: int, done: int, window: LogWindow, ctx: Context,
             bar: ProgressBar) -> None:
        """Average the window's metrics into ``metrics.jsonl`` and the progress bar; a loss
        that was not finite anywhere in the window stops the run."""
        if not bool(ctx.finite):
            raise self._diverged(stage, done)
        averages = window.averages(done)
        if self.distributed is not None:
            averages = self.distributed.mean_metrics(averages)
        if not all(math.isfinite(v) for v in averages.values()):
            raise self._diverged(stage, done)
        self.metrics_log.write({"stage": stage.name, "step": done,
                                "global_step": offset + done, **averages})
        bar.advance_to(offset + done, stage.name, averages)

    def _pause(self, stage: Stage, done: int, ctx: Context, report: LoopReport,
               started: float) -> None:
        """Before an evaluation or a checkpoint: check the model is finite (the flag gathered
        on device every step, read where the loop syncs anyway, so no evaluation or checkpoint
        ever runs on a diverged model) and book the training time since ``started``."""
        if not bool(ctx.finite & finite_state(self.method)):
            raise self._diverged(stage, done)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - started
        report.train_seconds += elapsed
        report.stage_seconds[stage.name] = report.stage_seconds.get(stage.name, 0.0) + elapsed

    def selection_score(self) -> Callable[[EvalRecord], float | None]:
        """How ``train.selection`` scores an evaluation record (higher is better; None: the
        record is not a candidate)."""
        return SCORES.get(self.selection) or selection_score(self.selection)

    def evaluation_record(self, stage: Stage, offset: int, done: int) -> EvalRecord:
        """The evaluation record at step ``done`` of ``stage``: target test and source
        validation metrics and every validator's value."""
        with self._inference():  # split across the ranks of a data-parallel run
            target, source = self.evaluate()
            record = eval_record(stage.name, done, offset + done, target, source,
                                 self.probe.scores(self.method))
            if self.data.target_val is not None:
                record["target_val_accuracy"] = self.target_val_accuracy()
        if target is not None and target.open_set:  # category shift: open-set metrics
            record.update({f"target_{key}": target.open_set[key]  # type: ignore[misc]
                           for key in OPEN_SET_METRICS})
        return record

    def _evaluate_and_select(self, stage: Stage, offset: int, done: int, report: LoopReport,
                             best_score: float | None,
                             score: Callable[[EvalRecord], float | None]) -> float | None:
        """One evaluation record (history, ``metrics.jsonl``); the selection rule's best so
        far is kept in ``best.pt``; the context's listener (a sweep's pruner) sees it."""
        record = self.evaluation_record(stage, offset, done)
        report.history.append(record)
        self.metrics_log.write({"event": "eval", **record})
        value = score(record)
        if value is not None and (best_score is None or value >= best_score):
            best_score, report.selected = value, record
            if self.selection != "last":
                checkpoint.save_atomic({"method": self.method.state_dict()}, self.best_path)
        listener = ON_EVALUATION.get()
        if listener is not None:
            listener(record)
        return best_score

    def _end_stage(self, index: int, stage: Stage, report: LoopReport,
                   best_score: float | None, ctx: Context) -> None:
        """The checkpoint after a stage, and the stage's weights when another stage follows
        (e.g. ADDA's source model, kept for t-SNE)."""
        self.save(index + 1, 0, {}, report, best_score, ctx.finite)
        if index + 1 < self.stage_count:
            checkpoint.save_atomic({"method": self.method.state_dict()},
                                   self.folder.stage(stage.name))


class LogWindow:
    """Step metrics summed on device since the last log step (no host sync per step)."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.sums: dict[str, Tensor] = {}

    def add(self, metrics: dict[str, Tensor]) -> None:
        for key, value in metrics.items():
            value = value.detach().float()
            self.sums[key] = self.sums[key] + value if key in self.sums else value

    def averages(self, done: int) -> dict[str, float]:
        """The window's means up to step ``done``; the next window starts there."""
        averages = {k: float(v) / (done - self.start) for k, v in self.sums.items()}
        self.sums, self.start = {}, done
        return averages
