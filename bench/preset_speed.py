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
import dataclasses
import statistics

from torch.utils.flop_counter import FlopCounterMode

from bench.common import work_folder, write_record
from facegan import data, families, runfolder
from facegan import distributed as dist
from facegan.attributes import TABLE_NAME
from facegan.cli import build_parser, family_in, given_options
from facegan.loop import Hooks, Setup, config_for_run, fit
from facegan.prepare import prepare
from facegan.runtime import Runtime, seed_everything
from facegan.storage import open_store
from facegan.synthetic import make_faces

ALL = {name: settings for family in families.REGISTRY.values() for name, settings in family.presets.items()}


def preset_config(preset: str, dataset: str, run: str, a: argparse.Namespace, extra: list[str]):
    """The config the CLI builds for `preset` (of any family) with this benchmark's settings."""
    family = families.of_preset(preset)
    args = ["train", "--family", family.name, "--preset", preset, "--dataset", dataset, "--run", run,
            "--steps", str(a.steps), "--ckpt-every", str(10**9), "--log-every", str(a.log_every),
            "--device", a.device, "--metric-every", "0", *extra]
    if "attribute" in {f.name for f in dataclasses.fields(family.config)}:
        args += ["--attribute", "Heavy_Makeup"]
    parsed = build_parser(family_in(args)).parse_args(args)
    return config_for_run(parsed.dataset, parsed.run, parsed.preset, given_options(parsed), parsed.family)


def built_recipe(cfg, rt: Runtime | None = None):
    """`cfg`'s family recipe as `facegan.loop.fit` builds it for one process (same seed: same
    initial weights), on `rt` (default: the config's device and precision), its rates at step 1."""
    rt = rt or Runtime.create(cfg.device, cfg.precision)
    manifest = data.read_manifest(open_store(cfg.dataset))
    images, _ = data.load(cfg.dataset, device=rt.device, manifest=manifest)
    seed_everything(cfg.seed)
    recipe = families.of_config(cfg).recipes().build(Setup(cfg, rt, dist.World(), images, manifest, lambda *_: None))
    recipe.learning_rates(1)
    return recipe


def step_flops(cfg) -> tuple[int, int]:
    """FLOPs of one training step of `cfg`'s recipe (forward and backward of every network it
    updates), counted by torch.utils.flop_counter, and the images that step trains on (what
    img/s counts: a swap's step counts both domains' batches)."""
    recipe = built_recipe(cfg)
    with FlopCounterMode(display=False) as counter:
        recipe.step(1, recipe.calls)
    return counter.get_total_flops(), recipe.images_per_step


def preset_rate(preset: str, dataset: str, run: str, a: argparse.Namespace, extra: list[str]) -> tuple[dict, float]:
    """Train `preset` for a.steps steps; its resolved settings and median img/s after the first window."""
    cfg = preset_config(preset, dataset, run, a, extra)
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
    tmp = work_folder("facegan-preset-speed-")
    raw = make_faces(tmp / "raw" / "img_align_celeba", a.images, seed=5, makeup=0.5)
    datasets: dict[int, str] = {}
    rows = []
    print(f"{'preset':14} {'batch':>5} {'img/s':>9} {'TFLOP/step':>10} {'steps':>7} {'whole run':>10}")
    for name in names:
        res = ALL[name]["model"]["resolution"]
        if res not in datasets:
            datasets[res] = str(tmp / f"faces-{res}")
            prepare(raw, datasets[res], resolution=res, attributes=str(raw.parent / TABLE_NAME), log=lambda *_: None)
        settings, rate = preset_rate(name, datasets[res], str(tmp / "runs" / name), a, extra)
        flops, images = step_flops(preset_config(name, datasets[res], str(tmp / "flops" / name), a, extra))
        full_steps = ALL[name]["steps"]
        minutes = full_steps / (rate / images) / 60
        rows.append({"preset": name, "batch_size": settings["batch_size"], "img_per_s": rate, "step_flops": flops,
                     "preset_steps": full_steps, "whole_run_minutes": minutes, "settings": settings})
        print(f"{name:14} {settings['batch_size']:5d} {rate:9.1f} {flops / 1e12:10.3f} {full_steps:7d} "
              f"{minutes:8.1f} min", flush=True)
    write_record("preset_speed", {"config": {**vars(a), "extra": extra}, "presets": rows}, a.results)


if __name__ == "__main__":
    main()
