"""`facegan sample` of many faces (50k for an outside FID tool), side by side in one invocation:

(a) the way `save_samples` worked until session 27: every face generated first, then the grid of
    all of them, then each face encoded and written in turn;
(b) `facegan.sample.save_samples`: a batch at a time, faces encoded and written by WRITERS
    threads, the grid of the first 64.

Each runs in its own process (the same generator: a DCGAN of the default width at `--resolution`,
seeded, untrained), into a fresh folder of `--store` (a local folder by default; an s3:// prefix
for S3's PUT latency); the record has each one's seconds and peak resident memory.

    python -m bench.sample_speed [--count 5000] [--resolution 64] [--store s3://bucket/bench]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid

import torch

from bench.common import work_folder, write_record
from facegan.config import TrainConfig
from facegan.images import to_png
from facegan.models import Generator
from facegan.sample import LoadedGenerator, face_pngs, generate, interpolation_png, save_samples
from facegan.storage import open_store

WAYS = ("all at once, one write at a time", "facegan: a batch at a time, threaded writes")


def generator(resolution: int) -> LoadedGenerator:
    """The same untrained generator in every process (seed 0)."""
    torch.manual_seed(0)
    cfg = TrainConfig.from_dict({"dataset": "unused-dataset", "run": "unused-run", "model": {"resolution": resolution}})
    return LoadedGenerator(Generator(cfg.model).eval(), cfg, 0, "G_ema")


def all_at_once(gen: LoadedGenerator, out: str, count: int) -> None:
    """(a): as `save_samples` was (less its record and lease, which cost the same either way)."""
    store = open_store(out)
    images = generate(gen, range(count))
    files = {"grid.png": to_png(images), **face_pngs(images), "interpolation.png": interpolation_png(gen, 0, 1, 8)}
    for key, data in files.items():
        store.put_bytes(key, data)


def one(way: int, out: str, count: int, resolution: int) -> None:
    gen = generator(resolution)
    if way == 0:
        all_at_once(gen, out, count)
    else:
        save_samples(gen, out, count)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--resolution", type=int, default=64, choices=(32, 64, 128))
    p.add_argument("--store", default=None, help="where the samples go (default: a temp folder)")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a child: run way N into --store
    a = p.parse_args()
    if a.one is not None:
        one(a.one, a.store, a.count, a.resolution)
        return
    root = a.store or str(work_folder("facegan-sample-bench-"))
    rows = []
    for way, name in enumerate(WAYS):
        out = f"{root.rstrip('/')}/{uuid.uuid4().hex[:8]}-{way}"
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "bench.sample_speed", "--one", str(way), "--store", out,
                                 "--count", str(a.count), "--resolution", str(a.resolution)])
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{name}: exited {os.waitstatus_to_exitcode(status)}")
        rows.append({"way": name, "seconds": round(seconds, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024)})
    for row in rows:
        print(f"{row['way']:48s} {row['seconds']:8.2f} s  {rows[0]['seconds'] / row['seconds']:5.2f}x  "
              f"peak RSS {row['peak_rss_mib']} MiB")
    write_record("sample_speed", {"count": a.count, "resolution": a.resolution, "store": root, "ways": rows})


if __name__ == "__main__":
    main()
