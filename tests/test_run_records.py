"""Typed run records and the one owner of run-folder names (``records.py``, ``rundir.RunDir``)."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

from tamebias.api import fit, restore_run
from tamebias.compose import load_config
from tamebias.records import EvalRecord, RunResult
from tamebias.rundir import RunDir

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "tamebias"
RUN_FILES = [RunDir.CONFIG, RunDir.PROTOCOL, RunDir.LINEAGE, RunDir.RESULT, RunDir.METRICS,
             RunDir.CHECKPOINT, RunDir.BEST, RunDir.ADABN, RunDir.ADABN_SUMMARY]


def test_run_folder_names_are_spelled_only_in_rundir():
    """A run file name written as a string literal anywhere else would bypass RunDir."""
    pattern = re.compile("|".join(re.escape(f'"{name}"') for name in RUN_FILES)
                         + r'|"stage-')
    spelled = [f"{path.relative_to(PACKAGE)}:{number}"
               for path in PACKAGE.rglob("*.py") if path.name != "rundir.py"
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if pattern.search(line)]
    assert not spelled, f"use RunDir instead of spelling run-folder names: {spelled}"


def test_rundir_names_every_file_of_a_run_folder(tmp_path):
    folder = RunDir(tmp_path / "run")
    assert folder == RunDir(folder) and folder.path == tmp_path / "run"
    assert folder.best == tmp_path / "run" / "best.pt"
    assert folder.checkpoint.name == "checkpoint.pt" and folder.result.name == "result.json"
    assert folder.stage("source") == tmp_path / "run" / "stage-source.pt"
    assert not folder.is_run() and not folder.is_finished()
    folder.write_json(RunDir.CONFIG, {"a": 1})
    assert folder.is_run() and folder.read_config() == {"a": 1}


def test_a_run_writes_typed_records_and_reads_them_back(tiny_overrides, tmp_path):
    config = load_config(None, [*tiny_overrides, "method.name=adda", "method.source_steps=3",
                                "method.steps=3"])
    result = fit(config, run_dir=tmp_path / "run")
    folder = RunDir(result.run_dir)
    for path in (folder.config, folder.protocol, folder.lineage, folder.result,
                 folder.metrics, folder.checkpoint, folder.best, folder.stage("source")):
        assert path.exists(), path
    # every evaluation record carries exactly the required keys of EvalRecord (closed set,
    # no target validation images here), in the history, metrics.jsonl and result.json
    required = set(EvalRecord.__required_keys__)
    assert required == set(typing.get_type_hints(EvalRecord)) - EvalRecord.__optional_keys__
    assert result.history and all(set(record) == required for record in result.history)
    logged = [json.loads(line) for line in folder.metrics.read_text().splitlines()]
    evaluations = [{k: v for k, v in line.items() if k != "event"}
                   for line in logged if line.get("event") == "eval"]
    assert evaluations == result.history
    assert RunResult.load(folder.path).to_dict() == json.loads(json.dumps(result.to_dict()))
    assert result.selected in result.history
    # the selected model restores from best.pt, the source stage from stage-source.pt
    assert restore_run(folder.path, "stage:source").method is not None
