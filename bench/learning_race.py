"""Which preset learns the faces better in the same wall-clock time, on this machine.

    python -m bench.learning_race --seconds 120 --presets udacity32,resnet32-small
    python -m bench.learning_race --seconds 600 --presets dcgan64,resnet64 --device cuda --images 4096

Every preset trains from scratch on the same synthetic faces (the first 3/4 of --images) for
about --seconds: a short timing run gives its seconds per step, and its run gets that many steps
(so a linear learning-rate decay completes, as in a real run). Then its EMA generator's faces are
compared with the held-out quarter in a fixed, randomly initialised conv feature space
(bench.common.feature_net: the real Inception weights cannot be fetched here), beside two
anchors: the training faces against the held-out ones (the floor: what a perfect generator
would score) and uniform noise against them (the ceiling). Lower is better. Each preset is
run with every --seeds seed; the figures are per seed, so the spread is visible.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import feature_distance, feature_net, work_folder, write_record
from bench.preset_speed import ALL, preset_config
from facegan import data, runfolder
from facegan.attributes import TABLE_NAME
from facegan.loop import Hooks, fit
from facegan.prepare import prepare
from facegan.sample import generate, load_generator
from facegan.storage import open_store
from facegan.synthetic import make_faces


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--presets", default="udacity32,resnet32-small", help="comma-separated, one resolution")
    p.add_argument("--seconds", type=float, default=120, help="training time per run")
    p.add_argument("--seeds", default="0,1", help="comma-separated")
    p.add_argument("--images", type=int, default=512, help="synthetic faces (3/4 train, 1/4 held out)")
    p.add_argument("--samples", type=int, default=128, help="generated faces compared")
    p.add_argument("--results", default=None, help="folder for the JSON record (default bench/results)")
    a, extra = p.parse_known_args(argv)  # anything else goes to every preset's command (e.g. --ngf 16)
    a.steps, a.log_every = 10, 5  # the timing run (preset_config reads them)
    names = a.presets.split(",")
    resolutions = {ALL[n]["model"]["resolution"] for n in names}
    if len(resolutions) != 1:
        p.error(f"--presets must share one resolution, not {sorted(resolutions)}")
    res = resolutions.pop()
    tmp = work_folder("facegan-learning-race-")
    raw = make_faces(tmp / "raw" / "img_align_celeba", a.images, seed=11, makeup=0.5)
    train_n = a.images * 3 // 4
    dataset, everything = str(tmp / "train"), str(tmp / "all")
    table = str(raw.parent / TABLE_NAME)
    prepare(raw, dataset, resolution=res, limit=train_n, attributes=table, log=lambda *_: None)
    prepare(raw, everything, resolution=res, attributes=table, log=lambda *_: None)
    images, _ = data.load(everything)
    held_out = data.to_unit(images[train_n:])
    net = feature_net()
    floor = feature_distance(net, data.to_unit(images[:train_n]), held_out)
    noise = feature_distance(net, torch.rand(a.samples, 3, res, res) * 2 - 1, held_out)
    print(f"real (train) vs held out {floor:.4f}; uniform noise vs held out {noise:.4f}")
    rows = []
    for name in names:
        for seed in (int(s) for s in a.seeds.split(",")):
            options = [*extra, "--seed", str(seed)]
            timing = preset_config(name, dataset, str(tmp / "timing" / f"{name}-{seed}"), a, options)
            fit(timing, Hooks(log=lambda *_: None))
            windows = runfolder.read_metrics(open_store(timing.run))[0][1:]  # after the warm-up window
            step_s = statistics.median(timing.batch_size / r["img_per_s"] for r in windows)  # a family from noise
            steps = max(1, int(a.seconds / step_s))
            cfg = preset_config(name, dataset, str(tmp / "runs" / f"{name}-{seed}"), a, options)
            cfg = cfg.replace(steps=steps, ckpt_every=steps, log_every=max(1, steps // 10))
            t0 = time.perf_counter()
            fit(cfg, Hooks(log=lambda *_: None))
            seconds = time.perf_counter() - t0
            faces = generate(load_generator(cfg.run), list(range(a.samples)))
            score = feature_distance(net, faces, held_out)
            rows.append({"preset": name, "seed": seed, "steps": steps, "seconds": seconds, "distance": score})
            print(f"{name:16} seed {seed}: {steps:6d} steps in {seconds:6.1f} s -> {score:.4f}", flush=True)
    for name in names:
        mine = [r["distance"] for r in rows if r["preset"] == name]
        print(f"{name:16} median {statistics.median(mine):.4f} over {len(mine)} seed(s)")
    write_record("learning_race", {"config": {**vars(a), "extra": extra}, "floor": floor, "noise": noise,
                                   "runs": rows}, a.results)


if __name__ == "__main__":
    main()
