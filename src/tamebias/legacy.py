"""Configs written before recipes and ``init.weights``, read as today's settings.

Two things changed shape: the preset methods ``fixmatch``, ``mean_teacher`` and
``cycada_pixel`` became recipes (``recipes.py``) over ``self_training`` and ``cycada``, and the
per-method reuse knobs ``method.source_run`` / ``source_head`` (ADDA, CyCADA, DANCE),
``method.translator_run`` and ``method.pixel_run`` (CyCADA) became the one setting
``init.weights = "RUN:module,..."``. :func:`upgrade` rewrites a config dict of the old shape
into the new one, so old run folders load, resume and keep their identity (a bench or a recipe
reuses them). A third change added translator settings: a few-shot translator config saved before
``content_weight``, ``semantic_weight``, ``deviation_weight`` or ``decoder_norm`` existed reads
them as the losses and network it trained with (weights 0, instance norm).
Plain dicts only: no other tamebias module is imported here.
"""

from __future__ import annotations

import copy
from typing import Any

# old method name -> (method, the preset's own defaults under the saved values); the recipes
# of the same names declare the same settings (a test checks they build the same config)
RENAMED_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "fixmatch": ("self_training", {"self_training": {"mode": "fixmatch", "threshold": 0.95}}),
    "mean_teacher": ("self_training", {"self_training": {
        "mode": "mean_teacher", "threshold": 0.968, "weight": 3.0, "ema": 0.99,
        "balance": 0.005}}),
    "cycada_pixel": ("cycada", {"feature_steps": 0}),
}

# old reuse knob -> the modules of that run it loaded (DANCE's source_head=false: backbone only)
REUSE_KNOBS: dict[str, tuple[str, ...]] = {
    "source_run": ("classifier",),
    "translator_run": ("translator", "teacher"),
    "pixel_run": ("translator", "teacher", "classifier"),
}
KNOB_METHODS = ("adda", "cycada", "cycada_pixel", "dance")

# few-shot translator settings added after runs were saved, with the value those runs trained
# with: a saved ``method.network`` that records its other settings but not these read them so,
# whatever today's defaults are
ADDED_TRANSLATOR_SETTINGS: dict[str, Any] = {"content_weight": 0.0, "semantic_weight": 0.0,
                                             "deviation_weight": 0.0, "decoder_norm": "in"}


def _merge(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def upgrade(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a run config as a dict) with renamed methods and old reuse knobs rewritten;
    the dict itself is not changed. Raises ValueError when an old knob and ``init.weights``
    (or two old knobs) both name a run."""
    method = values.get("method")
    if isinstance(method, str):
        method = {"name": method}
    if not isinstance(method, dict):
        return values
    name = method.get("name", "source_only")
    network = method.get("network")
    if name == "fewshot_pixel" and isinstance(network, dict) and "gan_weight" in network and any(
            key not in network for key in ADDED_TRANSLATOR_SETTINGS):
        network = {**ADDED_TRANSLATOR_SETTINGS, **network}
        values = {**values, "method": {**method, "network": network}}
        method = values["method"]
    if name not in RENAMED_METHODS and (
            name not in KNOB_METHODS or not any(k in method for k in (*REUSE_KNOBS,
                                                                      "source_head"))):
        return values
    values = dict(values)
    method = dict(method)
    if name in KNOB_METHODS:
        source_head = method.pop("source_head", True)
        named = [(knob, method.pop(knob)) for knob in list(REUSE_KNOBS) if knob in method]
        named = [(knob, run) for knob, run in named if run]
        if len(named) > 1:
            raise ValueError("method." + " and method.".join(k for k, _ in named) + " both "
                             "name a run to start from; give one as init.weights=RUN:modules")
        if named:
            knob, run = named[0]
            init = dict(values.get("init") or {})
            if init.get("weights"):
                raise ValueError(f"method.{knob} is the old form of init.weights; set only "
                                 "init.weights")
            modules = REUSE_KNOBS[knob]
            if name == "dance" and source_head is False:
                modules = ("classifier.backbone",)
            init["weights"] = f"{run}:{','.join(modules)}"
            values["init"] = init
    if name in RENAMED_METHODS:
        new_name, preset = RENAMED_METHODS[name]
        method = _merge(preset, {key: value for key, value in method.items() if key != "name"})
        method["name"] = new_name
    values["method"] = method
    return values
