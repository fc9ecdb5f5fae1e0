import pytest
import torch

from facegan.config import ConfigError, ModelConfig
from facegan.models import Discriminator, Generator, parameter_count


def test_dcgan64_matches_pytorch_examples_parameter_counts():
    # pytorch/examples dcgan (nz=100, ngf=ndf=64): G 3,576,704 and D 2,765,568 parameters
    cfg = ModelConfig(resolution=64, z_dim=100, ngf=64, ndf=64)
    assert parameter_count(Generator(cfg)) == 3_576_704
    assert parameter_count(Discriminator(cfg)) == 2_765_568


@pytest.mark.parametrize(
    "res,ngf,ndf,g_params,d_params",
    [
        # 32 px: 3 blocks; G widths 4x4:128, 8:64, 16:32 -> 32:3
        (32, 32, 32,
         100 * 128 * 16 + 128 * 64 * 16 + 64 * 32 * 16 + 32 * 3 * 16 + 2 * (128 + 64 + 32),
         3 * 32 * 16 + 32 * 64 * 16 + 64 * 128 * 16 + 128 * 16 + 2 * (64 + 128)),
        # 128 px: 5 blocks; G starts at ngf*16 channels
        (128, 64, 64,
         100 * 1024 * 16 + (1024 * 512 + 512 * 256 + 256 * 128 + 128 * 64) * 16 + 64 * 3 * 16
         + 2 * (1024 + 512 + 256 + 128 + 64),
         (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 1024) * 16 + 1024 * 16
         + 2 * (128 + 256 + 512 + 1024)),
    ],
)
def test_parameter_counts_per_resolution(res, ngf, ndf, g_params, d_params):
    cfg = ModelConfig(resolution=res, ngf=ngf, ndf=ndf)
    assert parameter_count(Generator(cfg)) == g_params
    assert parameter_count(Discriminator(cfg)) == d_params


@pytest.mark.parametrize("res", [32, 64, 128])
def test_shapes_and_ranges(res):
    torch.manual_seed(0)
    cfg = ModelConfig(resolution=res, ngf=8, ndf=8, z_dim=16)
    G, D = Generator(cfg), Discriminator(cfg)
    img = G(torch.randn(5, 16))
    assert img.shape == (5, 3, res, res)
    assert (img[0] - img[1]).abs().max() > 1e-3  # different latents, different faces
    assert 0.01 < img.std() and img.abs().max() < 1  # uses the range, not saturated at init
    logits = D(img)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all() and logits.std() > 0  # one logit per image, not constant


def test_init_follows_dcgan():
    torch.manual_seed(0)
    G = Generator(ModelConfig(resolution=64))
    conv = G.main[0].weight
    bn = G.main[1].weight
    assert abs(conv.std().item() - 0.02) < 0.002 and abs(conv.mean().item()) < 0.002
    assert abs(bn.mean().item() - 1.0) < 0.01 and abs(bn.std().item() - 0.02) < 0.01


def test_no_norm_option_has_no_batchnorm():
    G = Generator(ModelConfig(resolution=32, norm="none"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())


@pytest.mark.parametrize("res", [16, 48, 256])
def test_unsupported_resolution_is_clear_error(res):
    with pytest.raises(ConfigError, match=rf"resolution={res}.*not supported"):
        ModelConfig(resolution=res)
