"""SNGAN's ResNet generator and discriminator (Miyato et al. 2018), sized from one config.

The layout is mimicry's `sngan_64` / `sngan_128` (kwotsin/mimicry, after the official Chainer
code): G = a linear layer to a 4x4 map, residual up-blocks (BatchNorm, ReLU, 2x nearest
upsample, 3x3 conv, BatchNorm, ReLU, 3x3 conv; a 1x1 conv shortcut), then BatchNorm, ReLU, a
3x3 conv and tanh. D = an optimized first block, residual down-blocks (ReLU, 3x3 conv, ReLU,
3x3 conv, 2x2 average pool; a 1x1 conv shortcut), ReLU, global sum pooling and a linear logit,
with spectral norm on every layer of D. Weights: Xavier uniform (gain sqrt 2 inside the
residual branches, 1 elsewhere). mimicry's GBlock upsamples bilinearly; the SNGAN paper and its
Chainer code upsample by nearest neighbour, as here (no parameters either way, so the parameter
counts are mimicry's: 64 px, ngf = ndf = 1024, z 128: see README "ResNet (SNGAN)").

Widths: G starts at ngf and halves in each of its last four blocks (64 px: ngf, ngf/2 .. ngf/16;
128 px adds a first block at ngf); D mirrors it, from ndf/16 up to ndf, and at 128 px adds a
last block at ndf without downsampling, as mimicry's. 32 px (not a published size) is the 64 px
layout with one block fewer on each side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from facegan.config import ResNetModelConfig

SQRT2 = math.sqrt(2.0)


def _conv(cin: int, cout: int, k: int, gain: float, sn: bool) -> nn.Module:
    conv = nn.Conv2d(cin, cout, k, 1, k // 2)
    nn.init.xavier_uniform_(conv.weight, gain)
    return nn.utils.parametrizations.spectral_norm(conv) if sn else conv


class GBlock(nn.Module):
    """(N, cin, H, W) -> (N, cout, 2H, 2W): BN-ReLU-up-conv3-BN-ReLU-conv3 + up-conv1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.b1, self.b2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.c1, self.c2 = _conv(cin, cout, 3, SQRT2, False), _conv(cout, cout, 3, SQRT2, False)
        self.c_sc = _conv(cin, cout, 1, 1.0, False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = lambda t: F.interpolate(t, scale_factor=2, mode="nearest")  # noqa: E731
        h = self.c1(up(F.relu(self.b1(x))))  # cout x 2H x 2W
        h = self.c2(F.relu(self.b2(h)))  # cout x 2H x 2W
        return h + self.c_sc(up(x))


class DBlock(nn.Module):
    """(N, cin, H, W) -> (N, cout, H/2, W/2) (or H, W without `down`): ReLU-conv3-ReLU-conv3-pool
    + conv1-pool shortcut (none when the shape is kept), spectral norm on every conv."""

    def __init__(self, cin: int, cout: int, down: bool = True) -> None:
        super().__init__()
        self.down = down
        self.c1, self.c2 = _conv(cin, cin, 3, SQRT2, True), _conv(cin, cout, 3, SQRT2, True)
        self.c_sc = _conv(cin, cout, 1, 1.0, True) if down or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(F.relu(x))))  # cout x H x W
        sc = self.c_sc(x) if self.c_sc is not None else x
        if self.down:
            h, sc = F.avg_pool2d(h, 2), F.avg_pool2d(sc, 2)  # cout x H/2 x W/2
        return h + sc


class DBlockOptimized(nn.Module):
    """The first D block, on the image: (N, 3, H, W) -> (N, cout, H/2, W/2), conv3-ReLU-conv3-pool
    + pool-conv1 shortcut (no activation on the input pixels)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.c1, self.c2 = _conv(cin, cout, 3, SQRT2, True), _conv(cout, cout, 3, SQRT2, True)
        self.c_sc = _conv(cin, cout, 1, 1.0, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.c2(F.relu(self.c1(x))), 2)  # cout x H/2 x W/2
        return h + self.c_sc(F.avg_pool2d(x, 2))


class ResNetGenerator(nn.Module):
    """Maps latents (N, z_dim) to images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: ResNetModelConfig) -> None:
        super().__init__()
        self.cfg, self.z_dim = cfg, cfg.z_dim
        widths = cfg.g_widths  # e.g. 64 px: ngf, ngf/2, ngf/4, ngf/8, ngf/16
        self.l1 = nn.Linear(cfg.z_dim, 4 * 4 * widths[0])  # -> widths[0] x 4 x 4
        nn.init.xavier_uniform_(self.l1.weight, 1.0)
        # each block doubles the side: 4 -> 8 -> ... -> R
        self.blocks = nn.Sequential(*(GBlock(a, b) for a, b in zip(widths, widths[1:], strict=False)))
        self.bn = nn.BatchNorm2d(widths[-1])
        self.out = _conv(widths[-1], 3, 3, 1.0, False)  # widths[-1] x R x R -> 3 x R x R

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.l1(z).view(z.shape[0], -1, 4, 4)  # widths[0] x 4 x 4 (shape[0], not len(): export keeps N dynamic)
        h = self.blocks(h)  # widths[-1] x R x R
        return torch.tanh(self.out(F.relu(self.bn(h))))  # 3 x R x R


class ResNetDiscriminator(nn.Module):
    """Maps images (N, 3, R, R) to logits (N, 1)."""

    def __init__(self, cfg: ResNetModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = cfg.d_widths  # e.g. 64 px: ndf/16, ndf/8, ndf/4, ndf/2, ndf
        blocks: list[nn.Module] = [DBlockOptimized(3, widths[0])]  # 3 x R x R -> widths[0] x R/2 x R/2
        blocks += [DBlock(a, b) for a, b in zip(widths, widths[1:], strict=False)]  # halves the side each
        if cfg.resolution == 128:
            blocks.append(DBlock(widths[-1], widths[-1], down=False))  # ndf x 4 x 4, as mimicry's sngan_128
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(widths[-1], 1)
        nn.init.xavier_uniform_(self.linear.weight, 1.0)
        self.linear = nn.utils.parametrizations.spectral_norm(self.linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x))  # ndf x s x s (s = 2 at 32 and 64 px, 4 at 128 px)
        return self.linear(h.sum(dim=(2, 3)))  # global sum pooling -> ndf -> 1

    def stages(self) -> list[nn.Module]:
        """Its blocks from the input on (what FreezeD freezes): each residual block, the linear logit."""
        return [*self.blocks, self.linear]
