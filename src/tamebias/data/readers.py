"""Low-level readers for each dataset's official file format.

Every reader returns numpy arrays ``x`` (uint8, ``N x H x W`` or ``N x H x W x C``) and ``y``
(int64, ``N``) and raises :class:`DataError` naming the file when it is unreadable or malformed.
"""

from __future__ import annotations

import bz2
import gzip
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from tamebias.data.imageset import DataError

#: File extensions decoded by :func:`read_image_folder` (the same list torchvision uses).
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
USPS_SIDE = 16
USPS_FEATURES = USPS_SIDE * USPS_SIDE


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently decompressing ``.gz`` and ``.bz2``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        if path.suffix == ".bz2":
            with bz2.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read or decompress the file ({error})") from error


def read_idx(path: str | Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) of unsigned bytes, checking magic, dims and size."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: file is {len(data)} bytes, too short for an IDX header")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path}: bad IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            "(is this the right file, and is it decompressed correctly?)"
        )
    ndim = expected_magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header_size} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header_size])
    expected_size = header_size + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_size:
        state = "truncated" if len(data) < expected_size else "has trailing bytes"
        raise DataError(
            f"{path}: file {state}: header says shape {dims} needing {expected_size} bytes, "
            f"file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


def read_mnist_idx(
    images_path: str | Path, labels_path: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST-style pair of IDX files: ``N x H x W`` images and ``N`` labels."""
    x = read_idx(images_path, IDX_IMAGES_MAGIC)
    y = read_idx(labels_path, IDX_LABELS_MAGIC).astype(np.int64)
    if len(x) != len(y):
        raise DataError(
            f"{images_path} holds {len(x)} images but {labels_path} holds {len(y)} labels"
        )
    return x, y


def read_usps_libsvm(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read USPS in LIBSVM format (``usps.bz2`` / ``usps.t.bz2``, plain text also accepted).

    Lines are ``label idx:value ...`` with labels 1..10 for digits 0..9, indices 1..256 and
    values in [-1, 1]; pixels become ``round((v + 1) / 2 * 255)``; missing features are 0.
    """
    path = Path(path)
    try:
        text = _read_bytes(path).decode("ascii")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a LIBSVM text file ({error})") from error
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: no samples in the file")
    labels, values = _parse_libsvm_lines(path, lines)
    if labels.min() < 1 or labels.max() > 10:
        raise DataError(f"{path}: labels span {labels.min()}..{labels.max()}, expected 1..10")
    if values.min() < -1.001 or values.max() > 1.001:
        raise DataError(f"{path}: values outside [-1, 1]; this is not the USPS LIBSVM file")
    pixels = np.clip(np.rint((values + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)
    return pixels.reshape(-1, USPS_SIDE, USPS_SIDE), labels - 1


def _parse_libsvm_lines(path: Path, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and N x 256 values; omitted (sparse) features are 0; reports the bad line."""
    values = np.zeros((len(lines), USPS_FEATURES), dtype=np.float64)
    labels = np.empty(len(lines), dtype=np.int64)
    for row, line in enumerate(lines):
        label, *rest = line.split(None, 1)
        features = rest[0] if rest else ""
        try:
            labels[row] = int(float(label))
            pairs = np.array(features.replace(":", " ").split(), dtype=np.float64).reshape(-1, 2)
        except ValueError as error:
            raise DataError(f"{path}: line {row + 1} is not 'label idx:value ...'") from error
        indices = pairs[:, 0].astype(np.int64) - 1
        if len(indices) and (indices.min() < 0 or indices.max() >= USPS_FEATURES):
            raise DataError(f"{path}: line {row + 1} has a feature index outside 1..256")
        values[row, indices] = pairs[:, 1]
    return labels, values


def read_usps_h5(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read the common ``usps.h5`` copy: group ``split`` with ``data`` (N x 256 in [0, 1])
    and ``target``; pixels become ``round(v * 255)``."""
    path = Path(path)
    try:
        import h5py
    except ImportError as error:
        raise DataError(
            f"{path}: reading HDF5 needs h5py: pip install h5py (or tamebias[hdf5])"
        ) from error
    try:
        with h5py.File(path, "r") as handle:
            if split not in handle:
                raise DataError(f"{path}: no group '{split}' (found {sorted(handle.keys())})")
            group = handle[split]
            if "data" not in group or "target" not in group:
                raise DataError(f"{path}: group '{split}' needs datasets 'data' and 'target'")
            values = np.asarray(group["data"][()], dtype=np.float64)
            labels = np.asarray(group["target"][()])
    except OSError as error:
        raise DataError(f"{path}: cannot read the HDF5 file ({error})") from error
    values = values.reshape(len(values), -1)
    if values.shape[1] != USPS_FEATURES:
        raise DataError(f"{path}: '{split}/data' has {values.shape[1]} features, expected 256")
    if len(labels) != len(values):
        raise DataError(f"{path}: {len(values)} images but {len(labels)} targets")
    pixels = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    return pixels.reshape(-1, USPS_SIDE, USPS_SIDE), labels.reshape(-1).astype(np.int64)


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read SVHN cropped digits (``train_32x32.mat``): ``X`` is 32x32x3xN, ``y`` Nx1 with
    label 10 meaning digit 0. Returns ``N x 32 x 32 x 3`` images."""
    import scipy.io

    path = Path(path)
    try:
        contents = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as error:  # scipy raises many types (IndexError, MatReadError, ...)
        raise DataError(f"{path}: cannot read the MATLAB file ({error})") from error
    if "X" not in contents or "y" not in contents:
        raise DataError(f"{path}: expected variables 'X' and 'y' (SVHN cropped-digit format)")
    images, labels = contents["X"], contents["y"].reshape(-1)
    if images.ndim != 4 or images.shape[2] != 3:
        raise DataError(f"{path}: 'X' has shape {images.shape}, expected H x W x 3 x N")
    if images.shape[3] != len(labels):
        raise DataError(f"{path}: {images.shape[3]} images but {len(labels)} labels")
    labels = labels.astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() > 10):
        raise DataError(f"{path}: labels span {labels.min()}..{labels.max()}, expected 1..10")
    labels[labels == 10] = 0
    x = np.ascontiguousarray(images.transpose(3, 0, 1, 2)).astype(np.uint8, copy=False)
    return x, labels


def check_npz_archive(path: str | Path) -> None:
    """An ``.npz`` is a zip archive; anything else (random bytes, a pickle) is refused by name
    before numpy guesses at it."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a readable .npz file: not a valid .npz (zip) archive of "
                        "arrays; write it with numpy.savez")


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a prepared ``.npz`` holding ``x`` (uint8, N x H x W [x C]) and ``y`` (integers)."""
    path = Path(path)
    check_npz_archive(path)
    try:
        with np.load(path, allow_pickle=False) as contents:
            missing = {"x", "y"} - set(contents.files)
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {sorted(missing)}; found {contents.files}"
                )
            x, y = contents["x"], contents["y"]
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz file ({error})") from error
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(
            f"{path}: 'x' must be uint8 N x H x W or N x H x W x C, got {x.dtype} {x.shape}"
        )
    check_npz_labels(path, x, y)
    return x, y.astype(np.int64)


def check_npz_labels(path: Path, x: np.ndarray, y: np.ndarray, rows: str = "images") -> None:
    """``y`` of an ``.npz``: 1-d non-negative integers, one per row of ``x``."""
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise DataError(f"{path}: 'y' must be a 1-d integer array, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{path}: 'x' has {len(x)} {rows} but 'y' has {len(y)} labels")
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: negative labels in 'y'")


def _visible(name: str) -> bool:
    return not name.startswith(".")


def is_class_folder(path: str | Path) -> bool:
    """True when ``path`` looks like an ImageFolder root: at least one visible sub-folder."""
    path = Path(path)
    return path.is_dir() and any(
        child.is_dir() and _visible(child.name) for child in path.iterdir()
    )


def list_image_folder(path: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folders) and ``(file, label)`` pairs, walking each class folder
    recursively in sorted order; hidden entries and non-image extensions are skipped."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder")
    classes = sorted(c.name for c in path.iterdir() if c.is_dir() and _visible(c.name))
    if not classes:
        raise DataError(f"{path}: no class sub-folders (expected one folder per class)")
    samples: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = 0
        for directory, subdirectories, files in os.walk(path / name, followlinks=True):
            subdirectories[:] = sorted(d for d in subdirectories if _visible(d))
            for file in sorted(files):
                if _visible(file) and file.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((Path(directory) / file, label))
                    found += 1
        if not found:
            raise DataError(
                f"{path / name}: class folder has no images (extensions {IMAGE_EXTENSIONS})"
            )
    return classes, samples


def read_image_folder(
    path: str | Path, mode: str = "RGB", size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], list[Path]]:
    """Decode an ImageFolder tree once with PIL.

    ``mode`` is "RGB" or "L"; ``size`` is ``(H, W)`` to resize every image (bilinear).
    Returns ``x``, ``y``, the class names and the files in order.
    """
    classes, samples = list_image_folder(path)
    files = [file for file, _ in samples]
    x = decode_images(files, mode, size, path)
    y = np.array([label for _, label in samples], dtype=np.int64)
    return x, y, classes, files


def decode_images(
    files: list[Path], mode: str = "RGB", size: tuple[int, int] | None = None,
    where: str | Path = "",
) -> np.ndarray:
    """Decode image ``files`` with PIL into one uint8 ``N x H x W [x C]`` array.

    ``mode`` is "RGB" or "L"; ``size`` is ``(H, W)`` to resize every image (bilinear); without
    it every image must have the same size (``where`` names the collection in the error).
    """
    from PIL import Image

    if mode not in ("RGB", "L"):
        raise DataError(f"image mode must be 'RGB' or 'L', got {mode!r}")
    channel_shape = (3,) if mode == "RGB" else ()
    images: np.ndarray | list[np.ndarray]
    if size is not None:
        images = np.empty((len(files), *size, *channel_shape), dtype=np.uint8)
    else:
        images = []
    for index, file in enumerate(files):
        try:
            with Image.open(file) as image:
                image = image.convert(mode)
                if size is not None and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(f"{file}: cannot decode the image ({error})") from error
        if isinstance(images, np.ndarray):
            images[index] = pixels
        else:
            if images and pixels.shape != images[0].shape:
                raise DataError(
                    f"{where}: images differ in size ({Path(files[0]).name} is "
                    f"{images[0].shape[1]}x{images[0].shape[0]}, {Path(file).name} is "
                    f"{pixels.shape[1]}x{pixels.shape[0]}); set the input size "
                    "(data.size) so they are all resized to one H x W"
                )
            images.append(pixels)
    if isinstance(images, np.ndarray):
        return images
    return np.stack(images) if images else np.empty((0, 1, 1, *channel_shape), np.uint8)
