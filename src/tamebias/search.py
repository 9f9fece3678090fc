"""The engine under ``tamebias sweep``: trials dispatched through an Optuna study.

A *trial* is one configuration of the grid, trained once per seed; its value is the mean
over seeds of the objective validator (label-free: ``source_val`` or an unsupervised
validator) at the evaluation ``score_at`` names. The study lives in a database:
``sqlite:///SWEEP_DIR/optuna.db`` by default (embedded, no server), or any SQLAlchemy URL
(``--storage postgresql://user@host/db``) so processes on many machines share one study.

* ``grid`` (and ``--random N``): every configuration is enqueued as a fixed trial, once;
  workers take waiting trials until none is left. (Optuna's ``GridSampler`` re-runs
  unfinished points when several workers share a study, so the grid is a queue instead.)
* ``tpe``: ``TPESampler`` proposes values of the grid's keys for ``--trials`` trials.
* ``--prune``: a ``MedianPruner`` on the objective validator, reported at every evaluation of
  every run; a pruned trial stops training and is left out of the validator table.

``--workers N`` runs N worker processes on this machine against the same storage. A sweep
started again with the same settings finds its study: finished and pruned trials are kept,
trials of a stopped process on this machine are marked failed and their configurations
queued again; their run folders resume from their checkpoints. (A trial left running by a
process that died on another machine stays "running" until the sweep is started again
there.)"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .evaluation.selection import record_score

# train(spec, index, params, cache, report, on_run) -> the trial's runs (sweep.train_trial)
Train = Callable[..., list[dict[str, Any]]]
Plan = tuple[list[dict[str, Any]], list[tuple[str, list[Any]]]]  # configurations, grid keys

SAMPLERS = ("grid", "tpe")


class WorkerError(RuntimeError):
    """A sweep worker process stopped with an error (its traceback is on stderr)."""


@dataclass
class SweepSpec:
    """What a sweep trains: everything a worker process needs (picklable)."""

    method: str
    grid: list[str]
    seeds: list[int]
    sweep_dir: str
    task: str | None = None
    overrides: list[str] = field(default_factory=list)
    sample: int | None = None
    search_seed: int = 0
    score_at: str = "pick"
    sampler: str = "grid"
    trials: int | None = None
    objective: str = "source_val"
    prune: bool = False

    def study_name(self) -> str:
        """One study per sweep definition (a changed setting starts another study)."""
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()
        return f"{self.task or 'custom'}-{self.method}-{digest[:12]}"


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise ImportError("tamebias sweep runs its trials on Optuna, which is not installed: "
                          "pip install optuna (the package's sweep extra)") from error
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_storage(sweep_dir: str | Path) -> str:
    return f"sqlite:///{Path(sweep_dir).resolve() / 'optuna.db'}"


def shown_storage(url: str) -> str:
    """The storage URL without its password (it is written into sweep.json)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an odd URL is shown as the scheme alone
        return url.split("://", 1)[0] + "://..."


def open_storage(url: str) -> Any:
    optuna = require_optuna()
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)


def _sampler(spec: SweepSpec) -> Any:
    optuna = require_optuna()
    if spec.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=spec.search_seed)
    return optuna.samplers.RandomSampler(seed=spec.search_seed)  # only for spare trials


def _pruner(spec: SweepSpec) -> Any:
    optuna = require_optuna()
    if not spec.prune:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def load_study(spec: SweepSpec, storage: Any) -> Any:
    optuna = require_optuna()
    return optuna.create_study(
        storage=open_storage(storage) if isinstance(storage, str) else storage,
        study_name=spec.study_name(), direction="maximize",
        sampler=_sampler(spec), pruner=_pruner(spec), load_if_exists=True)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study: Any, database: Any) -> None:
    """Mark failed the running trials of processes of this machine that no longer exist (a
    stopped sweep), so their configurations are queued again."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker", "")
        name, _, pid = owner.rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            database.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)


def enqueue_grid(study: Any, count: int) -> None:
    """Queue every configuration that has no finished, running or waiting trial."""
    from optuna.trial import TrialState

    taken = {trial.params.get("configuration",
                              trial.system_attrs.get("fixed_params", {}).get("configuration"))
             for trial in study.get_trials(deepcopy=False, states=(
                 TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING,
                 TrialState.WAITING))}
    for index in range(count):
        if index not in taken:
            study.enqueue_trial({"configuration": index})


def finished_count(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                         TrialState.PRUNED)))


def work(spec: SweepSpec, storage: str, train: Train, plan: Plan, on_run: Any = None) -> None:
    """One worker: take trials from the study until the sweep is done; ``train`` trains one
    configuration (every seed), ``plan`` is the grid's configurations and keys."""
    from optuna.trial import TrialState

    optuna = require_optuna()
    database = open_storage(storage)
    study = load_study(spec, database)
    combos, keys = plan
    cache: dict[str, Any] = {}
    while True:
        if spec.sampler == "grid":
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return
        elif finished_count(study) >= (spec.trials or 0):
            return
        trial = study.ask()
        trial.set_user_attr("worker", _owner())
        if spec.sampler == "grid":
            fixed = database.get_trial_system_attrs(trial._trial_id).get("fixed_params")
            if fixed is None:  # another worker took the last waiting trial
                trial.set_user_attr("spare", True)
                study.tell(trial, state=TrialState.FAIL)
                return
            index = trial.suggest_categorical("configuration", list(range(len(combos))))
            params = combos[index]
        else:
            index = trial.number
            params = {key: trial.suggest_categorical(key, values) for key, values in keys}
        trial.set_user_attr("index", index)
        trial.set_user_attr("params", params)

        def report(position: int, record: dict[str, Any], trial: Any = trial) -> None:
            value = record_score(record, spec.objective)
            if value is None:
                return
            trial.report(value, position * 1_000_000 + record["global_step"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {record['global_step']}")

        try:
            runs = train(spec, index, params, cache, report, on_run)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            continue
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr("runs", runs)
        scores = [run["score"] for run in runs if run.get("score") is not None]
        # every seed diverged (or no evaluation scored): the worst value, not a failure
        study.tell(trial, sum(scores) / len(scores) if scores else -math.inf)


def _announce(run: dict[str, Any]) -> None:
    """A worker process's line per finished run."""
    if "diverged" in run:
        print(f"{run['run_dir']}: diverged, left out of the scores", flush=True)
    else:
        accuracy = run["final_target_accuracy"]
        shown = "n/a" if accuracy is None else f"{100 * accuracy:.2f}%"
        print(f"{run['run_dir']}: final target accuracy {shown} (analysis)", flush=True)


def _work_quietly(spec: SweepSpec, storage: str, train: Train, plan: Plan) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    work(spec, storage, train, plan, _announce)


def optimize(spec: SweepSpec, train: Train, plan: Plan, storage: str | None = None,
             workers: int = 1, on_run: Any = None
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run (or resume) the sweep's study with ``workers`` processes (``train`` must be a
    module-level function: workers are spawned); returns the runs of its finished trials in
    configuration order (seeds in order) and a description of the study."""
    from optuna.trial import TrialState

    if spec.sampler not in SAMPLERS:
        raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {spec.sampler!r}")
    if spec.sampler == "tpe" and not spec.trials:
        raise ValueError("--sampler tpe needs --trials N (how many configurations to try)")
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    storage = storage or default_storage(spec.sweep_dir)
    Path(spec.sweep_dir).mkdir(parents=True, exist_ok=True)
    database = open_storage(storage)
    study = load_study(spec, database)
    recover(study, database)
    if spec.sampler == "grid":
        enqueue_grid(study, len(plan[0]))
    if workers == 1:
        work(spec, storage, train, plan, on_run)
    else:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        processes = [context.Process(target=_work_quietly, args=(spec, storage, train, plan))
                     for _ in range(workers)]
        for process in processes:
            process.start()
        try:
            for process in processes:
                process.join()
        finally:
            for process in processes:  # stopped with Ctrl-C: stop the workers too
                if process.is_alive():
                    process.terminate()
        failed = [process.exitcode for process in processes if process.exitcode]
        if failed:
            raise WorkerError(f"{len(failed)} of {workers} sweep workers stopped with an "
                               "error (see above); run the sweep again to resume it")
        study = load_study(spec, storage)
    trials = study.get_trials(deepcopy=False)
    chosen: dict[int, Any] = {}
    for trial in trials:  # the latest finished trial of each configuration
        if trial.state == TrialState.COMPLETE and "runs" in trial.user_attrs:
            chosen[trial.user_attrs["index"]] = trial
    runs = [run for index in sorted(chosen) for run in chosen[index].user_attrs["runs"]]
    pruned = sorted(trial.user_attrs.get("index", trial.number) for trial in trials
                    if trial.state == TrialState.PRUNED)
    info = {"name": spec.study_name(), "storage": shown_storage(storage),
            "sampler": spec.sampler, "objective": spec.objective, "prune": spec.prune,
            "trials": len(chosen), "pruned": pruned, "workers": workers,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    return runs, info
