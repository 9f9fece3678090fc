"""Recipes as declared data and ``init.weights``: the runner trains the runs a recipe starts
from first (whatever the order asked for) or reuses finished ones, refuses cycles and unknown
recipes, loads the named submodules and records them; configs of older versions (preset
methods, per-method reuse knobs) still load as the same runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import tamebias.api
import tamebias.bench
import tamebias.recipe_fit
import tamebias.recipes
import tamebias.tasks
from tamebias.api import build_run, restore_run, run_identity
from tamebias.cli import app
from tamebias.compose import load_config
from tamebias.config import ConfigError
from tamebias.lineage import initialize, lineage_of
from tamebias.recipe_fit import fit_or_reuse, recipe_config, required_runs, settings_for
from tamebias.recipes import RECIPES, Recipe, Requirement, recipe_overrides, required_recipes
from tamebias.registry import UnknownNameError
from tamebias.tasks import Task

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_plain_consoles")


@pytest.fixture
def tiny_task(domains, monkeypatch):
    task = Task("tiny npz pair", {"source": domains["source"], "target": domains["target"],
                                  "size": 16, "channels": 1}, steps=4)
    monkeypatch.setattr(tamebias.tasks, "TASKS", {"tiny": task})
    monkeypatch.setattr(tamebias.bench, "TASKS", {"tiny": task})
    return task


@pytest.fixture
def trained(monkeypatch):
    """Every run folder ``api.fit`` trains, in order."""
    folders = []
    fit = tamebias.api.fit

    def counting(config=None, overrides=None, run_dir=None, data=None):
        folders.append(run_dir)
        return fit(config, overrides, run_dir=run_dir, data=data)

    monkeypatch.setattr(tamebias.api, "fit", counting)
    monkeypatch.setattr(tamebias.recipe_fit, "fit", counting)  # the runner's own name
    return folders


def test_bench_trains_the_required_run_first_whatever_the_order_then_reuses_it(
        tiny_task, tmp_path, trained):
    results, runs = tmp_path / "results", tmp_path / "runs"
    result = runner.invoke(app, [
        "bench", "--suite", "tiny", "--tasks", "tiny", "--seeds", "0",
        "--methods", "adda+bn+aug,source_only+bn+aug", "--results-dir", str(results),
        "--runs-dir", str(runs), "--set", "data.batch_size=16", "--set", "train.threads=1",
        "--set", "train.eval_every=2", "--set", "train.log_every=2"])
    assert result.exit_code == 0, result.output
    source = runs / "tiny" / "tiny" / "source_only+bn+aug" / "seed0"
    adda = runs / "tiny" / "tiny" / "adda+bn+aug" / "seed0"
    assert trained == [source, adda], "the required run first, each run trained once"
    rows = {row["method"]: row for row in json.loads((results / "tiny.json").read_text())["rows"]}
    assert rows["adda+bn+aug"]["built_from"] == [str(source.resolve())]
    assert rows["adda+bn+aug"]["steps"] == 4  # the adaptation stage only
    # the source_only+bn+aug row is the run adda+bn+aug started from, reused
    assert rows["source_only+bn+aug"]["runs"] == [str(source)]
    saved = json.loads((adda / "config.json").read_text())
    assert saved["init"]["weights"] == f"{source}:classifier"


def test_a_finished_run_of_the_same_config_is_reused_and_another_config_refused(
        tiny_overrides, tmp_path, trained):
    config = load_config(None, tiny_overrides)
    first, reused = fit_or_reuse(config, tmp_path / "run")
    again, reused_again = fit_or_reuse(load_config(None, [*tiny_overrides, "train.threads=2"]),
                                       tmp_path / "run")
    assert (reused, reused_again) == (False, True) and trained == [tmp_path / "run"]
    assert again.target == first.target and again.history == first.history
    other = load_config(None, [*tiny_overrides, "method.steps=4"])
    with pytest.raises(ConfigError, match="holds a run of other settings"):
        fit_or_reuse(other, tmp_path / "run")


def test_a_cycle_or_an_unknown_recipe_in_requires_is_a_clear_error(tiny_task, monkeypatch,
                                                                   tmp_path):
    monkeypatch.setattr(tamebias.recipes, "RECIPES", {
        "first": Recipe("first", "adda", requires=(Requirement("second"),)),
        "second": Recipe("second", "adda", requires=(Requirement("first"),)),
        "orphan": Recipe("orphan", "adda", requires=(Requirement("nowhere"),)),
        "chained": Recipe("chained", "dann", requires=(Requirement("orphan"),)),
    })
    with pytest.raises(ValueError, match="cycle: first -> second -> first"):
        required_recipes("first")
    with pytest.raises(UnknownNameError, match="orphan requires 'nowhere'"):
        required_recipes("chained")
    assert required_recipes("adda") == []  # a method is a recipe of itself
    for name, message in (("first", "cycle"), ("chained", "requires 'nowhere'")):
        result = runner.invoke(app, ["fit", "--task", "tiny", "--recipe", name, "--set",
                                     f"output_dir={tmp_path}"])
        assert result.exit_code == 2 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert not any(tmp_path.iterdir()), "nothing trained"
    with pytest.raises(ValueError, match="one recipe at most"):
        Recipe("two", "adda", requires=(Requirement("a"), Requirement("b")))


def test_init_weights_loads_the_named_modules_and_the_lineage_records_them(
        tiny_overrides, tmp_path):
    source = tamebias.api.fit(None, tiny_overrides, run_dir=tmp_path / "source")
    saved = restore_run(source.run_dir).method.classifier.state_dict()
    setting = f"init.weights={source.run_dir}:classifier.backbone"
    _, method, _ = build_run(load_config(None, [*tiny_overrides, "method=dann", setting,
                                                "model.norm=none"]))  # the source's network
    head = {k: v.clone() for k, v in method.classifier.classifier_head.state_dict().items()}
    critic = {k: v.clone() for k, v in method.critic.state_dict().items()}
    initialize(method, setting.split("=", 1)[1])
    assert all(torch.equal(v, saved[f"backbone.{k}"])
               for k, v in method.classifier.backbone.state_dict().items())
    assert all(torch.equal(v, head[k])
               for k, v in method.classifier.classifier_head.state_dict().items())
    assert all(torch.equal(v, critic[k]) for k, v in method.critic.state_dict().items())
    with pytest.raises(ValueError, match="no module 'generator'.*critic"):
        initialize(method, f"{source.run_dir}:generator")
    _, with_bn, _ = build_run(load_config(None, [*tiny_overrides, "method=dann"]))
    with pytest.raises(ValueError, match="do not fit this run's network.*model.norm"):
        initialize(with_bn, f"{source.run_dir}:classifier")  # batch norm vs none

    # through fit: ADDA's source stage is skipped and its frozen encoder is the loaded model
    adda = tamebias.api.fit(None, [*tiny_overrides, "method=adda", "method.steps=2",
                                   f"init.weights={source.run_dir}:classifier"],
                            run_dir=tmp_path / "adda")
    assert {record["stage"] for record in adda.history} == {"adapt"} and adda.steps == 2
    frozen = restore_run(adda.run_dir, "last").method.source_encoder.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in frozen.items())
    [parent] = adda.lineage["parents"]
    assert parent["setting"] == "init.weights" and parent["modules"] == ["classifier"]
    assert parent["path"] == source.run_dir and parent["method"] == "source_only"


@pytest.mark.parametrize("name", ["fixmatch", "mean_teacher", "cycada_pixel"])
def test_a_former_preset_method_is_read_as_its_recipe(name):
    old = load_config({"method": {"name": name}})
    new = load_config(None, recipe_overrides(name))
    assert run_identity(old.to_dict()) == run_identity(new.to_dict())
    assert old.method.name == RECIPES[name].method
    # a partial table keeps the preset's other settings
    if name != "cycada_pixel":
        tuned = load_config({"method": {"name": name, "self_training": {"weight": 2.0}}})
        assert tuned.method.self_training.mode == name and tuned.method.self_training.weight == 2


def test_run_folders_of_an_older_version_still_load_as_the_same_runs(tiny_overrides,
                                                                     tmp_path):
    """A fixmatch run (the former preset method) and an ADDA run that named its source model
    in ``method.source_run``: rewritten in the old shape they load, evaluate and keep their
    identity (a bench or a recipe reuses them)."""
    fixmatch = tamebias.api.fit(None, [*tiny_overrides, *recipe_overrides("fixmatch")],
                                run_dir=tmp_path / "fixmatch")
    source = tamebias.api.fit(None, tiny_overrides, run_dir=tmp_path / "source")
    adda = tamebias.api.fit(None, [*tiny_overrides, "method=adda", "method.steps=2",
                                   f"init.weights={source.run_dir}:classifier"],
                            run_dir=tmp_path / "adda")
    for result, old_method in ((fixmatch, {"name": "fixmatch"}),
                               (adda, {"source_run": source.run_dir})):
        path = Path(result.run_dir) / "config.json"
        current = json.loads(path.read_text())
        old = {**current, "method": {**current["method"], **old_method}}
        del old["init"]
        path.write_text(json.dumps(old))
        assert run_identity(old) == run_identity(current)
        run = restore_run(result.run_dir)
        assert run.config.to_dict() == load_config(current).to_dict()
        assert tamebias.api.evaluate_run(result.run_dir).accuracy == result.accuracy
    assert lineage_of(old)["parents"][0]["setting"] == "init.weights"
    with pytest.raises(ConfigError, match="set only init.weights"):
        load_config(None, [*tiny_overrides, "method=adda", "method.source_run=a",
                           "init.weights=b"])


def test_list_shows_one_line_per_recipe_and_full_shows_its_settings():
    short = runner.invoke(app, ["list", "recipes"])
    assert short.exit_code == 0
    rows = [line for line in short.output.splitlines() if "│" in line]
    assert len(rows) == len(RECIPES)
    assert "init.weights" not in short.output
    full = runner.invoke(app, ["list", "recipes", "--full"])
    line = next(line for line in full.output.splitlines() if "adda+bn+aug" in line)
    assert "adda model.norm=bn" in line
    assert "init.weights=<source_only+bn+aug run>:classifier" in line


def test_your_settings_reach_a_required_run_as_far_as_its_method_has_them():
    settings = ["method.steps=5", "method.translate_steps=9", "init.weights=mine:classifier",
                "train.seed=3", "method.optim.lr=0.1", "model.norm=in"]
    assert settings_for("source_only+bn+aug", settings) == [
        "method.steps=5", "train.seed=3", "method.optim.lr=0.1", "model.norm=in"]
    assert "method.translate_steps=9" in settings_for("cycada_pixel+bn+aug", settings)
    # your own init.weights replaces the recipe's start: nothing to train first
    assert required_runs("cycada+bn+aug", settings) == []
    assert required_runs("cycada+bn+aug", []) == ["source_only+bn+aug", "cycada_pixel+bn+aug"]
    config = recipe_config("mnist-usps", "adda+bn+aug", overrides=settings[2:3])
    assert config.init.weights == "mine:classifier"


def test_sweep_tunes_a_recipe_after_training_the_run_it_starts_from(tiny_overrides, tmp_path):
    from tamebias.sweep import run_sweep

    record = run_sweep("adda+bn+aug", ["method.optim.lr=0.002,0.0005"], [0],
                       tmp_path / "sweep", overrides=[*tiny_overrides, "method.steps=2",
                                                      "train.eval_every=2"])
    source = tmp_path / "sweep" / "requires" / "source_only+bn+aug" / "seed0"
    config = json.loads((source / "config.json").read_text())
    assert config["method"]["name"] == "source_only" and config["model"]["norm"] == "bn"
    assert config["method"]["optim"]["lr"] == 0.001, "the grid tunes the recipe, not its start"
    for run in record["runs"]:
        lineage = json.loads((Path(run["run_dir"]) / "lineage.json").read_text())
        assert lineage["parents"][0]["run"] == str(source.resolve())
        assert {r["stage"] for r in run["history"]} == {"adapt"}


def test_every_committed_results_row_is_a_recipe_and_every_table_renders(monkeypatch):
    """Each row names a method, a registered recipe or an experiment of
    benchmarks/experiments.toml, and each committed table renders as it is committed."""
    import tamebias.recipes
    from tamebias.bench import markdown_table
    from tamebias.recipes import load_recipe_file, recipe

    monkeypatch.setattr(tamebias.recipes, "FILE_RECIPES", {})
    load_recipe_file(Path(__file__).parent.parent / "benchmarks" / "experiments.toml")
    results = Path(__file__).parent.parent / "benchmarks" / "results"
    suites = 0
    for path in sorted(results.glob("*.json")):
        values = json.loads(path.read_text())
        if not (isinstance(values, dict) and "suite" in values):
            continue  # a sweep's or a script's record, not a bench table
        suites += 1
        for row in values["rows"]:
            assert recipe(row["method"]).name == row["method"], (path.name, row["method"])
        table = markdown_table(values["suite"], values["rows"])
        committed = path.with_suffix(".md").read_text()  # may carry a written preamble
        assert [line for line in table.splitlines() if line.startswith("|")] == \
            [line for line in committed.splitlines() if line.startswith("|")], path.name
    assert suites >= 6


def test_methods_import_shared_pieces_never_each_other():
    """A method file imports base, common and parts, not another method (issue 18), except
    a method declared as a small change of another, which subclasses it (listed here)."""
    import ast

    folder = Path(tamebias.api.__file__).parent / "methods"
    shared = {"base", "common", "parts"}
    extends = {("cdan", "dann"): "CDAN is DANN with a conditioned critic",
               ("coral", "dan"): "Deep CORAL is DAN with CORAL for MMD"}
    methods = {path.stem for path in folder.glob("*.py")} - shared - {"__init__"}
    for path in folder.glob("*.py"):
        if path.stem == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and \
                    (path.stem, node.module) not in extends:
                assert node.module not in methods, f"{path.name} imports methods/{node.module}"
