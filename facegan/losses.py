"""The GAN losses and penalties of the training step (pure functions of logits and networks).

- `discriminator_loss`: non-saturating BCE-with-logits (real target `real_label`, 0.9 for
  one-sided label smoothing) or hinge. BCE-with-logits, never Sigmoid + BCELoss, so autocast is safe.
- `generator_loss`: non-saturating BCE, or hinge's -D(G(z)).
- `r1_penalty`: gamma/2 E[|grad_x D(x)|^2] on real images (lazy R1 scales it by its interval).
- `lsgan_loss`: least-squares GAN loss (CycleGAN's), mean (D(x) - target)^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facegan.augment import diff_augment


def discriminator_loss(kind: str, logits_real, logits_fake, real_label: float):
    """Discriminator loss for (real, fake) logits: BCE-with-logits or hinge."""
    if kind == "hinge":
        return F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean()
    return (F.binary_cross_entropy_with_logits(logits_real, torch.full_like(logits_real, real_label))
            + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))


def generator_loss(kind: str, logits_gen):
    """Generator loss: non-saturating BCE, or hinge's -D(G(z))."""
    if kind == "hinge":
        return -logits_gen.mean()
    return F.binary_cross_entropy_with_logits(logits_gen, torch.ones_like(logits_gen))


def r1_penalty(D, real: torch.Tensor, augment: list[str], gamma: float) -> torch.Tensor:
    """R1: gamma/2 * E[|grad_x D(x)|^2] on real images (Mescheder et al., 2018)."""
    real = real.detach().requires_grad_(True)
    logits = D(diff_augment(real, augment))
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.float().square().sum(dim=[1, 2, 3]).mean() * (gamma / 2)


def lsgan_loss(outputs: torch.Tensor, target: float) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al., 2017; CycleGAN's): mean (outputs - target)^2, in fp32."""
    return (outputs.float() - target).square().mean()
