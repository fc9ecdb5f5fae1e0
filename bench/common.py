"""Shared benchmark helpers: inputs, timing windows, JSON records."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the figures were measured on."""
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def work_folder(prefix: str, keep: bool = False) -> Path:
    """A new temp folder for a benchmark's faces, datasets and runs, removed when this process ends
    (unless `keep`): repeated benchmarks do not fill the disk."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    if not keep:
        atexit.register(shutil.rmtree, folder, True)
    return folder


def median_rate(times: list[float], items_per_window: int) -> float:
    """Median items/s over timed windows."""
    return statistics.median(items_per_window / t for t in times)


def write_record(name: str, record: dict, folder: str | Path | None = None) -> Path:
    """Save a JSON record under `folder` (default bench/results/) and print where."""
    folder = Path(folder or RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"benchmark": name, "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "machine": machine(), **record}
    path = folder / f"{name}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"record: {path}")
    return path


def export_jpegs(images: np.ndarray, folder: Path, quality: int = 95) -> Path:
    """Write uint8 (N, H, W, 3) images as a folder of JPEGs (the canonical recipe's input)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:06d}.jpg", quality=quality)
    return folder


def feature_net() -> torch.nn.Module:
    """A fixed, randomly initialised conv net (seeded): a cheap stand-in feature space for
    learning checks where Inception's weights cannot be had (tests/test_learning.py, learning_race)."""
    from torch import nn

    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
    )
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5 if p.ndim > 1 else p.data * 0
    return net.eval()


@torch.no_grad()
def feature_distance(net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between two image sets (N, 3, H, W) in [-1, 1] in `net`'s feature space."""
    from facegan.metrics.fid import RunningStats, frechet_distance

    sa, sb = RunningStats(256), RunningStats(256)
    sa.add(net(a))
    sb.add(net(b))
    return frechet_distance(*sa.finish(), *sb.finish())
