"""`tamebias fit --task NAME --recipe NAME`: the task's protocol with the recipe's method and
parts, runs a recipe starts from trained first (then reused), and plain `fit` defaults."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tamebias.tasks
from tamebias.cli import app
from tamebias.recipe_fit import (
    DEFAULT_RECIPE,
    DEFAULT_TASK,
    choose,
    recipe_config,
    required_places,
)
from tamebias.recipes import RECIPES, required_recipes
from tamebias.tasks import TASKS, Task

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("wide_plain_consoles")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_fit_task_builds_the_config_of_every_task(task):
    config = recipe_config(task, DEFAULT_RECIPE)
    protocol = TASKS[task]
    assert config.method.name == "adda" and config.model.norm == "bn"
    assert config.data.source == protocol.data["source"]
    # a feature-vector task has no image geometry
    assert config.data.size == protocol.data.get("size")
    assert config.data.channels == protocol.data.get("channels")
    assert config.model.backbone == protocol.backbone
    assert config.method.steps == protocol.steps
    assert config.init.weights == (
        f"{required_places(task, DEFAULT_RECIPE)['source_only+bn+aug']}:classifier")


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_resolves_its_required_runs_on_the_default_task(recipe):
    config = recipe_config(DEFAULT_TASK, recipe, overrides=["train.seed=2"])
    assert not re.search(r"\{(runs|suite|task|seed)\}", json.dumps(config.to_dict()))
    assert config.method.name == RECIPES[recipe].method
    places = required_places(DEFAULT_TASK, recipe, overrides=["train.seed=2"])
    assert list(places) == required_recipes(recipe)
    for label, folder in places.items():
        assert str(folder).endswith(f"recipes/{str(folder).split('/')[-4]}/"
                                    f"{DEFAULT_TASK}/{label}/seed2")
    for need in RECIPES[recipe].requires:  # the run it starts from, with the named modules
        assert config.init.weights == f"{places[need.recipe]}:{','.join(need.modules)}"


def test_required_recipes_are_listed_deepest_first():
    assert required_recipes("adda+bn+aug") == ["source_only+bn+aug"]
    assert required_recipes("cycada+bn+aug") == ["source_only+bn+aug", "cycada_pixel+bn+aug"]
    assert required_recipes("dann+bn+aug") == [] and required_recipes("dann") == []


def test_settings_that_change_the_run_get_their_own_folder_of_required_runs():
    plain = recipe_config("mnist-usps", "adda+bn+aug", overrides=["data.root=/x"])
    assert plain.init.weights == "runs/recipes/mnist-usps/source_only+bn+aug/seed0:classifier"
    shorter = recipe_config("mnist-usps", "adda+bn+aug", overrides=["method.steps=10"])
    other = recipe_config("mnist-usps", "adda+bn+aug", overrides=["method.steps=20"])
    assert shorter.init.weights != other.init.weights
    assert shorter.init.weights.startswith("runs/recipes/")


def test_plain_fit_adapts_on_the_embedded_pair_and_explicit_choices_win(tmp_path):
    assert choose(None, None, None, []) == (DEFAULT_TASK, DEFAULT_RECIPE)
    assert choose(None, None, None, ["method=dann"]) == (DEFAULT_TASK, None)
    assert choose("mnist-usps", None, None, []) == ("mnist-usps", DEFAULT_RECIPE)
    assert choose(None, None, None, ["data.source=usps", "data.target=mnist"]) == (None, None)
    config_file = tmp_path / "run.toml"
    assert choose(None, None, config_file, []) == (None, None)
    assert choose(None, "dann+bn+aug", config_file, []) == (None, "dann+bn+aug")
    # `fit --set method=dann` alone gets the embedded task's geometry (no geometry error)
    config = recipe_config(*choose(None, None, None, ["method=dann"]), None, ["method=dann"])
    assert (config.method.name, config.data.size, config.data.channels) == ("dann", 28, 1)


@pytest.fixture
def tiny_task(domains, monkeypatch):
    task = Task("tiny npz pair", {"source": domains["source"], "target": domains["target"],
                                  "size": 16, "channels": 1}, steps=4)
    monkeypatch.setattr(tamebias.tasks, "TASKS", {"tiny": task})
    return task


def test_fit_task_recipe_trains_the_required_run_first_then_reuses_it(tiny_task, tmp_path):
    runs = tmp_path / "runs"
    command = ["fit", "--task", "tiny", "--recipe", "adda+bn+aug", "--set",
               "data.batch_size=16", "--set", "train.eval_every=2", "--set",
               "train.progress=false", "--set", "train.threads=1", "--set", f"output_dir={runs}"]
    first = runner.invoke(app, [*command, "--run-dir", str(tmp_path / "adda1")])
    assert first.exit_code == 0, first.output
    saved = json.loads((tmp_path / "adda1" / "config.json").read_text())
    source_run = saved["init"]["weights"].rsplit(":", 1)[0]
    assert f"training the source_only+bn+aug run it starts from: {source_run}" in first.output
    required = json.loads((Path(source_run) / "config.json").read_text())
    assert required["method"]["name"] == "source_only" and required["model"]["norm"] == "bn"
    assert required["data"]["augment"]["source"] == "weak" and required["method"]["steps"] == 4
    assert saved["method"]["name"] == "adda" and saved["train"]["selection"] == "im"

    second = runner.invoke(app, [*command, "--run-dir", str(tmp_path / "adda2")])
    assert second.exit_code == 0, second.output
    assert f"reusing the source_only+bn+aug run it starts from: {source_run}" in second.output
    assert json.loads((tmp_path / "adda2" / "result.json").read_text())["target"] == \
        json.loads((tmp_path / "adda1" / "result.json").read_text())["target"]


def test_fit_with_an_unknown_task_or_recipe_exits_2_naming_the_choices():
    result = runner.invoke(app, ["fit", "--task", "mnist-mars"])
    assert result.exit_code == 2 and "mnist-usps" in result.output
    result = runner.invoke(app, ["fit", "--task", "mnist-usps", "--recipe", "danm"])
    assert result.exit_code == 2 and "dann+bn+aug" in result.output
    assert "Traceback" not in result.output


def test_demo_with_an_unknown_recipe_exits_2_before_training(tmp_path):
    result = runner.invoke(app, ["demo", "--recipes", "source_only,adda+bn+agu", "--output",
                                 str(tmp_path / "demo")])
    assert result.exit_code == 2 and "adda+bn+aug" in result.output, result.output
    assert not (tmp_path / "demo").exists()
