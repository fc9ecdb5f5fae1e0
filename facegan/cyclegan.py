"""CycleGAN networks for attribute swap: a ResNet generator and a PatchGAN discriminator.

As in the CycleGAN paper and repo (junyanz/pytorch-CycleGAN-and-pix2pix, `resnet_6blocks`,
`basic` D), sized from one `CycleModelConfig`; they do no I/O.

Generator (c7s1-ngf, d2ngf, d4ngf, `blocks` x R4ngf, u2ngf, ungf, c7s1-3): reflection padding,
instance norm (no affine, no running stats) and ReLU, residual blocks at 1/4 resolution, tanh.
It keeps the image size, so any of 32, 64, 128 px goes through unchanged.

PatchGAN (C-ndf, then d_layers-1 more stride-2 layers doubling the width, one stride-1 layer,
a 1-channel 4x4 convolution): LeakyReLU(0.2), instance norm on all but the first layer, one
logit per overlapping patch. With 3 stride-2 layers its receptive field is CycleGAN's 70x70;
a 70 px patch is larger than a whole 64 px face, so 64 px uses 2 layers (34x34 patches, half
the face, about CycleGAN's share of a 256 px image), 32 px 1 layer (16x16), 128 px 3 (70x70).
"""

from __future__ import annotations

import torch
from torch import nn

from facegan.config import CycleModelConfig


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def init_weights(module: nn.Module) -> None:
    """CycleGAN's "normal" initialisation: conv weights N(0, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class ResidualBlock(nn.Module):
    """x + (pad, conv3, IN, ReLU, pad, conv3, IN)(x); shape kept: (N, C, H, W) -> (N, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), _norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Maps images (N, 3, R, R) in [-1, 1] to images of the other domain (N, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: CycleModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = cfg.ngf
        layers: list[nn.Module] = [
            # input: 3 x R x R
            nn.ReflectionPad2d(3), nn.Conv2d(3, f, 7), _norm(f), nn.ReLU(True),
            # ngf x R x R
            nn.Conv2d(f, 2 * f, 3, 2, 1), _norm(2 * f), nn.ReLU(True),
            # 2ngf x R/2 x R/2
            nn.Conv2d(2 * f, 4 * f, 3, 2, 1), _norm(4 * f), nn.ReLU(True),
            # 4ngf x R/4 x R/4
            *[ResidualBlock(4 * f) for _ in range(cfg.blocks)],
            # 4ngf x R/4 x R/4
            nn.ConvTranspose2d(4 * f, 2 * f, 3, 2, 1, output_padding=1), _norm(2 * f), nn.ReLU(True),
            # 2ngf x R/2 x R/2
            nn.ConvTranspose2d(2 * f, f, 3, 2, 1, output_padding=1), _norm(f), nn.ReLU(True),
            # ngf x R x R
            nn.ReflectionPad2d(3), nn.Conv2d(f, 3, 7), nn.Tanh(),
            # 3 x R x R
        ]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class PatchDiscriminator(nn.Module):
    """Maps images (N, 3, R, R) to a map of real/fake logits (N, 1, P, P), one per patch."""

    def __init__(self, cfg: CycleModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        width = cfg.ndf
        layers: list[nn.Module] = [
            # input: 3 x R x R; no normalisation on the first layer
            nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            # ndf x R/2 x R/2
        ]
        for _ in range(cfg.patch_layers - 1):
            layers += [nn.Conv2d(width, 2 * width, 4, 2, 1), _norm(2 * width), nn.LeakyReLU(0.2, True)]
            width *= 2
            # width x (size/2) x (size/2), ending at ndf*2^(n-1) x R/2^n x R/2^n
        layers += [
            nn.Conv2d(width, 2 * width, 4, 1, 1), _norm(2 * width), nn.LeakyReLU(0.2, True),
            # 2width x (R/2^n - 1) x (R/2^n - 1)
            nn.Conv2d(2 * width, 1, 4, 1, 1),
            # 1 x P x P, P = R/2^n - 2 (64 px, n = 2: 14 x 14 patches of 34 x 34 px)
        ]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def receptive_field(layers: int) -> int:
    """The side in pixels of one PatchGAN logit's receptive field with `layers` stride-2 layers."""
    field = 1
    for kernel, stride in reversed([(4, 2)] * layers + [(4, 1), (4, 1)]):
        field = (field - 1) * stride + kernel
    return field
