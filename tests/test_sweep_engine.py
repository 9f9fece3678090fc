"""tamebias sweep on Optuna (search.py): workers in parallel give the serial table, an
interrupted sweep resumes from its storage without repeating finished trials, TPE with
pruning, and the one-line message without Optuna."""

from __future__ import annotations

import json
import os
import socket
import sys

import pytest
from typer.testing import CliRunner

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from tamebias import recipe_fit  # noqa: E402
from tamebias import search as search_module  # noqa: E402
from tamebias.cli import app  # noqa: E402
from tamebias.sweep import run_sweep  # noqa: E402

GRID = ["method.domain_weight=0.1,1.0"]


@pytest.fixture
def settings(tiny_overrides):
    return [*tiny_overrides, "method.steps=4", "train.eval_every=2"]


def table(folder) -> list[dict]:
    rows = json.loads((folder / "validators.json").read_text())["rows"]
    return [{key: value for key, value in row.items() if key != "picked_run"} for row in rows]


def states(folder, spec_name: str | None = None) -> list[TrialState]:
    storage = search_module.default_storage(folder)
    names = optuna.study.get_all_study_names(storage)
    study = optuna.load_study(study_name=spec_name or names[0], storage=storage)
    return [trial.state for trial in study.get_trials()]


def test_two_workers_finish_with_the_serial_table(settings, tmp_path):
    serial = run_sweep("dann", GRID, [0], tmp_path / "serial", overrides=settings)
    parallel = run_sweep("dann", GRID, [0], tmp_path / "parallel", overrides=settings,
                         workers=2)
    assert parallel["study"]["workers"] == 2 and parallel["study"]["trials"] == 2
    assert table(tmp_path / "parallel") == table(tmp_path / "serial")
    assert [run["params"] for run in parallel["runs"]] == [run["params"]
                                                           for run in serial["runs"]]
    assert [run["final_target_accuracy"] for run in parallel["runs"]] == [
        run["final_target_accuracy"] for run in serial["runs"]]
    assert (tmp_path / "parallel" / "optuna.db").exists()


def test_an_interrupted_sweep_resumes_without_repeating_finished_trials(settings, tmp_path,
                                                                       monkeypatch):
    grid = ["method.domain_weight=0.1,0.5,1.0"]
    original, trained = recipe_fit.fit, []

    def interrupted(config, **kwargs):
        if config.method.domain_weight == 0.5:
            raise KeyboardInterrupt  # Ctrl-C in the second trial
        trained.append(config.method.domain_weight)
        return original(config, **kwargs)

    monkeypatch.setattr(recipe_fit, "fit", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_sweep("dann", grid, [0], tmp_path / "sweep", overrides=settings)
    assert trained == [0.1]
    first = tmp_path / "sweep" / "00-domain_weight=0.1-seed0" / "result.json"
    stamp = first.stat().st_mtime_ns

    def counted(config, **kwargs):
        trained.append(config.method.domain_weight)
        return original(config, **kwargs)

    monkeypatch.setattr(recipe_fit, "fit", counted)
    record = run_sweep("dann", grid, [0], tmp_path / "sweep", overrides=settings)
    assert sorted(trained) == [0.1, 0.5, 1.0]  # the finished trial was not trained again
    assert first.stat().st_mtime_ns == stamp
    assert [run["params"]["method.domain_weight"] for run in record["runs"]] == [0.1, 0.5, 1.0]
    assert sorted(states(tmp_path / "sweep"), key=str) == sorted(
        [TrialState.COMPLETE] * 3 + [TrialState.FAIL], key=str)
    again = run_sweep("dann", grid, [0], tmp_path / "sweep", overrides=settings)
    assert len(trained) == 3 and again["rows"] == record["rows"]


def test_a_trial_left_running_by_a_dead_process_is_queued_again(tmp_path):
    spec = search_module.SweepSpec("dann", GRID, [0], str(tmp_path))
    database = search_module.open_storage(search_module.default_storage(tmp_path))
    study = search_module.load_study(spec, database)
    search_module.enqueue_grid(study, 2)
    trial = study.ask()  # configuration 0, now running...
    trial.set_user_attr("worker", f"{socket.gethostname()}:{2**22 + 12345}")  # ...by no one
    alive = study.ask()
    alive.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    search_module.recover(study, database)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING]
    search_module.enqueue_grid(study, 2)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"configuration": 0}]


def test_tpe_with_pruning_runs_its_trials(settings, tmp_path):
    record = run_sweep("dann", ["method.domain_weight=0.1,0.3,1.0"], [0], tmp_path / "tpe",
                       overrides=[*settings, "train.eval_every=1"], sampler="tpe", trials=3,
                       prune=True, objective="snd")
    study = record["study"]
    assert study["sampler"] == "tpe" and study["trials"] + len(study["pruned"]) >= 3
    assert all(row["search"] == "tpe 3 trials (seed 0)" for row in record["rows"])
    with pytest.raises(ValueError, match="--trials"):
        run_sweep("dann", GRID, [0], tmp_path / "bad", overrides=settings, sampler="tpe")


def test_without_optuna_the_sweep_says_what_to_install(settings, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    arguments = ["sweep", "--method", "dann", "--grid", GRID[0], "--sweep-dir",
                 str(tmp_path / "sweep")]
    for override in settings:
        arguments += ["--set", override]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2
    assert "pip install optuna" in " ".join(result.output.split())
    assert "Traceback" not in result.output
