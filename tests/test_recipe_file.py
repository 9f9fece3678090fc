"""Recipe files: experiments declared in TOML for one process (`--recipe-file`), not
registered recipes; `benchmarks/experiments.toml` holds the project's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tamebias.recipes as recipes
import tamebias.tasks
from tamebias.cli import app
from tamebias.compose import load_config
from tamebias.config import ConfigError, parse_override
from tamebias.methods import METHODS
from tamebias.recipes import RECIPES, load_recipe_file, recipe_overrides, required_recipes
from tamebias.tasks import Task

EXPERIMENTS = Path(__file__).parent.parent / "benchmarks" / "experiments.toml"
runner = CliRunner()
pytestmark = pytest.mark.usefixtures("wide_plain_consoles")


@pytest.fixture(autouse=True)
def no_file_recipes(monkeypatch):
    monkeypatch.setattr(recipes, "FILE_RECIPES", {})


def test_the_project_experiments_are_valid_configs_that_start_from_registered_recipes():
    loaded = load_recipe_file(EXPERIMENTS)
    assert "cycada_pixel+bn+aug+cycle1" in loaded and "dance+rotation" in loaded
    for name, declared in loaded.items():
        assert name not in RECIPES and name not in METHODS  # experiments stay out of the registry
        assert all(need in RECIPES for need in required_recipes(name))
        places = {need.recipe: f"runs/bench/digits/mnist-usps/{need.recipe}/seed1"
                  for need in declared.requires}
        overrides = recipe_overrides(name, places)
        config = load_config(None, overrides)
        assert type(config.method) is METHODS[declared.method].Config
        for override in overrides[1:]:  # each setting took effect
            path, value = parse_override(override)
            node = config
            for part in path:
                node = getattr(node, part)
            assert node == value


@pytest.mark.parametrize("text, message", [
    ('[recipes."x"]\nmethod = "danm"\n', "method 'danm' is not one of"),
    ('[recipes."dann+bn+aug"]\nmethod = "dann"\n', "registered method or recipe already"),
    ('[recipes."x"]\nmethod = "dann"\nsteps = 3\n', "unknown keys ['steps']"),
    ('[recipes."x"]\nmethod = "dann"\nrequires = "source_only"\n', "requires must be"),
    ('[recipes."x"\nmethod = "dann"\n', "is not valid TOML"),
    ('[other]\na = 1\n', "declares no"),
])
def test_a_bad_recipe_file_is_one_message_naming_the_file_and_recipe(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="mine.toml") as error:
        load_recipe_file(path)
    assert message in str(error.value)
    assert recipes.FILE_RECIPES == {}  # nothing half-declared
    with pytest.raises(ConfigError, match="existing .toml"):
        load_recipe_file(tmp_path / "missing.toml")


def test_fit_runs_a_file_recipe_with_the_run_it_starts_from(domains, tmp_path, monkeypatch):
    monkeypatch.setattr(tamebias.tasks, "TASKS", {"tiny": Task(
        "tiny npz pair", {"source": domains["source"], "target": domains["target"],
                          "size": 16, "channels": 1}, steps=4)})
    path = tmp_path / "exp.toml"
    path.write_text('[recipes."adda+tiny"]\nmethod = "adda"\n'
                    'overrides = ["model.norm=bn", "method.critic_hidden=[64]"]\n'
                    'requires = { recipe = "source_only+bn+aug" }\n')
    command = ["fit", "--task", "tiny", "--recipe", "adda+tiny", "--set",
               "data.batch_size=16", "--set", "train.eval_every=2", "--set",
               "train.progress=false", "--set", "train.threads=1",
               "--set", f"output_dir={tmp_path / 'runs'}", "--run-dir", str(tmp_path / "run")]
    unknown = runner.invoke(app, command)
    assert unknown.exit_code == 2 and "unknown recipe 'adda+tiny'" in unknown.output
    result = runner.invoke(app, [*command, "--recipe-file", str(path)])
    assert result.exit_code == 0, result.output
    assert "training the source_only+bn+aug run it starts from" in result.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["method"]["name"] == "adda" and saved["method"]["critic_hidden"] == [64]
    assert saved["init"]["weights"].endswith("source_only+bn+aug/seed0:classifier")
