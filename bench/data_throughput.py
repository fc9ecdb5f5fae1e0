"""Data path figures, side by side in one invocation:

(a) `facegan.prepare.prepare` images/s against a plain one-process PIL open-crop-resize loop over
    the same raw CelebA-shaped JPEGs;
(b) seconds from a stored dataset of CelebA size (202,599 images at 64 px, generated) to a ready
    uint8 tensor on the device, against decoding the same images from a JPEG folder (with a
    process pool over all cores, the faster form of the baseline).

    python -m bench.data_throughput [--raw 2000] [--count 202599] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import export_jpegs, write_record
from facegan import data
from facegan.prepare import SHARD_SIZE, crop_box, prepare, write_manifest, write_shard
from facegan.runtime import synchronize, use_device
from facegan.storage import open_store
from facegan.synthetic import make_faces


def plain_pil_loop(folder: Path, resolution: int) -> np.ndarray:
    """The baseline: one process, open, crop the face box, resize, collect."""
    out = []
    for path in sorted(folder.glob("*.jpg")):
        img = Image.open(path).convert("RGB")
        img = img.crop(crop_box(img.size)).resize((resolution, resolution), Image.Resampling.LANCZOS)
        out.append(np.asarray(img, dtype=np.uint8))
    return np.stack(out)


def _decode(paths: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths])


def decode_folder(folder: Path, device: torch.device) -> torch.Tensor:
    paths = [str(p) for p in sorted(folder.glob("*.jpg"))]
    chunks = [paths[i:i + 2048] for i in range(0, len(paths), 2048)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        arrays = list(pool.map(_decode, chunks))
    return torch.from_numpy(np.concatenate(arrays)).to(device)


class ShardWriter:
    """Writes a stream of uint8 images (N, R, R, 3) as fixed-size shards, then the manifest (last)."""

    def __init__(self, out_uri: str, resolution: int, shard_size: int = SHARD_SIZE) -> None:
        self.store = open_store(out_uri)
        self.resolution = resolution
        self.shard_size = shard_size
        self.shards: list[dict] = []
        self._pending: list[np.ndarray] = []
        self._pending_n = 0

    def add(self, images: np.ndarray) -> None:
        """Queue images; full shards are written as they fill."""
        if len(images):
            self._pending.append(images)
            self._pending_n += len(images)
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        while self._pending_n >= self.shard_size or (final and self._pending_n):
            block = np.concatenate(self._pending)
            shard, rest = block[: self.shard_size], block[self.shard_size :]
            self._pending, self._pending_n = ([rest] if len(rest) else []), len(rest)
            self.shards.append(write_shard(self.store, f"shard-{len(self.shards):05d}.npy", shard))

    def finish(self, **fields) -> dict:
        """Write the last shard and `manifest.json` (with `fields` such as source, skipped)."""
        self._flush(final=True)
        return write_manifest(self.store, self.resolution, self.shards, **fields)



def synth_celeba_size(pool_images: np.ndarray, count: int, seed: int = 0):
    """CelebA-size stand-in: base faces with per-image noise, in chunks of 8192."""
    rng = np.random.default_rng(seed)
    for start in range(0, count, 8192):
        n = min(8192, count - start)
        base = pool_images[rng.integers(0, len(pool_images), n)].astype(np.int16)
        noise = rng.integers(-12, 13, size=base.shape, dtype=np.int16)
        yield np.clip(base + noise, 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--raw", type=int, default=2000, help="raw CelebA-shaped JPEGs for (a)")
    p.add_argument("--count", type=int, default=202_599, help="dataset size for (b)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--keep", action="store_true", help="keep the temp folder")
    p.add_argument("--results", default=None, help="folder for the JSON record (default bench/results)")
    a = p.parse_args(argv)
    device = use_device(a.device)
    tmp = Path(tempfile.mkdtemp(prefix="facegan-databench-"))
    try:
        # (a) prepare vs the plain loop, same files
        raw = make_faces(tmp / "raw", a.raw)
        t = time.perf_counter()
        plain = plain_pil_loop(raw, a.resolution)
        plain_s = time.perf_counter() - t
        t = time.perf_counter()
        result = prepare(raw, str(tmp / "prepared"), resolution=a.resolution, log=lambda *_: None)
        prep_s = time.perf_counter() - t
        assert result.manifest["count"] == len(plain)
        print(f"(a) plain PIL loop (1 process): {len(plain) / plain_s:8.0f} img/s")
        print(f"    facegan prepare ({os.cpu_count()} procs, scaled JPEG decode): {a.raw / prep_s:8.0f} img/s   "
              f"ratio {plain_s / prep_s:.2f}x")

        # (b) stored CelebA-size dataset -> device tensor, vs decoding a JPEG folder of the same images
        pool_images, _ = data.load(str(tmp / "prepared"))
        writer = ShardWriter(str(tmp / "celeba-size"), a.resolution)
        for chunk in synth_celeba_size(pool_images.numpy(), a.count):
            writer.add(chunk)
        writer.finish(source="bench: synthetic CelebA-size")
        t = time.perf_counter()
        tensor, m = data.load(str(tmp / "celeba-size"), device=device)
        synchronize(device)
        load_s = time.perf_counter() - t
        assert tensor.shape == (a.count, a.resolution, a.resolution, 3)
        export_jpegs(tensor.cpu().numpy(), tmp / "jpeg")
        del tensor
        t = time.perf_counter()
        decoded = decode_folder(tmp / "jpeg", device)
        synchronize(device)
        jpeg_s = time.perf_counter() - t
        assert decoded.shape[0] == a.count
        print(f"(b) {a.count} images at {a.resolution}px to a {device} tensor: stored dataset (sha256-checked) "
              f"{load_s:.2f}s, JPEG folder ({os.cpu_count()} procs) {jpeg_s:.2f}s   ratio {jpeg_s / load_s:.2f}x")
        write_record("data_throughput", {
            "device": str(device), "config": vars(a),
            "prepare": {"plain_img_s": len(plain) / plain_s, "facegan_img_s": a.raw / prep_s,
                        "ratio": plain_s / prep_s},
            "load": {"count": a.count, "bytes": sum(s["count"] for s in m["shards"]) * a.resolution ** 2 * 3,
                     "stored_s": load_s, "jpeg_folder_s": jpeg_s, "ratio": jpeg_s / load_s},
        }, a.results)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
