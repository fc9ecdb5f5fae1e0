"""PNG outputs: sample grids and single faces, as bytes ready for a store (curves: `plots`).

The grid is torchvision's `make_grid(normalize=True, value_range=(-1, 1), padding=2)` followed by
`save_image`, written out here: importing `torchvision.utils` imports torchvision's models and
with them torch._dynamo, about a second of every process's start (the CLI's, each flow run's)."""

from __future__ import annotations

import io
import math

import torch
from PIL import Image


def quantize(x01: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] as 8-bit levels, rounded to nearest (torchvision's save_image)."""
    return x01.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] as the 8-bit pixels (N, H, W, 3) their PNGs hold."""
    return quantize(images.detach().float().cpu().clamp(-1, 1).add(1).div(2)).permute(0, 2, 3, 1)


def to_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """A grid PNG of images (N, 3, H, W) in [-1, 1]; a single image when N == 1.

    Images are laid out `nrow` to a row (default: a square), 2 px of black around and between."""
    images = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    n, c, h, w = images.shape
    if n == 1:
        grid = images[0]
    else:
        pad = 2
        cols = min(nrow or max(1, int(math.ceil(math.sqrt(n)))), n)
        rows = int(math.ceil(n / cols))
        grid = images.new_zeros((c, rows * (h + pad) + pad, cols * (w + pad) + pad))
        for i, image in enumerate(images):
            row, col = divmod(i, cols)
            top, left = pad + row * (h + pad), pad + col * (w + pad)
            grid[:, top:top + h, left:left + w] = image
    pixels = quantize(grid).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="png")
    return buf.getvalue()
