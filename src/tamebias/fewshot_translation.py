"""What a few-shot translator (FUNIT / COCO-FUNIT, ``fewshot_pixel``) does: example-conditioned
grids of several runs side by side, and its judges (content preservation, style distance,
downstream accuracy)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .api import TrainedRun, restore_run
from .data.datasets import load_dataset
from .data.transforms import to_geometry
from .report.figures import subplots
from .rundir import RunDir, read_json
from .translation import varied_sample

EXAMPLE_SEED = 0


def _fewshot(run: TrainedRun, run_dir: str | Path):
    if run.config.method.name != "fewshot_pixel":
        raise ValueError(f"{run_dir} is a {run.config.method.name} run; --few-shot needs a "
                         "fewshot_pixel run (FUNIT or COCO-FUNIT translator)")
    return run.method


def load_examples(run: TrainedRun, spec: str, shots: int, root: str | None = None) -> Tensor:
    """``shots`` images of dataset ``spec`` (train split; labels, if any, unused) at the run's
    geometry, drawn by a permutation from ``torch.Generator().manual_seed(0)``."""
    size, _, channels = (int(v) for v in run.protocol["input"].split("x"))
    hint = (size, size) if spec.startswith(("folder:", "list:", "images:")) else None
    dataset = to_geometry(load_dataset(spec, "train", root or run.config.data.root, False, hint),
                          size, channels)
    if len(dataset) < shots:
        raise ValueError(f"{spec} holds {len(dataset)} images; --shots asks for {shots}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(EXAMPLE_SEED))
    return dataset.images[order[:shots]].float().div(255).to(run.device)


@torch.no_grad()
def fewshot_grids(run_dirs: list[str | Path], examples: str | None = None,
                  output: str | Path | None = None, count: int = 8, shots: int = 5,
                  root: str | None = None, which: str = "last") -> Path:
    """A PNG with one panel per run: the top row holds the K examples (the run's own stored K
    when ``examples`` is None, else ``shots`` images of dataset ``examples``); each further row
    is a source test image, its translation conditioned on each example alone, then on all K
    (the averaged style code, last column). Returns its path (default
    ``FIRST_RUN/fewshot.png``)."""
    from torchvision.utils import make_grid

    if not run_dirs:
        raise ValueError("--few-shot needs at least one fewshot_pixel run")
    panels = []
    for run_dir in run_dirs:
        run = restore_run(run_dir, which, root)
        method = _fewshot(run, run_dir)
        chosen = method.examples if examples is None else load_examples(run, examples, shots,
                                                                         root)
        if chosen.numel() == 0:
            raise ValueError(f"{run_dir} stored no target examples (its task stage never ran); "
                             "give --examples PATH")
        source_set = run.load_split(run.config.data.source, "test")
        source = source_set.images[varied_sample(source_set, count)].float().div(255)
        source = source.to(run.device)
        blank = torch.ones_like(chosen[:1])
        columns = [torch.cat([blank, chosen, blank])]  # header: the examples
        for image in source:
            row = image[None].expand(len(chosen), -1, -1, -1)
            single = method.to_target(row, chosen[:, None])  # each example alone
            together = method.to_target(image[None], chosen)  # all K averaged
            columns.append(torch.cat([image[None], single, together]))
        tiles = torch.cat(columns).float().clamp(0, 1).cpu()
        if tiles.shape[1] == 1:
            tiles = tiles.expand(-1, 3, -1, -1)
        grid = make_grid(tiles, nrow=len(chosen) + 2, padding=1, pad_value=1)
        panels.append((f"{run.config.method.translator} ({Path(run_dir).name})", grid))
    figure, axes = subplots(1, len(panels), figsize=(3.6 * len(panels), 4.2), squeeze=False)
    for axis, (title, grid) in zip(axes[0], panels, strict=True):
        axis.imshow(grid.permute(1, 2, 0).numpy())
        axis.set_title(title, fontsize=7)
        axis.axis("off")
    figure.suptitle("top: the K examples. Rows: a source image, its output for each example "
                    "alone, then for all K", fontsize=6, wrap=True)
    figure.tight_layout()
    path = Path(output) if output is not None else Path(run_dirs[0]) / "fewshot.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    return path


class StyleFeatures(nn.Module):
    """A fixed, randomly initialized (seed 0) two-layer convolutional network; an image's
    style features are the per-channel means and standard deviations of its pixels and of
    both layers' activations (texture statistics, as in style transfer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.first = nn.Conv2d(channels, 16, 3, padding=1)
        self.second = nn.Conv2d(16, 32, 3, padding=1)
        for layer in (self.first, self.second):
            fan_in = layer.weight[0].numel()
            layer.weight.data = torch.randn(layer.weight.shape, generator=generator) / fan_in ** .5
            layer.bias.data.zero_()

    @staticmethod
    def _statistics(maps: Tensor) -> Tensor:
        return torch.cat([maps.mean((2, 3)), maps.std((2, 3))], 1)

    def forward(self, images: Tensor) -> Tensor:
        first = torch.relu(self.first(images))
        second = torch.relu(self.second(nn.functional.avg_pool2d(first, 2)))
        return torch.cat([self._statistics(images), self._statistics(first),
                          self._statistics(second)], 1)


def style_distance(translated: Tensor, source: Tensor, target: Tensor) -> float:
    """How far translations are from real target images in style, relative to the untranslated
    source: ``|mean f(translated) - mean f(target)| / |mean f(source) - mean f(target)|`` with
    ``f`` :class:`StyleFeatures`, each feature scaled by its standard deviation over the source
    and target images. 1 is as far as the source itself; 0 matches the target's mean style."""
    features = StyleFeatures(source.shape[1]).to(source.device)
    with torch.no_grad():
        source_f, target_f, translated_f = (features(images.float())
                                            for images in (source, target, translated))
    scale = torch.cat([source_f, target_f]).std(0).clamp_min(1e-6)
    target_mean = target_f.mean(0)
    reference = ((source_f.mean(0) - target_mean) / scale).norm()
    return float(((translated_f.mean(0) - target_mean) / scale).norm() / reference.clamp_min(1e-6))


def _judge_trained(run: TrainedRun) -> bool:
    """The content judge was trained by this run's translate stage, or loaded from a run that
    trained one (``init.weights=RUN:...,judge``)."""
    weights = run.config.init.weights or ""
    return run.config.method.translator != "identity" or "judge" in weights.split(":")[-1]


def _judge(run: TrainedRun, run_dir: str | Path, translate, judge: nn.Module | None,
           count: int, batch_size: int) -> dict:
    """Content preservation (``judge`` on ``translate``d source test images), style distance
    and the run's final accuracy, on the first ``count`` source and target test images."""
    source_set = run.load_split(run.config.data.source, "test")
    target_set = run.load_split(run.config.data.target, "test")
    source = source_set.images[:count].float().div(255).to(run.device)
    target = target_set.images[:count].float().div(255).to(run.device)
    labels = source_set.labels[:count].to(run.device)
    translated = torch.cat([translate(source[start:start + batch_size]).clamp(0, 1)
                            for start in range(0, len(source), batch_size)])

    def judge_accuracy(images: Tensor) -> float | None:
        if judge is None:
            return None
        logits = torch.cat([judge(images[start:start + batch_size])
                            for start in range(0, len(images), batch_size)])
        return float((logits.argmax(1) == labels).float().mean())

    result = read_json(RunDir(run_dir).result, "the run has not finished")
    return {"run": str(run_dir), "images": len(source),
            "content_preservation": judge_accuracy(translated),
            "judge_source_accuracy": judge_accuracy(source),
            "style_distance": style_distance(translated, source, target),
            "accuracy": result.get("final_target_accuracy")}


@torch.no_grad()
def fewshot_judges(run_dir: str | Path, root: str | None = None, which: str = "last",
                   count: int = 2000, batch_size: int = 250) -> dict:
    """The judges of a ``fewshot_pixel`` run's translator, conditioned on its stored K target
    examples, on the first ``count`` source and target test images:

    - ``content_preservation``: the content judge's accuracy on translated source images
      against the source labels (the judge is a classifier of source digits in the seen
      styles, trained with source labels only; None when the run has none), and
      ``judge_source_accuracy`` on the untranslated images;
    - ``style_distance`` (:func:`style_distance`; the target images are used unlabeled);
    - ``accuracy``: the run's final target test accuracy."""
    run = restore_run(run_dir, which, root)
    method = _fewshot(run, run_dir)
    if method.examples.numel() == 0:
        raise ValueError(f"{run_dir} stored no target examples (its task stage never ran)")
    judge = method.judge if _judge_trained(run) else None
    return {"translator": run.config.method.translator, "shots": len(method.examples),
            **_judge(run, run_dir, method.to_target, judge, count, batch_size)}


@torch.no_grad()
def cycada_judges(run_dir: str | Path, judge_run: str | Path, root: str | None = None,
                  which: str = "last", count: int = 2000, batch_size: int = 250) -> dict:
    """The same judges for a CyCADA run (its CycleGAN trained on the whole unlabeled target
    set: the many-shot reference), content read by ``judge_run``'s content judge (a
    ``fewshot_pixel`` run of the same source and geometry)."""
    run = restore_run(run_dir, which, root)
    translator = getattr(run.method, "translator", None)
    if run.config.method.name != "cycada" or translator is None:
        raise ValueError(f"{run_dir} is not a cycada run")
    judge = restore_run(judge_run, "last", root, device=str(run.device))
    if judge.protocol["input"] != run.protocol["input"]:
        raise ValueError(f"the judge run {judge_run} reads {judge.protocol['input']} images; "
                         f"{run_dir} translates {run.protocol['input']}")
    content_judge = _fewshot(judge, judge_run).judge if _judge_trained(judge) else None
    return {"translator": "cycada_pixel", "shots": None,
            **_judge(run, run_dir, translator.source_to_target, content_judge, count,
                     batch_size)}
