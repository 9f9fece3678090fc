"""The CUDA code paths: bf16 autocast training, synchronized batch norms, a ResNet-50 step at
224 px in channels-last. Marked ``gpu``: skipped without a CUDA device; run them with
``pytest -m gpu`` (benchmarks/gpu_check.sh does)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tamebias import api
from tamebias.training.distributed import GlobalBatchNorm, plain_norms, synchronize_norms

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs a CUDA device")]


def test_a_bf16_dann_run_trains_on_the_gpu(tiny_overrides, tmp_path):
    result = api.fit(None, [*tiny_overrides, "method.name=dann", "model.norm=bn",
                            "train.device=cuda", "train.amp=true"], run_dir=tmp_path / "run")
    assert result.machine["device"] == "cuda" and "gpu" in result.machine
    assert result.accuracy is not None and math.isfinite(result.accuracy)
    assert all(math.isfinite(value) for record in result.history
               for value in record["validators"].values())


def test_batch_norms_become_torch_sync_batch_norms_on_cuda_and_back():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(),
                          nn.LazyLinear(4), nn.BatchNorm1d(4)).cuda()
    model(torch.rand(4, 3, 8, 8, device="cuda"))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert synchronize_norms(model, cuda=True) == 2
    assert isinstance(model[1], nn.SyncBatchNorm) and not isinstance(model[1], GlobalBatchNorm)
    assert model.state_dict().keys() == before.keys()
    assert plain_norms(model) == 2
    assert type(model[1]) is nn.BatchNorm2d and type(model[4]) is nn.BatchNorm1d
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())


def test_one_resnet50_step_at_224_px_in_bf16_channels_last():
    from tamebias.models.classifier import build_classifier

    classifier = build_classifier("resnet50", 21, 3, 224, None, True).cuda()
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01, momentum=0.9)
    images = torch.rand(8, 3, 224, 224, device="cuda").contiguous(
        memory_format=torch.channels_last)
    labels = torch.randint(0, 21, (8,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(classifier(images).float(), labels)
    loss.backward()
    optimizer.step()
    assert math.isfinite(float(loss))
    assert all(torch.isfinite(p).all() for p in classifier.parameters())
