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
        "MNIST 5k (shipped) -> UCI optical digits (scikit-learn), fixed 70/30 split; 28x28 gray;"
        " needs no download",
        {"source": "mnist5k", "target": "ucidigits", **DIGITS_28},
        steps=1000,
    ),
}

# colour/texture shift with no download (data/blend.py): gray digits -> the same digits blended
# over scikit-learn's sample photos (MNIST-M's recipe); 32x32 RGB, the gray source repeated
COLOUR_32 = {"size": 32, "channels": 3}
TASKS["mnist-mnistblend"] = Task(
    "MNIST train -> MNIST train blended over photo patches (unlabeled), tested on MNIST test "
    "blended; MNIST-M's recipe on scikit-learn's sample photos; 32x32 RGB; needs no download "
    "beyond MNIST",
    {"source": "mnist", "target": "mnistblend", **COLOUR_32},
    steps=1000, extra={"train.eval_every": 250},
)
TASKS["usps-uspsblend"] = Task(
    "USPS train -> USPS train blended over photo patches (unlabeled), tested on USPS test "
    "blended; 32x32 RGB",
    {"source": "usps", "target": "uspsblend", **COLOUR_32},
    steps=1000, extra={"train.eval_every": 250},
)

# category shift (data/shift.py presets): mnist->usps (full sets) and mnist5k->ucidigits in
# the four settings; shared 0-5, source-private 6-7 (partial: 6-9), target-private 8-9
# (open-set: 6-9). Source-only, DANN and DANCE all reject by entropy > log(K)/2.
SHIFT_SETTINGS = ("closed", "partial", "open-set", "open-partial")
for _setting in SHIFT_SETTINGS:
    TASKS[f"mnist-usps-{_setting}"] = Task(
        f"MNIST -> USPS (full sets), category shift digits-{_setting}; 28x28 gray",
        {"source": "mnist", "target": "usps", "category_shift": f"digits-{_setting}",
         **DIGITS_28},
    )
    TASKS[f"mnist5k-ucidigits-{_setting}"] = Task(
        f"MNIST 5k -> UCI digits, category shift digits-{_setting}; 28x28 gray",
        {"source": "mnist5k", "target": "ucidigits", "category_shift": f"digits-{_setting}",
         **DIGITS_28},
        steps=1000,
    )

# semi-supervised DA (MME, PAC): k labeled target images per class (k = 1, 3) beside the
# unlabeled rest, and 3 more per class as the labeled target validation set that picks the
# model (MME's protocol); shots drawn once per task (data.subset_seed), recorded by index
SSDA_PAIRS = ("mnist-usps", "usps-mnist", "mnist5k-ucidigits")
for _pair in SSDA_PAIRS:
    for _shots in (1, 3):
        _base = TASKS[_pair]
        TASKS[f"{_pair}-ssda{_shots}"] = Task(
            f"{_base.description}; semi-supervised: {_shots} labeled target image(s) per "
            "class, 3 more per class as target validation (train.selection=target_val)",
            {**_base.data, "target_shots": _shots, "target_val_shots": 3},
            steps=_base.steps, extra={"train.selection": "target_val"},
        )

# MME's and PAC's own tests: their split files (txt/multi, txt/office_home of MME's release)
# read as list:FILE with the data root at the images folder (DATA_ROOT = MME's data/multi or
# data/office_home, the split files in ../txt/ beside it); ImageNet ResNet-34 at 224 px,
# batch 24 per domain, the unlabeled target images also the test set (as MME evaluates),
# picked on the 3-per-class validation file
def _mme_tasks(dataset: str, folder: str, pairs: list[tuple[str, str]], shots: tuple[int, ...],
               title: str) -> list[str]:
    names = []
    for source, target in pairs:
        for count in shots:
            lists = f"list:../txt/{folder}/"
            name = f"{dataset}-ssda-{source[0].lower()}{target[0].lower()}-{count}shot"
            TASKS[name] = Task(
                f"{title} {source} -> {target}, {count}-shot semi-supervised (MME's split "
                f"files); ImageNet ResNet-34, 224 px; --data-root at MME's data/{folder}",
                {"source": f"{lists}labeled_source_images_{source}.txt",
                 "target": f"{lists}unlabeled_target_images_{target}_{count}.txt",
                 "target_labeled": f"{lists}labeled_target_images_{target}_{count}.txt",
                 "target_validation": f"{lists}validation_target_images_{target}_3.txt",
                 "target_test": "transductive", "size": 224, "channels": 3, "batch_size": 24},
                backbone="resnet34", steps=50000,
                extra={"model.pretrained": "imagenet", "train.selection": "target_val",
                       "data.augment.policy": "natural", "data.augment.source": "weak",
                       "data.augment.target": "weak"},
            )
            names.append(name)
    return names


DOMAINNET_SSDA_TASKS = _mme_tasks(
    "domainnet", "multi",
    [("real", "clipart"), ("real", "painting"), ("painting", "clipart"), ("clipart", "sketch"),
     ("sketch", "painting"), ("real", "sketch"), ("painting", "real")], (1, 3),
    "DomainNet-126")
OFFICEHOME_SSDA_TASKS = _mme_tasks(
    "officehome", "office_home",
    [(s, t) for s in ("Art", "Clipart", "Product", "Real")
     for t in ("Art", "Clipart", "Product", "Real") if s != t], (3,), "Office-Home")

# DANCE's own test, in the paper's protocol: ImageNet-pretrained ResNet-50 (its body at lr/10:
# model.pretrained_lr_scale), 224 px, batch 36, 10,000 steps, flips and shifts of both
# domains, on each ordered pair of a dataset's domains in its open-set, partial and
# open-partial splits (data/shift.py presets). The images are the official archives unpacked
# under the data root; these datasets have no test split, so the unlabeled target images are
# also the test set (transductive).
DANCE_SETTINGS = ("open-set", "partial", "open-partial")


def _dance_tasks(dataset: str, title: str, domains: dict[str, str], layout: str) -> list[str]:
    """Tasks ``{dataset}-{s}{t}-{setting}``; ``layout`` places a domain under the data root."""
    names = []
    for source, source_name in domains.items():
        for target, target_name in domains.items():
            if source == target:
                continue
            for setting in DANCE_SETTINGS:
                name = f"{dataset}-{source}{target}-{setting}"
                TASKS[name] = Task(
                    f"{title} {source_name} -> {target_name}, category shift "
                    f"{dataset}-{setting} (DANCE's split); ImageNet ResNet-50, 224 px; reads "
                    f"DATA_ROOT/{layout.format(domain='<domain>')}",
                    {"source": "folder:" + layout.format(domain=source_name),
                     "target": "folder:" + layout.format(domain=target_name),
                     "category_shift": f"{dataset}-{setting}", "size": 224, "channels": 3,
                     "batch_size": 36},
                    backbone="resnet50", steps=10000,
                    extra={"model.pretrained": "imagenet", "data.augment.policy": "natural",
                           "data.augment.source": "weak", "data.augment.target": "weak"},
                )
                names.append(name)
    return names


# Office-31: domain_adaptation_images as office31/{amazon,dslr,webcam}/images/<31 classes>
OFFICE31_TASKS = _dance_tasks("office31", "Office-31",
                              {"a": "amazon", "d": "dslr", "w": "webcam"},
                              "office31/{domain}/images")
# OfficeHome: OfficeHomeDataset_10072016 as officehome/{Art,Clipart,Product,Real World}/<65>
OFFICEHOME_TASKS = _dance_tasks("officehome", "OfficeHome",
                                {"a": "Art", "c": "Clipart", "p": "Product", "r": "Real World"},
                                "officehome/{domain}")

# feature vectors (data/vector_shift.py): a synthetic shift of 48-d vectors, the mlp backbone
TASKS["digits-vectors"] = Task(
    "scikit-learn digits as 48-d vectors: half A -> half B under a fixed rotation, scale and "
    "shift; mlp 256-256 with batch norm; needs no download",
    {"source": "digits-vectors", "target": "digits-vectors-shifted"},
    backbone="mlp", steps=2000,
)

# few-shot pixel alignment (methods/fewshot.py, docs/fewshot.md): MNIST -> a target known from
# K unlabeled images (data.target_subset=K, drawn with data.subset_seed); two held-back
# generated styles (data/styles.py) and USPS; 32x32 RGB; the task stage's budget
FEWSHOT_TARGETS = {"flowerblend": "style-flower-blend",
                   "pinkoutline": "style-pink-outline-on-teal-noisy", "usps": "usps"}
FEWSHOT_TASKS = []
for _short, _target in FEWSHOT_TARGETS.items():
    for _shots in (1, 5):
        FEWSHOT_TASKS.append(f"mnist-{_short}-{_shots}shot")
        TASKS[FEWSHOT_TASKS[-1]] = Task(
            f"MNIST train -> {_target}, known from {_shots} unlabeled target training image(s) "
            f"(data.target_subset); tested on {_target} test; 32x32 RGB",
            {"source": "mnist", "target": _target, "target_subset": _shots, **COLOUR_32},
            steps=300, extra={"train.selection": "last"},
        )

SUITES: dict[str, list[str]] = {
    "digits": ["mnist-usps", "usps-mnist", "mnist-usps-adda", "usps-mnist-adda",
               "mnist5k-ucidigits"],
    "embedded": ["mnist5k-ucidigits"],
    "vectors": ["digits-vectors"],
    # MME's / PAC's protocol (their split files, ImageNet ResNet-34 and a GPU)
    "domainnet-ssda": DOMAINNET_SSDA_TASKS,
    "officehome-ssda": OFFICEHOME_SSDA_TASKS,
    "digits-ssda": [f"{pair}-ssda{shots}" for pair in SSDA_PAIRS for shots in (1, 3)],
    "colour": ["mnist-mnistblend", "usps-uspsblend"],
    "fewshot": FEWSHOT_TASKS,
    "categoryshift": [f"{pair}-{setting}" for pair in ("mnist-usps", "mnist5k-ucidigits")
                      for setting in SHIFT_SETTINGS],
    # DANCE's own test (the images, ResNet-50 ImageNet weights and a GPU)
    "office31-categoryshift": OFFICE31_TASKS,
    "officehome-categoryshift": OFFICEHOME_TASKS,
}
