"""The collapse watchdog's false-positive and detection check, on this machine.

    python -m bench.watchdog_check                       # CPU here: 96 synthetic faces
    python -m bench.watchdog_check --steps 2000 --seeds 0,1,2,3

Healthy runs (udacity32 and resnet32-small at toy width, every --seeds seed, at the presets'
rates) and runs driven into collapse (a generator that cannot learn: lr_g 1e-7; learning rates
100x too high) train for --steps with `--watchdog warn` and the default thresholds, so every alarm
is logged and the runs go on. For each run: the alarms (signal, step), the largest D(x) - D(G(z))
of its log windows and its fixed-sample diversity at each checkpoint. A healthy run with an alarm
is a false positive. Writes a JSON record to bench/results/.
"""

from __future__ import annotations

import argparse
import time

from bench.common import work_folder, write_record
from facegan import families
from facegan.loop import Hooks, fit
from facegan.prepare import prepare
from facegan.presets import resolve
from facegan.synthetic import make_faces

KINDS = {  # name: (preset, options, healthy)
    "udacity32": ("udacity32", {}, True),
    "resnet32-small": ("resnet32-small", {"n_dis": 1, "lr_schedule": "constant", "lr_g": 4e-4, "lr_d": 4e-4,
                                          "ema_decay": 0.95}, True),
    "udacity32, lr_g 1e-7": ("udacity32", {"lr_g": 1e-7}, False),
    "udacity32, rates x100": ("udacity32", {"lr_g": 0.02, "lr_d": 0.02}, False),
}


def run_one(dataset: str, run: str, preset: str, options: dict, seed: int, steps: int) -> dict:
    family = families.of_preset(preset)
    settings = resolve(preset, {"model": {"ngf": 16, "ndf": 16}, "batch_size": 32, "steps": steps,
                                "ckpt_every": 50, "log_every": 10, "keep_last": 1, "device": "cpu", "seed": seed,
                                "watchdog": "warn", **options}, table=family.presets)
    cfg = family.config.from_dict({"dataset": dataset, "run": run, **settings})
    rows, lines = [], []
    started = time.monotonic()
    fit(cfg, Hooks(progress=lambda s, t, r: rows.append(r), log=lines.append))
    alarms = [line.split("collapsed at ", 1)[1] for line in lines if "watchdog (warn): collapsed" in line]
    diversity = [float(line.split("diversity ")[1].split()[0]) for line in lines if "sample diversity" in line]
    return {"seconds": time.monotonic() - started, "alarms": alarms,
            "max_gap": max(r["d_real"] - r["d_fake"] for r in rows), "diversity": diversity}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--results", default=None, help="folder for the JSON record (default bench/results)")
    a = p.parse_args(argv)
    tmp = work_folder("facegan-watchdog-")
    raw = make_faces(tmp / "raw" / "img_align_celeba", 96, seed=1)
    prepare(raw, str(tmp / "ds"), resolution=32, workers=2, log=lambda *_: None)
    record, false_positives, healthy_runs = {}, 0, 0
    for name, (preset, options, healthy) in KINDS.items():
        for seed in [int(s) for s in a.seeds.split(",")]:
            out = run_one(str(tmp / "ds"), str(tmp / f"run-{len(record)}"), preset, options, seed, a.steps)
            record[f"{name}, seed {seed}"] = {**out, "healthy": healthy}
            healthy_runs += healthy
            false_positives += healthy and bool(out["alarms"])
            print(f"{name:<24} seed {seed}: {'healthy' if healthy else 'collapse'}  max gap {out['max_gap']:.3f}  "
                  f"diversity {min(out['diversity'], default=0):.2f}..{max(out['diversity'], default=0):.2f}  "
                  f"alarms: {'; '.join(out['alarms'][:2]) or 'none'}{' ...' if len(out['alarms']) > 2 else ''}",
                  flush=True)
    print(f"false positives: {false_positives} of {healthy_runs} healthy runs of {a.steps} steps")
    write_record("watchdog_check", {"steps": a.steps, "runs": record, "false_positives": false_positives,
                                    "healthy_runs": healthy_runs}, a.results)


if __name__ == "__main__":
    main()
