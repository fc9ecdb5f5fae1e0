"""The ResNet family (SNGAN's recipe): its networks at every size, its n_dis schedule, exact
resume after a stop and after kill -9, and a step that never reads back from the device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import assert_device_rates, assert_states_equal, cli_train, latest_step, wait_for
from test_train import HostReads

from facegan import checkpoint as ckpt
from facegan.config import ConfigError, ResNetConfig, ResNetModelConfig
from facegan.loop import Hooks, fit
from facegan.presets import RESNET_PRESETS
from facegan.resnet import DBlock, DBlockOptimized, GBlock, ResNetDiscriminator, ResNetGenerator
from facegan.sample import generate, load_generator

quiet = Hooks(log=lambda *_: None)


def tiny(dataset: str, run: str, **overrides) -> ResNetConfig:
    base = dict(dataset=dataset, run=run, model=ResNetModelConfig(resolution=32, z_dim=16, ngf=32, ndf=32),
                steps=8, batch_size=8, n_dis=2, ckpt_every=4, keep_last=2, log_every=2, sample_count=4,
                device="cpu", seed=9)
    return ResNetConfig(**{**base, **overrides})


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_networks_at_every_size(resolution):
    cfg = ResNetModelConfig(resolution=resolution, z_dim=16, ngf=64, ndf=64)
    G, D = ResNetGenerator(cfg), ResNetDiscriminator(cfg)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 3, resolution, resolution) and x.abs().max() <= 1
    assert D(x).shape == (3, 1)
    ups = [m for m in G.modules() if isinstance(m, GBlock)]
    assert len(ups) == {32: 3, 64: 4, 128: 5}[resolution]  # 4x4 doubled up to the resolution
    downs = [m for m in D.modules() if isinstance(m, (DBlock, DBlockOptimized))]
    assert len(downs) == {32: 4, 64: 5, 128: 6}[resolution]
    # spectral norm on every layer of D, none in G
    d_layers = [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert d_layers and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in d_layers)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in G.modules())


def test_published_sizes_have_mimicrys_layer_shapes():
    """64 px (ngf = ndf = 1024, z 128): G 4x4x1024 -> 1024, 512, 256, 128, 64 channels; D 64, 128,
    256, 512, 1024 (mimicry's sngan_64); 128 px adds G's first block at 1024 and D's last, kept at
    4x4 (sngan_128). The parameter counts the README states."""
    for res, g_widths, (g_params, d_params) in (
        (64, [1024, 512, 256, 128, 64], (12_220_675, 10_141_441)),
        (128, [1024, 1024, 512, 256, 128, 64], (32_150_787, 29_017_857)),
    ):
        cfg = ResNetModelConfig(resolution=res)
        assert cfg.g_widths == g_widths and cfg.d_widths == [64, 128, 256, 512, 1024]
        counts = [sum(p.numel() for p in net.parameters()) for net in (ResNetGenerator(cfg), ResNetDiscriminator(cfg))]
        assert counts == [g_params, d_params]
    with pytest.raises(ConfigError, match="model.ngf=40 must be a multiple of 16"):
        ResNetModelConfig(ngf=40)


def test_presets_follow_the_published_recipe():
    for name, n_dis in (("resnet64", 5), ("resnet128", 2)):
        cfg = ResNetConfig(dataset="d", run="r", **{**RESNET_PRESETS[name], "model": RESNET_PRESETS[name]["model"]})
        assert (cfg.loss, cfg.beta1, cfg.beta2, cfg.lr_g, cfg.lr_d) == ("hinge", 0.0, 0.9, 2e-4, 2e-4)
        assert (cfg.lr_schedule, cfg.decay_start, cfg.n_dis, cfg.batch_size, cfg.steps) == \
            ("linear", 0.0, n_dis, 64, 100_000)
        assert cfg.ema_decay > 0  # sampling uses the EMA generator


def test_n_dis_updates_resume_exactly_after_stop_and_kill9(dataset32, tmp_path):
    straight = fit(tiny(dataset32, str(tmp_path / "straight"), steps=12), quiet)
    assert straight.finished
    state = ckpt.load(straight.run)
    assert state["family"] == "resnet"
    # n_dis D updates per step: Adam's step counts say so
    assert int(state["opt_d"]["state"][0]["step"]) == 2 * 12 and int(state["opt_g"]["state"][0]["step"]) == 12

    cut = tiny(dataset32, str(tmp_path / "cut"), steps=12)
    polls = iter(range(100))
    assert fit(cut, Hooks(should_stop=lambda: next(polls) == 2, log=lambda *_: None)).step == 3
    proc = cli_train(cut)  # `facegan train --family resnet ...`, killed with SIGKILL half way
    wait_for(lambda: latest_step(Path(cut.run)) >= 8, proc=proc)
    proc.kill()
    proc.wait()
    assert 8 <= latest_step(Path(cut.run)) < 12
    assert fit(cut, quiet).finished
    assert_states_equal(state, ckpt.load(cut.run))
    assert tuple(generate(load_generator(cut.run), [0, 1]).shape) == (2, 3, 32, 32)


def test_resnet_step_never_reads_back_from_the_device(dataset32, tmp_path):
    cfg = tiny(dataset32, str(tmp_path / "s"), steps=4, log_every=4, ckpt_every=4, augment="color,translation",
               r1_gamma=1.0, r1_every=2)
    with HostReads() as reads:
        assert fit(cfg, quiet).finished
    in_step = [(name, where) for name, where in reads.seen if "resnet.py:step" in where
               and not any(w.startswith(("adam.py", "optimizer.py")) for w in where)]  # CPU Adam's step count
    assert in_step == [], f"host reads inside the step: {in_step[:3]}"
    assert_device_rates(cfg.run, cfg, {"opt_g": cfg.lr_g, "opt_d": cfg.lr_d})
