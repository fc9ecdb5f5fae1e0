"""The DCGAN family: faces from noise, trained by `facegan.loop.fit`.

Non-saturating GAN with BCE-with-logits (optional one-sided label smoothing; hinge loss as an
alternative), Adam, a constant or linearly decaying learning rate, an EMA generator, optional
DiffAugment and lazy R1, bf16 autocast (on bf16-capable GPUs by default, see `precision`),
channels_last everywhere. A checkpoint holds G, D, G_ema and both optimizers; its sample grid is
the EMA generator on the run's fixed latents. The networks are facegan.models'.
"""

from __future__ import annotations

import copy

import torch

from facegan import checkpoint as ckpt
from facegan import data
from facegan.augment import diff_augment
from facegan.config import ConfigError, TrainConfig
from facegan.images import to_png
from facegan.losses import discriminator_loss, generator_loss, r1_penalty
from facegan.models import Discriminator, Generator
from facegan.sample import noise_sampler
from facegan.schedule import DeviceRates, get_lr


def fixed_latents(cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """The run's fixed sample latents, drawn from their own generator (no global RNG used)."""
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003)
    return torch.randn(cfg.sample_count, cfg.model.z_dim, generator=gen).to(device)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers are copied."""
    ema_p = list(ema.parameters())
    torch._foreach_lerp_(ema_p, [p.detach() for p in model.parameters()], 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
        b_ema.copy_(b)


def freeze(D: torch.nn.Module, blocks: int) -> None:
    """FreezeD (Mo et al. 2020): the discriminator's first `blocks` stages (`D.stages()`) take no
    gradient and no update; at least its last stage trains, or a ConfigError says how many it has."""
    if not blocks:
        return
    stages = D.stages()
    if blocks >= len(stages):
        raise ConfigError(f"freeze_d={blocks} must be less than the discriminator's {len(stages)} blocks "
                          "(its last one trains)")
    for stage in stages[:blocks]:
        stage.requires_grad_(False)


class Recipe:
    """One DCGAN run's networks, optimizers and step (see facegan.loop for the protocol)."""

    generator, discriminator = Generator, Discriminator  # the networks, built from cfg.model
    one_d_forward = False  # D sees real and fake in one batch (only for a D without batch statistics)

    def __init__(self, setup) -> None:
        cfg, rt, device = setup.cfg, setup.rt, setup.rt.device
        self.cfg, self.rt, self.setup = cfg, rt, setup
        # channels_last everywhere: cuDNN's and oneDNN's fast convolution layout (1.4x on CPU too)
        self.batches = data.BatchSampler(setup.images, cfg.batch_size, channels_last=True)
        self.G = G = self.generator(cfg.model).to(device, memory_format=torch.channels_last)
        self.D = D = self.discriminator(cfg.model).to(device, memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        freeze(D, cfg.freeze_d)
        adam = {"betas": (cfg.beta1, cfg.beta2), **rt.adam_options}
        self.opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, **adam)
        self.opt_d = torch.optim.Adam([p for p in D.parameters() if p.requires_grad], lr=cfg.lr_d, **adam)
        self.rates = DeviceRates({"lr_g": self.opt_g, "lr_d": self.opt_d}, rt.lr_dtype, device)
        self.parts = {"G": G, "D": D, "G_ema": self.G_ema, "opt_g": self.opt_g, "opt_d": self.opt_d}
        self.calls = {"G": G, "D": D}
        self.images_per_step = cfg.batch_size
        self.sampler = noise_sampler(self.G_ema, cfg.model.z_dim, device)  # what the metrics score
        self.z_fixed = fixed_latents(cfg, device)
        self.local_batch = cfg.batch_size // setup.world.size

    def describe_new(self) -> str:
        return f"{self.setup.manifest['count']} images"

    def learning_rates(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        return self.rates.set({"lr_g": get_lr(step, cfg.lr_g, cfg), "lr_d": get_lr(step, cfg.lr_d, cfg)})

    def step(self, step: int, calls: dict) -> torch.Tensor:
        """One D update then one G update (on the same fakes); returns (loss_d, loss_g, D(x),
        D(G(z))) on the device."""
        real = self.batches.sample(self.setup.my_slice)
        with self.rt.autocast():
            fake = calls["G"](self.latents())
        loss_d, logits_real, logits_fake = self.update_d(step, calls, real, fake.detach())
        loss_g = self.update_g(calls, fake)
        return self.scalars(loss_d, loss_g, logits_real, logits_fake)

    def latents(self) -> torch.Tensor:
        """This process's slice of a global batch of latents."""
        cfg, rank = self.cfg, self.setup.world.rank
        z = torch.randn(cfg.batch_size, cfg.model.z_dim, device=self.rt.device)
        return z[rank * self.local_batch:(rank + 1) * self.local_batch]

    def update_d(self, step: int, calls: dict, real: torch.Tensor, fake: torch.Tensor, r1: bool = True):
        """One D update: real -> 1 (or label_smoothing), fake -> 0 (hinge optional), lazy R1 on
        its steps (when `r1`); returns (loss_d, logits of real, logits of fake)."""
        cfg, augment, D = self.cfg, self.cfg.augment_list, calls["D"]
        with self.rt.autocast():
            if self.one_d_forward:
                both = torch.cat([diff_augment(real, augment), diff_augment(fake, augment)])
                logits_real, logits_fake = D(both).split(len(real))
            else:  # BatchNorm in D: each batch its own statistics
                logits_real = D(diff_augment(real, augment))
                logits_fake = D(diff_augment(fake, augment))
            loss_d = discriminator_loss(cfg.loss, logits_real, logits_fake, cfg.label_smoothing)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        if r1 and cfg.r1_gamma and step % cfg.r1_every == 0:  # lazy R1, scaled by its interval
            (r1_penalty(D, real, augment, cfg.r1_gamma) * cfg.r1_every).backward()
        self.opt_d.step()
        return loss_d, logits_real, logits_fake

    def update_g(self, calls: dict, fake: torch.Tensor) -> torch.Tensor:
        """One G update through the updated D: non-saturating (or hinge) loss; then the EMA."""
        with self.rt.autocast():
            logits_gen = calls["D"](diff_augment(fake, self.cfg.augment_list))
            loss_g = generator_loss(self.cfg.loss, logits_gen)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        ema_update(self.G_ema, self.G, self.cfg.ema_decay)
        return loss_g

    @staticmethod
    @torch.no_grad()
    def scalars(loss_d, loss_g, logits_real, logits_fake) -> torch.Tensor:
        """(loss_d, loss_g, D(x), D(G(z))) as one float32 device tensor (no host read)."""
        return torch.stack([
            loss_d.detach().float(), loss_g.detach().float(),
            torch.sigmoid(logits_real.detach().float()).mean(),
            torch.sigmoid(logits_fake.detach().float()).mean(),
        ])

    def grid(self) -> ckpt.Render:
        """The EMA generator's faces for the run's fixed latents, encoded on the writer's thread."""
        with torch.no_grad():
            return ckpt.Render(to_png, self.G_ema(self.z_fixed))


def build(setup) -> Recipe:
    """The recipe of a DCGAN run (`setup`: facegan.loop.Setup)."""
    return Recipe(setup)


def generators(state: dict, device: torch.device, ema: bool = True, config=TrainConfig,
               network=Generator) -> dict[str, torch.nn.Module]:
    """The checkpoint's generator ({"G_ema": net}, or {"G": net} with ema=False), in eval mode
    (`config`, `network`: the family's, for families built on this one)."""
    cfg = config.from_dict(state["config"])
    which = "G_ema" if ema else "G"
    net = network(cfg.model)
    ckpt.restore(net, state, which, f"checkpoint of {cfg.run}")
    return {which: net.to(device).eval()}
