"""tamebias sweep: grids, scoring by validators against the oracle, a tiny end-to-end sweep."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from tamebias.cli import app
from tamebias.config import ConfigError
from tamebias.sweep import configurations, parse_grid, pick, score_runs


def record(step, accuracy, **validators):
    return {"stage": "train", "step": step, "target_accuracy": accuracy,
            "source_val_accuracy": validators.pop("source_val", None),
            "validators": validators}


def test_grid_parsing_and_random_draws():
    grid = parse_grid(["method.domain_weight=0.1,1", "method.optim.name=sgd,adam"])
    assert grid == [("method.domain_weight", [0.1, 1]), ("method.optim.name", ["sgd", "adam"])]
    assert len(configurations(grid)) == 4
    drawn = configurations(grid, sample=3, seed=1)
    assert len(drawn) == 3 and len({json.dumps(c) for c in drawn}) == 3
    with pytest.raises(ConfigError, match="value1,value2"):
        parse_grid(["method.domain_weight"])


def test_scores_use_the_evaluation_each_validator_picks_within_a_run():
    runs = [
        {"run_dir": "a", "history": [record(1, 0.50, snd=1.0, entropy=-2.0),
                                     record(2, 0.90, snd=3.0, entropy=-1.0)]},
        {"run_dir": "b", "history": [record(1, 0.95, snd=2.0, entropy=-0.1),
                                     record(2, 0.70, snd=0.5, entropy=-0.5)]},
        {"run_dir": "c", "history": [record(1, 0.60, snd=0.1, entropy=-3.0),
                                     record(2, 0.65, snd=0.2, entropy=-2.5)]},
    ]
    assert pick(runs[0]["history"], "snd")["step"] == 2
    rows = {row["validator"]: row for row in score_runs(runs, ["snd", "entropy"])}
    # snd: run a scores 3.0 (acc 90), b 2.0 (acc 95), c 0.2 (acc 65): picks a
    assert rows["snd"]["picked_run"] == "a"
    assert rows["snd"]["picked_accuracy"] == pytest.approx(90)
    assert rows["snd"]["oracle_best_accuracy"] == pytest.approx(95)
    assert rows["snd"]["pick_vs_oracle_gap"] == pytest.approx(5)
    assert rows["snd"]["rank_correlation"] == pytest.approx(0.5)  # ranks (3,2,1) vs (2,3,1)
    # entropy: a -1.0 (90), b -0.1 (95), c -2.5 (65): perfect ranking, picks the oracle's run
    assert rows["entropy"]["rank_correlation"] == pytest.approx(1.0)
    assert rows["entropy"]["pick_vs_oracle_gap"] == pytest.approx(0)


def test_a_tiny_sweep_end_to_end_writes_rows_and_reuses_finished_runs(tiny_overrides,
                                                                      tmp_path):
    arguments = ["sweep", "--method", "dann", "--grid", "method.domain_weight=0.1,1.0",
                 "--sweep-dir", str(tmp_path / "sweep"), "--results",
                 str(tmp_path / "results" / "validators.json")]
    for override in [*tiny_overrides, "method.steps=4", "train.eval_every=2"]:
        arguments += ["--set", override]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "results" / "validators.json").read_text())["rows"]
    assert {row["validator"] for row in rows} == {"source_val", "entropy", "im", "snd", "dev"}
    for row in rows:
        assert row["runs"] == 2 and row["method"] == "dann"
        assert row["pick_vs_oracle_gap"] == pytest.approx(
            row["oracle_best_accuracy"] - row["picked_accuracy"])
        assert row["pick_vs_oracle_gap"] >= 0
    table = (tmp_path / "results" / "validators.md").read_text()
    assert "| snd |" in table
    sweep = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [run["params"] for run in sweep["runs"]] == [{"method.domain_weight": 0.1},
                                                        {"method.domain_weight": 1.0}]
    finished = tmp_path / "sweep" / "00-domain_weight=0.1-seed0" / "result.json"
    stamp = finished.stat().st_mtime_ns
    again = CliRunner().invoke(app, arguments)
    assert again.exit_code == 0, again.output
    assert finished.stat().st_mtime_ns == stamp  # reused, not retrained


def test_a_diverging_configuration_is_recorded_and_left_out(tiny_overrides, tmp_path,
                                                            monkeypatch):
    from tamebias import api, recipe_fit
    from tamebias import sweep as sweep_module
    from tamebias.training.trainer import TrainingDiverged

    original = api.fit

    def fit(config, **kwargs):
        if config.method.domain_weight > 0.5:
            raise TrainingDiverged("a loss became NaN")
        return original(config, **kwargs)

    monkeypatch.setattr(recipe_fit, "fit", fit)  # what the recipe runner trains with
    record = sweep_module.run_sweep(
        "dann", ["method.domain_weight=0.1,1.0"], [0], tmp_path / "sweep",
        overrides=[*tiny_overrides, "method.steps=2", "train.eval_every=2"])
    assert [("diverged" in run) for run in record["runs"]] == [False, True]
    assert all(row["runs"] == 1 and row["diverged_runs"] == 1 for row in record["rows"])


def test_scoring_at_the_last_evaluation_ignores_earlier_ones():
    runs = [
        {"run_dir": "a", "history": [record(1, 0.99, snd=9.0), record(2, 0.60, snd=1.0)]},
        {"run_dir": "b", "history": [record(1, 0.10, snd=0.0), record(2, 0.80, snd=2.0)]},
    ]
    at_pick = score_runs(runs, ["snd"])[0]
    assert at_pick["picked_run"] == "a" and at_pick["oracle_best_accuracy"] == pytest.approx(99)
    at_last = score_runs(runs, ["snd"], score_at="last")[0]
    assert at_last["score_at"] == "last" and at_last["picked_run"] == "b"
    assert at_last["picked_accuracy"] == pytest.approx(80)
    assert at_last["oracle_best_accuracy"] == pytest.approx(80)
    assert at_last["pick_vs_oracle_gap"] == pytest.approx(0)


def test_every_label_free_rule_is_read_back_from_the_run_record():
    from types import SimpleNamespace

    from tamebias.bench import rule_means
    from tamebias.evaluation.selection import rule_accuracies

    history = [record(1, 0.50, source_val=0.99, im=0.2), record(2, 0.80, source_val=0.90, im=0.9),
               record(3, 0.70, source_val=0.95, im=0.5)]
    assert rule_accuracies(history) == {"source_val": 0.50, "im": 0.80}
    # the probe's source_val (a 1,000-image sample) may disagree with the trainer's rule on
    # the whole split: the column follows the trainer
    history[2]["validators"]["source_val"] = 1.0
    assert rule_accuracies(history)["source_val"] == 0.50
    older = [{"stage": "train", "step": 1, "target_accuracy": 0.6, "source_val_accuracy": 0.9}]
    assert rule_accuracies(older) == {"source_val": 0.6}  # runs from before the validators
    means = rule_means([SimpleNamespace(history=history), SimpleNamespace(history=older)])
    assert means == {"source_val": pytest.approx(55.0)}  # only rules every run recorded


def test_bench_rows_show_the_source_val_and_im_rules(tiny_overrides):
    from tamebias.api import fit
    from tamebias.bench import markdown_table, row_from_runs
    from tamebias.evaluation.selection import pick

    result = fit(None, [*tiny_overrides, "method.name=dann", "train.eval_every=2",
                        "method.steps=6"])
    row = row_from_runs("tiny", [result], label="dann+bn+aug")
    chosen = pick(result.history, "im")
    assert row["rule_accuracy_mean"]["im"] == pytest.approx(100 * chosen["target_accuracy"])
    table = markdown_table("tiny", [row])
    rules = row["rule_accuracy_mean"]
    assert f"| {rules['source_val']:.2f} / {rules['im']:.2f} |" in table
