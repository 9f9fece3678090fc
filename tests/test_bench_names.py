"""Results tables name a method run with ``--set model.norm=bn`` and augmented views that its
own default form lacks by its ``+bn+aug`` form, so it cannot be read as the plain method's row;
a method whose default form has them (DANN and CDAN, ``Method.part_defaults``) keeps its name."""

from __future__ import annotations

from tamebias.bench import row_key, shown_name


def test_plain_methods_with_bn_and_views_read_as_their_bn_aug_form():
    plain = {"method": "mdd", "norm": None, "protocol": {"augmentation": "none"}}
    tuned = {"method": "mdd", "norm": "bn",
             "protocol": {"augmentation": "auto policy: source weak, target weak"}}
    assert shown_name(plain) == "mdd"
    assert shown_name(tuned) == "mdd+bn+aug"
    assert shown_name({**tuned, "norm": None}) == "mdd+aug"
    assert shown_name({**tuned, "method": "mcc"}) == "mcc+bn+aug"
    # batch norm and views are DANN's (and CDAN's) default form: no suffix for them
    assert shown_name({**tuned, "method": "cdan"}) == "cdan"
    with_mcc = {**tuned, "method": "dann", "method_config": {"mcc": {"weight": 1.0}}}
    assert shown_name(with_mcc) == "dann+mcc"
    # a declared recipe keeps its own name
    assert shown_name({**tuned, "method": "source_only+bn+aug"}) == "source_only+bn+aug"


def test_a_method_with_an_mcc_term_is_its_own_row():
    row = {"task": "t", "method": "dann", "norm": None, "backbone": "lenet", "steps": 3,
           "selection": "last", "protocol": {"augmentation": "none"}, "method_config": {}}
    with_mcc = {**row, "method_config": {"mcc": {"weight": 1.0}}}
    assert row_key(row) != row_key(with_mcc)
    assert row_key(row) == row_key({**row, "method_config": {"mcc": {"weight": 0.0}}})


def test_a_row_with_an_mcc_term_does_not_show_the_plain_paper_s_published_number():
    import json
    from pathlib import Path

    from tamebias.bench import markdown_table

    rows = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" /
                       "methods-digits.json").read_text())["rows"]
    dann = next(row for row in rows
                if shown_name(row) == "dann" and row["task"] == "mnist-usps")
    table = markdown_table("methods-digits", [
        dann, {**dann, "method_config": {**dann["method_config"], "mcc": {"weight": 1.0}}}])
    line = {cells[2].strip(): cells for cells in (row.split("|") for row in table.splitlines())
            if len(cells) > 10 and cells[1].strip() == "mnist-usps"}
    assert "(TLlib)" in line["dann"][9] and line["dann+mcc"][9].strip() == ""
