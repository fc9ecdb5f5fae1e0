"""Training images/s: facegan's trainer against the canonical recipe (bench/baseline.py), same
networks, batch size and device, in one invocation; plus facegan with checkpointing to a store
every N steps against without, and those checkpoints without TensorBoard event files and without
the collapse watchdog's look (each on by default), to show what each costs the training step.
Prints the figures and their ratios, writes a JSON record.

    python -m bench.train_throughput                      # CPU here; CUDA when available
    python -m bench.train_throughput --device cuda --compile --ckpt-every 500
"""

from __future__ import annotations

import argparse
import time

import torch

from bench import baseline
from bench.common import export_jpegs, median_rate, work_folder, write_record
from facegan import data
from facegan.config import ModelConfig, TrainConfig
from facegan.loop import Hooks, fit
from facegan.prepare import prepare
from facegan.runtime import autocast_dtype, use_device
from facegan.synthetic import make_faces


def facegan_windows(cfg: TrainConfig, warmup: int, window_steps: int) -> tuple[list[float], float | None]:
    """Window times from the trainer's own progress hook (it syncs once per log interval)."""
    marks: list[tuple[int, float]] = []
    result = fit(cfg, Hooks(progress=lambda s, t, m: marks.append((s, time.perf_counter())), log=lambda *_: None))
    marks = [(s, t) for s, t in marks if s >= warmup]
    full = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False) if b[0] - a[0] == window_steps]
    return full, result.compile_seconds  # a last, shorter window (steps not a multiple) is left out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--images", type=int, default=2048, help="dataset size (JPEG folder and shards)")
    p.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--window-steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--ckpt-every", type=int, default=10, help="checkpoint interval for the third figure")
    p.add_argument("--store", default=None, help="store URI for checkpoints (default: a temp folder)")
    p.add_argument("--compile", action="store_true", help="facegan with torch.compile")
    p.add_argument("--precision", default="auto", help="facegan's precision: auto, bf16 or fp32")
    p.add_argument("--results", default=None, help="folder for the JSON record (default bench/results)")
    a = p.parse_args(argv)
    device = use_device(a.device)
    model = ModelConfig(resolution=a.resolution, ngf=a.ngf, ndf=a.ndf)
    tmp = work_folder("facegan-bench-")
    print(f"device {device}, DCGAN-{a.resolution} ngf={a.ngf} ndf={a.ndf}, batch {a.batch}, {a.images} images")

    # the same images for both: prepared shards for facegan, a JPEG folder for the baseline
    raw = make_faces(tmp / "raw", a.images)
    prepare(raw, str(tmp / "ds"), resolution=a.resolution, log=lambda *_: None)
    images, _ = data.load(str(tmp / "ds"))
    jpegs = export_jpegs(images.numpy(), tmp / "jpeg")

    total = a.warmup + a.windows * a.window_steps
    base_times = baseline.run(jpegs, model, a.batch, device, a.workers, a.windows, a.window_steps, a.warmup)
    base = median_rate(base_times, a.window_steps * a.batch)

    def cfg(run: str, ckpt_every: int, **options) -> TrainConfig:
        return TrainConfig(dataset=str(tmp / "ds"), run=run, model=model, batch_size=a.batch, steps=total,
                           log_every=a.window_steps, ckpt_every=ckpt_every, keep_last=2, device=str(device),
                           compile=a.compile, precision=a.precision, ema_decay=0.999, **options)

    # log_every == window_steps and warmup a multiple of it: windows line up with the baseline's
    fast_times, compile_s = facegan_windows(cfg(str(tmp / "run-plain"), 10**9), a.warmup, a.window_steps)
    fast = median_rate(fast_times, a.window_steps * a.batch)
    store = a.store or str(tmp / "store")
    ck_times, _ = facegan_windows(cfg(f"{store}/runs/bench-ckpt", a.ckpt_every), a.warmup, a.window_steps)
    ck = median_rate(ck_times, a.window_steps * a.batch)
    without = {}  # the checkpointing run without one of its default parts, and its window times
    for name, option in (("tensorboard", {"tensorboard": False}), ("watchdog", {"watchdog": "off"})):
        times, _ = facegan_windows(cfg(f"{store}/runs/bench-ckpt-no-{name}", a.ckpt_every, **option), a.warmup,
                                   a.window_steps)
        without[name] = (median_rate(times, a.window_steps * a.batch), times)

    print(f"baseline (JPEG DataLoader x{a.workers} workers, fp32, eager, sync/step): {base:8.1f} img/s")
    print(f"facegan  (device-resident uint8, {'compiled' if a.compile else 'eager'}"
          f"{', bf16' if autocast_dtype(a.precision, device) else ', fp32'}):        {fast:8.1f} img/s   "
          f"ratio {fast / base:.2f}x")
    if compile_s is not None:
        print(f"torch.compile: first step took {compile_s:.1f}s (not in the figure)")
    print(f"facegan with a checkpoint every {a.ckpt_every} steps to {store}: {ck:8.1f} img/s   "
          f"cost {100 * (1 - ck / fast):.1f}%")
    for name, (rate, _) in without.items():
        print(f"  the same without {name:<11}: {rate:8.1f} img/s   {name} costs {100 * (1 - ck / rate):.1f}% "
              "of that run's step")
    write_record("train_throughput", {
        "device": str(device), "config": vars(a), "baseline_img_s": base, "facegan_img_s": fast,
        "ratio": fast / base, "facegan_ckpt_img_s": ck, "ckpt_cost_fraction": 1 - ck / fast,
        "compile_seconds": compile_s, "windows_s": {"baseline": base_times, "facegan": fast_times,
                                                    "facegan_ckpt": ck_times,
                                                    **{f"facegan_ckpt_no_{k}": t for k, (_, t) in without.items()}},
        **{f"facegan_ckpt_no_{k}_img_s": r for k, (r, _) in without.items()},
        "torch_threads": torch.get_num_threads(),
    }, a.results)


if __name__ == "__main__":
    main()
