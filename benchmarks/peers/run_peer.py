"""One system trains the side-by-side DANN task once and prints one JSON line.

The task (the same for every system): LeNet (ADDA's variant, no normalization) on MNIST ->
USPS at 28x28x1, a 500-500-1 domain critic behind gradient reversal, SGD (lr 0.01, momentum
0.9), batches of 64 source + 64 target images, ``--steps`` steps, no augmentation; target
accuracy of the last model on the USPS test split. Every system reads the same uint8 tensors
(tamebias's loader: MNIST train minus tamebias's 6,000 validation images, USPS train, USPS
test) and every peer model is scored by the same function. ``images_per_second`` counts
source + target images over the training steps only (first step to last, data loading and
evaluation excluded); ``wall_seconds`` is the whole process (imports, data, training, test).

    python benchmarks/peers/run_peer.py {plain,skada,pytorch-adapt,tamebias} --seed 0

Run skada / pytorch-adapt with the interpreter of the environment they are installed in
(benchmarks/peers/side_by_side.py makes one); tamebias must be importable (PYTHONPATH=src).
"""

from __future__ import annotations

import argparse
import json
import math
import time

STARTED = time.perf_counter()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

BATCH = 64
LR, MOMENTUM = 0.01, 0.9


class LeNet(nn.Module):
    """tamebias's ``lenet`` backbone (no norm) plus a 10-way head; ``features`` -> 500 units."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(inplace=True),
            nn.Conv2d(20, 50, 5), nn.Dropout2d(0.5), nn.MaxPool2d(2), nn.ReLU(inplace=True))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(800, 500), nn.ReLU(inplace=True),
                                nn.Dropout(0.5))
        self.head = nn.Linear(500, 10)

    def features(self, images):
        return self.fc(self.conv((images - 0.5) / 0.5))

    def forward(self, images, sample_weight=None):  # skada passes sample_weight at predict
        return self.head(self.features(images))


def critic(sigmoid: bool = False) -> nn.Sequential:
    layers = [nn.Linear(500, 500), nn.ReLU(inplace=True), nn.Linear(500, 500),
              nn.ReLU(inplace=True), nn.Linear(500, 1)]
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))


class Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coefficient):
        ctx.coefficient = coefficient
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coefficient * grad, None


def ramp(progress: float) -> float:
    """Ganin & Lempitsky's reversal coefficient, 0 -> 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def load_data(cache: str | None = None):
    """The task's tensors; ``cache`` (a .pt file) saves decoding them again in every run."""
    if cache:
        try:
            return tuple(torch.load(cache))
        except FileNotFoundError:
            pass
    from tamebias.compose import load_config
    from tamebias.data.domain import prepare_data
    from tamebias.tasks import TASKS

    data = prepare_data(load_config(None, TASKS["mnist-usps"].overrides()).data)
    tensors = (data.source_train.images, data.source_train.labels, data.target_train.images,
               data.target_test.images, data.target_test.labels)
    if cache:
        torch.save(tensors, cache)
    return tensors


@torch.no_grad()
def accuracy(model: nn.Module, images, labels) -> float:
    model.eval()
    correct = sum(int((model(images[i:i + 1000].float() / 255).argmax(1)
                       == labels[i:i + 1000]).sum()) for i in range(0, len(images), 1000))
    return correct / len(images)


def batches(source, labels, target, steps: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        s = torch.randint(0, len(source), (BATCH,), generator=generator)
        t = torch.randint(0, len(target), (BATCH,), generator=generator)
        yield source[s].float() / 255, labels[s], target[t].float() / 255


def run_plain(data, steps: int, seed: int) -> tuple[nn.Module, float]:
    """The textbook loop: one SGD over classifier + critic, reversal ramped, lr annealed."""
    source, labels, target, _, _ = data
    model, domain = LeNet(), critic()
    parameters = [*model.parameters(), *domain.parameters()]
    optimizer = torch.optim.SGD(parameters, LR, momentum=MOMENTUM)
    domain_labels = torch.cat([torch.ones(BATCH), torch.zeros(BATCH)])
    model.train()
    start = time.perf_counter()
    for step, (x_s, y_s, x_t) in enumerate(batches(source, labels, target, steps, seed)):
        progress = step / steps
        for group in optimizer.param_groups:
            group["lr"] = LR * (1 + 10 * progress) ** -0.75
        features = model.features(torch.cat([x_s, x_t]))
        class_loss = F.cross_entropy(model.head(features[:BATCH]), y_s)
        domain_logits = domain(Reverse.apply(features, ramp(progress))).squeeze(1)
        loss = class_loss + F.binary_cross_entropy_with_logits(domain_logits, domain_labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model, time.perf_counter() - start


def run_pytorch_adapt(data, steps: int, seed: int) -> tuple[nn.Module, float]:
    """pytorch-adapt's DANNHook (its core: features, reversal, losses, the optimizer steps)
    over G / C / D, fed by the same batches; its Ignite framework and dataset wrappers are
    left out (they only add loader cost)."""
    from pytorch_adapt.hooks import DANNHook

    source, labels, target, _, _ = data
    model, domain = LeNet(), critic()

    class Features(nn.Module):
        def forward(self, images):
            return model.features(images)

    G, C, D = Features(), model.head, nn.Sequential(domain, nn.Flatten(0))
    optimizers = [torch.optim.SGD(m.parameters(), LR, momentum=MOMENTUM)
                  for m in (model, domain)]
    hook = DANNHook(optimizers)
    source_domain, target_domain = torch.zeros(BATCH), torch.ones(BATCH)
    model.train()
    start = time.perf_counter()
    for x_s, y_s, x_t in batches(source, labels, target, steps, seed):
        hook({"G": G, "C": C, "D": D, "src_imgs": x_s, "src_labels": y_s, "target_imgs": x_t,
              "src_domain": source_domain, "target_domain": target_domain})
    return model, time.perf_counter() - start


def run_skada(data, steps: int, seed: int) -> tuple[nn.Module, float]:
    """skada.deep.DANN (a skorch net) with the same LeNet; features from its ``fc`` layer.
    skada's own default critic ends in a softmax over one output (constant, no adversarial
    gradient), so the run gives it this task's critic with a sigmoid and reversal (weight 1,
    skada's fixed ``reg``). Training stops after ``steps`` batches."""
    import numpy as np
    from skada.deep import DANN
    from skorch.callbacks import Callback

    source, labels, target, _, _ = data

    class StopAfter(Callback):
        def initialize(self):
            self.count, self.start, self.seconds = 0, None, 0.0
            return self

        def on_batch_begin(self, net, batch=None, training=False, **kwargs):
            if training and self.start is None:
                self.start = time.perf_counter()

        def on_batch_end(self, net, batch=None, training=False, **kwargs):
            if training:
                self.count += 1
                if self.count >= steps:
                    self.seconds = time.perf_counter() - self.start
                    raise KeyboardInterrupt  # skorch ends training cleanly on this

    class ReversedCritic(nn.Module):
        def __init__(self):
            super().__init__()
            self.network = critic(sigmoid=True)

        def forward(self, features, sample_weight=None):
            return self.network(Reverse.apply(features, 1.0)).squeeze(1)

    stop = StopAfter()
    net = DANN(LeNet(), layer_name="fc", reg=1.0, domain_classifier=ReversedCritic(),
               batch_size=BATCH, max_epochs=10_000, train_split=None, callbacks=[stop],
               optimizer=torch.optim.SGD, optimizer__momentum=MOMENTUM, lr=LR,
               verbose=0, device="cpu")
    images = np.concatenate([source.float().numpy() / 255, target.float().numpy() / 255])
    y = np.concatenate([labels.numpy(), -np.ones(len(target), dtype=np.int64)])
    domains = np.concatenate([np.ones(len(source)), -np.ones(len(target))]).astype(np.int64)
    net.fit({"X": images, "sample_domain": domains}, y)
    if stop.count < steps:
        raise RuntimeError(f"skada stopped after {stop.count} of {steps} steps")
    return net.module_.base_module_, stop.seconds


def run_tamebias(steps: int, seed: int, threads: int, extra: list[str]) -> dict:
    import tamebias
    from tamebias.tasks import TASKS

    result = tamebias.fit(None, [
        *TASKS["mnist-usps"].overrides(), "method.name=dann", "model.norm=none",
        "data.augment.source=none", "data.augment.target=none", f"data.batch_size={BATCH}",
        "method.optim.name=sgd", f"method.optim.lr={LR}", f"method.optim.momentum={MOMENTUM}",
        "method.optim.schedule=inverse", f"method.steps={steps}", f"train.eval_every={steps}",
        f"train.seed={seed}", f"train.threads={threads}", "train.selection=last",
        "train.progress=false", "output_dir=/tmp/tamebias-peers", *extra])
    return {"images_per_second": result.train_images_per_second,
            "train_seconds": result.train_seconds, "accuracy": result.accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("system", choices=["plain", "skada", "pytorch-adapt", "tamebias"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", help="a .pt cache of the task's tensors (made if missing)")
    parser.add_argument("--set", action="append", default=[], dest="extra",
                        help="extra tamebias overrides (e.g. a speed switch)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    if arguments.system == "tamebias":
        row = run_tamebias(arguments.steps, arguments.seed, arguments.threads, arguments.extra)
    else:
        data = load_data(arguments.data)
        torch.manual_seed(arguments.seed)
        runner = {"plain": run_plain, "skada": run_skada,
                  "pytorch-adapt": run_pytorch_adapt}[arguments.system]
        model, seconds = runner(data, arguments.steps, arguments.seed)
        row = {"images_per_second": arguments.steps * 2 * BATCH / seconds,
               "train_seconds": seconds, "accuracy": accuracy(model, data[3], data[4])}
    row.update(system=arguments.system, seed=arguments.seed, steps=arguments.steps,
               threads=arguments.threads, wall_seconds=time.perf_counter() - STARTED)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
