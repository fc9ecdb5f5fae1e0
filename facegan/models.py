"""DCGAN generator and discriminator for 32, 64 and 128 px faces.

Both networks are sized from one `ModelConfig`; they do no I/O. With the defaults
(resolution 64, z_dim 100, ngf = ndf = 64, batch norm) they are exactly the pytorch/examples
DCGAN pair; resolution 32 with smaller widths is the seeds' network, and 128 adds one more
block on each side (the seeds' 128 px extension).

The number of up/down-sampling blocks is `k = log2(resolution / 4)` (3, 4 or 5); widths
double every block towards the 4x4 end, so the 4x4 feature map has `ngf * 2**(k-1)` channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from facegan.config import ConfigError, ModelConfig


def _blocks(resolution: int) -> int:
    k = int(math.log2(resolution)) - 2
    if 2 ** (k + 2) != resolution or k < 3:
        raise ConfigError(f"resolution={resolution} is not supported (32, 64 or 128)")
    return k


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights N(0, 0.02), norm weights N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """Maps latents (N, z_dim) to images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.z_dim  # what samplers draw (facegan.sample)
        k = _blocks(cfg.resolution)
        width = cfg.ngf * 2 ** (k - 1)
        layers: list[nn.Module] = [
            # input: z_dim x 1 x 1
            nn.ConvTranspose2d(cfg.z_dim, width, 4, 1, 0, bias=False),
            _norm(cfg.norm, width),
            nn.ReLU(True),
            # state size: (ngf * 2**(k-1)) x 4 x 4
        ]
        size = 4
        for _ in range(k - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                _norm(cfg.norm, width // 2),
                nn.ReLU(True),
            ]
            width //= 2
            size *= 2
            # state size: width x size x size, ending at ngf x (R/2) x (R/2)
        layers += [
            nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size: 3 x R x R
        ]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # z: (N, z_dim) -> (N, z_dim, 1, 1) -> (N, 3, R, R)
        return self.main(z.view(z.shape[0], -1, 1, 1))


class Discriminator(nn.Module):
    """Maps images (N, 3, R, R) to real/fake logits (N,)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k = _blocks(cfg.resolution)
        width = cfg.ndf
        layers: list[nn.Module] = [
            # input: 3 x R x R; no normalisation on the first layer
            nn.Conv2d(3, width, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            # state size: ndf x (R/2) x (R/2)
        ]
        for _ in range(k - 1):
            layers += [
                nn.Conv2d(width, width * 2, 4, 2, 1, bias=False),
                _norm(cfg.norm, width * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width *= 2
            # state size: width x (size/2) x (size/2), ending at (ndf * 2**(k-1)) x 4 x 4
        # a 4x4 valid convolution over the 4x4 map: one linear logit per image
        layers.append(nn.Conv2d(width, 1, 4, 1, 0, bias=False))
        # state size: 1 x 1 x 1
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)
        if cfg.spectral_norm:  # after init: normalises the initialised weights
            for i, layer in enumerate(self.main):
                if isinstance(layer, nn.Conv2d):
                    self.main[i] = nn.utils.parametrizations.spectral_norm(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, 3, R, R) -> logits (N,)
        return self.main(x).flatten()

    def stages(self) -> list[nn.Module]:
        """Its blocks from the input on (what FreezeD freezes): the first conv + LeakyReLU, each
        halving conv + norm + LeakyReLU, the final 4x4 conv."""
        layers = list(self.main)
        return [nn.Sequential(*layers[:2]), *(nn.Sequential(*layers[i:i + 3]) for i in range(2, len(layers) - 1, 3)),
                layers[-1]]


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
