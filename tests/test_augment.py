import pytest
import torch

from facegan.augment import color, cutout, diff_augment, translation
from facegan.config import ConfigError, ModelConfig, TrainConfig
from facegan.models import Discriminator


def test_policies_keep_shape_and_differ_per_image():
    torch.manual_seed(0)
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    for fn in (color, translation, cutout):
        y = fn(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert not torch.equal(y, x)
    cut = cutout(torch.ones(4, 3, 32, 32))
    zeros = (cut == 0).float().mean(dim=(1, 2, 3))
    assert ((zeros > 0) & (zeros <= 0.25 + 1e-6)).all()  # a half-side square, clipped at the border
    shifted = translation(torch.ones(16, 1, 32, 32))
    assert (shifted == 0).any()  # zero padding shows where images moved


def test_augment_is_differentiable_and_seeded():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    torch.manual_seed(1)
    a = diff_augment(x, ["color", "translation", "cutout"])
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    torch.manual_seed(1)
    assert torch.equal(a, diff_augment(x, ["color", "translation", "cutout"]))
    assert torch.equal(diff_augment(x, []), x)


def test_spectral_norm_discriminator_and_config_checks():
    d = Discriminator(ModelConfig(resolution=32, ndf=8, spectral_norm=True))
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(hasattr(c, "parametrizations") for c in convs)
    d(torch.randn(2, 3, 32, 32))
    w = convs[1].weight.detach()
    assert torch.linalg.matrix_norm(w.flatten(1), ord=2) == pytest.approx(1.0, rel=0.1)
    with pytest.raises(ConfigError, match="augment='color,zoom'"):
        TrainConfig(dataset="d", run="r", augment="color,zoom")
    with pytest.raises(ConfigError, match="loss='wgan'"):
        TrainConfig(dataset="d", run="r", loss="wgan")
    with pytest.raises(ConfigError, match="multiple of ckpt_every"):
        TrainConfig(dataset="d", run="r", metric_every=3, ckpt_every=2)
