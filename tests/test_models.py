"""Backbones and the classifier: shapes per geometry, composition, and pretrained weights."""

from __future__ import annotations

import pytest
import torch
import torchvision

from tamebias.models.backbones import BACKBONES, DTN, LeNet, ResNet, build_backbone
from tamebias.models.classifier import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Classifier,
    build_classifier,
)
from tamebias.registry import UnknownNameError

FEATURE_DIMS = {"lenet": 500, "dtn": 512, "resnet18": 512, "resnet34": 512, "resnet50": 2048,
                "mlp": 256}
# (channels, size) each backbone is used with
GEOMETRIES = {
    "lenet": [(1, 16), (1, 28), (1, 32), (3, 32)],
    "dtn": [(3, 32), (1, 28)],
    "resnet18": [(1, 32), (3, 32)],
    "resnet34": [(3, 32)],
    "resnet50": [(3, 32)],
    "mlp": [(64, 1), (1, 8)],  # feature vectors (D x 1 x 1), and flattened small images
}


@pytest.fixture(autouse=True)
def one_thread():
    """Small forward passes are much faster on one CPU thread than on several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_registered_backbone_is_covered_here():
    assert set(BACKBONES) == set(FEATURE_DIMS) == set(GEOMETRIES)
    for info in BACKBONES.values():
        assert info.description


@pytest.mark.parametrize("name, channels, size", [
    (name, channels, size) for name, shapes in GEOMETRIES.items() for channels, size in shapes
])
def test_backbone_maps_images_to_batch_by_feature_dim(name, channels, size):
    torch.manual_seed(0)
    backbone = build_backbone(name, channels, size)
    assert backbone.feature_dim == FEATURE_DIMS[name]
    images = torch.rand(2, channels, size, size)
    with torch.no_grad():
        for mode in (backbone.train, backbone.eval):  # batch norm behaves differently
            mode()
            features = backbone(images)
            assert features.shape == (2, FEATURE_DIMS[name])
            assert torch.isfinite(features).all()


def test_lenet_geometry_and_too_small_inputs():
    assert isinstance(build_backbone("lenet", 1, 28), LeNet)
    assert build_backbone("lenet", 1, 28).fc[1].in_features == 50 * 4 * 4
    assert build_backbone("lenet", 1, 32).fc[1].in_features == 50 * 5 * 5
    with pytest.raises(ValueError, match="at least 16x16"):
        LeNet(1, 12)


def test_dtn_and_small_resnets_use_the_expected_stems():
    assert isinstance(build_backbone("dtn", 3, 32), DTN)
    small = build_backbone("resnet18", 3, 32)
    assert isinstance(small, ResNet)
    assert small.network.conv1.kernel_size == (3, 3)  # CIFAR stem below 64 px
    assert isinstance(small.network.maxpool, torch.nn.Identity)
    gray = build_backbone("resnet18", 1, 32)
    assert gray.network.conv1.in_channels == 1
    large = build_backbone("resnet18", 1, 64)
    assert large.network.conv1.kernel_size == (7, 7) and large.network.conv1.in_channels == 1


def test_unknown_backbone_lists_the_registered_ones():
    with pytest.raises(UnknownNameError) as caught:
        build_backbone("vgg16", 3, 32)
    for name in BACKBONES:
        assert name in str(caught.value)


@pytest.mark.parametrize("backbone, channels, size", [("lenet", 1, 28), ("dtn", 3, 32)])
def test_classifier_features_and_head_compose_to_forward(backbone, channels, size):
    torch.manual_seed(0)
    classifier = build_classifier(backbone, 7, channels, size)
    assert isinstance(classifier, Classifier)
    assert classifier.feature_dim == FEATURE_DIMS[backbone] and classifier.num_classes == 7
    classifier.eval()  # no dropout: the two paths must agree exactly
    images = torch.rand(3, channels, size, size)
    with torch.no_grad():
        features = classifier.features(images)
        logits = classifier(images)
    assert features.shape == (3, FEATURE_DIMS[backbone])
    assert logits.shape == (3, 7)
    assert torch.equal(classifier.head(features), logits)


def test_classifier_normalizes_inputs_from_unit_range():
    torch.manual_seed(0)
    classifier = build_classifier("lenet", 3, 1, 28).eval()
    images = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = classifier.backbone(images * 2 - 1)  # [0, 1] -> [-1, 1]
        assert torch.allclose(classifier.features(images), expected, atol=1e-6)
    # normalization buffers are not weights: they stay out of checkpoints
    assert "mean" not in classifier.state_dict() and "std" not in classifier.state_dict()


def test_missing_pretrained_file_is_a_clear_file_not_found_error(tmp_path):
    missing = tmp_path / "nope" / "resnet18.pth"
    with pytest.raises(FileNotFoundError) as caught:
        build_backbone("resnet18", 3, 32, str(missing))
    assert str(missing) in str(caught.value) and "does not exist" in str(caught.value)


@pytest.mark.parametrize("name", ["lenet", "dtn"])
def test_backbones_without_weights_refuse_pretrained(name, tmp_path):
    with pytest.raises(ValueError, match=f"backbone '{name}' has no pretrained weights"):
        build_backbone(name, 1, 28, str(tmp_path / "weights.pth"))
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_classifier(name, 10, 1, 28, "imagenet")


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    """A freshly initialized torchvision ResNet-18 saved like downloaded ImageNet weights."""
    torch.manual_seed(123)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_resnet_loads_a_local_weights_file_for_rgb(resnet18_weights):
    path, saved = resnet18_weights
    backbone = build_backbone("resnet18", 3, 32, str(path))
    network = backbone.network
    assert network.conv1.kernel_size == (7, 7)  # loaded weights keep the ImageNet stem
    assert not isinstance(network.maxpool, torch.nn.Identity)
    state = network.state_dict()
    for key, value in saved.items():
        if key.startswith("fc."):
            assert key not in state  # the classification layer is dropped
            continue
        assert torch.equal(state[key], value), key
    with torch.no_grad():
        assert backbone.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 512)


def test_resnet_gray_input_sees_the_sum_of_the_rgb_filters(resnet18_weights):
    path, saved = resnet18_weights
    backbone = build_backbone("resnet18", 1, 32, str(path))
    conv1 = backbone.network.conv1
    assert conv1.weight.shape == (64, 1, 7, 7)
    assert torch.allclose(conv1.weight, saved["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(backbone.network.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])
    with torch.no_grad():
        assert backbone.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 512)


def test_resnet_weights_wrapped_in_a_state_dict_key_load_too(resnet18_weights, tmp_path):
    _, saved = resnet18_weights
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": saved}, wrapped)
    backbone = build_backbone("resnet18", 3, 32, str(wrapped))
    assert torch.equal(backbone.network.conv1.weight, saved["conv1.weight"])


def test_pretrained_resnet_refuses_two_channels(resnet18_weights):
    path, _ = resnet18_weights
    with pytest.raises(ValueError, match="1 or 3 input channels"):
        build_backbone("resnet18", 2, 32, str(path))


def test_pretrained_rgb_classifier_uses_imagenet_normalization(resnet18_weights):
    path, _ = resnet18_weights
    rgb = build_classifier("resnet18", 5, 3, 32, str(path))
    assert torch.allclose(rgb.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    assert torch.allclose(rgb.std.flatten(), torch.tensor(IMAGENET_STD))
    gray = build_classifier("resnet18", 5, 1, 32, str(path))
    assert gray.mean.flatten().tolist() == [0.5] and gray.std.flatten().tolist() == [0.5]
