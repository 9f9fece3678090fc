"""Selection by an unsupervised validator inside the training loop."""

from __future__ import annotations

import pytest
import torch

import tamebias
from tamebias.compose import load_config
from tamebias.config import ConfigError
from tamebias.data.domain import prepare_data
from tamebias.evaluation.selection import ValidationProbe
from tamebias.evaluation.validators import VALIDATORS
from tamebias.training import checkpoint


def test_selection_by_snd_records_every_validator_and_keeps_the_best_snd(tiny_overrides,
                                                                          tmp_path):
    overrides = [*tiny_overrides, "method.name=dann", "method.steps=9", "train.selection=snd"]
    result = tamebias.fit(None, overrides, run_dir=tmp_path / "run")
    assert len(result.history) == 3
    for record in result.history:
        assert set(record["validators"]) == set(VALIDATORS)
    best = max(result.history, key=lambda r: r["validators"]["snd"])
    assert result.selected == best and result.selection == "snd"
    # best.pt holds the selected weights: its score on the same probe equals the record's
    config = load_config(None, overrides)
    data, method, device = tamebias.api.build_run(config)
    method.load_state_dict(checkpoint.load(tmp_path / "run" / "best.pt")["method"])
    again = ValidationProbe(data, device).scores(method)
    assert again["snd"] == pytest.approx(best["validators"]["snd"], rel=1e-4)


def test_validators_never_read_target_labels(tiny_overrides):
    config = load_config(None, tiny_overrides)
    data, method, device = tamebias.api.build_run(config)
    before = ValidationProbe(data, device).scores(method)
    data.target_train.labels = torch.randint(0, 3, data.target_train.labels.shape)
    data.target_test.labels = torch.randint(0, 3, data.target_test.labels.shape)
    assert ValidationProbe(data, device).scores(method) == before


def test_without_source_validation_only_target_validators_are_recorded(tiny_overrides):
    config = load_config(None, [*tiny_overrides, "data.source_val_fraction=0",
                                "train.selection=entropy"])
    data = prepare_data(config.data)
    _, method, device = tamebias.api.build_run(config, data)
    assert set(ValidationProbe(data, device).scores(method)) == {"entropy", "im", "snd"}


def test_unknown_or_unusable_validator_names_fail_clearly(tiny_overrides):
    with pytest.raises(ConfigError, match="snd"):
        load_config(None, [*tiny_overrides, "train.selection=nope"])
    with pytest.raises(ConfigError, match="source validation"):
        load_config(None, [*tiny_overrides, "train.selection=dev",
                           "data.source_val_fraction=0"])
