"""Readers of the on-disk dataset formats; each returns uint8 NCHW arrays and int64 labels.

Readers know file layouts only; which dataset uses which reader, its normalization and
augmentation live in `robustsnn.data.datasets`.
"""

from __future__ import annotations

import pickle
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from robustsnn.data.types import Splits
from robustsnn.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


# ----------------------------------------------------------------------------- CIFAR


@dataclass(frozen=True)
class CifarLayout:
    """File names and pickle keys of one official CIFAR python release."""

    title: str
    num_classes: int
    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes


CIFAR10 = CifarLayout(
    title="CIFAR-10",
    num_classes=10,
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
)
CIFAR100 = CifarLayout(
    title="CIFAR-100",
    num_classes=100,
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",  # the 100 fine classes, not the 20 superclasses
    names_key=b"fine_label_names",
)


class _CifarUnpickler(pickle.Unpickler):
    """Refuses every global except the numpy array constructors a CIFAR batch needs.

    A crafted file can then not run code: only dicts, lists, bytes, numbers and arrays load.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("_codecs", "encode"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _load_official_pickle(handle: IO[bytes], where: str) -> dict[bytes, Any]:
    # The official CIFAR python release is a set of Python 2 pickles; this is its documented
    # format and the only place the package unpickles anything, through an unpickler that
    # allows no globals but numpy's array constructors. Never use it for other files.
    try:
        obj = _CifarUnpickler(handle, encoding="bytes").load()
    except Exception as err:  # corrupt or truncated file: many exception types are possible
        raise UserError(
            f"cannot read {where}: {err}; delete it and extract or download again"
        ) from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} is not a CIFAR python batch; extract the official archive again")
    return obj


def _cifar_batch(obj: dict[bytes, Any], layout: CifarLayout, where: str) -> tuple[Any, Any]:
    if b"data" not in obj or layout.label_key not in obj:
        raise UserError(
            f"{where} lacks the keys 'data'/{layout.label_key.decode()!r}; it is not an official "
            f"{layout.title} python batch"
        )
    data = np.asarray(obj[b"data"], dtype=np.uint8)
    labels = np.asarray(obj[layout.label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(f"{where}: unexpected array shapes {data.shape} / {labels.shape}")
    # Rows are 1024 red, then 1024 green, then 1024 blue values, row-major: already CHW.
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar(source: Path, layout: CifarLayout) -> Splits:
    """Read an official CIFAR python release from its extracted folder or its ``.tar.gz``."""
    opened: tarfile.TarFile | None = None
    open_member: Callable[[str], IO[bytes]]
    if source.is_dir():

        def open_member(name: str) -> IO[bytes]:
            path = source / name
            if not path.is_file():
                raise UserError(
                    f"{layout.title} folder {source} lacks {name}; extract {layout.archive} "
                    "again or enable download"
                )
            return open(path, "rb")

    else:
        try:
            opened = tarfile.open(source, "r:*")
        except (tarfile.TarError, OSError) as err:
            raise UserError(
                f"cannot open {source}: {err}; delete it and download {layout.archive} again"
            ) from None
        tar = opened

        def open_member(name: str) -> IO[bytes]:
            try:
                handle = tar.extractfile(f"{layout.folder}/{name}")
            except KeyError:
                handle = None
            if handle is None:
                raise UserError(
                    f"{source} lacks {layout.folder}/{name}; it is not the official "
                    f"{layout.archive}, download it again"
                )
            return handle

    try:

        def read_split(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
            xs, ys = [], []
            for name in names:
                with open_member(name) as handle:
                    obj = _load_official_pickle(handle, f"{source}/{name}")
                x, y = _cifar_batch(obj, layout, f"{source}/{name}")
                xs.append(x)
                ys.append(y)
            return np.concatenate(xs), np.concatenate(ys)

        x_train, y_train = read_split(layout.train_files)
        x_test, y_test = read_split(layout.test_files)
        with open_member(layout.meta_file) as handle:
            meta = _load_official_pickle(handle, f"{source}/{layout.meta_file}")
    finally:
        if opened is not None:
            opened.close()
    names = meta.get(layout.names_key)
    classes = (
        tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names) if names else None
    )
    if classes is not None and len(classes) != layout.num_classes:
        raise UserError(
            f"{source}/{layout.meta_file} names {len(classes)} classes, expected "
            f"{layout.num_classes}; it is not the official {layout.title} release"
        )
    return Splits(x_train, y_train, x_test, y_test, classes)


# ----------------------------------------------------------------------------- SVHN


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN cropped-digits ``.mat`` file: X is H x W x C x N, label 10 stands for digit 0."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except Exception as err:  # scipy raises several types for corrupt files
        raise UserError(f"cannot read {path}: {err}; delete it and download it again") from None
    if "X" not in mat or "y" not in mat:
        raise UserError(f"{path} lacks the variables X and y; it is not an SVHN *_32x32.mat file")
    x = np.asarray(mat["X"])
    y = np.asarray(mat["y"]).reshape(-1).astype(np.int64)
    if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
        raise UserError(f"{path}: X has shape {x.shape}, expected 32 x 32 x 3 x {len(y)}")
    y = np.where(y == 10, 0, y)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8), y


# ----------------------------------------------------------------------------- images


def _decode_image(path: Path) -> tuple[np.ndarray, bool]:
    """(H x W x 3 uint8 array, whether the file is grayscale)."""
    try:
        with Image.open(path) as image:
            gray = image.mode in _GRAY_MODES
            rgb = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise UserError(f"cannot decode image {path}: {err}; remove or replace it") from None
    return np.asarray(rgb, dtype=np.uint8), gray


def decode_images(paths: Sequence[Path], *, size: int | None, desc: str) -> tuple[np.ndarray, bool]:
    """Decode ``paths`` into one uint8 [N, 3, H, W] array; all images must share one square size.

    Returns the array and whether every image was grayscale. ``size`` (if given) is the required
    side length.
    """
    out: np.ndarray | None = None
    all_gray = True
    first = paths[0] if paths else None
    expected: tuple[int, int] | None = (size, size) if size is not None else None
    for i, path in enumerate(tqdm(paths, desc=desc, unit="img", disable=None, leave=False)):
        pixels, gray = _decode_image(path)
        all_gray = all_gray and gray
        if expected is None:
            expected = (pixels.shape[0], pixels.shape[1])
        if pixels.shape[:2] != expected:
            reference = f"{size}x{size}" if size is not None else f"{expected} like {first}"
            raise UserError(
                f"image {path} is {pixels.shape[1]}x{pixels.shape[0]} (W x H) but images must be "
                f"{reference}; resize the images to one common square size"
            )
        if expected[0] != expected[1]:
            raise UserError(
                f"image {path} is {expected[1]}x{expected[0]} (W x H); images must be square, "
                "crop or resize them"
            )
        if out is None:
            out = np.empty((len(paths), 3, *expected), dtype=np.uint8)
        out[i] = pixels.transpose(2, 0, 1)
    if out is None:
        side = size or 0
        out = np.empty((0, 3, side, side), dtype=np.uint8)
    return out, all_gray


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def read_tinyimagenet(root: Path) -> Splits:
    """The official ``tiny-imagenet-200`` folder; the labelled ``val`` split serves as test.

    Classes are the WordNet ids of ``wnids.txt`` in sorted order (the order an image-folder
    loader would give the ``train`` subfolders).
    """
    wnids_file = root / "wnids.txt"
    annotations = root / "val" / "val_annotations.txt"
    for required in (wnids_file, annotations, root / "train"):
        if not required.exists():
            raise UserError(
                f"TinyImageNet folder {root} lacks {required.relative_to(root)}; unzip the "
                "official tiny-imagenet-200.zip again or enable download"
            )
    classes = tuple(sorted({w.strip() for w in wnids_file.read_text().split() if w.strip()}))
    index = {wnid: i for i, wnid in enumerate(classes)}
    train_paths: list[Path] = []
    train_labels: list[int] = []
    for wnid in classes:
        folder = root / "train" / wnid / "images"
        if not folder.is_dir():
            raise UserError(f"TinyImageNet folder {root} lacks train/{wnid}/images; unzip again")
        files = _image_files(folder)
        train_paths += files
        train_labels += [index[wnid]] * len(files)
    test_paths: list[Path] = []
    test_labels: list[int] = []
    for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise UserError(
                f"{annotations}:{line_no}: expected '<file> <wnid> ...' with a wnid from "
                f"wnids.txt, got {line!r}"
            )
        path = root / "val" / "images" / fields[0]
        if not path.is_file():
            raise UserError(f"TinyImageNet folder {root} lacks val/images/{fields[0]}; unzip again")
        test_paths.append(path)
        test_labels.append(index[fields[1]])
    x_train, _ = decode_images(train_paths, size=64, desc="decode TinyImageNet train")
    x_test, _ = decode_images(test_paths, size=64, desc="decode TinyImageNet val")
    return Splits(
        x_train,
        np.array(train_labels, dtype=np.int64),
        x_test,
        np.array(test_labels, dtype=np.int64),
        classes,
    )


def read_imagefolder(root: Path) -> Splits:
    """``root/train/<class>/*`` and ``root/test/<class>/*``; classes are the sorted train folders.

    Images must share one square size. A dataset whose images are all grayscale gets one channel.
    """
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise UserError(
                f"image folder {root} lacks {split}/; expected {root}/train/<class>/*.png and "
                f"{root}/test/<class>/*.png"
            )
    classes = tuple(
        sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and p.name[0] != ".")
    )
    if not classes:
        raise UserError(f"image folder {root}/train has no class subfolders; add train/<class>/")
    index = {name: i for i, name in enumerate(classes)}

    def collect(split: str) -> tuple[list[Path], list[int]]:
        paths: list[Path] = []
        labels: list[int] = []
        for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            if folder.name.startswith("."):
                continue
            if folder.name not in index:
                raise UserError(
                    f"{folder} is a class that {root}/train does not have; classes are "
                    f"{', '.join(classes)}"
                )
            files = _image_files(folder)
            paths += files
            labels += [index[folder.name]] * len(files)
        if not paths:
            raise UserError(
                f"image folder {root}/{split} holds no images ({', '.join(IMAGE_SUFFIXES)})"
            )
        return paths, labels

    train_paths, train_labels = collect("train")
    test_paths, test_labels = collect("test")
    x_train, gray_train = decode_images(train_paths, size=None, desc=f"decode {root.name} train")
    side = x_train.shape[-1]
    x_test, gray_test = decode_images(test_paths, size=side, desc=f"decode {root.name} test")
    if gray_train and gray_test:  # grayscale images were expanded to 3 equal channels
        x_train, x_test = x_train[:, :1].copy(), x_test[:, :1].copy()
    return Splits(
        x_train,
        np.array(train_labels, dtype=np.int64),
        x_test,
        np.array(test_labels, dtype=np.int64),
        classes,
    )


# ----------------------------------------------------------------------------- npz


@dataclass
class NpzContent:
    """A user ``.npz`` dataset: splits plus optional augmentation overrides stored in the file."""

    splits: Splits
    overrides: dict[str, int | bool]


def _npz_images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    if x.dtype != np.uint8:
        raise UserError(
            f"{path}: {key} has dtype {x.dtype}; store images as uint8 0..255 "
            "(e.g. (x * 255).round().astype(np.uint8))"
        )
    if x.ndim == 3:  # grayscale N x H x W
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        raise UserError(f"{path}: {key} has shape {x.shape}, which looks NCHW; store NHWC")
    else:
        raise UserError(f"{path}: {key} has shape {x.shape}; expected N x H x W x C (C = 1 or 3)")
    if x.shape[2] != x.shape[3]:
        raise UserError(f"{path}: {key} images are {x.shape[3]}x{x.shape[2]}; they must be square")
    return np.ascontiguousarray(x)


def _npz_labels(y: np.ndarray, key: str, path: Path, n: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != n:
        raise UserError(f"{path}: {key} must be {n} integer labels, got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def read_npz(path: Path) -> NpzContent:
    """``x_train/y_train/x_test/y_test`` (uint8 NHWC or NHW), optional ``classes`` and optional
    scalar augmentation overrides ``hflip``, ``crop_padding``, ``cutout``."""
    import zipfile
    import zlib

    damaged = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
    try:
        data = np.load(path, allow_pickle=False)
    except damaged as err:
        raise UserError(f"cannot read {path}: {err}; it must be a numpy .npz file") from None
    if not hasattr(data, "files"):  # a plain .npy array, not an archive
        raise UserError(f"{path} is a single numpy array, not an .npz archive of named arrays")
    with data:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data.files]
        if missing:
            raise UserError(
                f"{path} lacks {', '.join(missing)}; an npz dataset needs x_train, y_train, "
                "x_test, y_test"
            )
        try:
            x_train = _npz_images(data["x_train"], "x_train", path)
            x_test = _npz_images(data["x_test"], "x_test", path)
            y_train = _npz_labels(data["y_train"], "y_train", path, len(x_train))
            y_test = _npz_labels(data["y_test"], "y_test", path, len(x_test))
            classes = tuple(str(c) for c in data["classes"]) if "classes" in data.files else None
            overrides: dict[str, int | bool] = {}
            for key in ("hflip", "crop_padding", "cutout"):
                if key in data.files:
                    value = data[key].item()
                    overrides[key] = bool(value) if key == "hflip" else int(value)
        except ValueError as err:  # e.g. an object array, which would need pickle
            raise UserError(f"cannot read {path}: {err}; store plain numeric arrays") from None
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # truncated/damaged
            raise UserError(
                f"cannot read {path}: {type(err).__name__}: {err}; the file is damaged or "
                "truncated, write it again"
            ) from None
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(
            f"{path}: x_train images are {x_train.shape[1:]} (C, H, W) but x_test images are "
            f"{x_test.shape[1:]}; both splits need one shape"
        )
    return NpzContent(Splits(x_train, y_train, x_test, y_test, classes), overrides)
