"""A toy third model family, registered by tests only: the seam proven by use. A linear generator
of 32 px faces from 8 latents and a linear critic, trained with the non-saturating GAN loss;
everything else (lease, resume, checkpoints, metrics, gallery, flows) is the lifecycle's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from facegan import checkpoint as ckpt
from facegan import data, families
from facegan.config import RunConfig, option
from facegan.images import to_png
from facegan.sample import noise_sampler

Z = 8


@dataclass(frozen=True)
class ToyModelConfig:
    resolution: int = option(32, "image side in pixels")


@dataclass(frozen=True)
class ToyConfig(RunConfig):
    model_class: ClassVar[type] = ToyModelConfig
    family: ClassVar[str] = "toy"
    RATES: ClassVar[tuple[str, ...]] = ()
    model: ToyModelConfig = field(default_factory=ToyModelConfig)


class Recipe:
    def __init__(self, setup) -> None:
        self.setup, res, dev = setup, setup.cfg.model.resolution, setup.rt.device
        self.G = nn.Sequential(nn.Linear(Z, 3 * res * res), nn.Tanh(), nn.Unflatten(1, (3, res, res))).to(dev)
        self.D = nn.Sequential(nn.Flatten(), nn.Linear(3 * res * res, 1)).to(dev)
        self.opt_g, self.opt_d = (torch.optim.Adam(n.parameters(), 2e-4, betas=(0.5, 0.999)) for n in (self.G, self.D))
        self.parts = {"G": self.G, "D": self.D, "opt_g": self.opt_g, "opt_d": self.opt_d}
        self.calls, self.images_per_step = {"G": self.G, "D": self.D}, setup.cfg.batch_size
        self.batches = data.BatchSampler(setup.images, setup.cfg.batch_size)
        self.z_fixed = torch.randn(4, Z, generator=torch.Generator().manual_seed(1)).to(dev)
        self.sampler = noise_sampler(self.G, Z, dev)

    def describe_new(self) -> str:
        return "a toy"

    def learning_rates(self, step: int) -> dict:
        return {"lr_g": 2e-4, "lr_d": 2e-4}

    def step(self, step: int, calls: dict) -> torch.Tensor:
        real = self.batches.sample(self.setup.my_slice)
        fake = calls["G"](torch.randn(len(real), Z, device=real.device))
        loss_d = F.softplus(-calls["D"](real)).mean() + F.softplus(calls["D"](fake.detach())).mean()
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        loss_g = F.softplus(-calls["D"](fake)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return torch.stack([loss_d.detach(), loss_g.detach()])

    def grid(self) -> ckpt.Render:
        with torch.no_grad():
            return ckpt.Render(to_png, self.G(self.z_fixed))


def build(setup) -> Recipe:
    return Recipe(setup)


def generators(state: dict, device, ema: bool = True) -> dict:
    net = nn.Sequential(nn.Linear(Z, 3 * 32 * 32), nn.Tanh(), nn.Unflatten(1, (3, 32, 32)))
    net.load_state_dict(state["G"])
    net.z_dim = Z
    return {"G": net.to(device).eval()}


FAMILY = families.Family(
    name="toy", config=ToyConfig, presets={"toy32": {"model": {"resolution": 32}, "batch_size": 8}},
    parts=("G", "D", "opt_g", "opt_d"), scalars=(families.Scalar("loss_d", "loss_d"), families.Scalar("loss_g", "G")),
    module=__name__, what="toy faces from noise", noise=True)
