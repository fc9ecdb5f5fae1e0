"""Shared benchmark helpers: inputs, timing windows, JSON records."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
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
