"""Runs are never lost or shared: one training process per run folder, the bench never deletes
a run of another config, run names stay inside the output folder, run files are written
atomically and damaged ones are survived or named."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tamebias
import tamebias.bench
import tamebias.rundir
import tamebias.tasks
from tamebias.bench import run_bench
from tamebias.rundir import LOCK_FILE, RunBusyError, RunFileError, hold_run
from tamebias.tasks import Task
from tamebias.training import checkpoint
from tamebias.training.log import JsonLines, read_json_lines
from tamebias.training.trainer import TrainingDiverged

RUNDIR = str(Path(tamebias.rundir.__file__))
# rundir.py imports nothing from tamebias: the holder loads it alone (no torch import, fast)
HOLDER = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('rundir', "
          "sys.argv[2]); rundir = importlib.util.module_from_spec(spec); "
          "spec.loader.exec_module(rundir); rundir.RunLock(sys.argv[1]).acquire(); "
          "print('held', flush=True); sys.stdin.read()")


def hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    """A second process that takes the run folder's lock (as ``fit`` does) and keeps it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir), RUNDIR], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_two_processes_cannot_train_in_one_run_folder(tiny_overrides, tmp_path):
    run = tmp_path / "run"
    holder = hold_in_another_process(run)
    try:
        with pytest.raises(RunBusyError, match=rf"{run} is in use: process {holder.pid} "):
            tamebias.fit(None, tiny_overrides, run_dir=run)
        assert not (run / "metrics.jsonl").exists() and not (run / "config.json").exists()
    finally:
        holder.kill()  # kill -9: the kernel drops its lock, nothing stale is left to clean
        holder.wait()
    tamebias.fit(None, tiny_overrides, run_dir=run)
    assert len([r for r in read_json_lines(run / "metrics.jsonl") if "event" not in r]) == 3
    assert not (run / LOCK_FILE).exists()


def test_a_lock_is_released_when_its_block_fails(tmp_path):
    with pytest.raises(KeyError), hold_run(tmp_path):
        raise KeyError("boom")
    with hold_run(tmp_path), pytest.raises(RunBusyError):
        with hold_run(tmp_path):
            pass


@pytest.fixture
def tiny_task(domains, monkeypatch):
    task = Task("tiny npz pair", {"source": domains["source"], "target": domains["target"],
                                  "size": 16, "channels": 1}, steps=2)
    monkeypatch.setattr(tamebias.tasks, "TASKS", {"tiny": task})
    monkeypatch.setattr(tamebias.bench, "TASKS", {"tiny": task})
    return task


def test_the_bench_never_deletes_a_run_of_another_config(tiny_task, tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    common = ["train.threads=1", "train.eval_every=2", "train.log_every=2",
              "data.batch_size=16"]
    run_bench("tiny", ["tiny"], ["source_only"], [0], common, results, runs)
    run = runs / "tiny" / "tiny" / "source_only" / "seed0"
    first = (run / "checkpoint.pt").read_bytes()

    changed = [*common, "method.optim.lr=0.002"]
    with pytest.raises(ValueError, match=r"method.optim.lr 0.001 -> 0.002.*--replace-runs"):
        run_bench("tiny", ["tiny"], ["source_only"], [0], changed, results, runs)
    assert (run / "checkpoint.pt").read_bytes() == first  # nothing deleted or retrained

    run_bench("tiny", ["tiny"], ["source_only"], [0], changed, results, runs,
              replace_runs=True)
    [kept] = [p for p in run.parent.iterdir() if p.name.startswith("seed0.")]
    assert (kept / "checkpoint.pt").read_bytes() == first  # the earlier run, kept whole
    assert json.loads((run / "config.json").read_text())["method"]["optim"]["lr"] == 0.002
    [row] = json.loads((results / "tiny.json").read_text())["rows"]
    assert row["runs"] == [str(run)]  # the row is the new run's, and it says so


def test_run_names_stay_inside_the_output_folder(tiny_overrides, tmp_path):
    for name in ("../..", "../escaped", "/tmp/elsewhere", "a/../../b"):
        with pytest.raises(RunFileError, match="inside the output folder"):
            tamebias.fit(None, [*tiny_overrides, f"name={name}"])
    assert not (tmp_path / "escaped").exists()
    result = tamebias.fit(None, [*tiny_overrides, "method.steps=2", "name=group/plain"])
    assert Path(result.run_dir) == tmp_path / "runs" / "group" / "plain"


def test_a_torn_last_metrics_line_is_dropped_on_resume(tiny_overrides, tmp_path, capfd):
    overrides = [*tiny_overrides, "method.steps=4"]
    tamebias.fit(None, overrides, run_dir=tmp_path / "full")
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "full", run)  # a second copy of the same finished run
    (run / "result.json").unlink()
    with (run / "metrics.jsonl").open("a") as stream:
        stream.write('{"stage": "source", "step": 5, "glo')  # killed mid-write
    tamebias.fit(None, None, run_dir=run)
    assert "dropped its torn last line" in capfd.readouterr().err
    assert read_json_lines(run / "metrics.jsonl") == read_json_lines(
        tmp_path / "full" / "metrics.jsonl")
    (run / "metrics.jsonl").write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(RunFileError, match=r"metrics.jsonl: line 2 is not valid JSON"):
        JsonLines(run / "metrics.jsonl").keep_until(10)


def test_a_corrupt_checkpoint_falls_back_to_the_previous_generation(tiny_overrides, tmp_path,
                                                                    capfd):
    overrides = [*tiny_overrides, "method.steps=6"]
    full = tamebias.fit(None, overrides, run_dir=tmp_path / "full")
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "full", run)
    assert checkpoint.load(checkpoint.previous(run / "checkpoint.pt"))["stage_step"] == 4
    newest = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(newest[: len(newest) // 2])  # torn by a crash
    (run / "checkpoint.pt.123.tmp").write_bytes(b"half a checkpoint")  # a killed writer's
    (run / "result.json").unlink()
    resumed = tamebias.fit(None, None, run_dir=run)
    assert "using the older checkpoint" in capfd.readouterr().err
    assert resumed.target == full.target and resumed.history == full.history
    assert not list(run.glob("*.tmp"))
    assert (run / "checkpoint.pt.damaged").exists()  # set aside, not rotated over the good one
    from tamebias.api import load_run

    older = load_run(run, "previous").method.state_dict()  # readable on its own
    assert checkpoint.finite(older)

    for path in (run / "checkpoint.pt", checkpoint.previous(run / "checkpoint.pt")):
        path.write_bytes(b"\0" * 100)
    with pytest.raises(RunFileError, match=r"checkpoint\.pt is unreadable.*delete "
                                           r"checkpoint\.pt, checkpoint\.previous\.pt"):
        tamebias.fit(None, None, run_dir=run)


def test_weights_are_checked_before_evaluation_and_checkpoints(tiny_overrides, tmp_path,
                                                               monkeypatch):
    """A weight turned NaN between log steps (the loss of that step was still finite) stops
    the run at the next evaluation, before a checkpoint is written from it; the last two
    good generations stay."""
    from tamebias.methods import common

    original, calls = common.classification_step, {"count": 0}

    def explode(classifier, batch, ctx, optimizer):
        metrics = original(classifier, batch, ctx, optimizer)
        calls["count"] += 1
        if calls["count"] == 5:  # after step 5's update: the weights blow up
            with torch.no_grad():
                next(classifier.parameters()).fill_(float("inf"))
        return metrics

    monkeypatch.setattr(common, "classification_step", explode)
    overrides = [*tiny_overrides, "train.log_every=100", "train.eval_every=6",
                 "train.checkpoint_every=2"]
    with pytest.raises(TrainingDiverged, match=r"by step 6.*checkpoint\.previous\.pt"):
        tamebias.fit(None, overrides, run_dir=tmp_path / "run")
    run = tmp_path / "run"
    assert checkpoint.load(run / "checkpoint.pt")["stage_step"] == 4
    assert checkpoint.load(checkpoint.previous(run / "checkpoint.pt"))["stage_step"] == 2
    assert read_json_lines(run / "metrics.jsonl")[-1]["event"] == "diverged"
    assert not any(r.get("event") == "eval" for r in read_json_lines(run / "metrics.jsonl"))


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path):
    holder = hold_in_another_process(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # the file stays, the kernel lock does not
    with hold_run(tmp_path):
        pass
