"""A short dcgan64-plus run (EMA, DiffAugment, spectral norm, lazy R1) on the generated face
distribution moves its samples clearly towards the real images in a feature space."""

import time

import pytest

from bench.common import feature_distance, feature_net
from facegan import data
from facegan.config import ModelConfig, TrainConfig
from facegan.loop import Hooks, fit
from facegan.prepare import prepare
from facegan.presets import resolve
from facegan.sample import generate, load_generator


def distances_before_and_after(cfg, real, tmp_path) -> tuple[float, float, object]:
    """The feature-space distance of 96 generated faces to `real` after one step and after the
    run `cfg` (both trained here), and the run's result."""
    net, seeds = feature_net(), list(range(96))
    stop_at_0 = fit(cfg.replace(run=str(tmp_path / "step0"), steps=1), Hooks(log=lambda *_: None))
    before = feature_distance(net, generate(load_generator(stop_at_0.run), seeds), real)
    result = fit(cfg, Hooks(log=lambda *_: None))
    return before, feature_distance(net, generate(load_generator(result.run), seeds), real), result


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere torch emulates
    it much more slowly (a bf16 run took 19+ minutes on such a CPU)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@pytest.mark.parametrize("precision", [
    "fp32",
    pytest.param("bf16", marks=pytest.mark.skipif(not native_bf16_cpu(), reason="this CPU has no native bf16")),
])  # bf16: what GPUs run by default
def test_dcgan64_plus_learns_the_face_distribution(precision, prepared, raw_faces, tmp_path):
    ds = str(tmp_path / "faces64")
    prepare(raw_faces, ds, resolution=64, workers=2, log=lambda *_: None)
    images, _ = data.load(ds)
    real = data.to_unit(images)
    settings = resolve("dcgan64-plus", {
        "model": {"ngf": 16, "ndf": 16}, "batch_size": 32, "steps": 300, "ckpt_every": 300,
        "log_every": 50, "metric_every": 0, "ema_decay": 0.98, "r1_every": 4, "device": "cpu", "seed": 3,
        "precision": precision,
    })
    assert settings["augment"] == "color,translation,cutout" and settings["model"]["spectral_norm"]
    cfg = TrainConfig(dataset=ds, run=str(tmp_path / "run"), **{**settings, "model": ModelConfig(**settings["model"])})
    before, after, result = distances_before_and_after(cfg, real, tmp_path)
    print(f"{precision} feature-space Frechet distance: step 1 {before:.3f} -> step {result.step} {after:.3f}")
    assert after < 0.5 * before, (before, after)


def test_resnet_small_learns_the_face_distribution(raw_faces, tmp_path):
    """The ResNet family's small preset (SNGAN's networks, hinge loss, Adam betas (0, 0.9)) moves
    its EMA generator's faces clearly towards the real ones in 250 steps on the CPU; the
    real-vs-real and noise-vs-real distances are printed beside its figures. A short run's settings:
    one D update per G update at a constant 4e-4 (the presets' 2e-4 decaying over 100k steps, n_dis
    2-5, barely moves in so few steps: measured 18.9 -> 12.1 at 200 steps). Measured: seed 3
    18.9 -> 4.8; with D's two forwards of before (real, fake apart) seeds 3, 7, 11 gave 4.5, 3.9,
    2.8; real half vs half 0.9, noise 17.8. Beside it, the DCGAN preset of the same resolution trained
    for the same wall-clock time: reported, not compared (which is lower moved with the seed in
    bench/learning_race.py; README, "ResNet (SNGAN)")."""
    import torch

    from facegan.config import ResNetConfig, ResNetModelConfig
    from facegan.presets import RESNET_PRESETS

    ds = str(tmp_path / "faces32")
    prepare(raw_faces, ds, resolution=32, workers=2, log=lambda *_: None)
    images, _ = data.load(ds)
    real = data.to_unit(images)
    settings = resolve("resnet32-small", {
        "model": {"ngf": 64, "ndf": 64}, "batch_size": 32, "n_dis": 1, "steps": 250, "ckpt_every": 250,
        "log_every": 50, "ema_decay": 0.95, "lr_schedule": "constant", "lr_g": 4e-4, "lr_d": 4e-4,
        "device": "cpu", "seed": 3,
    }, table=RESNET_PRESETS)
    cfg = ResNetConfig(dataset=ds, run=str(tmp_path / "run"),
                       **{**settings, "model": ResNetModelConfig(**settings["model"])})
    net, started = feature_net(), time.monotonic()
    before, after, result = distances_before_and_after(cfg, real, tmp_path)
    budget = time.monotonic() - started  # the ResNet's wall-clock time (its step-1 run included)
    halves = feature_distance(net, real[:48], real[48:])
    noise = feature_distance(net, torch.rand(96, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1, real)
    # the second figure: the DCGAN preset of the same resolution (udacity32, the seeds' network) given
    # the same wall-clock time on the same faces (steps far beyond what it reaches; max_seconds stops it)
    dcgan = resolve("udacity32", {"batch_size": 32, "steps": 100_000, "ckpt_every": 100_000, "log_every": 50,
                                  "device": "cpu", "seed": 3, "max_seconds": budget})
    dcgan_cfg = TrainConfig(dataset=ds, run=str(tmp_path / "dcgan"),
                            **{**dcgan, "model": ModelConfig(**dcgan["model"])})
    raced = fit(dcgan_cfg, Hooks(log=lambda *_: None))
    dcgan_after = feature_distance(net, generate(load_generator(raced.run), list(range(96))), real)
    print(f"resnet32-small feature-space Frechet distance: step 1 {before:.3f} -> step {result.step} {after:.3f} "
          f"(real half vs half {halves:.3f}, noise {noise:.3f}); udacity32 in the same {budget:.0f} s: "
          f"step {raced.step} {dcgan_after:.3f}")
    assert after < 0.5 * before, (before, after)
    assert raced.stopped and raced.stopped.startswith("time limit")  # the budget, not the steps, ended it
