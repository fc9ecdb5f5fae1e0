"""PNG outputs: sample grids and single faces, as bytes ready for a store (curves: `plots`)."""

from __future__ import annotations

import io
import math

import torch
from torchvision.utils import make_grid, save_image


def to_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    """A grid PNG of images (N, 3, H, W) in [-1, 1]; a single image when N == 1."""
    images = images.detach().float().cpu()
    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    grid = make_grid(images, nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    return buf.getvalue()
