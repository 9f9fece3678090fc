"""Readers of each native format: tiny files written in tmp_path, decoded exactly."""

from __future__ import annotations

import bz2
import gzip
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from tamebias.data.imageset import DataError
from tamebias.data.readers import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    read_idx,
    read_image_folder,
    read_mnist_idx,
    read_npz,
    read_svhn_mat,
    read_usps_h5,
    read_usps_libsvm,
)


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write uint8 ``array`` as IDX (magic 0x0803 for 3-d, 0x0801 for 1-d); gzip if .gz."""
    array = np.asarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def digits(count: int = 5, side: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    x = generator.integers(0, 256, size=(count, side, side), dtype=np.uint8)
    return x, generator.integers(0, 10, size=count).astype(np.int64)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path: Path, suffix: str) -> None:
    x, y = digits()
    images = write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", x)
    labels = write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", y)
    read_x, read_y = read_mnist_idx(images, labels)
    assert read_x.dtype == np.uint8 and read_y.dtype == np.int64
    np.testing.assert_array_equal(read_x, x)
    np.testing.assert_array_equal(read_y, y)


def test_idx_truncated(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-images-idx3-ubyte", digits()[0])
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_idx_header_only_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty-idx3-ubyte"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="too short"):
        read_idx(path, IDX_IMAGES_MAGIC)
    path.write_bytes(struct.pack(">I", IDX_IMAGES_MAGIC) + b"\x00\x00")
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_idx_wrong_magic(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "train-labels-idx1-ubyte", digits()[1])
    with pytest.raises(DataError, match="magic"):
        read_idx(labels, IDX_IMAGES_MAGIC)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", digits()[0])
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        read_idx(path, IDX_IMAGES_MAGIC)
    path.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="decompress"):
        read_idx(path, IDX_IMAGES_MAGIC)


def test_idx_count_mismatch(tmp_path: Path) -> None:
    x, y = digits()
    images = write_idx(tmp_path / "images", x)
    labels = write_idx(tmp_path / "labels", y[:3])
    with pytest.raises(DataError, match="5 images but .* 3 labels"):
        read_mnist_idx(images, labels)
    assert IDX_LABELS_MAGIC == 0x801


def test_usps_libsvm_bz2(tmp_path: Path) -> None:
    full = " ".join(f"{index}:{1.0 if index == 1 else -1.0}" for index in range(1, 257))
    lines = [
        f"1 {full}",  # digit 0: first pixel white, the rest black
        "10 2:-0.6 256:1",  # digit 9, sparse: omitted features are 0 -> 128
        f"5 {' '.join(f'{index}:-1' for index in range(1, 257))}",
    ]
    path = tmp_path / "usps.bz2"
    with bz2.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    x, y = read_usps_libsvm(path)
    assert x.shape == (3, 16, 16) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, [0, 9, 4])
    assert x[0, 0, 0] == 255 and (x[0].reshape(-1)[1:] == 0).all()
    flat = x[1].reshape(-1)
    assert flat[1] == 51 and flat[255] == 255 and flat[0] == 128
    assert (x[2] == 0).all()


def test_usps_libsvm_malformed(tmp_path: Path) -> None:
    path = tmp_path / "usps.t.bz2"
    path.write_bytes(bz2.compress(b"3 1:0.5 2:oops\n"))
    with pytest.raises(DataError, match="usps.t.bz2: line 1"):
        read_usps_libsvm(path)
    path.write_bytes(bz2.compress(b"3 300:0.5\n"))
    with pytest.raises(DataError, match="index"):
        read_usps_libsvm(path)
    path.write_bytes(b"not bz2")
    with pytest.raises(DataError, match="usps.t.bz2"):
        read_usps_libsvm(path)


def test_usps_h5(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "usps.h5"
    train = np.zeros((2, 256), dtype=np.float32)
    train[0, 0], train[0, 1], train[1, 255] = 1.0, 0.2, 0.5
    with h5py.File(path, "w") as handle:
        handle.create_dataset("train/data", data=train)
        handle.create_dataset("train/target", data=np.array([7, 0]))
        handle.create_dataset("test/data", data=np.ones((1, 256)))
        handle.create_dataset("test/target", data=np.array([3]))
    x, y = read_usps_h5(path, "train")
    assert x.shape == (2, 16, 16) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, [7, 0])
    assert x[0, 0, 0] == 255 and x[0, 0, 1] == 51 and x[1, 15, 15] == 128
    assert x.sum() == 255 + 51 + 128
    x, y = read_usps_h5(path, "test")
    assert (x == 255).all() and y.tolist() == [3]
    with pytest.raises(DataError, match="no group 'valid'"):
        read_usps_h5(path, "valid")


def test_usps_h5_needs_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DataError, match="pip install h5py"):
        read_usps_h5(tmp_path / "usps.h5", "train")


def test_svhn_mat(tmp_path: Path) -> None:
    generator = np.random.default_rng(1)
    images = generator.integers(0, 256, size=(32, 32, 3, 3), dtype=np.uint8)
    labels = np.array([[10], [1], [9]], dtype=np.uint8)
    path = tmp_path / "train_32x32.mat"
    scipy.io.savemat(path, {"X": images, "y": labels})
    x, y = read_svhn_mat(path)
    assert x.shape == (3, 32, 32, 3) and x.dtype == np.uint8
    for index in range(3):
        np.testing.assert_array_equal(x[index], images[:, :, :, index])
    np.testing.assert_array_equal(y, [0, 1, 9])


def test_svhn_mat_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(50))
    with pytest.raises(DataError, match="test_32x32.mat"):
        read_svhn_mat(path)
    scipy.io.savemat(path, {"images": np.zeros((2, 2))})
    with pytest.raises(DataError, match="'X' and 'y'"):
        read_svhn_mat(path)


def test_npz_round_trip(tmp_path: Path) -> None:
    x, y = digits(4, 16)
    np.savez_compressed(tmp_path / "train.npz", x=x, y=y)
    read_x, read_y = read_npz(tmp_path / "train.npz")
    np.testing.assert_array_equal(read_x, x)
    np.testing.assert_array_equal(read_y, y)
    np.savez(tmp_path / "int32.npz", x=x, y=y.astype(np.int32))
    assert read_npz(tmp_path / "int32.npz")[1].dtype == np.int64


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(2, np.int64)}, "3 images but"),
        ({"x": np.zeros((3, 4, 4), np.float32), "y": np.zeros(3, np.int64)}, "must be uint8"),
        ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(3, np.float64)}, "integer"),
        ({"images": np.zeros((3, 4, 4), np.uint8)}, "missing array"),
    ],
)
def test_npz_invalid(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        read_npz(path)


def test_npz_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.npz"
    np.savez_compressed(path, x=np.zeros((50, 28, 28), np.uint8), y=np.zeros(50, np.int64))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="corrupt.npz"):
        read_npz(path)
    path.write_bytes(b"garbage that is neither zip nor npy")
    with pytest.raises(DataError, match="corrupt.npz"):
        read_npz(path)


def make_image_folder(root: Path, same_size: bool = False) -> dict[str, list[np.ndarray]]:
    """Two classes of RGB PNGs (sizes differ unless ``same_size``), plus files to ignore."""
    generator = np.random.default_rng(2)
    written: dict[str, list[np.ndarray]] = {"cat": [], "dog": []}
    sizes = {"cat": [(6, 4), (6, 4)], "dog": [(6, 4) if same_size else (9, 7)]}
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True)
        for index, (height, width) in enumerate(shapes):
            pixels = generator.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
            written[name].append(pixels)
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".hidden.png").write_bytes(b"ignored")
    (root / ".cache").mkdir()
    return written


def test_image_folder_exact(tmp_path: Path) -> None:
    written = make_image_folder(tmp_path, same_size=True)
    x, y, classes, files = read_image_folder(tmp_path)
    assert classes == ["cat", "dog"] and y.tolist() == [0, 0, 1]
    assert x.shape == (3, 6, 4, 3) and x.dtype == np.uint8
    for index, expected in enumerate(written["cat"] + written["dog"]):
        np.testing.assert_array_equal(x[index], expected)
    assert [file.name for file in files] == ["0.png", "1.png", "0.png"]
    gray, _, _, _ = read_image_folder(tmp_path, mode="L")
    assert gray.shape == (3, 6, 4)


def test_image_folder_sizes(tmp_path: Path) -> None:
    make_image_folder(tmp_path)
    with pytest.raises(DataError, match="set the input size"):
        read_image_folder(tmp_path)
    x, y, classes, _ = read_image_folder(tmp_path, size=(5, 3))
    assert x.shape == (3, 5, 3, 3) and y.tolist() == [0, 0, 1]


def test_image_folder_unreadable(tmp_path: Path) -> None:
    make_image_folder(tmp_path, same_size=True)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        read_image_folder(tmp_path)


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no class sub-folders"):
        read_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no images"):
        read_image_folder(tmp_path)
