"""A short dcgan64-plus run (EMA, DiffAugment, spectral norm, lazy R1) on the generated face
distribution moves its samples clearly towards the real images in a feature space."""

import pytest
import torch
from torch import nn

from facegan import data
from facegan.config import ModelConfig, TrainConfig
from facegan.loop import Hooks, fit
from facegan.metrics.fid import RunningStats, frechet_distance
from facegan.prepare import prepare
from facegan.presets import resolve
from facegan.sample import generate, load_generator


def feature_net() -> nn.Module:
    """A fixed, randomly initialised conv net (seeded): a cheap stand-in feature space."""
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
        nn.Conv2d(64, 64, 4, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
    )
    for p in net.parameters():
        p.data = torch.randn(p.shape, generator=g) * (2.0 / p[0].numel()) ** 0.5 if p.ndim > 1 else p.data * 0
    return net.eval()


@torch.no_grad()
def fd(net, a: torch.Tensor, b: torch.Tensor) -> float:
    sa, sb = RunningStats(256), RunningStats(256)
    sa.add(net(a))
    sb.add(net(b))
    return frechet_distance(*sa.finish(), *sb.finish())


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
    net = feature_net()
    seeds = list(range(96))
    stop_at_0 = fit(cfg.replace(run=str(tmp_path / "step0"), steps=1), Hooks(log=lambda *_: None))
    before = fd(net, generate(load_generator(stop_at_0.run), seeds), real)
    result = fit(cfg, Hooks(log=lambda *_: None))
    after = fd(net, generate(load_generator(result.run), seeds), real)
    print(f"{precision} feature-space Frechet distance: step 1 {before:.3f} -> step {result.step} {after:.3f}")
    assert after < 0.5 * before, (before, after)
