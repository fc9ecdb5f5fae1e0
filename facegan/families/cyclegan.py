"""The CycleGAN family: an attribute swap, trained by `facegan.loop.fit`.

One stored dataset, split by a query: domain A = the images whose `attribute` is on (e.g.
Heavy_Makeup), B = the rest. Two ResNet generators learn A->B (remove) and B->A (add), two
PatchGANs judge each domain (facegan.cyclegan). The recipe is CycleGAN's: LSGAN losses,
cycle-consistency L1 x lambda_cycle (10), identity L1 x lambda_identity x lambda_cycle (0.5 x 10),
Adam(2e-4, 0.5), a pool of 50 past fakes for the discriminators, a constant learning rate that
decays linearly to zero over the second half (facegan.schedule).

A checkpoint holds both generators, both PatchGANs, both optimizers and the pool; its sample
picture is the translation grid (fixed real faces of each domain, their translations and cycle
reconstructions). Using a trained swap on photos is facegan.translate.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from facegan import checkpoint as ckpt
from facegan import data
from facegan import distributed as dist
from facegan.attributes import column
from facegan.config import TranslateConfig
from facegan.cyclegan import PatchDiscriminator, ResnetGenerator
from facegan.errors import DatasetError
from facegan.images import to_png
from facegan.losses import lsgan_loss
from facegan.runtime import use_device
from facegan.schedule import DeviceRates, get_lr
from facegan.storage import open_store

MIN_DOMAIN = 2  # images a domain needs at least


def domains(labels: np.ndarray, names: list[str], attribute: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows of A = attribute on, rows of B = off), each in row order; a domain with fewer than
    MIN_DOMAIN images is a DatasetError naming the attribute and the counts."""
    on = labels[:, column(names, attribute)]
    rows_a, rows_b = np.flatnonzero(on), np.flatnonzero(~on)
    if min(len(rows_a), len(rows_b)) < MIN_DOMAIN:
        raise DatasetError(f"{where}: attribute {attribute} splits the {len(labels)} images into {len(rows_a)} "
                           f"with and {len(rows_b)} without; each side needs at least {MIN_DOMAIN}")
    return rows_a, rows_b


class ImagePool:
    """CycleGAN's buffer of past fakes, on the device, without host syncs.

    While it fills, the new fakes go to D as they are and into free slots. Once full, each
    fake is swapped with probability 0.5 for a stored one (distinct slots within a batch, so
    the result does not depend on write order): D sees the stored one, the slot keeps the new.
    Random draws come from the device's global generator, so a checkpoint's RNG state and
    `state_dict` resume it exactly.
    """

    def __init__(self, size: int, device: torch.device) -> None:
        self.size, self.device = size, device
        self.images: torch.Tensor | None = None  # (size, 3, R, R) float32, allocated on first use
        self.count = 0

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """The batch D sees for `fakes` (B, 3, R, R), and the pool updated."""
        fakes = fakes.detach().float()
        if self.size == 0:
            return fakes
        if self.images is None:
            self.images = torch.zeros((self.size, *fakes.shape[1:]), device=self.device)
        if self.count < self.size:
            n = min(len(fakes), self.size - self.count)
            self.images[self.count:self.count + n] = fakes[:n]
            self.count += n
            return fakes
        swap = (torch.rand(len(fakes), device=self.device) < 0.5)[:, None, None, None]
        slots = torch.randperm(self.size, device=self.device)[:len(fakes)]
        stored = self.images[slots]
        self.images[slots] = torch.where(swap, fakes, stored)
        return torch.where(swap, stored, fakes)

    def state_dict(self) -> dict:
        return {"count": self.count, "images": self.images[:self.count] if self.images is not None
                else torch.zeros(0)}

    def load_state_dict(self, state: dict) -> None:
        count, images = state["count"], state["images"]
        if not isinstance(count, int) or not 0 <= count <= self.size or len(images) != count:
            raise ValueError(f"pool of {count} images does not fit pool_size={self.size}")
        self.count = count
        self.images = None
        if count:
            self.images = torch.zeros((self.size, *images.shape[1:]), device=self.device)
            self.images[:count] = images.to(self.device)


def fixed_faces(images: torch.Tensor, rows_a: np.ndarray, rows_b: np.ndarray, count: int) -> tuple:
    """The first `count` real faces of each domain (row order), as float (N, 3, R, R) in [-1, 1]:
    the same faces in every checkpoint's grid and in the gallery."""
    pick = lambda rows: data.to_unit(images[torch.as_tensor(rows[:count], device=images.device)])  # noqa: E731
    return pick(rows_a), pick(rows_b)


# the rows of a translation grid, in order: key -> (file-safe name, label; {a} is the attribute)
ROWS = {
    "A": ("a", "with {a} (A, real)"),
    "A->B": ("a-to-b", "{a} removed (A → B)"),
    "A->B->A": ("a-to-b-to-a", "and back (A → B → A)"),
    "B": ("b", "without {a} (B, real)"),
    "B->A": ("b-to-a", "{a} added (B → A)"),
    "B->A->B": ("b-to-a-to-b", "and back (B → A → B)"),
}


@torch.no_grad()
def translation_rows(nets: dict, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rows of a translation grid (keys of ROWS): each domain's real faces, their
    translation by G_AB / G_BA, and the cycle back."""
    ab, ba = nets["G_AB"](real_a), nets["G_BA"](real_b)
    return {"A": real_a, "A->B": ab, "A->B->A": nets["G_BA"](ab),
            "B": real_b, "B->A": ba, "B->A->B": nets["G_AB"](ba)}


def load_generators(state: dict, device: str | torch.device = "cpu") -> dict[str, ResnetGenerator]:
    """Both generators (G_AB, G_BA) of a translation checkpoint, in eval mode on `device`."""
    cfg = TranslateConfig.from_dict(state["config"])
    nets = {}
    for key in ("G_AB", "G_BA"):
        nets[key] = ResnetGenerator(cfg.model)
        ckpt.restore(nets[key], state, key, f"checkpoint of {cfg.run}")
        nets[key] = nets[key].to(device).eval()
    return nets


def swap_sampler(G_BA: torch.nn.Module, images: torch.Tensor, rows, device: torch.device,
                 autocast=contextlib.nullcontext):
    """What a swap's metrics score: `sampler(n, batch)` yields n images in batches, the faces of
    `images` (uint8 (N, H, W, 3)) at `rows` (domain B: the attribute off), in that order and
    repeated as needed, with the attribute added by G_BA on `device`."""
    rows = torch.as_tensor(rows, device=images.device)

    @torch.no_grad()
    def sample(n: int, batch: int):
        for i in range(0, n, batch):
            take = rows[torch.arange(i, min(i + batch, n), device=rows.device) % len(rows)]
            with autocast():
                yield G_BA(data.to_unit(images[take].to(device)))

    return sample


def checkpoint_sampler(state: dict, dataset: str, samples: int, device: torch.device):
    """What a swap checkpoint's run scored, outside the run (`facegan score`, the evaluate flow):
    `swap_sampler` of its G_BA over `dataset`'s B faces for its attribute, reading only the shards
    that hold the first `samples` of them; returns (sampler, "G_BA"). A dataset of another image
    side, or without the attribute, is a DatasetError naming it."""
    cfg = TranslateConfig.from_dict(state["config"])
    manifest = data.read_manifest(open_store(dataset))
    if manifest["resolution"] != cfg.model.resolution:
        raise DatasetError(f"{dataset}: {manifest['resolution']} px images; the swap was trained on "
                           f"{cfg.model.resolution} px faces, score it on a dataset of that side")
    names, labels = data.load_attributes(dataset, manifest)
    _, rows_b = domains(labels, names, cfg.attribute, dataset)
    faces = data.load_rows(dataset, manifest, rows_b[:samples].tolist())
    return swap_sampler(load_generators(state, device)["G_BA"], faces, range(len(faces)), device), "G_BA"


def gallery_rows(state: dict, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The translation rows of a checkpoint for its run's fixed faces (the first sample_count of
    each domain, as in its training grids), reading only the dataset shards that hold them;
    computed on `device` ("auto", "cpu", "cuda[:N]")."""
    cfg = TranslateConfig.from_dict(state["config"])
    count = cfg.sample_count
    manifest = data.read_manifest(open_store(cfg.dataset))
    names, labels = data.load_attributes(cfg.dataset, manifest)
    rows_a, rows_b = domains(labels, names, cfg.attribute, cfg.dataset)
    device = use_device(str(device))
    real = [data.to_unit(data.load_rows(cfg.dataset, manifest, rows[:count].tolist()).to(device))
            for rows in (rows_a, rows_b)]
    return translation_rows(load_generators(state, device), *real)


def grid_png(rows: dict[str, torch.Tensor]) -> bytes:
    """One PNG of the translation rows, a row each (the order of `translation_rows`)."""
    return to_png(torch.cat([r.float() for r in rows.values()]), nrow=len(next(iter(rows.values()))))


class Recipe:
    """One attribute-swap run's networks, optimizers, pools and step (see facegan.loop)."""

    def __init__(self, setup) -> None:
        cfg, rt, device = setup.cfg, setup.rt, setup.rt.device
        self.cfg, self.rt, self.setup = cfg, rt, setup
        # each domain is a set of rows of the one uint8 tensor on the device
        names, labels = data.load_attributes(cfg.dataset, setup.manifest)
        self.rows_a, self.rows_b = domains(labels, names, cfg.attribute, cfg.dataset)
        self.sampler_a, self.sampler_b = (
            data.BatchSampler(setup.images, cfg.batch_size, channels_last=True,
                              rows=torch.as_tensor(rows, device=device))
            for rows in (self.rows_a, self.rows_b))
        self.fixed = fixed_faces(setup.images, self.rows_a, self.rows_b, cfg.sample_count)
        self.nets = {name: net(cfg.model).to(device, memory_format=torch.channels_last) for name, net in
                     (("G_AB", ResnetGenerator), ("G_BA", ResnetGenerator),
                      ("D_A", PatchDiscriminator), ("D_B", PatchDiscriminator))}
        G_AB, G_BA, D_A, D_B = self.nets.values()
        adam = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), **rt.adam_options}
        self.opt_g = torch.optim.Adam([*G_AB.parameters(), *G_BA.parameters()], **adam)
        self.opt_d = torch.optim.Adam([*D_A.parameters(), *D_B.parameters()], **adam)
        self.rates = DeviceRates({"lr_g": self.opt_g, "lr_d": self.opt_d}, rt.lr_dtype, device)
        self.pool = _Pools(cfg.pool_size, device)  # past fakes of A (for D_A) and of B (for D_B)
        self.parts = {**self.nets, "opt_g": self.opt_g, "opt_d": self.opt_d, "pool": self.pool}
        self.calls = dict(self.nets)
        self.images_per_step = 2 * cfg.batch_size
        self.sampler = swap_sampler(self.nets["G_BA"], setup.images, self.rows_b, device, rt.autocast)

    def describe_new(self) -> str:
        return f"{self.cfg.attribute} on {len(self.rows_a)} images (A), off {len(self.rows_b)} (B)"

    def learning_rates(self, step: int) -> dict[str, float]:
        lr = get_lr(step, self.cfg.lr, self.cfg)
        return self.rates.set({"lr_g": lr, "lr_d": lr})

    def step(self, step: int, calls: dict) -> torch.Tensor:  # noqa: ARG002 - the same step every time
        """Both generators, then both PatchGANs; returns (loss_d, loss_g, cycle, identity,
        D_B(real B), D_B(G_AB(A))) on the device."""
        cfg, rt = self.cfg, self.rt
        G_AB, G_BA, D_A, D_B = (calls[k] for k in ("G_AB", "G_BA", "D_A", "D_B"))
        world = self.setup.world
        # the generators' update sees frozen PatchGANs: under DDP their plain modules (no gradient
        # of theirs is made, so there is nothing to synchronise)
        frozen = self.nets if world.distributed else calls
        l_cyc, l_idt = cfg.lambda_cycle, cfg.lambda_cycle * cfg.lambda_identity
        real_a, real_b = self.sampler_a.sample(self.setup.my_slice), self.sampler_b.sample(self.setup.my_slice)

        # generators: fool both PatchGANs, cycle back to the input, keep the other domain's faces
        self.nets["D_A"].requires_grad_(False)
        self.nets["D_B"].requires_grad_(False)
        with rt.autocast():
            fake_b, fake_a = G_AB(real_a), G_BA(real_b)
            rec_a, rec_b = G_BA(fake_b), G_AB(fake_a)
            gan = lsgan_loss(frozen["D_B"](fake_b), 1.0) + lsgan_loss(frozen["D_A"](fake_a), 1.0)
            cycle = F.l1_loss(rec_a.float(), real_a) + F.l1_loss(rec_b.float(), real_b)
            identity = torch.zeros((), device=rt.device)
            if l_idt:  # a generator given its target domain should change nothing
                identity = F.l1_loss(G_AB(real_b).float(), real_b) + F.l1_loss(G_BA(real_a).float(), real_a)
            loss_g = gan + l_cyc * cycle + l_idt * identity
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        # PatchGANs: real -> 1, a fake from the pool -> 0, halved as in CycleGAN
        self.nets["D_A"].requires_grad_(True)
        self.nets["D_B"].requires_grad_(True)
        # the pools see the global batch's fakes, so every rank holds the same pools (and rank 0's
        # checkpoint resumes them all); each rank's D judges its own slice of the pool's answer
        rank, n = world.rank, len(fake_a)
        pooled_a, pooled_b = (pool.query(dist.gather(fake.detach().float(), world))[rank * n:(rank + 1) * n]
                              for pool, fake in ((self.pool.a, fake_a), (self.pool.b, fake_b)))
        with rt.autocast():
            out_real_b, out_fake_b = D_B(real_b), D_B(pooled_b)
            loss_d = 0.5 * (lsgan_loss(D_A(real_a), 1.0) + lsgan_loss(D_A(pooled_a), 0.0)) \
                + 0.5 * (lsgan_loss(out_real_b, 1.0) + lsgan_loss(out_fake_b, 0.0))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        with torch.no_grad():
            return torch.stack([loss_d.detach().float(), gan.detach().float(), cycle.detach(), identity.detach(),
                                out_real_b.detach().float().mean(), out_fake_b.detach().float().mean()])

    def grid(self) -> ckpt.Render:
        """The translation grid of the run's fixed faces, encoded on the writer's thread."""
        # instance norm keeps no running statistics: train mode samples as eval would
        with torch.no_grad(), self.rt.autocast():
            return ckpt.Render(grid_png, translation_rows(self.nets, *self.fixed))


def build(setup) -> Recipe:
    """The recipe of an attribute-swap run (`setup`: facegan.loop.Setup)."""
    return Recipe(setup)


def gallery_section(state: dict, device: str | torch.device = "cpu") -> dict:
    """The gallery's section for a finished swap: a title and its strips (file stem, label, images)."""
    attribute = state["config"]["attribute"]
    rows = gallery_rows(state, device)
    return {"title": f"Attribute swap: {attribute}",
            "strips": [(ROWS[key][0], ROWS[key][1].format(a=attribute), images) for key, images in rows.items()]}


def generators(state: dict, device: torch.device, ema: bool = True) -> dict[str, ResnetGenerator]:  # noqa: ARG001
    """Both generators of a translation checkpoint ({"G_AB": ..., "G_BA": ...}; no EMA), in eval mode."""
    return load_generators(state, device)


class _Pools:
    """The two image pools of a run, saved in a checkpoint as one part ("pool")."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.a, self.b = ImagePool(size, device), ImagePool(size, device)

    def state_dict(self) -> dict:
        return {"A": self.a.state_dict(), "B": self.b.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.a.load_state_dict(state["A"])
        self.b.load_state_dict(state["B"])
