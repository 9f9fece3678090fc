"""load_dataset: search order, layouts, error messages, bundled datasets and to_geometry."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from tamebias.data import datasets as datasets_module
from tamebias.data import transforms as transforms_module
from tamebias.data.datasets import (
    DATASETS,
    DatasetInfo,
    fixed_split,
    load_dataset,
    resolve_data_root,
)
from tamebias.data.imageset import DataError, DatasetNotFoundError, ImageSet
from tamebias.data.transforms import to_geometry

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ENVIRONMENT_ROOT = os.environ.get("TAMEBIAS_DATA")  # read before the fixture below clears it


def write_idx(path: Path, array: np.ndarray) -> None:
    array = np.asarray(array, dtype=np.uint8)
    data = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data += array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist_idx(folder: Path, prefix: str, x: np.ndarray, y: np.ndarray, suffix: str = ""):
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", x)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", y)


def random_digits(count: int, side: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    x = generator.integers(0, 256, size=(count, side, side), dtype=np.uint8)
    return x, np.arange(count, dtype=np.int64) % 10


def write_npz(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=x, y=y)


@pytest.fixture(autouse=True)
def no_environment_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAMEBIAS_DATA", raising=False)


def test_registry() -> None:
    from tamebias.data.styles import STYLES

    assert set(DATASETS) == {"mnist", "usps", "svhn", "mnist5k", "ucidigits", "digits-vectors",
                             "digits-vectors-shifted", "mnistblend", "uspsblend",
                             *(f"style-{name}" for name in STYLES)}
    for name, info in DATASETS.items():
        assert isinstance(info, DatasetInfo) and info.name == name
        assert info.splits == ("train", "test") and "\n" not in info.description


def test_resolve_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_root(None) == tmp_path / "home" / ".cache" / "tamebias" / "data"
    monkeypatch.setenv("TAMEBIAS_DATA", str(tmp_path / "env"))
    assert resolve_data_root(None) == tmp_path / "env"
    assert resolve_data_root(tmp_path / "option") == tmp_path / "option"
    assert resolve_data_root(str(tmp_path)) == tmp_path


def test_mnist_prefers_npz_over_idx(tmp_path: Path) -> None:
    npz_x, npz_y = random_digits(4, seed=1)
    idx_x, idx_y = random_digits(6, seed=2)
    write_npz(tmp_path / "mnist" / "train.npz", npz_x, npz_y)
    write_mnist_idx(tmp_path / "mnist", "train", idx_x, idx_y)
    images = load_dataset("mnist", "train", root=tmp_path)
    assert images.meta["format"] == "npz" and len(images) == 4
    assert images.meta["files"] == [str(tmp_path / "mnist" / "train.npz")]
    assert images.classes == [str(digit) for digit in range(10)]
    assert images.images.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(images.images[:, 0].numpy(), npz_x)
    with pytest.raises(DatasetNotFoundError):  # train files only; the test split is missing
        load_dataset("mnist", "test", root=tmp_path)


def test_mnist_idx_and_split(tmp_path: Path) -> None:
    train_x, train_y = random_digits(6, seed=3)
    test_x, test_y = random_digits(3, seed=4)
    write_mnist_idx(tmp_path / "mnist", "train", train_x, train_y)
    write_mnist_idx(tmp_path / "mnist", "t10k", test_x, test_y, ".gz")
    train = load_dataset("mnist", "train", root=tmp_path)
    test = load_dataset("mnist", "test", root=tmp_path)
    assert train.meta["format"] == test.meta["format"] == "idx"
    assert train.meta["split"] == "train" and not train.meta["transductive"]
    np.testing.assert_array_equal(train.images[:, 0].numpy(), train_x)
    np.testing.assert_array_equal(test.labels.numpy(), test_y)
    assert test.meta["files"][0].endswith("t10k-images-idx3-ubyte.gz")


def test_mnist_torchvision_raw_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = random_digits(5, seed=5)
    write_mnist_idx(tmp_path / "MNIST" / "raw", "train", x, y, ".gz")
    monkeypatch.setenv("TAMEBIAS_DATA", str(tmp_path))
    images = load_dataset("mnist")
    np.testing.assert_array_equal(images.images[:, 0].numpy(), x)
    assert images.meta["data_root"] == str(tmp_path)
    assert images.meta["files"][1] == str(tmp_path / "MNIST/raw/train-labels-idx1-ubyte.gz")


def test_mnist_truncated_idx_is_data_error(tmp_path: Path) -> None:
    x, y = random_digits(5)
    write_mnist_idx(tmp_path / "mnist", "train", x, y)
    images_file = tmp_path / "mnist" / "train-images-idx3-ubyte"
    images_file.write_bytes(images_file.read_bytes()[:100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        load_dataset("mnist", root=tmp_path)


def test_missing_dataset_message(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset("mnist", "test", root=tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "data root option" in message
    for expected in (
        tmp_path / "mnist" / "test.npz",
        tmp_path / "mnist" / "t10k-images-idx3-ubyte",
        tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz",
        tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz",
    ):
        assert str(expected) in message
    assert "--download" in message and "data.download=true" in message
    assert isinstance(caught.value, FileNotFoundError)


@pytest.mark.parametrize(
    "name, files",
    [
        ("usps", ["usps/train.npz", "usps/usps.bz2", "usps.bz2", "usps/usps.h5"]),
        ("svhn", ["svhn/train.npz", "svhn/train_32x32.mat", "train_32x32.mat"]),
    ],
)
def test_missing_message_other_datasets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, files: list[str]
) -> None:
    monkeypatch.setenv("TAMEBIAS_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(name)
    message = str(caught.value)
    assert "TAMEBIAS_DATA environment variable" in message
    for file in files:
        assert str(tmp_path / file) in message
    assert "http" in message


def test_default_root_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="default"):
        load_dataset("usps", "test")


def usps_line(label: int, value: float) -> str:
    return f"{label} " + " ".join(f"{index}:{value}" for index in range(1, 257))


@pytest.mark.parametrize("location", ["usps/usps.t.bz2", "usps.t.bz2"])
def test_usps_libsvm_locations(tmp_path: Path, location: str) -> None:
    path = tmp_path / location
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bz2.compress(f"{usps_line(1, -1)}\n{usps_line(10, 1)}\n".encode()))
    images = load_dataset("usps", "test", root=tmp_path)
    assert images.meta["format"] == "libsvm-bz2" and images.meta["files"] == [str(path)]
    assert images.images.shape == (2, 1, 16, 16) and images.labels.tolist() == [0, 9]
    assert (images.images[0] == 0).all() and (images.images[1] == 255).all()


def test_usps_hdf5_fallback(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    (tmp_path / "usps").mkdir()
    with h5py.File(tmp_path / "usps" / "usps.h5", "w") as handle:
        handle.create_dataset("train/data", data=np.ones((3, 256)))
        handle.create_dataset("train/target", data=np.array([1, 2, 3]))
    images = load_dataset("usps", root=tmp_path)
    assert images.meta["format"] == "hdf5" and (images.images == 255).all()
    assert images.labels.tolist() == [1, 2, 3]


@pytest.mark.parametrize("location", ["svhn/test_32x32.mat", "test_32x32.mat"])
def test_svhn_locations(tmp_path: Path, location: str) -> None:
    generator = np.random.default_rng(6)
    raw = generator.integers(0, 256, size=(32, 32, 3, 2), dtype=np.uint8)
    path = tmp_path / location
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": raw, "y": np.array([[10], [4]], dtype=np.uint8)})
    images = load_dataset("svhn", "test", root=tmp_path)
    assert images.meta["format"] == "mat" and images.labels.tolist() == [0, 4]
    assert images.images.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(images.images[1].permute(1, 2, 0).numpy(), raw[..., 1])


def test_download_uses_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    x, y = random_digits(3, seed=7)

    def fake_mnist(root: str, train: bool, download: bool) -> None:
        calls.append((root, train, download))
        write_mnist_idx(Path(root) / "MNIST" / "raw", "t10k", x, y)

    fake = SimpleNamespace(MNIST=fake_mnist)
    monkeypatch.setattr(datasets_module, "_torchvision_datasets", lambda: fake)
    images = load_dataset("mnist", "test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)] and images.meta["downloaded"]
    np.testing.assert_array_equal(images.images[:, 0].numpy(), x)

    def failing_usps(root: str, train: bool, download: bool) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(datasets_module, "_torchvision_datasets",
                        lambda: SimpleNamespace(USPS=failing_usps))
    with pytest.raises(DataError, match="downloading usps failed.*unreachable.*usps.bz2"):
        load_dataset("usps", root=tmp_path, download=True)


def test_unknown_and_bad_split() -> None:
    with pytest.raises(DataError) as caught:
        load_dataset("mnsit")
    for expected in ("mnist", "usps", "svhn", "mnist5k", "ucidigits", "folder:", "npz:"):
        assert expected in str(caught.value)
    with pytest.raises(DataError, match="split"):
        load_dataset("ucidigits", "validation")


def test_fixed_split_rule() -> None:
    labels = np.repeat(np.arange(3), [10, 7, 5])
    train, test = fixed_split(labels)
    assert np.bincount(labels[test]).tolist() == [3, 2, 2]
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(len(labels)))
    np.testing.assert_array_equal(fixed_split(labels)[1], test)


def test_mnist5k() -> None:
    train = load_dataset("mnist5k", "train")
    test = load_dataset("mnist5k", "test")
    assert len(train) == 3500 and len(test) == 1500
    assert train.images.shape[1:] == (1, 28, 28) and train.classes == list("0123456789")
    assert torch.bincount(test.labels).tolist() == [150] * 10
    assert train.meta["format"] == "embedded npz" and "fixed split" in train.meta["fixed_split"]
    pixels, labels = datasets_module._mnist5k_digits()
    # the shipped copy is the one documented in data/embedded/README.md
    assert hashlib.sha256(pixels.tobytes()).hexdigest()[:16] == "2913c6b6527114b7"
    assert pixels.dtype == np.uint8 and labels.dtype == np.int64
    train_index, test_index = fixed_split(labels)
    assert not set(train_index.tolist()) & set(test_index.tolist())
    np.testing.assert_array_equal(test.images[:, 0].numpy(), pixels[test_index])
    np.testing.assert_array_equal(load_dataset("mnist5k", "test").images, test.images)


def test_ucidigits() -> None:
    from sklearn.datasets import load_digits

    train = load_dataset("ucidigits", "train", root="/nonexistent")
    test = load_dataset("ucidigits", "test")
    assert len(train) + len(test) == 1797 and abs(len(test) - 0.3 * 1797) < 5
    assert train.images.shape[1:] == (1, 8, 8) and int(train.images.max()) == 255
    digits = load_digits()
    per_class = np.bincount(digits.target)
    expected_test = np.floor(0.3 * per_class + 0.5).astype(int)
    assert torch.bincount(test.labels).tolist() == expected_test.tolist()
    train_index, test_index = fixed_split(digits.target)
    assert not set(train_index.tolist()) & set(test_index.tolist())
    expected = np.rint(digits.data[test_index] * 255 / 16).reshape(-1, 8, 8)
    np.testing.assert_array_equal(test.images[:, 0].numpy(), expected)
    np.testing.assert_array_equal(load_dataset("ucidigits", "test").images, test.images)


def save_png(path: Path, height: int, width: int, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(path)


def test_folder_transductive(tmp_path: Path) -> None:
    save_png(tmp_path / "office" / "mug" / "a.png", 10, 12, 200)
    save_png(tmp_path / "office" / "bike" / "b.jpeg.png", 7, 5, 30)
    with pytest.raises(DataError, match="input size"):
        load_dataset(f"folder:{tmp_path / 'office'}")
    train = load_dataset(f"folder:{tmp_path / 'office'}", "train", size=(6, 6))
    test = load_dataset(f"folder:{tmp_path / 'office'}", "test", size=(6, 6))
    assert train.classes == ["bike", "mug"] and train.labels.tolist() == [0, 1]
    assert train.images.shape == (2, 3, 6, 6) and train.meta["transductive"]
    assert (train.images[0] == 30).all() and (train.images[1] == 200).all()
    assert torch.equal(train.images, test.images) and test.meta["format"] == "folder"


def test_folder_with_splits(tmp_path: Path) -> None:
    for split, count in (("train", 2), ("test", 1)):
        for name in ("b", "a"):
            for index in range(count):
                save_png(tmp_path / split / name / f"{index}.png", 4, 4, 10 * count)
    train = load_dataset(f"folder:{tmp_path}", "train")
    test = load_dataset(f"folder:{tmp_path}", "test")
    assert len(train) == 4 and len(test) == 2 and test.classes == ["a", "b"]
    assert not train.meta["transductive"] and (test.images == 10).all()
    (tmp_path / "test" / "c").mkdir()
    with pytest.raises(DataError, match="different classes"):
        load_dataset(f"folder:{tmp_path}", "test")
    with pytest.raises(DatasetNotFoundError):
        load_dataset(f"folder:{tmp_path / 'missing'}")


def test_relative_folder_is_read_from_under_the_data_root(tmp_path: Path, monkeypatch) -> None:
    save_png(tmp_path / "root" / "office31" / "dslr" / "images" / "mug" / "a.png", 4, 4, 90)
    monkeypatch.chdir(tmp_path)  # not in the working directory: the data root is next
    images = load_dataset("folder:office31/dslr/images", "train", root=tmp_path / "root")
    assert images.classes == ["mug"] and (images.images == 90).all()
    with pytest.raises(DatasetNotFoundError, match="nor under the data root"):
        load_dataset("folder:office31/amazon/images", "train", root=tmp_path / "root")


def test_npz_spec(tmp_path: Path) -> None:
    x, y = random_digits(4, side=5)
    write_npz(tmp_path / "one.npz", x, y % 3)
    images = load_dataset(f"npz:{tmp_path / 'one.npz'}", "test")
    assert images.classes == ["0", "1", "2"] and images.meta["transductive"]
    write_npz(tmp_path / "pair" / "train.npz", x, np.array([0, 1, 2, 3]))
    write_npz(tmp_path / "pair" / "test.npz", x[:2], np.array([5, 0]))
    train = load_dataset(f"npz:{tmp_path / 'pair'}", "train")
    assert train.classes == [str(label) for label in range(6)] and not train.meta["transductive"]
    np.testing.assert_array_equal(train.images[:, 0].numpy(), x)
    with pytest.raises(DatasetNotFoundError, match="test.npz"):
        load_dataset(f"npz:{tmp_path / 'one'}")


def test_npz_errors_are_data_errors(tmp_path: Path) -> None:
    write_npz(tmp_path / "mnist" / "train.npz", np.zeros((3, 28, 28), np.uint8), np.zeros(2))
    with pytest.raises(DataError, match="integer|3 images"):
        load_dataset("mnist", root=tmp_path)
    np.savez(tmp_path / "mismatch.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(2, int))
    with pytest.raises(DataError, match="3 images but 'y' has 2"):
        load_dataset(f"npz:{tmp_path / 'mismatch.npz'}")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(DataError, match="corrupt.npz"):
        load_dataset(f"npz:{tmp_path / 'corrupt.npz'}")


def test_size_option_resizes(tmp_path: Path) -> None:
    write_npz(tmp_path / "usps" / "train.npz", np.full((2, 16, 16), 77, np.uint8),
              np.zeros(2, np.int64))
    images = load_dataset("usps", root=tmp_path, size=(28, 28))
    assert images.images.shape == (2, 1, 28, 28) and (images.images == 77).all()
    assert images.meta["geometry"]["from"] == [1, 16, 16]


def image_set(images: torch.Tensor) -> ImageSet:
    return ImageSet(images, torch.zeros(len(images), dtype=torch.int64), ["0"], "toy", {"k": 1})


def test_to_geometry_values(monkeypatch: pytest.MonkeyPatch) -> None:
    constant = image_set(torch.full((5, 1, 16, 16), 123, dtype=torch.uint8))
    resized = to_geometry(constant, 28, 3)
    assert resized.images.shape == (5, 3, 28, 28) and (resized.images == 123).all()
    assert resized.meta["geometry"] == {"size": [28, 28], "channels": 3, "from": [1, 16, 16]}
    assert resized.meta["k"] == 1 and "geometry" not in constant.meta

    block = image_set(torch.tensor([[[[0, 100], [200, 255]]]], dtype=torch.uint8))
    assert to_geometry(block, (1, 1), 1).images.item() == 139  # mean 138.75

    red = torch.zeros((1, 3, 2, 2), dtype=torch.uint8)
    red[:, 0] = 255
    red[:, 2, 0, 0] = 100
    gray = to_geometry(image_set(red), 2, 1).images[0, 0]
    assert gray.tolist() == [[88, 76], [76, 76]]  # 0.299*255 (+ 0.114*100)

    generator = torch.Generator().manual_seed(0)
    noise = image_set(torch.randint(0, 256, (9, 1, 12, 10), dtype=torch.uint8, generator=generator))
    whole = to_geometry(noise, (7, 9), 3)
    assert torch.equal(whole.images[:, 0], whole.images[:, 1])
    assert torch.equal(whole.images[:, 1], whole.images[:, 2])
    monkeypatch.setattr(transforms_module, "CHUNK_ELEMENTS", 200)
    assert torch.equal(to_geometry(noise, (7, 9), 3).images, whole.images)


def test_to_geometry_noop_and_errors() -> None:
    images = image_set(torch.zeros((2, 1, 8, 8), dtype=torch.uint8))
    same = to_geometry(images, (8, 8), 1)
    assert same.images is images.images and same.meta["geometry"]["size"] == [8, 8]
    with pytest.raises(DataError, match="channels"):
        to_geometry(images, 8, 2)
    with pytest.raises(DataError, match="4 channels"):
        to_geometry(image_set(torch.zeros((1, 4, 2, 2), dtype=torch.uint8)), 2, 3)
    with pytest.raises(DataError, match="positive"):
        to_geometry(images, 0, 1)


@pytest.mark.data
def test_real_mnist_and_usps() -> None:
    root = Path(ENVIRONMENT_ROOT or SHARED_DATA)
    if not ENVIRONMENT_ROOT and not (root / "mnist" / "train.npz").is_file():
        pytest.skip(f"real data not found under {root}; set TAMEBIAS_DATA")
    try:
        counts = {
            (name, split): len(load_dataset(name, split, root=root))
            for name in ("mnist", "usps")
            for split in ("train", "test")
        }
    except DatasetNotFoundError as error:
        pytest.skip(str(error))
    assert counts == {
        ("mnist", "train"): 60000, ("mnist", "test"): 10000,
        ("usps", "train"): 7291, ("usps", "test"): 2007,
    }
