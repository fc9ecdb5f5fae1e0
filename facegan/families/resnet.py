"""The ResNet family: SNGAN's recipe (Miyato et al. 2018, as mimicry trains it on CelebA), trained
by `facegan.loop.fit`.

The networks are facegan.resnet's (spectral norm on every layer of D); the update is the DCGAN
family's (facegan.families.dcgan: losses, DiffAugment, lazy R1, EMA generator, bf16 autocast,
channels_last), with SNGAN's schedule: `n_dis` discriminator updates, each on a fresh real batch
and fresh latents, then one generator update on fresh latents; hinge loss, Adam(2e-4, 0, 0.9) and
a linear decay to zero by default (facegan.config.ResNetConfig). A checkpoint holds what a
DCGAN's holds.
"""

from __future__ import annotations

import torch

from facegan.config import ResNetConfig
from facegan.families import dcgan
from facegan.resnet import ResNetDiscriminator, ResNetGenerator


class Recipe(dcgan.Recipe):
    """One ResNet run: the DCGAN family's parts and updates, SNGAN's networks and n_dis schedule."""

    generator, discriminator = ResNetGenerator, ResNetDiscriminator
    # D has no batch statistics, so one forward on real and fake together is the same as two; and
    # spectral norm's power iteration then runs once per D update, which torch.compile needs (a
    # second forward before the backward updated its vectors in place under the first one's
    # saved graph: the compiled step failed and fell back to eager; tested by the smoke check)
    one_d_forward = True

    def step(self, step: int, calls: dict) -> torch.Tensor:
        """n_dis D updates, then one G update; returns (loss_d of the last D update, loss_g,
        its D(x), its D(G(z))) on the device."""
        n = self.cfg.n_dis
        for i in range(n):
            real = self.batches.sample(self.setup.my_slice)
            with torch.no_grad(), self.rt.autocast():
                fake = calls["G"](self.latents())
            loss_d, logits_real, logits_fake = self.update_d(step, calls, real, fake, r1=i == n - 1)
        with self.rt.autocast():
            fake = calls["G"](self.latents())
        loss_g = self.update_g(calls, fake)
        return self.scalars(loss_d, loss_g, logits_real, logits_fake)


def build(setup) -> Recipe:
    """The recipe of a ResNet run (`setup`: facegan.loop.Setup)."""
    return Recipe(setup)


def generators(state: dict, device: torch.device, ema: bool = True) -> dict[str, torch.nn.Module]:
    """The checkpoint's generator ({"G_ema": net}, or {"G": net} with ema=False), in eval mode."""
    return dcgan.generators(state, device, ema, ResNetConfig, ResNetGenerator)
