"""Recipes: named configurations as declared data.

A recipe is a registered method plus dotted overrides (its parts: a norm, augmentation views,
a selection rule, another self-training mode) and, in ``requires``, the recipe whose finished
run it starts from with the submodules it loads from that run (``init.weights``). ``fit
--recipe``, ``bench --methods`` and ``sweep --method`` take a recipe name (or a plain method
name); ``recipe_fit.py`` trains the required runs first (or reuses finished ones), deepest
first. What the recipes measured is in ``docs/recipes.md``, not here.

Experiments are not registered here: a recipe file (TOML, ``load_recipe_file``; the project's
own are in ``benchmarks/experiments.toml``) declares them for one process with ``fit
--recipe-file`` / ``bench --recipe-file``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, read_config_file
from .methods import METHODS
from .registry import UnknownNameError


@dataclass(frozen=True)
class Requirement:
    """The run of ``recipe`` (same task, seed and settings) that a recipe starts from, and the
    method submodules it loads from it (``init.weights=RUN:modules``)."""

    recipe: str
    modules: tuple[str, ...] = ("classifier",)


@dataclass(frozen=True)
class Recipe:
    """``method`` with ``overrides``, started from the runs in ``requires`` (at most one: a run
    starts from one run's weights). ``published_as`` names the paper method whose published
    number a results row of this recipe shows (None: the row's own name)."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    requires: tuple[Requirement, ...] = ()
    summary: str = ""
    published_as: str | None = None

    def __post_init__(self) -> None:
        if len(self.requires) > 1:
            raise ValueError(f"recipe {self.name}: a run starts from one run's weights "
                             "(init.weights); requires names one recipe at most")


# batch norm in LeNet, weak views of both domains: the setting of the adversarial rows
BN_AUG = ("model.norm=bn", "data.augment.source=weak", "data.augment.target=weak")
PIXEL_ONLY = ("method.feature_steps=0",)
FIXMATCH = ("method.self_training.mode=fixmatch",)
SOURCE_MODEL = Requirement("source_only+bn+aug", ("classifier",))
PIXEL_BN_AUG = (*PIXEL_ONLY, *BN_AUG, "train.selection=im")
# FUNIT's released sizes (animal faces: width 64, style 64, MLP 256, batch 64, 100k steps)
# where they fit 32 px digits (2 downsamples, not 3), for a GPU
FUNIT_GPU = ("method.network.width=64", "method.network.style_dim=64",
             "method.network.mlp_width=256", "method.network.style_downsamples=4",
             "method.network.critic_width=64", "method.network.critic_blocks=5",
             "method.network.bias_dim=1024", "method.translate_batch=64",
             "method.translate_steps=100000", "method.steps=5000")


def _recipes(*recipes: Recipe) -> dict[str, Recipe]:
    return {recipe.name: recipe for recipe in recipes}


RECIPES: dict[str, Recipe] = _recipes(
    # the former preset methods (a config naming them is read as these: legacy.py)
    Recipe("fixmatch", "self_training", FIXMATCH,
           summary="FixMatch-style consistency: confident weak-view labels train the strong view"),
    Recipe("mean_teacher", "self_training",
           ("method.self_training.mode=mean_teacher", "method.self_training.threshold=0.968",
            "method.self_training.weight=3.0", "method.self_training.balance=0.005"),
           summary="mean teacher (French et al.): an EMA teacher's predictions as targets"),
    Recipe("cycada_pixel", "cycada", PIXEL_ONLY,
           summary="pixel-only CyCADA: CycleGAN + semantic consistency, no feature stage"),
    # baselines and their parts
    Recipe("adabn", "source_only", ("model.norm=bn", "train.adabn=true"),
           summary="source only with batch norm, then AdaBN on target statistics"),
    Recipe("source_only+in", "source_only", ("model.norm=in",),
           summary="source only with instance norm in the convolutions"),
    Recipe("source_only+ibn", "source_only", ("model.norm=ibn",),
           summary="source only with IBN-a (half instance, half batch norm)"),
    Recipe("source_only+aug", "source_only", ("data.augment.source=strong",),
           summary="source only on strongly augmented source images"),
    Recipe("source_only+bn+aug", "source_only", ("model.norm=bn", "data.augment.source=weak"),
           summary="source only with batch norm and weak source views (the adversarial rows' "
           "base)"),
    Recipe("pseudo_label", "self_training",
           summary="source CE + online pseudo-labels (confidence >= 0.95)"),
    Recipe("pseudo_label+dsbn", "self_training", ("model.norm=dsbn",),
           summary="online pseudo-labels with domain-specific batch norm"),
    Recipe("fixmatch+bn+aug", "self_training", (*FIXMATCH, *BN_AUG),
           summary="FixMatch consistency + batch norm + weak views of source and target"),
    # adversarial
    Recipe("dann+dsbn", "dann", ("model.norm=dsbn",),
           summary="DANN with domain-specific batch norm"),
    Recipe("dann+bn+aug", "dann", BN_AUG, published_as="dann",
           summary="DANN with batch norm and weak views spelled out (dann's default form)"),
    Recipe("adda+bn+aug", "adda", (*BN_AUG, "train.selection=im"), (SOURCE_MODEL,),
           published_as="adda",
           summary="ADDA from the source_only+bn+aug run; picked by information maximization"),
    Recipe("adda+bn+aug+im", "adda", (*BN_AUG, "train.selection=im", "method.im_weight=1.0"),
           (SOURCE_MODEL,),
           summary="adda+bn+aug with SHOT's information maximization in the target encoder's "
           "loss (fit's default)"),
    # universal adaptation
    Recipe("dance+source", "dance", (), (Requirement("source_only", ("classifier",)),),
           summary="DANCE from the source_only run (its backbone; its head as prototypes)"),
    Recipe("dance+backbone", "dance", (),
           (Requirement("source_only", ("classifier.backbone",)),),
           summary="DANCE on the source_only run's backbone under a fresh prototype head"),
    Recipe("dance+bn+aug", "dance", BN_AUG, published_as="dance",
           summary="DANCE with batch norm in LeNet and weak views of both domains"),
    # pixel-level: CyCADA
    Recipe("cycada_pixel+bn+aug", "cycada", PIXEL_BN_AUG, (SOURCE_MODEL,),
           published_as="cycada_pixel",
           summary="pixel-only CyCADA with batch norm and weak views, from source_only+bn+aug"),
    # few-shot pixel alignment (docs/fewshot.md)
    Recipe("fewshot_funit", "fewshot_pixel", ("method.translator=funit",),
           summary="few-shot pixel alignment with a FUNIT translator trained on seen styles"),
    Recipe("fewshot_coco_funit", "fewshot_pixel", ("method.translator=coco_funit",),
           summary="few-shot pixel alignment with a COCO-FUNIT translator"),
    Recipe("fewshot_coco_funit+gpu", "fewshot_pixel", ("method.translator=coco_funit",
                                                       *FUNIT_GPU),
           summary="fewshot_coco_funit with FUNIT's own network sizes (a GPU run)"),
    Recipe("fewshot_funit+gpu", "fewshot_pixel", ("method.translator=funit", *FUNIT_GPU),
           summary="fewshot_funit with FUNIT's own network sizes (a GPU run)"),
    Recipe("cycada+bn+aug", "cycada", (*BN_AUG, "train.selection=im"),
           (Requirement("cycada_pixel+bn+aug", ("translator", "teacher", "classifier")),),
           published_as="cycada",
           summary="CyCADA pixel + feature: ADDA's feature stage on the cycada_pixel+bn+aug run"),
)


# the recipes of the files this process read (load_recipe_file): experiments, not the registry
FILE_RECIPES: dict[str, Recipe] = {}
_FILE_KEYS = {"method", "overrides", "requires", "summary", "published_as"}


def load_recipe_file(path: str | Path) -> dict[str, Recipe]:
    """Declare the recipes of a TOML file for this process and return them. Each table
    ``[recipes."NAME"]`` has ``method``, and optionally ``overrides`` (dotted settings),
    ``requires = {recipe = "...", modules = ["classifier"]}``, ``summary`` and
    ``published_as``. A name may not shadow a method or a registered recipe."""
    path = Path(path)
    if path.suffix != ".toml" or not path.is_file():
        raise ConfigError(f"recipe file {path} must be an existing .toml file")
    try:
        tables = read_config_file(path).get("recipes")
    except ValueError as error:  # tomllib.TOMLDecodeError, a bad encoding
        raise ConfigError(f"recipe file {path} is not valid TOML: {error}") from None
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"recipe file {path} declares no [recipes.\"NAME\"] table")
    loaded: dict[str, Recipe] = {}
    for name, table in tables.items():
        where = f"recipe file {path}, recipe {name!r}"
        if name in METHODS or name in RECIPES:
            raise ConfigError(f"{where}: the name is a registered method or recipe already")
        unknown = set(table) - _FILE_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; use "
                              f"{sorted(_FILE_KEYS)}")
        if table.get("method") not in METHODS:
            raise ConfigError(f"{where}: method {table.get('method')!r} is not one of "
                              f"{', '.join(METHODS)}")
        need = table.get("requires")
        if need is not None and not (isinstance(need, dict) and "recipe" in need):
            raise ConfigError(f"{where}: requires must be {{ recipe = \"NAME\", modules = "
                              f"[...] }}, got {need!r}")
        requires = () if need is None else (
            Requirement(need["recipe"], tuple(need.get("modules", ("classifier",)))),)
        loaded[name] = Recipe(name, table["method"], tuple(table.get("overrides", ())),
                              requires, table.get("summary", ""), table.get("published_as"))
    declare(loaded)
    return loaded


def declare(recipes: dict[str, Recipe]) -> None:
    """Declare recipes read from a file for this process (a bench worker gets its parent's)."""
    FILE_RECIPES.update(recipes)


def file_recipes() -> dict[str, Recipe]:
    """The recipes this process read from files (a copy)."""
    return dict(FILE_RECIPES)


def declared(name: str) -> Recipe | None:
    """The recipe declared as ``name`` (registered, or from a recipe file read), else None."""
    return RECIPES.get(name) or FILE_RECIPES.get(name)


def recipe(name: str) -> Recipe:
    """The recipe ``name``: a declared one, or a registered method as it is."""
    found = declared(name)
    if found is not None:
        return found
    if name in METHODS:
        return Recipe(name, name, summary=METHODS[name].description)
    choices = ", ".join([*METHODS, *RECIPES, *FILE_RECIPES])
    raise UnknownNameError(f"unknown recipe {name!r}; choose a method or a recipe: {choices}")


def required_recipes(name: str) -> list[str]:
    """The recipes whose runs ``name`` starts from, deepest first (each once). An unknown
    recipe or a cycle in ``requires`` is an error naming the chain."""

    def walk(current: str, chain: tuple[str, ...]) -> list[str]:
        if current in chain:
            raise ValueError("recipes require each other in a cycle: "
                             + " -> ".join([*chain, current]))
        try:
            needs = recipe(current).requires
        except UnknownNameError as error:
            if not chain:
                raise
            raise UnknownNameError(f"recipe {chain[-1]} requires {current!r}, which is "
                                   "neither a recipe nor a method") from error
        order: list[str] = []
        for need in needs:
            for label in [*walk(need.recipe, (*chain, current)), need.recipe]:
                if label not in order:
                    order.append(label)
        return order

    return walk(name, ())


def recipe_overrides(name: str, places: dict[str, object] | None = None) -> list[str]:
    """The dotted settings of recipe ``name``: its method, its overrides and, when the run it
    starts from is placed (``places[recipe]``: a run folder), ``init.weights``."""
    chosen = recipe(name)
    items = [f"method.name={chosen.method}", *chosen.overrides]
    for need in chosen.requires:
        if places is not None and need.recipe in places:
            items.append(f"init.weights={places[need.recipe]}:{','.join(need.modules)}")
    return items
