"""Images/s of each preset's own networks and batch on one device, and what the preset's whole
run takes at that rate: the figure to plan GPU time and cost with.

    python -m bench.preset_speed --device cuda                      # every preset, 300 steps each
    python -m bench.preset_speed --device cuda --presets dcgan64,cyclegan64 --steps 600

Each preset trains `--steps` steps through the same config the CLI builds (`facegan train
--preset` / `facegan translate train --preset`) on synthetic faces with their makeup labels, with
no checkpoint or FID inside the run; the figure is the median `img_per_s` of its log windows after
the first (warm-up: cuDNN autotuning, allocator). The whole-run time is the preset's steps at that
rate, so a lower bound: checkpoints (see train_throughput) and FID evaluations come on top.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import write_record
from facegan import runfolder
from facegan.attributes import TABLE_NAME
from facegan.cli import build_parser, family_in, given_options
from facegan.loop import Hooks, config_for_run, fit
from facegan.prepare import prepare
from facegan.presets import PRESETS, TRANSLATE_PRESETS
from facegan.storage import open_store
from facegan.synthetic import make_faces

ALL = {**PRESETS, **TRANSLATE_PRESETS}


def preset_rate(preset: str, dataset: str, run: str, a: argparse.Namespace, extra: list[str]) -> tuple[dict, float]:
    """Train `preset` for a.steps steps; its resolved settings and median img/s after the first window."""
    swap = preset in TRANSLATE_PRESETS
    args = ["--preset", preset, "--dataset", dataset, "--run", run, "--steps", str(a.steps),
            "--ckpt-every", str(10**9), "--log-every", str(a.log_every), "--device", a.device, *extra]
    if swap:
        args = ["translate", "train", *args, "--attribute", "Heavy_Makeup"]
    else:
        args = ["train", *args, "--metric-every", "0"]
    parsed = build_parser(family_in(args)).parse_args(args)
    cfg = config_for_run(parsed.dataset, parsed.run, parsed.preset, given_options(parsed), parsed.family)
    fit(cfg, Hooks(log=lambda *_: None))
    rows, _ = runfolder.read_metrics(open_store(run))
    rates = [r["img_per_s"] for r in rows[1:]] or [r["img_per_s"] for r in rows]
    return cfg.to_dict(), statistics.median(rates)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--presets", default=",".join(ALL), help="comma-separated")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--log-every", type=int, default=100, help="steps per timing window")
    p.add_argument("--images", type=int, default=256, help="synthetic faces to train on")
    p.add_argument("--results", default=None, help="folder for the JSON record (default bench/results)")
    a, extra = p.parse_known_args(argv)  # anything else goes to every preset's command (e.g. --ngf 8)
    names = a.presets.split(",")
    for name in names:
        if name not in ALL:
            p.error(f"--presets: {name!r} is not a preset ({', '.join(ALL)})")
    tmp = Path(tempfile.mkdtemp(prefix="facegan-preset-speed-"))
    raw = make_faces(tmp / "raw" / "img_align_celeba", a.images, seed=5, makeup=0.5)
    datasets: dict[int, str] = {}
    rows = []
    print(f"{'preset':14} {'batch':>5} {'img/s':>9} {'steps':>7} {'whole run':>10}")
    for name in names:
        res = ALL[name]["model"]["resolution"]
        if res not in datasets:
            datasets[res] = str(tmp / f"faces-{res}")
            prepare(raw, datasets[res], resolution=res, attributes=str(raw.parent / TABLE_NAME), log=lambda *_: None)
        settings, rate = preset_rate(name, datasets[res], str(tmp / "runs" / name), a, extra)
        full_steps = ALL[name]["steps"]
        minutes = full_steps * settings["batch_size"] / rate / 60
        rows.append({"preset": name, "batch_size": settings["batch_size"], "img_per_s": rate,
                     "preset_steps": full_steps, "whole_run_minutes": minutes, "settings": settings})
        print(f"{name:14} {settings['batch_size']:5d} {rate:9.1f} {full_steps:7d} {minutes:8.1f} min", flush=True)
    write_record("preset_speed", {"config": {**vars(a), "extra": extra}, "presets": rows}, a.results)


if __name__ == "__main__":
    main()
