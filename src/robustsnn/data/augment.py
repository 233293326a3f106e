"""Batches and batched augmentation on uint8 image tensors.

Every operation works on a whole batch at once (no per-sample Python), on whatever device the
batch lives on, and draws all its randomness from an explicit `torch.Generator`: the same seed
gives the same batches on the same device, whatever else the program does with the global RNG.
Random numbers are drawn on the generator's device and then moved, so a CPU generator can drive
augmentation of a batch on an accelerator.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from robustsnn.data.types import DatasetInfo


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) -> float32 in [0, 1]; the only conversion the package uses."""
    if x_uint8.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {x_uint8.dtype}")
    return x_uint8.to(torch.float32).div_(255.0)


def _randint(high: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    values = torch.randint(0, high, (n,), generator=generator, device=generator.device)
    return values.to(device)


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int) -> torch.Tensor:
    """Per-sample random crop of the zero-padded batch back to its own size.

    The batch is padded once; each sample's window is then gathered from the flattened padded
    image at that sample's offset (one `torch.gather` for the whole batch).
    """
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded_w = w + 2 * padding
    padded = x.new_zeros((n, c, h + 2 * padding, padded_w))
    padded[:, :, padding : padding + h, padding : padding + w] = x
    top = _randint(2 * padding + 1, n, generator, x.device)
    left = _randint(2 * padding + 1, n, generator, x.device)
    rows = torch.arange(h, device=x.device)[:, None]
    cols = torch.arange(w, device=x.device)[None, :]
    window = (rows * padded_w + cols).reshape(-1)  # flat offsets of a window at (0, 0)
    index = (top * padded_w + left)[:, None] + window[None, :]  # [n, h * w]
    flat = padded.reshape(n, c, -1)
    return torch.gather(flat, 2, index[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)


def random_hflip(x: torch.Tensor, generator: torch.Generator, prob: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``prob`` (independently per sample)."""
    if prob <= 0:
        return x
    flip = torch.rand(len(x), generator=generator, device=generator.device) < prob
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)


def random_cutout(x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """Zero one ``size`` x ``size`` square per image (DeVries & Taylor, 2017).

    The square's center is uniform over the image, so the hole may be clipped at the border.
    """
    if size <= 0:
        return x
    n, _, h, w = x.shape
    top = _randint(h, n, generator, x.device) - size // 2
    left = _randint(w, n, generator, x.device) - size // 2
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_rows = (ys >= top[:, None]) & (ys < top[:, None] + size)  # [n, h]
    in_cols = (xs >= left[:, None]) & (xs < left[:, None] + size)  # [n, w]
    hole = in_rows[:, :, None] & in_cols[:, None, :]  # [n, h, w]
    return x.masked_fill(hole[:, None], 0)


def augment(
    x_uint8: torch.Tensor,
    generator: torch.Generator,
    *,
    crop_padding: int,
    hflip: bool,
    cutout: int,
    flip_prob: float = 0.5,
) -> torch.Tensor:
    """Random crop (zero padding), random horizontal flip, cutout; returns float32 in [0, 1].

    Works on uint8 until the end (less memory traffic); ``flip_prob`` is the per-sample flip
    probability when ``hflip`` is on.
    """
    if x_uint8.dim() != 4:
        raise ValueError(f"augment expects a batch [N, C, H, W], got shape {list(x_uint8.shape)}")
    if crop_padding < 0 or cutout < 0:
        raise ValueError(f"crop_padding and cutout must be >= 0, got {crop_padding}, {cutout}")
    x = random_crop(x_uint8, generator, crop_padding)
    if hflip:
        x = random_hflip(x, generator, flip_prob)
    x = random_cutout(x, generator, cutout)
    return to_float(x)


def iterate_batches(
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    device: str | torch.device = "cpu",
    augment_info: DatasetInfo | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (float images in [0, 1], labels) batches on ``device``.

    With a generator the order is a fresh permutation (``torch.randperm``) per call; without
    one it is the stored order. With ``augment_info`` each batch is augmented as that dataset
    allows (crop/flip/cutout), which needs a generator.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(x_uint8) != len(y):
        raise ValueError(f"{len(x_uint8)} images but {len(y)} labels")
    if augment_info is not None and generator is None:
        raise ValueError("augmentation needs a generator: pass generator=torch.Generator()")
    order = None
    if generator is not None:
        order = torch.randperm(len(x_uint8), generator=generator, device=generator.device)
    return _batches(
        x_uint8, y, batch_size, order, generator, torch.device(device), augment_info, drop_last
    )


def _batches(
    x_uint8: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    order: torch.Tensor | None,
    generator: torch.Generator | None,
    device: torch.device,
    augment_info: DatasetInfo | None,
    drop_last: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(x_uint8)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            xb, yb = x_uint8[start : start + batch_size], y[start : start + batch_size]
        else:
            index = order[start : start + batch_size]
            xb, yb = x_uint8[index.to(x_uint8.device)], y[index.to(y.device)]
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        if augment_info is not None and generator is not None:
            xf = augment(
                xb,
                generator,
                crop_padding=augment_info.crop_padding,
                hflip=augment_info.hflip,
                cutout=augment_info.cutout,
            )
        else:
            xf = to_float(xb)
        yield xf, yb
