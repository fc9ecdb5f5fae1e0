"""DiffAugment (Zhao et al., 2020): differentiable augmentations applied to real and fake images
before the discriminator, so D cannot memorise a small dataset. Policies: color (brightness,
saturation, contrast), translation (1/8 of the side, zero padded), cutout (a square of half the
side). Randomness comes from the global torch generator of the images' device, so runs stay
resumable. Images are (N, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rand(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + (_rand(x) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x) * 2) + mean  # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    th = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    tw = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    gb, gh, gw = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device),
        torch.arange(w, device=x.device), indexing="ij",
    )
    gh = torch.clamp(gh + th + 1, 0, h + 1)
    gw = torch.clamp(gw + tw + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)  # (B, H+2, W+2, C)
    return padded[gb, gh, gw].permute(0, 3, 1, 2)  # (B, C, H, W), channels-last strides


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oh = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    ow = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    gb, gh, gw = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
        torch.arange(cw, device=x.device), indexing="ij",
    )
    gh = torch.clamp(gh + oh - ch // 2, 0, h - 1)
    gw = torch.clamp(gw + ow - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask.index_put_((gb, gh, gw), mask.new_zeros(()))  # not `mask[...] = 0`: a CPU number copied to the device
    return x * mask.unsqueeze(1)


POLICIES = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policies: list[str]) -> torch.Tensor:
    """Apply the named policies in order (no-op for an empty list)."""
    for name in policies:
        x = POLICIES[name](x)
    return x
