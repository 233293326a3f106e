"""Batched augmentation and batch iteration: determinism, ranges, and each operation's effect."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustsnn.data import DatasetInfo, augment, iterate_batches, to_float


def images(n: int = 64, c: int = 3, size: int = 12, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_to_float() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    out = to_float(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([0.0, 0.2, 1.0]))
    with pytest.raises(TypeError):
        to_float(out)


def test_augment_deterministic_per_seed_and_independent_of_global_rng() -> None:
    x = images()
    kwargs = dict(crop_padding=3, hflip=True, cutout=4)
    torch.manual_seed(0)
    a = augment(x, gen(7), **kwargs)
    torch.manual_seed(123)
    torch.rand(10)
    b = augment(x, gen(7), **kwargs)
    c = augment(x, gen(8), **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1


def test_forced_flip_only_is_the_mirror_image() -> None:
    x = images()
    out = augment(x, gen(0), crop_padding=0, hflip=True, cutout=0, flip_prob=1.0)
    assert torch.equal(out, to_float(x.flip(3)))
    same = augment(x, gen(0), crop_padding=0, hflip=False, cutout=0)
    assert torch.equal(same, to_float(x))


def test_random_flip_is_per_sample() -> None:
    x = images(n=200)
    out = augment(x, gen(1), crop_padding=0, hflip=True, cutout=0)
    plain = (out == to_float(x)).flatten(1).all(1)
    mirrored = (out == to_float(x.flip(3))).flatten(1).all(1)
    assert bool((plain | mirrored).all())
    assert 60 < int(mirrored.sum()) < 140


def test_crop_is_a_zero_padded_translation() -> None:
    pad, x = 2, images(n=100, size=8)
    out = augment(x, gen(2), crop_padding=pad, hflip=False, cutout=0)
    padded = F.pad(to_float(x), (pad, pad, pad, pad))
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert matches, f"sample {i} is not a translation of its input"
        offsets.add(matches[0])
    assert len(offsets) > 10  # offsets vary across the batch


def test_cutout_zeroes_one_square_per_image() -> None:
    size, hole = 16, 6
    x = torch.full((50, 3, size, size), 255, dtype=torch.uint8)
    out = augment(x, gen(3), crop_padding=0, hflip=False, cutout=hole)
    zero = out[:, 0] == 0
    assert torch.equal(zero, (out == 0).all(1))  # same hole in every channel
    assert bool((out[~zero.unsqueeze(1).expand_as(out)] == 1).all())  # the rest is untouched
    full_holes = 0
    for mask in zero:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= hole and 1 <= len(cols) <= hole
        assert int(mask.sum()) == len(rows) * len(cols)  # a (possibly clipped) rectangle
        assert rows.max() - rows.min() + 1 == len(rows)
        full_holes += int(mask.sum()) == hole * hole
    assert full_holes > 10


def test_iterate_batches_in_order_without_generator() -> None:
    x, y = images(n=10), torch.arange(10)
    batches = list(iterate_batches(x, y, 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert torch.equal(torch.cat([b[0] for b in batches]), to_float(x))
    assert [len(b[1]) for b in iterate_batches(x, y, 4, drop_last=True)] == [4, 4]


def test_iterate_batches_shuffles_with_generator_and_keeps_pairs() -> None:
    n = 30
    y = torch.arange(n)
    x = y.to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    first = list(iterate_batches(x, y, 8, generator=gen(5)))
    labels = torch.cat([b[1] for b in first])
    assert sorted(labels.tolist()) == list(range(n)) and labels.tolist() != list(range(n))
    for xb, yb in first:
        assert torch.equal(xb[:, 0, 0, 0], yb.float() / 255)
    again = torch.cat([b[1] for b in iterate_batches(x, y, 8, generator=gen(5))])
    assert torch.equal(labels, again)


def test_iterate_batches_augments_with_dataset_info() -> None:
    info = DatasetInfo("t", 10, 3, 12, (0.5,) * 3, (0.5,) * 3, True, 2, 4)
    x, y = images(n=20), torch.arange(20) % 10
    out = [xb for xb, _ in iterate_batches(x, y, 7, generator=gen(6), augment_info=info)]
    again = [xb for xb, _ in iterate_batches(x, y, 7, generator=gen(6), augment_info=info)]
    assert all(torch.equal(a, b) for a, b in zip(out, again, strict=True))
    assert all(b.dtype == torch.float32 and b.min() >= 0 and b.max() <= 1 for b in out)
    with pytest.raises(ValueError, match="generator"):
        iterate_batches(x, y, 7, augment_info=info)
