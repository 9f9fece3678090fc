"""The dataset registry and :func:`load_dataset`, the one entry point for reading data.

A spec is a registered name (see :data:`DATASETS`), ``folder:PATH`` (ImageFolder layout, or
a folder of unlabeled images; a relative PATH missing from the working directory is read from
under the data root), ``npz:PATH`` (a prepared ``.npz`` file, or a folder holding
``train.npz`` / ``test.npz``; float ``x`` is feature vectors, ``y`` may be absent),
``list:FILE`` (an image list, ``data/lists.py``) or ``images:PATH`` (every image under PATH,
unlabeled).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tamebias.data.blend import blended
from tamebias.data.checks import note_outside_root
from tamebias.data.folder import (
    has_top_level_images,
    list_images,
    read_unlabeled_folder,
    read_unlabeled_images,
)
from tamebias.data.imageset import DataError, DatasetNotFoundError, ImageSet
from tamebias.data.lists import read_image_list
from tamebias.data.readers import (
    check_npz_archive,
    is_class_folder,
    read_image_folder,
    read_mnist_idx,
    read_npz,
    read_svhn_mat,
    read_usps_h5,
    read_usps_libsvm,
)
from tamebias.data.styles import style_datasets
from tamebias.data.transforms import to_geometry
from tamebias.data.vector_shift import VECTOR_DATASETS
from tamebias.data.vectors import npz_kind, read_array_npz

SPLITS = ("train", "test")
DIGIT_CLASSES = [str(digit) for digit in range(10)]
DEFAULT_DATA_ROOT = "~/.cache/tamebias/data"
FIXED_SPLIT_RULE = (
    "tamebias fixed split: stratified 70% train / 30% test; per class (ascending label) the "
    "indices are permuted by numpy.random.default_rng(0) and the first floor(0.3 * n + 0.5) go "
    "to test"
)
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/ (mirror of yann.lecun.com/exdb/mnist)"
USPS_URL = "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"

Loader = Callable[[str, str | Path | None, bool], ImageSet]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: ``loader(split, root, download)`` returns an :class:`ImageSet`."""

    name: str
    description: str
    splits: tuple[str, ...]
    loader: Loader


def _choose_data_root(root: str | Path | None) -> tuple[Path, str]:
    """The data root and a phrase saying how it was chosen."""
    if root is not None and str(root) != "":
        return Path(root).expanduser(), "given by the data root option, data.root"
    environment = os.environ.get("TAMEBIAS_DATA")
    if environment:
        return Path(environment).expanduser(), "from the TAMEBIAS_DATA environment variable"
    return (
        Path(DEFAULT_DATA_ROOT).expanduser(),
        "the default: neither data.root nor TAMEBIAS_DATA is set",
    )


def resolve_data_root(root: str | Path | None) -> Path:
    """The data root: ``root`` if given, else env ``TAMEBIAS_DATA``, else the user cache."""
    return _choose_data_root(root)[0]


def fixed_split(labels: np.ndarray, test_fraction: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split (see ``FIXED_SPLIT_RULE``): sorted train and test indices."""
    generator = np.random.default_rng(0)
    train_parts, test_parts = [], []
    for label in np.unique(labels):
        indices = generator.permutation(np.flatnonzero(labels == label))
        test_count = int(np.floor(test_fraction * len(indices) + 0.5))
        test_parts.append(indices[:test_count])
        train_parts.append(indices[test_count:])
    return np.sort(np.concatenate(train_parts)), np.sort(np.concatenate(test_parts))


def _image_set(
    x: np.ndarray, y: np.ndarray, classes: list[str], name: str, split: str, **meta: object
) -> ImageSet:
    result = ImageSet.from_numpy(x, y, classes, name)
    result.meta.update(split=split, **meta)
    result.meta["files"] = [str(file) for file in result.meta.get("files", [])]
    return result


def _not_found(
    name: str, split: str, data_root: Path, how: str, looked: Sequence[Path], fetch: str
) -> DatasetNotFoundError:
    paths = "\n".join(f"  {path}" for path in looked)
    return DatasetNotFoundError(
        f"{name} ({split} split) was not found.\n"
        f"Data root: {data_root} ({how}).\n"
        f"Looked for:\n{paths}\n"
        f"To get it: rerun with --download (config: data.download=true) to fetch it with "
        f"torchvision, or {fetch}, or point TAMEBIAS_DATA or data.root at a folder "
        f"that already holds it."
    )


def _torchvision_datasets():
    """The torchvision.datasets module, imported lazily (only downloads need it)."""
    try:
        import torchvision.datasets
    except ImportError as error:
        raise DataError("downloading needs torchvision: pip install torchvision") from error
    return torchvision.datasets


def _download(name: str, fetch: str, action: Callable[[], object]) -> None:
    try:
        action()
    except DataError:
        raise
    except Exception as error:  # network and archive errors vary by platform and version
        raise DataError(f"downloading {name} failed ({error}); instead {fetch}") from error


def _first_file(candidates: Sequence[Path], looked: list[Path]) -> Path | None:
    looked.extend(candidates)
    return next((path for path in candidates if path.is_file()), None)


def _find_idx_pair(folder: Path, prefix: str, looked: list[Path]) -> tuple[Path, Path] | None:
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    images, labels = (_first_file([folder / n, folder / f"{n}.gz"], looked) for n in names)
    return (images, labels) if images and labels else None


def _load_mnist(split: str, root: str | Path | None, download: bool) -> ImageSet:
    data_root, how = _choose_data_root(root)
    prefix = "train" if split == "train" else "t10k"
    looked: list[Path] = []
    common = {"data_root": str(data_root), "transductive": False}
    npz = _first_file([data_root / "mnist" / f"{split}.npz"], looked)
    if npz:
        return _image_set(*read_npz(npz), DIGIT_CLASSES, "mnist", split, format="npz",
                          files=[npz], **common)
    raw_folder = data_root / "MNIST" / "raw"
    for folder in (data_root / "mnist", raw_folder):
        pair = _find_idx_pair(folder, prefix, looked)
        if pair:
            return _image_set(*read_mnist_idx(*pair), DIGIT_CLASSES, "mnist", split,
                              format="idx", files=list(pair), **common)
    fetch = (
        f"download {prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz from "
        f"{MNIST_URL} into {data_root / 'mnist'}"
    )
    if not download:
        raise _not_found("mnist", split, data_root, how, looked, fetch)
    datasets = _torchvision_datasets()
    _download("mnist", fetch, lambda: datasets.MNIST(
        str(data_root), train=split == "train", download=True))
    pair = _find_idx_pair(raw_folder, prefix, [])
    if not pair:
        raise DataError(f"mnist download finished but no IDX files are in {raw_folder}")
    return _image_set(*read_mnist_idx(*pair), DIGIT_CLASSES, "mnist", split, format="idx",
                      files=list(pair), downloaded=True, **common)


def _load_usps(split: str, root: str | Path | None, download: bool) -> ImageSet:
    data_root, how = _choose_data_root(root)
    folder = data_root / "usps"
    file_name = "usps.bz2" if split == "train" else "usps.t.bz2"
    looked: list[Path] = []
    common = {"data_root": str(data_root), "transductive": False}
    npz = _first_file([folder / f"{split}.npz"], looked)
    if npz:
        return _image_set(*read_npz(npz), DIGIT_CLASSES, "usps", split, format="npz",
                          files=[npz], **common)
    libsvm = _first_file([folder / file_name, data_root / file_name], looked)
    if libsvm:
        return _image_set(*read_usps_libsvm(libsvm), DIGIT_CLASSES, "usps", split,
                          format="libsvm-bz2", files=[libsvm], **common)
    hdf5 = _first_file([folder / "usps.h5"], looked)
    if hdf5:
        return _image_set(*read_usps_h5(hdf5, split), DIGIT_CLASSES, "usps", split,
                          format="hdf5", files=[hdf5], **common)
    fetch = f"download {file_name} from {USPS_URL} into {folder}"
    if not download:
        raise _not_found("usps", split, data_root, how, looked, fetch)
    datasets = _torchvision_datasets()
    _download("usps", fetch, lambda: datasets.USPS(
        str(folder), train=split == "train", download=True))
    if not (folder / file_name).is_file():
        raise DataError(f"usps download finished but {folder / file_name} is missing")
    return _image_set(*read_usps_libsvm(folder / file_name), DIGIT_CLASSES, "usps", split,
                      format="libsvm-bz2", files=[folder / file_name], downloaded=True, **common)


def _load_svhn(split: str, root: str | Path | None, download: bool) -> ImageSet:
    data_root, how = _choose_data_root(root)
    folder = data_root / "svhn"
    file_name = f"{split}_32x32.mat"
    looked: list[Path] = []
    common = {"data_root": str(data_root), "transductive": False}
    npz = _first_file([folder / f"{split}.npz"], looked)
    if npz:
        return _image_set(*read_npz(npz), DIGIT_CLASSES, "svhn", split, format="npz",
                          files=[npz], **common)
    mat = _first_file([folder / file_name, data_root / file_name], looked)
    if mat:
        return _image_set(*read_svhn_mat(mat), DIGIT_CLASSES, "svhn", split, format="mat",
                          files=[mat], **common)
    fetch = f"download {file_name} (cropped digits, format 2) from {SVHN_URL} into {folder}"
    if not download:
        raise _not_found("svhn", split, data_root, how, looked, fetch)
    datasets = _torchvision_datasets()
    _download("svhn", fetch, lambda: datasets.SVHN(str(folder), split=split, download=True))
    if not (folder / file_name).is_file():
        raise DataError(f"svhn download finished but {folder / file_name} is missing")
    return _image_set(*read_svhn_mat(folder / file_name), DIGIT_CLASSES, "svhn", split,
                      format="mat", files=[folder / file_name], downloaded=True, **common)


EMBEDDED = Path(__file__).parent / "embedded"


@functools.lru_cache(maxsize=1)
def _mnist5k_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped in the package (``data/embedded/README.md``)."""
    path = EMBEDDED / "mnist5k.npz"
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return arrays["x"], arrays["y"]
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"the embedded mnist5k set {path} is missing or damaged ({error}); "
                        "reinstall tamebias") from error


def _fixed_split_set(
    x: np.ndarray, y: np.ndarray, name: str, split: str, source_format: str
) -> ImageSet:
    train, test = fixed_split(y)
    chosen = train if split == "train" else test
    return _image_set(x[chosen], y[chosen], DIGIT_CLASSES, name, split, format=source_format,
                      files=[], transductive=False, fixed_split=FIXED_SPLIT_RULE)


def _load_mnist5k(split: str, root: str | Path | None, download: bool) -> ImageSet:
    return _fixed_split_set(*_mnist5k_digits(), "mnist5k", split, "embedded npz")


def _load_ucidigits(split: str, root: str | Path | None, download: bool) -> ImageSet:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.clip(np.rint(digits.data * 255.0 / 16.0), 0, 255).astype(np.uint8)
    labels = np.asarray(digits.target, dtype=np.int64)
    return _fixed_split_set(pixels.reshape(-1, 8, 8), labels, "ucidigits", split, "sklearn")


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("mnist", "MNIST handwritten digits, 28x28 gray, 60,000 train / 10,000 test",
                    SPLITS, _load_mnist),
        DatasetInfo("usps", "USPS handwritten digits, 16x16 gray, 7,291 train / 2,007 test",
                    SPLITS, _load_usps),
        DatasetInfo("svhn", "SVHN cropped house-number digits, 32x32 RGB, 73,257 / 26,032",
                    SPLITS, _load_svhn),
        DatasetInfo("mnist5k", "5,000 MNIST digits shipped in the package (no download), "
                    "fixed 70/30 split", SPLITS, _load_mnist5k),
        DatasetInfo("ucidigits", "UCI 8x8 digits bundled with scikit-learn (1,797, no download), "
                    "fixed 70/30 split", SPLITS, _load_ucidigits),
        DatasetInfo("mnistblend", "MNIST digits blended over scikit-learn's sample photos "
                    "(MNIST-M's recipe, data/blend.py), 32x32 RGB", SPLITS,
                    blended(_load_mnist, "mnist", 0)),
        DatasetInfo("uspsblend", "USPS digits blended over scikit-learn's sample photos "
                    "(MNIST-M's recipe, data/blend.py), 32x32 RGB", SPLITS,
                    blended(_load_usps, "usps", 1)),
    )
}


# feature-vector datasets (a synthetic shift made here; data/vector_shift.py)
DATASETS.update({name: DatasetInfo(name, description, SPLITS, loader)
                 for name, (description, loader) in VECTOR_DATASETS.items()})
# MNIST in the generated digit styles of few-shot translation (data/styles.py)
DATASETS.update({name: DatasetInfo(name, description, SPLITS, loader)
                 for name, (description, loader) in style_datasets(_load_mnist).items()})


def _folder_classes(folder: Path) -> list[str]:
    return sorted(c.name for c in folder.iterdir() if c.is_dir() and not c.name.startswith("."))


def _load_folder(spec: str, text: str, split: str, size: tuple[int, int] | None,
                 root: str | Path | None = None) -> ImageSet:
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.is_dir():  # relative: the working dir, then the root
        data_root, how = _choose_data_root(root)
        if not (data_root / path).is_dir():
            raise DatasetNotFoundError(
                f"{spec}: no folder {path} in the working directory nor under the data root "
                f"{data_root} ({how}); expected one sub-folder per class of images, optionally "
                "inside train/ and test/")
        path = data_root / path
    if not path.is_dir():
        raise DatasetNotFoundError(f"{spec}: {path} is not a folder (expected one per class)")
    note_outside_root(spec, path, _choose_data_root(root)[0])
    train, test = path / "train", path / "test"
    split_folders = train.is_dir() and test.is_dir() and not has_top_level_images(path)
    labeled_splits = not (has_top_level_images(train) or has_top_level_images(test))
    if (split_folders and labeled_splits and is_class_folder(train) and is_class_folder(test)
            and _folder_classes(train) != _folder_classes(test)):
        difference = sorted(set(_folder_classes(train)) ^ set(_folder_classes(test)))
        raise DataError(f"{spec}: train/ and test/ have different classes: {difference}")
    target = path / split if split_folders else path
    if has_top_level_images(target):  # images, no class folders: an unlabeled set
        return read_unlabeled_folder(target, spec, size, split=split,
                                     transductive=not split_folders)
    x, y, classes, _ = read_image_folder(target, "RGB", size)
    return _image_set(x, y, classes, spec, split, format="folder", files=[target],
                      transductive=not split_folders)


def _find_path(spec: str, text: str, root: str | Path | None) -> Path:
    """A spec's path: as given (absolute or in the working directory), else under the root."""
    path = Path(text).expanduser()
    if path.exists() or path.is_absolute():
        if not path.exists():
            raise DatasetNotFoundError(f"{spec}: {path} does not exist")
        return path
    data_root, how = _choose_data_root(root)
    if not (data_root / path).exists():
        raise DatasetNotFoundError(f"{spec}: no {path} in the working directory nor under "
                                   f"the data root {data_root} ({how})")
    return data_root / path


def _npz_classes(files: Sequence[Path]) -> list[str]:
    highest = -1
    for file in files:
        if file.is_file():
            check_npz_archive(file)
            try:
                with np.load(file, allow_pickle=False) as contents:
                    labels = contents["y"] if "y" in contents.files else np.empty(0)
                    highest = max(highest, int(labels.max()) if labels.size else -1)
            except Exception as error:  # corrupt files are reported by read_npz
                raise DataError(f"{file}: not a readable .npz file ({error})") from error
    return [str(label) for label in range(highest + 1)]


def _load_npz(spec: str, text: str, split: str) -> ImageSet:
    path = Path(text).expanduser()
    if path.is_file():
        file, siblings, transductive = path, [path], True
    elif path.is_dir():
        siblings = [path / f"{name}.npz" for name in SPLITS]
        file, transductive = path / f"{split}.npz", False
        if not file.is_file():
            raise DatasetNotFoundError(
                f"{spec}: {file} not found (a folder must hold train.npz and test.npz)"
            )
    else:
        raise DatasetNotFoundError(
            f"{spec}: {path} does not exist (give a .npz file, or a folder with "
            "train.npz and test.npz)"
        )
    if npz_kind(file) != "images":  # feature vectors, or images without labels
        return read_array_npz(file, spec, split=split, transductive=transductive)
    x, y = read_npz(file)
    classes = _npz_classes([sibling for sibling in siblings if sibling != file] + [file])
    return _image_set(x, y, classes, spec, split, format="npz", files=[file],
                      transductive=transductive)


def load_dataset(
    spec: str,
    split: str = "train",
    root: str | Path | None = None,
    download: bool = False,
    size: tuple[int, int] | None = None,
) -> ImageSet:
    """Load one split of a dataset as an :class:`ImageSet`.

    ``spec`` is a name in :data:`DATASETS`, ``folder:PATH`` or ``npz:PATH``; ``split`` is
    "train" or "test"; ``root`` is the data root (see :func:`resolve_data_root`); ``download``
    lets torchvision fetch missing official files; ``size`` (H, W) resizes the images (folders
    are resized while decoding, other sources with :func:`to_geometry`, keeping channels).
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
    text = spec.strip()
    if text.startswith("folder:"):
        return _load_folder(text, text[len("folder:"):], split, size, root)
    if text.startswith(("list:", "images:")):
        kind, _, rest = text.partition(":")
        path = _find_path(text, rest, root)
        if kind == "list":
            return read_image_list(path, text, size, _choose_data_root(root)[0], split=split,
                                   transductive=True)
        files = [path] if path.is_file() else list_images(path)
        return read_unlabeled_images(files, text, size, where=path, format="images",
                                     split=split, transductive=True)
    if text.startswith("npz:"):
        result = _load_npz(text, text[len("npz:"):], split)
    elif text.lower() in DATASETS:
        result = DATASETS[text.lower()].loader(split, root, download)
    else:
        raise DataError(
            f"unknown dataset {spec!r}. Valid names: {', '.join(DATASETS)}; or folder:PATH "
            "(one sub-folder per class, optional train/ and test/; or images without class "
            "folders: unlabeled), npz:PATH (a .npz file with x and y, or a folder holding "
            "train.npz and test.npz; float x: feature vectors), list:FILE (lines 'path "
            "[label]') or images:PATH (every image under PATH, unlabeled)"
        )
    if size is not None and tuple(result.shape[1:]) != size:
        result = to_geometry(result, size, result.shape[0])
    return result
