"""The command line, driven in-process with typer's CliRunner: help, list, fit, resume, eval,
clean error exits, bench tables, and a demo smoke test."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
import torch
import torchvision
import typer
from typer.testing import CliRunner

import tamebias.bench
import tamebias.tasks
from tamebias.cli import app
from tamebias.data.datasets import DATASETS
from tamebias.methods import METHODS
from tamebias.models.backbones import BACKBONES
from tamebias.tasks import TASKS, Task

runner = CliRunner()
COMMANDS = {"fit", "eval", "list", "demo", "bench"}


pytestmark = pytest.mark.usefixtures("wide_plain_consoles")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def settings(overrides: list[str]) -> list[str]:
    return [part for override in overrides for part in ("--set", override)]


def fit_overrides(domains: dict[str, str], output_dir: Path) -> list[str]:
    return [
        f"data.source={domains['source']}", f"data.target={domains['target']}",
        "data.size=16", "data.channels=1", "data.batch_size=16", "data.source_val_fraction=0.2",
        "method.steps=6", "train.log_every=2", "train.eval_every=3", "train.checkpoint_every=2",
        "train.progress=false", "train.threads=1", f"output_dir={output_dir}",
    ]


@pytest.fixture(scope="module")
def finished_run(domains, tmp_path_factory):
    """One run trained through ``tamebias fit``; returns (run directory, its CLI output)."""
    root = tmp_path_factory.mktemp("cli-fit")
    run = root / "run"
    result = invoke("fit", *settings(fit_overrides(domains, root / "runs")), "--run-dir", run)
    assert result.exit_code == 0, result.output
    return run, result.output


def test_help_for_every_command():
    group = typer.main.get_command(app)
    assert COMMANDS <= set(group.commands)
    result = invoke("--help")
    assert result.exit_code == 0 and all(name in result.output for name in group.commands)
    for name in group.commands:
        result = invoke(name, "--help")
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output and name in result.output


def test_list_prints_every_registered_name():
    result = invoke("list")
    assert result.exit_code == 0, result.output
    names = [*DATASETS, "folder:PATH", "npz:PATH", *METHODS, *BACKBONES, *TASKS]
    for name in names:
        assert re.search(rf"(^|\s){re.escape(name)}\s", result.output), name
    for section in ("datasets", "backbones", "methods", "tasks", "segmenters", "seg-methods",
                    "seg-tasks"):
        assert section in result.output
    result = invoke("list", "seg-methods")  # segmentation: its own registry, listed too
    from tamebias.methods.segmentation import SEGMENTATION_METHODS

    assert result.exit_code == 0
    assert all(re.search(rf"(^|\s){name}\s", result.output) for name in SEGMENTATION_METHODS)


def test_list_one_section_and_unknown_sections():
    result = invoke("list", "methods")
    assert result.exit_code == 0
    assert all(name in result.output for name in METHODS)
    assert "mnist5k-ucidigits" not in result.output and "resnet18" not in result.output
    result = invoke("list", "colours")
    assert result.exit_code == 2
    assert "nothing called 'colours'" in result.stderr and "Traceback" not in result.output


def test_fit_writes_the_run_and_its_report(finished_run):
    run, output = finished_run
    for name in ("summary.md", "confusion.png", "curves.png", "result.json", "config.json",
                 "checkpoint.pt", "best.pt", "metrics.jsonl", "protocol.json"):
        assert (run / name).is_file(), name
    for figure in ("confusion.png", "curves.png"):
        assert (run / figure).read_bytes().startswith(b"\x89PNG")
    saved = json.loads((run / "result.json").read_text())
    assert saved["steps"] == 6 and saved["run_dir"] == str(run)
    accuracy = f"{100 * saved['target']['accuracy']:.2f}"
    assert accuracy in output and str(run) in output and "source_only" in output
    summary = (run / "summary.md").read_text()
    assert f"**{accuracy}%**" in summary and "source_val" in summary


def test_fit_resume_of_a_finished_run_reports_the_same_accuracy(finished_run):
    run, _ = finished_run
    before = json.loads((run / "result.json").read_text())
    checkpoint = (run / "checkpoint.pt").read_bytes()
    result = invoke("fit", "--resume", run)
    assert result.exit_code == 0, result.output
    after = json.loads((run / "result.json").read_text())
    assert after["target"] == before["target"] and after["history"] == before["history"]
    assert after["steps"] == before["steps"] == 6
    assert f"{100 * after['target']['accuracy']:.2f}" in result.output
    assert (run / "checkpoint.pt").read_bytes() == checkpoint  # nothing was trained again


def test_fit_resume_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = invoke("fit", "--resume", tmp_path)
    assert result.exit_code == 2
    assert "not a run directory" in result.stderr and "Traceback" not in result.output


def test_eval_prints_the_accuracy_of_the_run(finished_run):
    run, _ = finished_run
    saved = json.loads((run / "result.json").read_text())
    result = invoke("eval", run)
    assert result.exit_code == 0, result.output
    match = re.search(r"accuracy (\d+\.\d\d)%\s+mean per class (\d+\.\d\d)%\s+\((\d+) images\)",
                      result.output)
    assert match, result.output
    assert match[1] == f"{100 * saved['target']['accuracy']:.2f}"
    assert match[2] == f"{100 * saved['target']['mean_class_accuracy']:.2f}"
    assert int(match[3]) == saved["protocol"]["target_test"] == 48


def test_eval_of_a_run_from_pretrained_weights(domains, tmp_path, one_thread):
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    run = tmp_path / "run"
    overrides = [*fit_overrides(domains, tmp_path / "runs"), "data.channels=3",
                 "model.backbone=resnet18", f"model.pretrained={weights}", "method.steps=2",
                 "train.eval_every=2"]
    accuracy = tamebias.fit(None, overrides, run_dir=run).accuracy
    result = invoke("eval", run)
    assert result.exit_code == 0, result.output
    assert f"accuracy {100 * accuracy:.2f}%" in result.output


def test_a_pretrained_backbone_trains_at_the_scaled_learning_rate(domains, tmp_path, one_thread):
    from tamebias.api import build_run
    from tamebias.compose import load_config
    from tamebias.training.optim import set_learning_rate
    from tamebias.training.trainer import Context

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    base = [*fit_overrides(domains, tmp_path / "runs"), "data.channels=3",
            "model.backbone=resnet18", "method.optim.name=sgd", "method.optim.lr=0.02",
            "method.optim.schedule=inverse"]

    def groups(*extra):
        _, method, device = build_run(load_config(None, [*base, *extra]))
        stage = method.stages()[0]
        optimizer = Context.for_stage(stage, device).optimizers["classifier"]
        set_learning_rate(optimizer, "inverse", 0.5)  # schedules keep the ratio
        return method, [(group["lr"], {id(p) for p in group["params"]})
                        for group in optimizer.param_groups]

    def parts(method):
        classifier = method.classifier
        return ({id(p) for p in classifier.classifier_head.parameters()},
                {id(p) for p in classifier.backbone.parameters()})

    decay = (1 + 10 * 0.5) ** -0.75
    method, pretrained = groups(f"model.pretrained={weights}", "model.pretrained_lr_scale=0.1")
    head, backbone = parts(method)
    assert [lr for lr, _ in pretrained] == pytest.approx([0.02 * decay, 0.002 * decay])
    assert pretrained[0][1] == head and pretrained[1][1] == backbone
    method, scratch = groups()  # no pretrained weights: one rate for all
    assert [lr for lr, _ in scratch] == pytest.approx([0.02 * decay])
    assert scratch[0][1] == set.union(*parts(method))


def test_eval_of_a_missing_run_exits_cleanly(tmp_path):
    result = invoke("eval", tmp_path / "no-run")
    assert result.exit_code == 2
    assert "config.json" in result.stderr and "Traceback" not in result.output


def test_fit_with_a_missing_dataset_exits_2_with_the_message(domains, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    overrides = [*fit_overrides(domains, tmp_path / "runs"), "data.source=mnist"]
    result = invoke("fit", *settings(overrides), "--data-root", empty,
                    "--run-dir", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stderr.startswith("error:")
    assert "train-images-idx3-ubyte" in result.stderr and str(empty) in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, message", [
    (["data.batch_size=abc"], "data.batch_size must be an integer"),
    (["method.name=nope"], "unknown method 'nope'"),
    (["model.backbone=vgg"], "unknown backbone 'vgg'"),
    (["model.pretrained=/no/such/weights.pth"], "backbone 'lenet' has no pretrained weights"),
    (["model.backbone=resnet18", "model.pretrained=/no/such/weights.pth"],
     "/no/such/weights.pth does not exist"),
])
def test_fit_config_and_model_errors_exit_2_without_a_traceback(domains, tmp_path, overrides,
                                                               message):
    result = invoke("fit", *settings([*fit_overrides(domains, tmp_path / "runs"), *overrides]))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def tiny_task(domains, monkeypatch):
    """A registered task ``tiny`` on the tiny npz domains (16 px gray, 4 steps)."""
    task = Task("tiny npz pair", {"source": domains["source"], "target": domains["target"],
                                  "size": 16, "channels": 1}, steps=4)
    monkeypatch.setattr(tamebias.tasks, "TASKS", {"tiny": task})
    monkeypatch.setattr(tamebias.bench, "TASKS", {"tiny": task})  # imported by name there
    return task


def test_bench_writes_tables_from_run_records_and_reuses_finished_runs(tiny_task, tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    command = ["bench", "--suite", "tiny", "--tasks", "tiny", "--methods", "source_only,oracle",
               "--seeds", "0,1", "--results-dir", results, "--runs-dir", runs,
               "--set", "train.eval_every=2", "--set", "train.log_every=2",
               "--set", "data.batch_size=16", "--set", "train.threads=1"]
    result = invoke(*command)
    assert result.exit_code == 0, result.output

    table = json.loads((results / "tiny.json").read_text())
    assert table["suite"] == "tiny"
    rows = table["rows"]
    assert [row["method"] for row in rows] == ["source_only", "oracle"]
    required = ("task", "protocol", "method", "backbone", "steps", "seeds", "selection",
                "accuracy_mean", "accuracy_std", "per_seed", "wall_seconds",
                "train_images_per_second", "machine", "tamebias_version")
    for row in rows:
        assert all(key in row for key in required), set(required) - set(row)
        assert row["task"] == "tiny" and row["backbone"] == "lenet" and row["steps"] == 4
        assert row["seeds"] == [0, 1] and row["tamebias_version"] == tamebias.__version__
        assert row["protocol"]["input"] == "16x16x1" and row["protocol"]["batch_size"] == 16
        assert row["wall_seconds"] > 0 and row["train_images_per_second"] > 0
        assert row["accuracy_mean"] == pytest.approx(statistics.fmean(row["per_seed"]))
        assert row["accuracy_std"] == pytest.approx(statistics.stdev(row["per_seed"]))
        expected_runs = [runs / "tiny" / "tiny" / row["method"] / f"seed{s}" for s in (0, 1)]
        assert row["runs"] == [str(path) for path in expected_runs]
        for path, accuracy in zip(expected_runs, row["per_seed"], strict=True):
            saved = json.loads((path / "result.json").read_text())
            assert accuracy == pytest.approx(100 * saved["target"]["accuracy"])
            assert saved["steps"] == 4
        assert f"{row['accuracy_mean']:6.2f}" in result.output
    source_only, oracle = rows
    assert not source_only["analysis_only"] and source_only["selection"] == "source_val"
    assert oracle["analysis_only"] and oracle["selection"] == "last"

    markdown = (results / "tiny.md").read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| tiny |")]
    assert len(table_lines) == 2
    assert any(line.startswith("| tiny | source_only | lenet | 16x16x1 | 4 | source_val | "
                               f"{source_only['accuracy_mean']:.2f} ± ") for line in table_lines)
    assert any(line.startswith("| tiny | oracle *(analysis)* | lenet | 16x16x1 | 4 | last | "
                               f"{oracle['accuracy_mean']:.2f} ± ") for line in table_lines)

    checkpoints = {path: path.read_bytes() for path in runs.rglob("checkpoint.pt")}
    metrics = {path: path.read_text() for path in runs.rglob("metrics.jsonl")}
    assert len(checkpoints) == 4
    again = invoke(*command)
    assert again.exit_code == 0, again.output
    assert {path: path.read_bytes() for path in runs.rglob("checkpoint.pt")} == checkpoints
    assert {path: path.read_text() for path in runs.rglob("metrics.jsonl")} == metrics
    rerun_rows = json.loads((results / "tiny.json").read_text())["rows"]
    assert len(rerun_rows) == 2
    assert [r["per_seed"] for r in rerun_rows] == [r["per_seed"] for r in rows]
    rerun_lines = [line for line in (results / "tiny.md").read_text().splitlines()
                   if line.startswith("| tiny |")]
    assert len(rerun_lines) == 2


def test_bench_with_an_unknown_task_or_suite_exits_2(tmp_path):
    result = invoke("bench", "--suite", "nope", "--results-dir", tmp_path)
    assert result.exit_code == 2 and "no suite 'nope'" in result.stderr
    result = invoke("bench", "--tasks", "nope", "--results-dir", tmp_path,
                    "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "unknown task 'nope'" in result.stderr
    assert "Traceback" not in result.output


def test_bench_model_errors_exit_2_without_a_traceback(tiny_task, tmp_path):
    result = invoke("bench", "--suite", "tiny", "--tasks", "tiny", "--methods", "source_only",
                    "--seeds", "0", "--results-dir", tmp_path / "results",
                    "--runs-dir", tmp_path / "runs", "--set", "train.threads=1",
                    "--set", "model.pretrained=/no/such/weights.pth")
    assert result.exit_code == 2, result.output
    assert "'lenet' has no pretrained weights" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "results" / "tiny.json").exists()


def test_demo_smoke(tmp_path, one_thread):
    """The demo on the embedded MNIST-5k -> UCI digits pair, 3 steps per recipe (~20 s):
    source only, adaptation recipes and the oracle, gains over source only, one report."""
    from tamebias.demo import BASELINE, DEMO_RECIPES

    output = tmp_path / "demo"
    result = invoke("demo", "--steps", 3, "--output", output)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in output.iterdir()) == sorted([*DEMO_RECIPES, "demo.json"])
    record = json.loads((output / "demo.json").read_text())
    baseline = json.loads((output / BASELINE / "result.json").read_text())
    for row in record["rows"]:
        run = output / row["recipe"]
        for file in ("summary.md", "confusion.png", "curves.png", "result.json"):
            assert (run / file).is_file(), (row["recipe"], file)
        saved = json.loads((run / "result.json").read_text())
        assert saved["steps"] == 3 and saved["task"] == "mnist5k->ucidigits"
        assert saved["protocol"]["input"] == "28x28x1"
        assert f"{100 * saved['target']['accuracy']:.2f}" in result.output
        if row["recipe"] != BASELINE:
            assert row["gain"] == pytest.approx(
                100 * (saved["target"]["accuracy"] - baseline["target"]["accuracy"]))
    # ADDA starts from the demo's own source-only run, not a second one
    adda = json.loads((output / "adda+bn+aug+im" / "config.json").read_text())
    assert adda["init"]["weights"] == f"{output / BASELINE}:classifier"
    assert adda["method"]["im_weight"] == 1.0
    assert "oracle (analysis)" in result.output and "gain (points)" in result.output
    assert "information maximization" in result.output
    report = invoke("report", output, "-o", tmp_path / "demo.html")
    assert report.exit_code == 0, report.output
    page = (tmp_path / "demo.html").read_text()
    assert "Demo: mnist5k-ucidigits" in page and page.count("<h2>Run:") == len(DEMO_RECIPES)


def test_bench_adda_reuses_the_source_only_run_of_the_same_task_and_seed(tiny_task, tmp_path):
    results, runs = tmp_path / "results", tmp_path / "runs"
    common = ["--suite", "tiny", "--tasks", "tiny", "--seeds", "0", "--results-dir", results,
              "--runs-dir", runs, "--set", "data.batch_size=16", "--set", "train.threads=1",
              "--set", "train.eval_every=2", "--set", "train.log_every=2"]
    assert invoke("bench", "--methods", "source_only", *common).exit_code == 0
    result = invoke("bench", "--methods", "adda", *common, "--set",
                    "init.weights=" + str(runs) + "/{suite}/{task}/source_only/seed{seed}")
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads((results / "tiny.json").read_text())["rows"]}
    assert rows["adda"]["built_from"] == [str(
        (runs / "tiny" / "tiny" / "source_only" / "seed0").resolve())]
    assert rows["adda"]["steps"] == 4  # the adaptation stage only


def test_bench_tables_only_rewrites_the_markdown_from_the_json(tmp_path):
    rows = [{"task": "mnist-usps", "method": "dann", "analysis_only": False,
             "backbone": "lenet", "protocol": {"input": "28x28x1", "source": "mnist",
                                               "target": "usps", "subset": "all",
                                               "source_train": 1, "source_val": 1,
                                               "target_train": 1, "target_test": 1,
                                               "augmentation": "none", "batch_size": 128},
             "steps": 10, "selection": "source_val", "accuracy_mean": 50.0,
             "accuracy_std": 1.0, "per_seed": [49.0, 51.0], "oracle_best_accuracy_mean": 52.0,
             "train_images_per_second": 100.0, "wall_seconds": 3.0,
             "machine": {"torch_threads": 2}}]
    (tmp_path / "s.json").write_text(json.dumps({"suite": "s", "rows": rows}))
    result = invoke("bench", "--suite", "s", "--tables-only", "--results-dir", tmp_path)
    assert result.exit_code == 0, result.output
    table = (tmp_path / "s.md").read_text()
    assert "| mnist-usps | dann |" in table and "50.00 ± 1.00" in table
    assert "91.7 (TLlib)" in table  # the published number to beat, from the task registry


def test_the_command_line_answers_help_without_loading_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom tamebias.cli import app\nimport tamebias\n"
            "assert sorted(tamebias.__all__) == sorted(['__version__', *tamebias._EXPORTS])\n"
            "print('torch' in sys.modules)")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert shown.stdout.strip() == "False"
    import tamebias

    assert callable(tamebias.fit) and callable(tamebias.load_run)  # loaded on first use


def test_public_names_are_the_functions_even_after_their_modules_load():
    import importlib

    import tamebias

    for name, module in tamebias._EXPORTS.items():
        importlib.import_module(f"tamebias.{module}")  # e.g. by a CLI command
        assert not isinstance(getattr(tamebias, name), type(tamebias)), name
