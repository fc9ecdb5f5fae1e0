"""Sample grids: the same PNG bytes as torchvision's make_grid + save_image, without importing
torchvision where a process only trains, samples or publishes."""

import io
import math
import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from facegan.images import to_png


def torchvision_png(images: torch.Tensor, nrow: int | None = None) -> bytes:
    from torchvision.utils import make_grid, save_image

    nrow = nrow or max(1, int(math.ceil(math.sqrt(len(images)))))
    grid = make_grid(images.float(), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    buf = io.BytesIO()
    save_image(grid, buf, format="png")
    return buf.getvalue()


@pytest.mark.parametrize("count, nrow, size", [(1, None, 32), (2, None, 16), (7, 3, 8), (64, None, 32), (3, 8, 8),
                                               (6, 1, 8), (10, 4, 64)])
def test_grid_png_is_torchvisions(count, nrow, size):
    images = torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(count)) * 1.5  # some clipped
    assert to_png(images, nrow) == torchvision_png(images, nrow)
    assert to_png(images.bfloat16(), nrow) == torchvision_png(images.bfloat16(), nrow)


def test_training_sampling_publishing_and_deploying_import_no_torchvision():
    """torchvision imports its models and torch._dynamo: about a second of every CLI and flow-run
    start, and of `prefect deploy` (which loads every flow). Only scoring FID (facegan.metrics)
    needs torchvision."""
    code = ("import sys, facegan.cli, facegan.loop, facegan.sample, facegan.gallery, facegan.translate, "
            "flows.train_dcgan, flows.nightly_gallery, flows.prepare_celeba, flows.train_cyclegan, flows.evaluate; "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n", out.stdout
