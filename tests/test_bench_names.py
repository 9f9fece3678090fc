"""Results tables name a method run with ``--set model.norm=bn`` and augmented views by its
``+bn+aug`` form, so it cannot be read as the plain method's row."""

from __future__ import annotations

from tamebias.bench import row_key, shown_name


def test_plain_methods_with_bn_and_views_read_as_their_bn_aug_form():
    plain = {"method": "cdan", "norm": None, "protocol": {"augmentation": "none"}}
    tuned = {"method": "cdan", "norm": "bn",
             "protocol": {"augmentation": "auto policy: source weak, target weak"}}
    assert shown_name(plain) == "cdan"
    assert shown_name(tuned) == "cdan+bn+aug"
    assert shown_name({**tuned, "norm": None}) == "cdan+aug"
    with_mcc = {**tuned, "method": "dann", "method_config": {"mcc": {"weight": 1.0}}}
    assert shown_name(with_mcc) == "dann+mcc+bn+aug"
    assert shown_name({**with_mcc, "method": "mcc"}) == "mcc+bn+aug"
    # a registered variant keeps its own name
    assert shown_name({**tuned, "method": "dann+bn+aug"}) == "dann+bn+aug"


def test_a_method_with_an_mcc_term_is_its_own_row():
    row = {"task": "t", "method": "dann", "norm": None, "backbone": "lenet", "steps": 3,
           "selection": "last", "protocol": {"augmentation": "none"}, "method_config": {}}
    with_mcc = {**row, "method_config": {"mcc": {"weight": 1.0}}}
    assert row_key(row) != row_key(with_mcc)
    assert row_key(row) == row_key({**row, "method_config": {"mcc": {"weight": 0.0}}})
