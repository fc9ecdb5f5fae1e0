"""The training loop: `train(config, hooks)`, readable top to bottom.

Non-saturating GAN with BCE-with-logits (optional one-sided label smoothing; hinge loss as an
alternative), Adam, a constant or linearly decaying learning rate, an EMA generator, optional
DiffAugment and lazy R1, bf16 autocast (on bf16-capable GPUs by default, see `precision`),
channels_last everywhere, deterministic seeding.
Every `ckpt_every` steps and at the end it checkpoints the complete state (see
`facegan.checkpoint`), a fixed-z sample grid, `metrics.jsonl` and `loss.png` to the run URI
(and FID with `best.json` when `fid_every` is set). Started on a run folder that has
`latest.json`, it resumes from it; on CPU the result is bit-identical to a run that was never
interrupted.

Callers observe and steer through `Hooks` (plain callables, no framework): `progress` gets
(step, total, metrics) every `log_every` steps, `should_stop` is polled every step and makes
the loop checkpoint and return early (signals, Prefect cancellation, wall-clock limits).
Under torchrun the same function runs data-parallel (see `facegan.distributed`).
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from facegan import checkpoint as ckpt
from facegan import data, plots, runfolder
from facegan import distributed as dist
from facegan.augment import diff_augment
from facegan.config import ConfigError, RunConfig, TrainConfig
from facegan.errors import DivergedError, LeaseError
from facegan.images import to_png
from facegan.lease import RunLease
from facegan.losses import discriminator_loss, generator_loss, r1_penalty
from facegan.models import Discriminator, Generator
from facegan.presets import presets_for, resolve
from facegan.runtime import Runtime, seed_everything
from facegan.schedule import get_lr, set_lr
from facegan.storage import Store, open_store


@dataclass(frozen=True)
class Hooks:
    """Callables through which a caller watches and stops training."""

    progress: Callable[[int, int, dict], None] | None = None
    should_stop: Callable[[], bool] | None = None
    checkpoint: Callable[[int, str], None] | None = None
    log: Callable[[str], None] | None = None  # None: print(), looked up when called


@dataclass
class TrainResult:
    """How a call to `train` ended."""

    run: str
    step: int
    total: int
    stopped: str | None = None  # why it stopped early: "signal", "time limit", "hook"; None if done
    checkpoint: str | None = None
    metrics: list[dict] = field(default_factory=list)
    compile_seconds: float | None = None  # first-step time with torch.compile (None: eager)

    @property
    def finished(self) -> bool:
        return self.stopped is None and self.step >= self.total


# ------------------------------------------------------------------ small pure helpers


def config_for_run(dataset: str, run: str, preset: str | None, given: dict, cls: type[RunConfig] = TrainConfig):
    """The config (a `cls`: TrainConfig, or TranslateConfig) a run trains with, as the CLI and
    the flows build it: the run's saved config when it has one (resuming), then `preset`, then
    the options `given` (nested as `config.nest_options` makes them); the model resolution
    defaults to the dataset's, and the config is checked against the dataset
    (`RunConfig.check_dataset`). Reads only the dataset's manifest and the run's config.json."""
    manifest = data.read_manifest(open_store(dataset))
    saved = runfolder.read_config(open_store(run))
    if saved is not None and runfolder.family(saved) != cls.family:
        raise ConfigError(f"{run} holds a {runfolder.family(saved)} run, not a {cls.family} one; use a new run name")
    cfg = cls.from_dict({"dataset": dataset, "run": run,
                         **resolve(preset, given, saved, manifest["resolution"], presets_for(cls))})
    cfg.check_dataset(manifest)
    return cfg


def resume(cfg: RunConfig, run: Store, manifest: dict, parts: dict, log: Callable[[str], None]) -> int:
    """Restore `parts` (state dicts by checkpoint key) and the RNG from the run's latest.json
    and return its step; 0 for a new run. The checkpoint must be of the config's model family,
    trained with the same settings (`RunConfig.differences`) on the same dataset, or a
    ConfigError names what differs."""
    state = ckpt.load_run(run)
    if state is None:
        return 0
    if state.get("family", "dcgan") != cfg.family:
        raise ConfigError(f"{cfg.run} holds a {state.get('family', 'dcgan')} run, not a {cfg.family} one; "
                          "use a new run name")
    saved = type(cfg).from_dict({**state["config"], "run": cfg.run})
    changed = saved.differences(cfg)
    if changed:
        raise ConfigError(f"{cfg.run} was trained with a different config ({', '.join(changed)}); "
                          "use a new run name or the same settings")
    if state["dataset_id"] != manifest["id"]:
        raise ConfigError(f"{cfg.run} was trained on dataset {state['dataset_id']}, "
                          f"but {cfg.dataset} is {manifest['id']}")
    for key, obj in parts.items():
        ckpt.restore(obj, state, key, run.uri(runfolder.checkpoint_key(state["step"])))
    ckpt.set_rng_state(state["rng"])
    log(f"resuming {cfg.run} from {ckpt.describe(state)}")
    return state["step"]


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


# ------------------------------------------------------------------ the loop


def train(cfg: TrainConfig, hooks: Hooks | None = None) -> TrainResult:
    """Train (or resume) the run at `cfg.run`; returns when done, stopped, or out of time.

    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 writes the run folder.
    """
    hooks = hooks or Hooks()
    log = hooks.log or (lambda msg: print(msg, flush=True))  # late lookup: Prefect's log_prints
    world = dist.from_env()
    rt = Runtime.create(cfg.device, cfg.precision, world.local_rank)  # cuda -> cuda:LOCAL_RANK
    device = rt.device
    if cfg.batch_size % world.size:
        raise ConfigError(f"batch_size={cfg.batch_size} must divide evenly over {world.size} processes")
    dist.init(world, rt.process_group_backend)
    run = open_store(cfg.run)
    wall_start = time.monotonic()
    if not world.is_main:
        log = lambda msg: None  # noqa: E731 - rank 0 speaks for the group
    log(f"{rt.describe()}{f' x{world.size} processes' if world.distributed else ''}"
        f"{', torch.compile' if cfg.compile else ''}")

    # --- one trainer per run: the lease is held from before anything is read until the end ---
    lease = RunLease(run).acquire() if world.is_main else None
    try:
        # --- data: one uint8 tensor on the device, batches drawn there -----------------------
        manifest = data.read_manifest(open_store(cfg.dataset))  # checked before any pixel is read
        cfg.check_dataset(manifest)
        images, _ = data.load(cfg.dataset, device=device, manifest=manifest)
        # channels_last everywhere: cuDNN's and oneDNN's fast convolution layout (1.4x on CPU too)
        sampler = data.BatchSampler(images, cfg.batch_size, channels_last=True)
        my_slice = (world.rank, world.size)  # this process's slice of every global batch
        local_batch = cfg.batch_size // world.size
        augment = cfg.augment_list

        # --- networks and optimizers ----------------------------------------------------------
        seed_everything(cfg.seed)  # the same on every rank: identical initial weights
        G = Generator(cfg.model).to(device, memory_format=torch.channels_last)
        D = Discriminator(cfg.model).to(device, memory_format=torch.channels_last)
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        adam = {"betas": (cfg.beta1, cfg.beta2), **rt.adam_options}
        opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, **adam)
        opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, **adam)
        parts = {"G": G, "D": D, "G_ema": G_ema, "opt_g": opt_g, "opt_d": opt_d}  # what a checkpoint holds

        # --- resume from latest.json (parts restored as save() below saves them), or start anew ---
        start = resume(cfg, run, manifest, parts, log)
        if start == 0:
            log(f"new run {cfg.run}: {manifest['count']} images, config saved to {runfolder.CONFIG}")
        # rows already written up to the resume point (later ones are made again); rank 0 alone writes them
        metrics, fid_rows = runfolder.read_metrics(run, upto=start) if world.is_main else ([], [])
        fid = None
        if cfg.fid_every:  # weights and real statistics first: a bad weights file leaves no run folder behind
            from facegan.metrics import FIDTracker

            fid = FIDTracker.for_training(cfg, images, manifest, device, log) if world.is_main else None
        log(f"config: {json.dumps(cfg.to_dict())}")  # after every check on it, so errors come first
        if world.is_main:
            run.put_json(runfolder.CONFIG, cfg.to_dict())
        z_fixed = fixed_latents(cfg, device)

        # --- what the step calls: DDP wrappers and torch.compile (with an eager fallback) ------
        G_step, D_step = G, D
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            G_step, D_step = DDP(G, device_ids=rt.ddp_device_ids), DDP(D, device_ids=rt.ddp_device_ids)
        eager = (G_step, D_step)
        if cfg.compile:
            G_step, D_step = torch.compile(G_step), torch.compile(D_step)

        def train_step(step: int) -> torch.Tensor:
            """One D update then one G update; returns (loss_d, loss_g, D(x), D(G(z))) on the device."""
            real = sampler.sample(my_slice)
            z = torch.randn(cfg.batch_size, cfg.model.z_dim, device=device)
            z = z[world.rank * local_batch:(world.rank + 1) * local_batch]

            # discriminator: real -> 1 (or label_smoothing), fake -> 0; hinge optional
            with rt.autocast():
                fake = G_step(z)
                logits_real = D_step(diff_augment(real, augment))
                logits_fake = D_step(diff_augment(fake.detach(), augment))
                loss_d = discriminator_loss(cfg.loss, logits_real, logits_fake, cfg.label_smoothing)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            if cfg.r1_gamma and step % cfg.r1_every == 0:  # lazy R1, scaled by its interval
                (r1_penalty(D_step, real, augment, cfg.r1_gamma) * cfg.r1_every).backward()
            opt_d.step()

            # generator: non-saturating (or hinge) loss through the updated D
            with rt.autocast():
                logits_gen = D_step(diff_augment(fake, augment))
                loss_g = generator_loss(cfg.loss, logits_gen)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            ema_update(G_ema, G, cfg.ema_decay)
            with torch.no_grad():
                return torch.stack([
                    loss_d.detach().float(), loss_g.detach().float(),
                    torch.sigmoid(logits_real.detach().float()).mean(),
                    torch.sigmoid(logits_fake.detach().float()).mean(),
                ])

        def diverged(step: int) -> DivergedError:
            return DivergedError(
                f"{cfg.run}: the losses became NaN or infinite by step {step}; nothing from there was saved, "
                "the run's latest checkpoint is from before (lower lr_d/lr_g or r1_gamma, then resume)")

        def save(step: int) -> None:
            """Queue a checkpoint (rank 0): sample grid, metrics, loss curve, FID, then the state."""
            metric = None
            if fid is not None and step % cfg.fid_every == 0:
                score = fid.score(G_ema)
                fid_rows.append({"step": step, "fid": score, "fid_protocol": fid.protocol})
                metric = ("fid", score)
                log(f"step {step}: FID {score:.2f} ({fid.protocol['samples']} samples)")
            with torch.no_grad():
                grid = G_ema(z_fixed)
            rows = list(metrics)
            files = {runfolder.sample_key(step): ckpt.Render(to_png, grid), runfolder.METRICS: runfolder.jsonl(rows)}
            if fid_rows:
                files[runfolder.FID_METRICS] = runfolder.jsonl(fid_rows)
            if rows:
                files[runfolder.LOSS_PLOT] = ckpt.Render(plots.render, "loss_curve_png", rows, runfolder.name(cfg.run),
                                                         separate_process=rt.plots_apart)
            state = ckpt.make_state(
                step, cfg.to_dict(), manifest["id"], cfg.family,
                **{key: obj.state_dict() for key, obj in parts.items()},
            )
            writer.save(state, files, metric=metric)

        writer = None  # rank 0 alone writes the run folder
        if world.is_main:
            writer = ckpt.CheckpointWriter(run, cfg.keep_last, on_written=hooks.checkpoint, log=log)
        result = TrainResult(run=run.root, step=start, total=cfg.steps, metrics=metrics)
        sums = torch.zeros(4, device=device)  # loss_d, loss_g, D(x), D(G(z)); read every log_every
        summed = 0  # steps in `sums`
        window_start, timed = time.perf_counter(), 0  # steps timed since window_start
        step = start
        # fixed shapes: on CUDA, cuDNN times its convolution algorithms once and keeps the fastest
        with rt.fixed_shape_kernels():
            try:
                while step < cfg.steps:
                    step += 1
                    lr_g, lr_d = get_lr(step, cfg.lr_g, cfg), get_lr(step, cfg.lr_d, cfg)
                    set_lr(opt_g, lr_g)
                    set_lr(opt_d, lr_d)

                    # --- the step; the first compiled one is timed apart, and falls back to eager ----
                    if cfg.compile and result.compile_seconds is None:
                        rng = ckpt.rng_state()
                        t0 = time.perf_counter()
                        try:
                            sums += train_step(step)
                            rt.synchronize()
                        except Exception as exc:  # noqa: BLE001 - any compiler failure means eager
                            log(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); using eager mode")
                            ckpt.set_rng_state(rng)
                            G_step, D_step = eager
                            sums += train_step(step)
                        result.compile_seconds = time.perf_counter() - t0
                        log(f"first step (torch.compile) took {result.compile_seconds:.1f}s")
                        window_start, timed = time.perf_counter(), -1  # compile time reported, not averaged
                    else:
                        sums += train_step(step)
                    summed += 1
                    timed += 1

                    # --- running sums: one host sync every log_every steps -----------------------
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        avg = (dist.all_mean(sums, world) / summed).tolist()
                        if not all(math.isfinite(v) for v in avg[:2]):
                            raise diverged(step)
                        elapsed = max(time.perf_counter() - window_start, 1e-9)
                        step_s = elapsed / max(timed, 1)
                        row = {
                            "step": step, "loss_d": avg[0], "loss_g": avg[1], "d_real": avg[2],
                            "d_fake": avg[3], "img_per_s": cfg.batch_size / step_s,
                            "lr_g": lr_g, "lr_d": lr_d, "time": time.time(),
                            "window_steps": summed,  # steps averaged (fewer in the first window after a resume)
                            "eta_s": (cfg.steps - step) * step_s,
                        }
                        metrics.append(row)
                        if hooks.progress and world.is_main:
                            hooks.progress(step, cfg.steps, row)
                        sums.zero_()
                        summed, window_start, timed = 0, time.perf_counter(), 0

                    # --- stop requests and wall-clock limit: checkpoint, then return --------------
                    # (every process must agree: under DDP they vote every 10 steps)
                    if not world.distributed or step % 10 == 0 or step == cfg.steps:
                        stop = bool(hooks.should_stop and hooks.should_stop())
                        late = bool(cfg.max_seconds and time.monotonic() - wall_start > cfg.max_seconds)
                        if dist.any_true(bool(lease and lease.lost), world, device):  # nothing more may be written
                            raise LeaseError(lease.lost if lease else f"{cfg.run}: rank 0 lost the run's lease")
                        if dist.any_true(stop, world, device):
                            result.stopped = "stop requested"
                        elif dist.any_true(late, world, device):
                            result.stopped = f"time limit {cfg.max_seconds:g}s"
                    if step % cfg.ckpt_every == 0 or step == cfg.steps or result.stopped:
                        if summed and not bool(torch.isfinite(sums[:2]).all()):  # steps since the last log
                            raise diverged(step)
                        if writer:
                            save(step)
                    if result.stopped:
                        log(f"stopping at step {step}: {result.stopped}")
                        break
            finally:
                if writer:
                    writer.close()  # every queued checkpoint is complete (or its error raised) here
    finally:
        if lease:
            lease.release()
        dist.close(world)
    result.step = step
    pointer = ckpt.read_pointer(run)
    result.checkpoint = pointer["uri"] if pointer else None
    return result
