"""Attribute swap with CycleGAN: `train_translation(config, hooks)` and `apply`.

One stored dataset, split by a query: domain A = the images whose `attribute` is on (e.g.
Heavy_Makeup), B = the rest. Two ResNet generators learn A->B (remove) and B->A (add), two
PatchGANs judge each domain (facegan.cyclegan). The recipe is CycleGAN's: LSGAN losses,
cycle-consistency L1 x lambda_cycle (10), identity L1 x lambda_identity x lambda_cycle (0.5 x 10),
Adam(2e-4, 0.5), a pool of 50 past fakes for the discriminators, a constant learning rate that
decays linearly to zero over the second half (facegan.schedule, the DCGAN's schedule too).

The run folder, checkpoints, lease, resume and stop handling are the DCGAN's (facegan.runfolder,
facegan.checkpoint): every `ckpt_every` steps the complete state (both generators, both
PatchGANs, both optimizers, the pool, RNG, step, config) is written with a translation grid
(fixed real faces of each domain, their translations and cycle reconstructions), metrics.jsonl
and loss.png. On CPU a resumed run is bit-identical to one never interrupted. The device path
is the DCGAN's: data stays on the device, one host sync per log interval, bf16 autocast on GPUs
that compute it natively. It runs in one process (no data-parallel mode).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facegan import checkpoint as ckpt
from facegan import data, plots, runfolder
from facegan.attributes import column
from facegan.config import ConfigError, TranslateConfig
from facegan.cyclegan import PatchDiscriminator, ResnetGenerator
from facegan.errors import DatasetError, DivergedError, LeaseError
from facegan.images import to_png
from facegan.lease import RunLease
from facegan.losses import lsgan_loss
from facegan.runtime import Runtime, seed_everything, use_device
from facegan.schedule import get_lr, set_lr
from facegan.storage import open_store
from facegan.train import Hooks, TrainResult, resume

DIRECTIONS = {"remove": "G_AB", "add": "G_BA"}  # apply --direction: A (attribute on) -> B, B -> A
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


# ------------------------------------------------------------------ the loop


def train_translation(cfg: TranslateConfig, hooks: Hooks | None = None) -> TrainResult:
    """Train (or resume) the attribute-swap run at `cfg.run`; returns when done, stopped, or out
    of time (see `facegan.train.train` for the hooks and the result)."""
    hooks = hooks or Hooks()
    log = hooks.log or (lambda msg: print(msg, flush=True))  # late lookup: Prefect's log_prints
    rt = Runtime.create(cfg.device, cfg.precision)
    device = rt.device
    run = open_store(cfg.run)
    wall_start = time.monotonic()
    log(rt.describe())

    lease = RunLease(run).acquire()  # one trainer per run, from before anything is read
    try:
        # --- data: one uint8 tensor on the device; each domain is a set of rows of it ----------
        manifest = data.read_manifest(open_store(cfg.dataset))
        cfg.check_dataset(manifest)
        names, labels = data.load_attributes(cfg.dataset, manifest)
        rows_a, rows_b = domains(labels, names, cfg.attribute, cfg.dataset)
        images, _ = data.load(cfg.dataset, device=device, manifest=manifest)
        sampler_a, sampler_b = (
            data.BatchSampler(images, cfg.batch_size, channels_last=True, rows=torch.as_tensor(rows, device=device))
            for rows in (rows_a, rows_b))
        real_a_fixed, real_b_fixed = fixed_faces(images, rows_a, rows_b, cfg.sample_count)

        # --- networks, optimizers, pools ---------------------------------------------------------
        seed_everything(cfg.seed)
        nets = {name: net(cfg.model).to(device, memory_format=torch.channels_last) for name, net in
                (("G_AB", ResnetGenerator), ("G_BA", ResnetGenerator),
                 ("D_A", PatchDiscriminator), ("D_B", PatchDiscriminator))}
        G_AB, G_BA, D_A, D_B = nets.values()
        adam = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), **rt.adam_options}
        opt_g = torch.optim.Adam([*G_AB.parameters(), *G_BA.parameters()], **adam)
        opt_d = torch.optim.Adam([*D_A.parameters(), *D_B.parameters()], **adam)
        pool = _Pools(cfg.pool_size, device)  # past fakes of A (for D_A) and of B (for D_B)
        parts = {**nets, "opt_g": opt_g, "opt_d": opt_d, "pool": pool}  # what a checkpoint holds

        # --- resume from latest.json, or start a new run --------------------------------------
        start = resume(cfg, run, manifest, parts, log)
        if start == 0:
            log(f"new run {cfg.run}: {cfg.attribute} on {len(rows_a)} images (A), off {len(rows_b)} (B)")
        metrics, _ = runfolder.read_metrics(run, upto=start)
        log(f"config: {json.dumps(cfg.to_dict())}")
        run.put_json(runfolder.CONFIG, cfg.to_dict())

        l_cyc, l_idt = cfg.lambda_cycle, cfg.lambda_cycle * cfg.lambda_identity

        def train_step() -> torch.Tensor:
            """Both generators, then both PatchGANs; returns (loss_d, loss_g, cycle, identity,
            D_B(real B), D_B(G_AB(A))) on the device."""
            real_a, real_b = sampler_a.sample(), sampler_b.sample()

            # generators: fool both PatchGANs, cycle back to the input, keep the other domain's faces
            D_A.requires_grad_(False)
            D_B.requires_grad_(False)
            with rt.autocast():
                fake_b, fake_a = G_AB(real_a), G_BA(real_b)
                rec_a, rec_b = G_BA(fake_b), G_AB(fake_a)
                gan = lsgan_loss(D_B(fake_b), 1.0) + lsgan_loss(D_A(fake_a), 1.0)
                cycle = F.l1_loss(rec_a.float(), real_a) + F.l1_loss(rec_b.float(), real_b)
                identity = torch.zeros((), device=device)
                if l_idt:  # a generator given its target domain should change nothing
                    identity = F.l1_loss(G_AB(real_b).float(), real_b) + F.l1_loss(G_BA(real_a).float(), real_a)
                loss_g = gan + l_cyc * cycle + l_idt * identity
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()

            # PatchGANs: real -> 1, a fake from the pool -> 0, halved as in CycleGAN
            D_A.requires_grad_(True)
            D_B.requires_grad_(True)
            pooled_a, pooled_b = pool.a.query(fake_a), pool.b.query(fake_b)
            with rt.autocast():
                out_real_b, out_fake_b = D_B(real_b), D_B(pooled_b)
                loss_d = 0.5 * (lsgan_loss(D_A(real_a), 1.0) + lsgan_loss(D_A(pooled_a), 0.0)) \
                    + 0.5 * (lsgan_loss(out_real_b, 1.0) + lsgan_loss(out_fake_b, 0.0))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            with torch.no_grad():
                return torch.stack([loss_d.detach().float(), gan.detach().float(), cycle.detach(), identity.detach(),
                                    out_real_b.detach().float().mean(), out_fake_b.detach().float().mean()])

        def diverged(step: int) -> DivergedError:
            return DivergedError(
                f"{cfg.run}: the losses became NaN or infinite by step {step}; nothing from there was saved, "
                "the run's latest checkpoint is from before (lower lr, then resume)")

        def save(step: int) -> None:
            """Queue a checkpoint: translation grid, metrics, loss curve, then the state."""
            # instance norm keeps no running statistics: train mode samples as eval would
            with torch.no_grad(), rt.autocast():
                grid = translation_rows(nets, real_a_fixed, real_b_fixed)
            rows = list(metrics)
            files = {runfolder.sample_key(step): ckpt.Render(grid_png, grid), runfolder.METRICS: runfolder.jsonl(rows)}
            if rows:
                files[runfolder.LOSS_PLOT] = ckpt.Render(plots.render, "loss_curve_png", rows, runfolder.name(cfg.run),
                                                         separate_process=rt.plots_apart)
            writer.save(ckpt.make_state(step, cfg.to_dict(), manifest["id"], cfg.family,
                                        **{key: obj.state_dict() for key, obj in parts.items()}), files)

        writer = ckpt.CheckpointWriter(run, cfg.keep_last, on_written=hooks.checkpoint, log=log)
        result = TrainResult(run=run.root, step=start, total=cfg.steps, metrics=metrics)
        sums = torch.zeros(6, device=device)  # read every log_every steps
        summed, window_start = 0, time.perf_counter()
        step = start
        with rt.fixed_shape_kernels():
            try:
                while step < cfg.steps:
                    step += 1
                    lr = get_lr(step, cfg.lr, cfg)
                    set_lr(opt_g, lr)
                    set_lr(opt_d, lr)
                    sums += train_step()
                    summed += 1

                    # --- running sums: one host sync every log_every steps ---------------------
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        avg = (sums / summed).tolist()
                        if not all(math.isfinite(v) for v in avg[:4]):
                            raise diverged(step)
                        step_s = max(time.perf_counter() - window_start, 1e-9) / summed
                        row = {"step": step, "loss_d": avg[0], "loss_g": avg[1], "cycle": avg[2], "identity": avg[3],
                               "d_real": avg[4], "d_fake": avg[5], "img_per_s": 2 * cfg.batch_size / step_s,
                               "lr_g": lr, "lr_d": lr, "time": time.time(), "window_steps": summed,
                               "eta_s": (cfg.steps - step) * step_s}
                        metrics.append(row)
                        if hooks.progress:
                            hooks.progress(step, cfg.steps, row)
                        sums.zero_()
                        summed, window_start = 0, time.perf_counter()

                    # --- stop requests and wall-clock limit: checkpoint, then return ------------
                    if lease.lost:
                        raise LeaseError(lease.lost)
                    if hooks.should_stop and hooks.should_stop():
                        result.stopped = "stop requested"
                    elif cfg.max_seconds and time.monotonic() - wall_start > cfg.max_seconds:
                        result.stopped = f"time limit {cfg.max_seconds:g}s"
                    if step % cfg.ckpt_every == 0 or step == cfg.steps or result.stopped:
                        if summed and not bool(torch.isfinite(sums[:4]).all()):
                            raise diverged(step)
                        save(step)
                    if result.stopped:
                        log(f"stopping at step {step}: {result.stopped}")
                        break
            finally:
                writer.close()
    finally:
        lease.release()
    result.step = step
    pointer = ckpt.read_pointer(run)
    result.checkpoint = pointer["uri"] if pointer else None
    return result


class _Pools:
    """The two image pools of a run, saved in a checkpoint as one part ("pool")."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.a, self.b = ImagePool(size, device), ImagePool(size, device)

    def state_dict(self) -> dict:
        return {"A": self.a.state_dict(), "B": self.b.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.a.load_state_dict(state["A"])
        self.b.load_state_dict(state["B"])


# ------------------------------------------------------------------ using a trained run


def load_translator(run_or_checkpoint: str, direction: str, device: str = "auto") -> tuple[ResnetGenerator, dict]:
    """The generator of `direction` ("remove": A->B, "add": B->A) of a translation checkpoint (a
    run URI or a .pt URI), in eval mode on `device`; returns (network, checkpoint state)."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction={direction!r} must be one of {', '.join(DIRECTIONS)}")
    state = ckpt.load(run_or_checkpoint)
    if state.get("family") != "cyclegan":
        raise ConfigError(f"{run_or_checkpoint} is a {state.get('family', 'dcgan')} checkpoint, not an attribute swap")
    return load_generators(state, use_device(device))[DIRECTIONS[direction]], state


def apply(run_or_checkpoint: str, source: str | Path, out_uri: str, direction: str, device: str = "auto",
          log=print) -> list[str]:
    """Translate a face image, or every image in a folder, with a trained run: each input is
    cropped and resized as `prepare` does, translated, and written as `<name>.png` under
    `out_uri`. Unreadable images are listed and skipped; none readable is a DatasetError.
    Returns the keys written."""
    from facegan.prepare import IMAGE_SUFFIXES, process_image

    net, state = load_translator(run_or_checkpoint, direction, device)
    resolution = state["config"]["model"]["resolution"]
    source = Path(source).expanduser()
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DatasetError(f"{source}: no such image or folder")
    out = open_store(out_uri)
    written, skipped = [], []
    dev = next(net.parameters()).device
    for path in files:
        try:
            face = process_image(path.read_bytes(), resolution, path.suffix.lower() in (".jpg", ".jpeg"))
        except (ValueError, OSError) as exc:
            skipped.append(f"{path.name} ({exc})")
            continue
        x = data.to_unit(torch.tensor(face)[None].to(dev))
        with torch.no_grad():
            y = net(x)
        key = f"{path.stem}.png"
        out.put_bytes(key, to_png(y))
        written.append(key)
    if skipped:
        log(f"skipped {len(skipped)}: {'; '.join(skipped[:5])}")
    if not written:
        raise DatasetError(f"{source}: no readable face image among {len(files)} file(s)")
    log(f"translated {len(written)} face(s) ({direction} {state['config']['attribute']}) to {out.uri()}")
    return written
