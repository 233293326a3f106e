"""Every file format round-trips through load_dataset: tiny files in the official layouts."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from robustsnn.data import (
    DATASETS,
    Dataset,
    DatasetInfo,
    cache,
    channel_stats,
    formats,
    load_dataset,
)
from robustsnn.data.datasets import mnist5k_split
from robustsnn.data.download import md5sum
from robustsnn.errors import UserError

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


@pytest.fixture(autouse=True)
def private_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the fallback cache inside tmp_path: no test writes to the real home folder."""
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("ROBUSTSNN_CACHE_DIR", str(folder))
    return folder


def rng_images(seed: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)


# ----------------------------------------------------------------------------- CIFAR


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def make_cifar10(root: Path, per_batch: int = 3) -> dict[str, np.ndarray]:
    """A tiny cifar-10-batches-py folder (5 train batches + test batch + meta)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 7):
        x = rng_images(i, per_batch, (3, 32, 32))
        y = np.random.default_rng(100 + i).integers(0, 10, per_batch)
        name = f"data_batch_{i}" if i <= 5 else "test_batch"
        _dump(
            folder / name,
            {
                b"batch_label": name.encode(),
                b"labels": [int(v) for v in y],
                b"data": x.reshape(per_batch, -1),
                b"filenames": [f"img{j}.png".encode() for j in range(per_batch)],
            },
        )
        xs.append(x)
        ys.append(y)
    _dump(
        folder / "batches.meta",
        {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072},
    )
    return {
        "x_train": np.concatenate(xs[:5]),
        "y_train": np.concatenate(ys[:5]),
        "x_test": xs[5],
        "y_test": ys[5],
    }


def tar_folder(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def assert_same(data: Dataset, expected: dict[str, np.ndarray]) -> None:
    for key in ("x_train", "y_train", "x_test", "y_test"):
        got = getattr(data, key)
        assert got.dtype == (torch.uint8 if key.startswith("x") else torch.int64)
        np.testing.assert_array_equal(got.numpy(), expected[key], err_msg=key)


def test_cifar10_folder_round_trip(tmp_path: Path) -> None:
    expected = make_cifar10(tmp_path)
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert_same(data, expected)
    info = data.info
    assert (info.num_classes, info.channels, info.image_size) == (10, 3, 32)
    assert info.classes == tuple(CIFAR10_NAMES)
    assert info.hflip and info.crop_padding == 4 and info.cutout == 8
    assert info.mean == pytest.approx((0.4914, 0.4822, 0.4465))


def test_cifar10_tarball_round_trip(tmp_path: Path) -> None:
    build = tmp_path / "build"
    expected = make_cifar10(build)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    tar_folder(build / "cifar-10-batches-py", data_dir / "cifar-10-python.tar.gz")
    assert_same(load_dataset("cifar10", data_dir=data_dir), expected)


def test_cifar10_missing_files_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cifar-10-python.tar.gz.*--data-dir"):
        load_dataset("cifar10", data_dir=tmp_path)
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="lacks data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    expected = {}
    for split, seed, n in (("train", 1, 7), ("test", 2, 4)):
        x = rng_images(seed, n, (3, 32, 32))
        fine = np.random.default_rng(seed).integers(0, 100, n)
        fine[0] = 99
        _dump(
            folder / split,
            {
                b"data": x.reshape(n, -1),
                b"fine_labels": [int(v) for v in fine],
                b"coarse_labels": [int(v) // 5 for v in fine],
            },
        )
        expected[f"x_{split}"], expected[f"y_{split}"] = x, fine
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    )
    data = load_dataset("cifar100", data_dir=tmp_path)
    assert_same(data, expected)
    assert data.info.num_classes == 100 and data.info.classes is not None
    assert data.info.classes[99] == "fine99"


# ----------------------------------------------------------------------------- download


def test_download_verifies_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build = tmp_path / "build"
    expected = make_cifar10(build)
    archive = tar_folder(build / "cifar-10-batches-py", tmp_path / "served.tar.gz")
    urls: list[str] = []

    def fake_urlretrieve(url: str, filename: str | Path, reporthook=None):  # noqa: ANN001
        urls.append(url)
        shutil.copyfile(archive, filename)
        return str(filename), None

    monkeypatch.setattr(urllib.request, "urlretrieve", fake_urlretrieve)

    # The official checksum does not match our tiny archive: the download must be refused.
    data_dir = tmp_path / "data"
    with pytest.raises(UserError, match="checksum mismatch"):
        load_dataset("cifar10", data_dir=data_dir, download=True)
    assert urls == [formats.CIFAR10.url]
    assert not (data_dir / "cifar-10-python.tar.gz").exists()
    assert list(data_dir.iterdir()) == []  # no partial file left behind

    # Without download the same call says what is missing instead of reaching the network.
    with pytest.raises(UserError, match="not found"):
        load_dataset("cifar10", data_dir=data_dir)
    assert len(urls) == 1

    layout = dataclasses.replace(formats.CIFAR10, md5=md5sum(archive))
    monkeypatch.setattr(formats, "CIFAR10", layout)
    data = load_dataset("cifar10", data_dir=data_dir, download=True)
    assert_same(data, expected)
    assert (data_dir / "cifar-10-python.tar.gz").is_file()
    load_dataset("cifar10", data_dir=data_dir, download=True)
    assert len(urls) == 2  # present now: not downloaded again


# ----------------------------------------------------------------------------- SVHN


def test_svhn_mat_round_trip(tmp_path: Path) -> None:
    expected = {}
    for split, seed, n in (("train", 3, 6), ("test", 4, 5)):
        x = rng_images(seed, n, (3, 32, 32))
        digits = np.arange(n) % 10
        digits[0] = 0
        stored = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # 10 means 0
        scipy.io.savemat(
            tmp_path / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": stored}
        )
        expected[f"x_{split}"], expected[f"y_{split}"] = x, digits
    data = load_dataset("svhn", data_dir=tmp_path)
    assert_same(data, expected)
    assert data.info.hflip is False and data.info.num_classes == 10


def test_svhn_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="train_32x32.mat not found in"):
        load_dataset("svhn", data_dir=tmp_path)


# ----------------------------------------------------------------------------- TinyImageNet


def make_tinyimagenet(root: Path) -> dict[str, list]:
    folder = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # deliberately unsorted in wnids.txt
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    colors = {"n01": (200, 30, 30), "n02": (30, 200, 30), "n03": (30, 30, 200)}
    train = []
    for wnid in sorted(wnids):  # the loader's order: classes sorted, then files sorted
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for j in range(2):
            color = tuple(c + 10 * j for c in colors[wnid])
            Image.new("RGB", (64, 64), color).save(images / f"{wnid}_{j}.JPEG", quality=95)
            train.append((wnid, color))
    lines, val = [], []
    for j, wnid in enumerate(["n03", "n01", "n02", "n01"]):
        name = f"val_{j}.JPEG"
        if j == 3:  # TinyImageNet has some grayscale JPEGs: they become 3 equal channels
            Image.new("L", (64, 64), 90).save(folder / "val" / "images" / name, quality=95)
            val.append((wnid, (90, 90, 90)))
        else:
            Image.new("RGB", (64, 64), colors[wnid]).save(folder / "val" / "images" / name)
            val.append((wnid, colors[wnid]))
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return {"train": train, "test": val}


def test_tinyimagenet_folder(tmp_path: Path) -> None:
    made = make_tinyimagenet(tmp_path)
    data = load_dataset("tinyimagenet", data_dir=tmp_path)
    info = data.info
    assert info.classes == ("n01", "n02", "n03")
    assert (info.channels, info.image_size, info.num_classes) == (3, 64, 3)
    for split in ("train", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.shape == (len(made[split]), 3, 64, 64)
        for i, (wnid, color) in enumerate(made[split]):
            assert y[i].item() == info.classes.index(wnid)
            mean_color = x[i].float().mean(dim=(1, 2))
            assert torch.allclose(mean_color, torch.tensor(color, dtype=torch.float32), atol=3)


def test_tinyimagenet_missing(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="wnids.txt does not exist"):
        load_dataset("tinyimagenet", data_dir=tmp_path)
    make_tinyimagenet(tmp_path)
    (tmp_path / "tiny-imagenet-200" / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(UserError, match="lacks val/images/val_1.JPEG"):
        load_dataset("tinyimagenet", data_dir=tmp_path)


# ----------------------------------------------------------------------------- npz


def test_npz_round_trip_and_stats(tmp_path: Path) -> None:
    x_train = rng_images(5, 12, (32, 32, 3))
    x_test = rng_images(6, 4, (32, 32, 3))
    y_train, y_test = np.arange(12) % 10, np.arange(4)
    path = tmp_path / "set.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=np.array(CIFAR10_NAMES),
    )
    data = load_dataset(f"npz:{path}")
    expected = {
        "x_train": x_train.transpose(0, 3, 1, 2),
        "y_train": y_train,
        "x_test": x_test.transpose(0, 3, 1, 2),
        "y_test": y_test,
    }
    assert_same(data, expected)
    info = data.info
    assert info.name == f"npz:{path}" and info.classes == tuple(CIFAR10_NAMES)
    # CIFAR-like content still gets statistics computed from its own training split.
    pixels = x_train.astype(np.float64) / 255
    assert info.mean == pytest.approx(tuple(pixels.mean(axis=(0, 1, 2))), abs=1e-5)
    assert info.std == pytest.approx(tuple(pixels.std(axis=(0, 1, 2))), abs=1e-5)
    assert info.hflip and info.crop_padding == 4 and info.cutout == 8
    # A relative path is also looked up under data_dir.
    assert load_dataset("npz:set.npz", data_dir=tmp_path).info.num_classes == 10


def test_npz_grayscale_and_overrides(tmp_path: Path) -> None:
    x_train, x_test = rng_images(7, 5, (28, 28)), rng_images(8, 3, (28, 28))
    path = tmp_path / "digits.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=np.array([0, 1, 2, 3, 4]),
        x_test=x_test,
        y_test=np.array([4, 3, 2]),
        cutout=np.array(6),
    )
    data = load_dataset(f"npz:{path}")
    assert data.x_train.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(data.x_test[:, 0].numpy(), x_test)
    info = data.info
    assert (info.channels, info.num_classes, info.classes) == (1, 5, None)
    assert info.hflip is False and info.crop_padding == 2 and info.cutout == 6


def test_npz_bad_content(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    x = np.zeros((2, 8, 8, 3), dtype=np.float32)
    np.savez(path, x_train=x, y_train=np.zeros(2, int), x_test=x, y_test=np.zeros(2, int))
    with pytest.raises(UserError, match="uint8"):
        load_dataset(f"npz:{path}")
    np.savez(path, x_train=x.astype(np.uint8))
    with pytest.raises(UserError, match="lacks y_train"):
        load_dataset(f"npz:{path}")
    with pytest.raises(UserError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")
    with pytest.raises(UserError, match="needs a path"):
        load_dataset("npz")


# ----------------------------------------------------------------------------- image folders


def make_imagefolder(root: Path, mode: str = "RGB", size: int = 16) -> dict[str, np.ndarray]:
    channels = 3 if mode == "RGB" else 1
    expected: dict[str, list] = {"x_train": [], "y_train": [], "x_test": [], "y_test": []}
    for split, per_class in (("train", 3), ("test", 2)):
        for label, name in enumerate(["cat", "dog"]):
            (root / split / name).mkdir(parents=True)
            for j in range(per_class):
                pixels = rng_images(
                    10 * label + j + (100 if split == "test" else 0), 1, (size, size, channels)
                )[0]
                image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
                image.save(root / split / name / f"{j}.png")
                expected[f"x_{split}"].append(pixels.transpose(2, 0, 1))
                expected[f"y_{split}"].append(label)
    return {k: np.array(v) for k, v in expected.items()}


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_imagefolder_round_trip(tmp_path: Path, mode: str) -> None:
    expected = make_imagefolder(tmp_path / "pets", mode)
    data = load_dataset(f"imagefolder:{tmp_path / 'pets'}")
    assert_same(data, expected)
    assert data.info.classes == ("cat", "dog")
    assert data.info.channels == (3 if mode == "RGB" else 1)


def test_imagefolder_unequal_sizes_fail(tmp_path: Path) -> None:
    make_imagefolder(tmp_path / "pets")
    Image.new("RGB", (20, 16)).save(tmp_path / "pets" / "test" / "dog" / "odd.png")
    with pytest.raises(UserError, match="odd.png is 20x16"):
        load_dataset(f"imagefolder:{tmp_path / 'pets'}")


# ----------------------------------------------------------------------------- cache


def test_cache_is_used_and_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = make_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    load_dataset("cifar10", data_dir=tmp_path)
    caches = list(folder.glob("robustsnn-cache-cifar10-*.npz"))
    assert len(caches) == 1

    def refuse(*args: object) -> None:
        raise AssertionError("decoded again although a cache exists")

    with monkeypatch.context() as patch:
        patch.setattr(formats, "read_cifar", refuse)
        assert_same(load_dataset("cifar10", data_dir=tmp_path), expected)

    # A changed source is decoded again and the stale cache is replaced.
    batch = folder / "test_batch"
    stat = batch.stat()
    os.utime(batch, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load_dataset("cifar10", data_dir=tmp_path)
    fresh = list(folder.glob("robustsnn-cache-cifar10-*.npz"))
    assert len(fresh) == 1 and fresh != caches


def test_cache_falls_back_to_user_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_user_cache: Path
) -> None:
    expected = make_cifar10(tmp_path)
    monkeypatch.setattr(cache, "_writable", lambda folder: folder == private_user_cache)
    load_dataset("cifar10", data_dir=tmp_path)
    assert not list((tmp_path / "cifar-10-batches-py").glob("robustsnn-cache-*"))
    assert len(list(private_user_cache.glob("robustsnn-cache-cifar10-*.npz"))) == 1
    monkeypatch.setattr(formats, "read_cifar", None)  # any decode attempt would fail
    assert_same(load_dataset("cifar10", data_dir=tmp_path), expected)


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    expected = make_cifar10(tmp_path)
    load_dataset("cifar10", data_dir=tmp_path)
    (path,) = (tmp_path / "cifar-10-batches-py").glob("robustsnn-cache-*.npz")
    path.write_bytes(b"truncated")
    assert_same(load_dataset("cifar10", data_dir=tmp_path), expected)


# ----------------------------------------------------------------------------- mnist5k, registry


def test_mnist5k_split_is_fixed_and_stratified() -> None:
    labels = np.repeat(np.arange(10), 500)
    train, test = mnist5k_split(labels)
    again_train, again_test = mnist5k_split(labels)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(test, again_test)
    assert len(train) == 4000 and len(test) == 1000
    assert set(train).isdisjoint(test) and len(set(train) | set(test)) == 5000
    assert np.bincount(labels[test]).tolist() == [100] * 10
    assert labels[test][:10].tolist() == list(range(10))  # classes alternate


def test_mnist5k_embedded_default() -> None:
    data = load_dataset("mnist5k")
    assert (len(data.x_train), len(data.x_test)) == (4000, 1000)
    assert data.x_train.shape[1:] == (1, 28, 28) and data.x_train.dtype == torch.uint8
    assert torch.bincount(data.y_test).tolist() == [100] * 10
    assert torch.bincount(data.y_train).tolist() == [400] * 10
    assert data.x_train.max() == 255 and data.info.crop_padding == 2 and not data.info.hflip
    again = load_dataset("mnist5k")  # second time from the cache
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_train, data.y_train)


def test_registry_and_specs() -> None:
    assert {"mnist5k", "cifar10", "cifar100", "svhn", "tinyimagenet", "npz", "imagefolder"} <= set(
        DATASETS.names()
    )
    with pytest.raises(UserError, match="valid: .*cifar10"):
        load_dataset("imagenet")
    with pytest.raises(UserError, match="takes no ':' argument"):
        load_dataset("cifar10:foo")


def test_dataset_validates_shapes_and_stats() -> None:
    info = DatasetInfo("t", 2, 1, 4, (0.5,), (0.5,), False, 0, 0)
    x = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    y = torch.zeros(3, dtype=torch.int64)
    Dataset(info, x, y, x, y)
    with pytest.raises(ValueError, match="uint8"):
        Dataset(info, x.float(), y, x, y)
    with pytest.raises(ValueError, match="y_test"):
        Dataset(info, x, y, x, y[:2])
    images = rng_images(9, 10, (3, 5, 5))
    mean, std = channel_stats(images, chunk=3)
    assert mean == pytest.approx(tuple((images / 255).mean(axis=(0, 2, 3))), abs=1e-6)
    assert std == pytest.approx(tuple((images / 255).std(axis=(0, 2, 3))), abs=1e-6)
