"""The run lifecycle of every model family: `fit(config, hooks)`, readable top to bottom.

It owns what every run shares: the run lease, the dataset on the device, resume from
`latest.json`, log windows with one host sync each, the DDP-aware stop/time/lease votes, the
divergence guard, `torch.compile` with its eager fallback, the metrics of the run's
sampler (`facegan.metrics`, every `metric_every` steps; best.json by the first), the collapse
watchdog (`facegan.watchdog`: it looks at every log window and checkpoint, and on `stop` ends the
run with a CollapsedError after its checkpoint), and checkpoints (the complete state, the family's
sample grid, `metrics.jsonl`, `loss.png` and the TensorBoard events of `facegan.tensorboard`,
through `facegan.checkpoint.CheckpointWriter`). It never sees a loss formula: the family's recipe
(`facegan.families`) builds the networks and optimizers, and its `step(i, calls)` returns the
family's named scalars on the device. On CPU a resumed run is bit-identical to one never
interrupted, for every family.

Callers observe and steer through `Hooks` (plain callables, no framework): `progress` gets
(step, total, metrics row) every `log_every` steps, `should_stop` is polled every step (every 10
under DDP) and makes the loop checkpoint and return early (signals, Prefect cancellation). Under
torchrun the same function runs data-parallel (see `facegan.distributed`).

A recipe (what `family.recipes().build(setup)` returns) provides:
    parts              {checkpoint key: object with state_dict/load_state_dict} (= family.parts)
    calls              {name: nn.Module} the step calls: wrapped by DDP and torch.compile here
    images_per_step    images one step trains on (for img/s)
    learning_rates(i)  sets the optimizers' rates for step i, into device tensors (a graph-ready
                       step reads no Python float: `facegan.schedule.DeviceRates`); returns
                       {"lr_g": ..., "lr_d": ...} as host floats for the metrics row
    step(i, calls)     one training step; a 1-D device tensor of the family's scalars, in order
    grid()             a checkpoint.Render of the run's fixed-input sample picture
    sampler            sampler(n, batch) -> batches of images in [-1, 1], what the metrics score
    describe_new()     the log line of a new run
A family's model config may give `min_parameters` (a lower bound from its settings), so a model
that cannot fit is refused before it is built (`facegan.memory`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from facegan import checkpoint as ckpt
from facegan import data, families, memory, plots, runfolder, storage, tensorboard, watchdog
from facegan import distributed as dist
from facegan import metrics as metric_registry
from facegan.config import ConfigError, RunConfig, session_fields
from facegan.errors import CollapsedError, DivergedError, LeaseError
from facegan.lease import Lease
from facegan.metrics import names as metric_names
from facegan.presets import resolve
from facegan.runtime import Runtime, seed_everything
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
    """How a call to `fit` ended."""

    run: str
    step: int
    total: int
    stopped: str | None = None  # why it stopped early: "stop requested", "time limit ..."; None if done
    checkpoint: str | None = None
    metrics: list[dict] = field(default_factory=list)
    compile_seconds: float | None = None  # first-step time with torch.compile (None: eager)

    @property
    def finished(self) -> bool:
        return self.stopped is None and self.step >= self.total


@dataclass(frozen=True)
class Setup:
    """What a family's `build` gets: the config, the device runtime, this process's place in the
    data-parallel group, the dataset (uint8 (N, H, W, 3) on the device) and its manifest."""

    cfg: Any
    rt: Runtime
    world: dist.World
    images: torch.Tensor
    manifest: dict
    log: Callable[[str], None]

    @property
    def my_slice(self) -> tuple[int, int]:
        """This process's (rank, size): its slice of every global batch."""
        return self.world.rank, self.world.size


# ------------------------------------------------------------------ small pure helpers


def config_for_run(dataset: str, run: str, preset: str | None, given: dict, family: str | None = None):
    """The config a run trains with, as the CLI, the flows and bench build it: the run's saved
    config when it has one (resuming), then `preset`, then the options `given` (nested as
    `config.nest_options` makes them); the model resolution defaults to the dataset's, and the
    config is checked against the dataset (`RunConfig.check_dataset`). `family`: a registered
    family's name, by default the run's own (a new run: its init_from's, else `families.DEFAULT`;
    `runfolder.family_for`). Reads only the dataset's manifest and the config.json of the run (and
    of its init_from source; a .pt outside a run is read for its config)."""
    manifest = data.read_manifest(open_store(dataset))
    saved = runfolder.read_config(open_store(run))
    held = families.name_of_saved(saved) if saved is not None else None
    fam = families.get(family or held or runfolder.family_for(None, given.get("init_from")))
    if held is not None and held != fam.name:
        raise ConfigError(f"{run} holds a {held} run, not a {fam.name} one; use a new run name")
    if saved is not None:  # a damaged saved config is named as such, not as the options given
        try:
            fam.config.from_dict({**saved, "dataset": dataset, "run": run})
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{open_store(run).uri(runfolder.CONFIG)}: damaged run config: {exc}") from None
    # a new fine-tuned run: its networks default to the source's, so they fit the weights it starts from
    base = saved if saved is not None else {"model": source_model(given.get("init_from"), fam)}
    settings = resolve(preset, given, base, manifest["resolution"], fam.presets, session_fields(fam.config))
    settings.pop("family", None)
    if preset:
        settings["preset"] = preset
    cfg = fam.config.from_dict({"dataset": dataset, "run": run, **settings})
    cfg.check_dataset(manifest)
    return cfg


def source_model(source: str | None, family: families.Family) -> dict:
    """The model settings (all but the resolution, which is the dataset's) of `source`, a run or a
    checkpoint .pt as `init_from` takes it, when it is of `family`; {} when there is none (no
    source, another family's, a run without a config: `start_from` names what is wrong). A run's
    are its config.json's (a .pt in a run: that run's); a .pt elsewhere is read for them."""
    if not source:
        return {}
    config = runfolder.source_config(source)
    if config is None or families.name_of_saved(config) != family.name:
        return {}
    model = config.get("model")
    return {k: v for k, v in model.items() if k != "resolution"} if isinstance(model, dict) else {}


@dataclass(frozen=True)
class Resumed:
    """Where a run resumes: its step (0 for a new run), its training record so far
    (`checkpoint.training_record`), the checkpoint it started from, if it was fine-tuned, and the
    watchdog's running signals (`Watchdog.state`; None before they were kept)."""

    step: int = 0
    training: dict = field(default_factory=dict)
    init_origin: dict | None = None
    watchdog: object = None
    fell_back_to: dict | None = None  # the list entry resumed from when latest.json was missing or damaged


def resume(cfg: RunConfig, run: Store, manifest: dict, parts: dict, log: Callable[[str], None]) -> Resumed:
    """Restore `parts` (state dicts by checkpoint key) and the RNG from the run's latest.json (or
    its newest intact checkpoint, `checkpoint.load_for_resume`); a new run is `Resumed()`. The
    checkpoint must be of the config's model family, trained with the same settings
    (`RunConfig.differences`) on the same dataset, or a ConfigError names what differs."""
    state, fell_back_to = ckpt.load_for_resume(run, log)
    if state is None:
        return Resumed()
    held = families.name_of_state(state)
    if held != cfg.family:
        raise ConfigError(f"{cfg.run} holds a {held} run, not a {cfg.family} one; use a new run name")
    try:
        saved = type(cfg).from_dict({**state["config"], "run": cfg.run})
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{cfg.run}: the checkpoint's config is damaged: {exc}") from None
    changed = saved.differences(cfg)
    if changed:
        raise ConfigError(f"{cfg.run} was trained with a different config ({', '.join(changed)}); "
                          "use a new run name or the same settings")
    if state["dataset_id"] != manifest["id"]:
        raise ConfigError(f"{cfg.run} was trained on dataset {state['dataset_id']}, "
                          f"but {cfg.dataset} is {manifest['id']}")
    before = state["config"].get("dataset")
    if isinstance(before, str) and storage.canonical(before) != storage.canonical(cfg.dataset):
        log(f"the dataset's path changed ({before} -> {cfg.dataset}); it is the same dataset (id {manifest['id']})")
    for key, obj in parts.items():
        ckpt.restore(obj, state, key, run.uri(runfolder.checkpoint_key(state["step"])))
    ckpt.set_rng_state(state["rng"])
    log(f"resuming {cfg.run} from {ckpt.describe(state)}")
    return Resumed(state["step"], ckpt.training_record(state), saved.init_origin, state.get("watchdog"), fell_back_to)


def start_from(cfg: RunConfig, family: families.Family, parts: dict, log: Callable[[str], None]) -> RunConfig:
    """A new run's start from another run's weights (`cfg.init_from`: fine-tuning): the family's
    networks (`family.nets`) are loaded into `parts`; optimizers, pools and the RNG stay fresh.
    Returns `cfg` with the checkpoint it started from recorded (`init_origin`: uri, step, sha256).
    Another family, or a network of other shapes, is a ConfigError naming both."""
    state, _, origin = ckpt.load_chosen(cfg.init_from)
    held = families.name_of_state(state)
    if held != cfg.family:
        raise ConfigError(f"init_from={cfg.init_from!r} is a {held} run; this run is {cfg.family} "
                          f"(fine-tune it as a {held} run)")
    there = state["config"].get("model")
    for name in family.nets:
        mine = parts[name].state_dict()
        theirs = state.get(name) or {}
        for key, value in mine.items():
            other = theirs.get(key)
            if not isinstance(other, torch.Tensor) or other.shape != value.shape:
                shape = tuple(other.shape) if isinstance(other, torch.Tensor) else "missing"
                raise ConfigError(
                    f"init_from={cfg.init_from!r} does not fit this run: {name}.{key} is {shape} there, "
                    f"{tuple(value.shape)} here (its model {json.dumps(there)}, this run's "
                    f"{json.dumps(cfg.to_dict()['model'])})")
        ckpt.restore(parts[name], state, name, origin["uri"])
    log(f"new run {cfg.run} starts from {origin['uri']} (step {state['step']}, its {', '.join(family.nets)}; "
        "optimizers fresh)")
    return cfg.replace(init_origin={"uri": origin["uri"], "step": state["step"], "sha256": origin["sha256"]})


def wrap_calls(calls: dict, wrap: Callable) -> dict:
    """The step's modules, each wrapped (DDP, torch.compile)."""
    return {name: wrap(module) for name, module in calls.items()}


# ------------------------------------------------------------------ the lifecycle


def fit(cfg: RunConfig, hooks: Hooks | None = None) -> TrainResult:
    """Train (or resume) the run at `cfg.run` with its family's recipe; returns when done,
    stopped, or out of time. Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0
    writes the run folder."""
    family = families.of_config(cfg)
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
    if world.is_main:  # ... of a run folder: a folder of photos or a dataset is not written into
        runfolder.check_run_folder(run)
    lease = Lease(run).acquire() if world.is_main else None
    try:
        earlier = watchdog.read_verdict(run)  # what the watchdog said of an earlier session, if it fired
        watchdog.refuse_resume(cfg, run, earlier)  # a run the watchdog stopped stays stopped while it stops runs
        # --- data: one uint8 tensor on the device, batches drawn there -----------------------
        manifest = data.read_manifest(open_store(cfg.dataset))  # checked before any pixel is read
        cfg.check_dataset(manifest)
        side = cfg.model.resolution
        memory.check(2 * cfg.batch_size * 3 * side * side * 4, f"batch_size={cfg.batch_size} at {side} px "
                     "(a step's real and generated images alone)", device)
        images, _ = data.load(cfg.dataset, device=device, manifest=manifest)

        # --- the family's networks, optimizers and step (the same initial weights on every rank) ---
        seed_everything(cfg.seed)
        sizes = f"the model ({', '.join(f'{k}={v}' for k, v in cfg.to_dict()['model'].items())})"
        least = getattr(cfg.model, "min_parameters", 0)  # a model config may bound its size (facegan.memory)
        memory.check(4 * 4 * least, f"{sizes}, with {least} parameters or more (weights, gradients, Adam's moments)",
                     device)
        with memory.refused_if_out_of_memory(sizes, device):
            recipe = family.recipes().build(Setup(cfg, rt, world, images, manifest, log))
        weights = sum(p.numel() * p.element_size() for m in recipe.calls.values() for p in m.parameters())
        memory.check(3 * weights, f"{sizes}: the gradients and Adam's moments of its built networks", device)
        keys = [s.key for s in family.scalars]

        # --- resume from latest.json (parts restored as they are saved), or start anew ---------
        resumed = resume(cfg, run, manifest, recipe.parts, log)
        start, trained = resumed.step, resumed.training
        if resumed.fell_back_to and world.is_main:  # latest.json names what this run resumes from again
            ckpt.point_latest_at(run, resumed.fell_back_to)
        if start and resumed.init_origin:  # a fine-tuned run keeps the record of where it started
            cfg = cfg.replace(init_origin=resumed.init_origin)
        if start == 0:
            if cfg.init_from:  # fine-tuning: another run's weights, fresh optimizers
                cfg = start_from(cfg, family, recipe.parts, log)
            log(f"new run {cfg.run}: {recipe.describe_new()}; {runfolder.CONFIG} is saved after its first step")
        elif start >= cfg.steps:  # a finished run resumed as it was, or with fewer steps: said, not a silent no-op
            log(f"the run is already at step {start}, not below steps={cfg.steps}: nothing to train (raise steps "
                "to train further)")
        # rows already written up to the resume point (later ones are made again); rank 0 alone writes them
        rows_at = runfolder.read_metrics(run, upto=start) if world.is_main else ([], {})
        metrics, scored = rows_at[0], {name: rows_at[1].get(name, []) for name in metric_names(cfg.metrics)}
        if start and world.is_main and scored:  # a damaged best.json names the best scored checkpoint again
            lead = next(iter(scored))
            ckpt.repair_best(run, lead, scored[lead], metric_registry.get(lead).lower_is_better, log)
        if cfg.tensorboard and world.is_main:  # event files past the resume point are from a lost session
            tensorboard.purge_after(run, start)
        events = tensorboard.Events(metrics, scored)  # the rows already in event files
        scorers = {}
        if cfg.metric_every and world.is_main:  # weights and real features first: a bad file leaves no run folder
            shared: dict = {}  # one Inception network, real features and generated pass for all of them
            scorers = metric_registry.scorers_for(cfg, list(scored), images, manifest, device, log, shared)
        first = next(iter(scorers), None)
        watch = watchdog.Watchdog(cfg, family.d_outputs, first,
                                  metric_registry.get(first).lower_is_better if first else True,
                                  images if world.is_main else None, log)
        watch.replay(scored.get(first, []))  # the metric's best and patience count so far (a resumed run)
        watch.restore(resumed.watchdog)  # ... and its saturation streak, diversity peak, healthy checkpoints
        if world.is_main:  # ... and the verdict an earlier session left: what it names stays
            watch.inherit(earlier, start)
        halt: watchdog.Alarm | None = None  # the watchdog's alarm that stops the run (--watchdog stop)
        log(f"config: {json.dumps(cfg.to_dict())}")  # after every check on it, so errors come first

        # --- what the step calls: DDP wrappers and torch.compile (with an eager fallback) ------
        calls = recipe.calls
        if world.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            calls = wrap_calls(calls, lambda m: DDP(m, device_ids=rt.ddp_device_ids))
        eager = calls
        if cfg.compile:
            calls = wrap_calls(calls, torch.compile)

        def diverged(step: int) -> DivergedError:
            return DivergedError(
                f"{cfg.run}: the losses became NaN or infinite by step {step}; nothing from there was saved, "
                "the run's latest checkpoint is from before (lower the learning rates, then resume)")

        def save(step: int) -> watchdog.Alarm | None:
            """Queue a checkpoint (rank 0): the metrics, the watchdog's look, the sample picture, metric
            rows, loss curve, the watchdog's verdict if it fired, then the state. Returns the watchdog's
            alarm at this checkpoint, if any."""
            best, scores = None, {}  # (name, value) of the first metric listed, for best.json; {name: fields}
            if scorers and step % cfg.metric_every == 0:
                for name, fields in metric_registry.score_all(scorers, recipe.sampler).items():
                    scored[name].append({"step": step, **fields, f"{name}_protocol": scorers[name].protocol})
                    best, scores[name] = best or (name, fields[name]), fields
                    log(f"step {step}: {name} {fields[name]:.4g} ({scorers[name].protocol['samples']} samples)")
            alarm = watch.checkpoint(step, recipe.sampler, {name: fields[name] for name, fields in scores.items()})
            rows, grid = list(metrics), recipe.grid()  # rows: a snapshot, encoded on the writer's thread
            files = {runfolder.sample_key(step): grid, runfolder.METRICS: ckpt.Render(runfolder.jsonl, ckpt.Host(rows))}
            if cfg.tensorboard:  # the rows and scores no event file holds yet, and the picture, as events
                files[tensorboard.event_key(step)] = events.render(step, time.time(), rows, scored, grid)
            files.update({runfolder.metric_key(name): ckpt.Render(runfolder.jsonl, ckpt.Host(list(r)))
                          for name, r in scored.items() if r})
            if rows:
                files[runfolder.LOSS_PLOT] = ckpt.Render(plots.render, "loss_curve_png", ckpt.Host(rows),
                                                         runfolder.name(cfg.run),
                                                         family.plot_series(), separate_process=rt.plots_apart)
            training = {"seconds": trained.get("seconds", 0.0) + time.monotonic() - wall_start,
                        "device": rt.hardware(), "processes": world.size, "dataset_images": manifest["count"]}
            lower = metric_registry.get(best[0]).lower_is_better if best else True
            with writer.replacing() as dropped:  # a checkpoint a store outage drops is never named or kept
                if dropped is not None:
                    watch.forget(dropped)
                verdict = watch.unrecorded(run.uri())  # what fired since the last checkpoint
                if verdict:
                    files[runfolder.WATCHDOG] = verdict
                state = ckpt.make_state(step, cfg.to_dict(), manifest["id"], cfg.family, training, watch.state(),
                                        **{key: obj.state_dict() for key, obj in recipe.parts.items()})
                writer.save(state, files, metric=best, lower_is_better=lower, protect=watch.kept())
            return alarm

        writer = None  # rank 0 alone writes the run folder
        if world.is_main:
            writer = ckpt.CheckpointWriter(run, cfg.keep_last, on_written=hooks.checkpoint, log=log)
        result = TrainResult(run=run.root, step=start, total=cfg.steps, metrics=metrics)
        sums = torch.zeros(len(keys), device=device)  # the family's scalars, summed; read every log_every
        summed = 0  # steps in `sums`
        window_start, timed = time.perf_counter(), 0  # steps timed since window_start
        step = start
        # fixed shapes: on CUDA, cuDNN times its convolution algorithms once and keeps the fastest
        with rt.fixed_shape_kernels():
            try:
                while step < cfg.steps:
                    step += 1
                    rates = recipe.learning_rates(step)

                    # --- the step; the first compiled one is timed apart, and falls back to eager ----
                    if cfg.compile and result.compile_seconds is None:
                        rng = ckpt.rng_state()
                        t0 = time.perf_counter()
                        try:
                            sums += recipe.step(step, calls)
                            rt.synchronize()
                        except Exception as exc:  # noqa: BLE001 - any compiler failure means eager
                            log(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); using eager mode")
                            ckpt.set_rng_state(rng)
                            calls = eager
                            sums += recipe.step(step, calls)
                        result.compile_seconds = time.perf_counter() - t0
                        log(f"first step (torch.compile) took {result.compile_seconds:.1f}s")
                        window_start, timed = time.perf_counter(), -1  # compile time reported, not averaged
                    elif step == start + 1:  # the first step shows whether the settings fit the device
                        with memory.refused_if_out_of_memory(f"batch_size={cfg.batch_size} with {sizes}", device):
                            sums += recipe.step(step, calls)
                    else:
                        sums += recipe.step(step, calls)
                    if step == start + 1 and world.is_main:  # every setting has run: it is the run's now
                        run.put_json(runfolder.CONFIG, cfg.to_dict())
                    summed += 1
                    timed += 1

                    # --- running sums: one host sync every log_every steps -----------------------
                    if step % cfg.log_every == 0 or step == cfg.steps:
                        avg = (dist.all_mean(sums, world) / summed).tolist()
                        if not all(math.isfinite(v) for v in avg):
                            raise diverged(step)
                        step_s = max(time.perf_counter() - window_start, 1e-9) / max(timed, 1)
                        row = {
                            "step": step, **dict(zip(keys, avg, strict=True)),
                            "img_per_s": recipe.images_per_step / step_s, **rates, "time": time.time(),
                            "window_steps": summed,  # steps averaged (fewer in the first window after a resume)
                            "eta_s": (cfg.steps - step) * step_s,
                        }
                        metrics.append(row)
                        if hooks.progress and world.is_main:
                            hooks.progress(step, cfg.steps, row)
                        alarm = watch.window(row)  # the same averages on every process: they agree
                        if alarm and cfg.watchdog == "stop":
                            halt = alarm
                        sums.zero_()
                        summed, window_start, timed = 0, time.perf_counter(), 0

                    # --- stop requests and wall-clock limit: checkpoint, then return --------------
                    # (every process must agree: under DDP they vote every 10 steps)
                    if halt:
                        result.stopped = halt.line
                    elif not world.distributed or step % 10 == 0 or step == cfg.steps:
                        stop = bool(hooks.should_stop and hooks.should_stop())
                        late = bool(cfg.max_seconds and time.monotonic() - wall_start > cfg.max_seconds)
                        if dist.any_true(bool(lease and lease.lost), world, device):  # nothing more may be written
                            raise LeaseError(lease.lost if lease else f"{cfg.run}: rank 0 lost the run's lease")
                        if dist.any_true(stop, world, device):
                            result.stopped = "stop requested"
                        elif dist.any_true(late, world, device):
                            result.stopped = f"time limit {cfg.max_seconds:g}s"
                    if step % cfg.ckpt_every == 0 or step == cfg.steps or result.stopped:
                        if summed and not bool(torch.isfinite(sums).all()):  # steps since the last log
                            raise diverged(step)
                        alarm = save(step) if writer else None
                        if cfg.watchdog == "stop" and not halt:  # an alarm at a checkpoint (rank 0's) stops all
                            if dist.any_true(alarm is not None, world, device):
                                halt = alarm or watchdog.Alarm("checkpoint", step, step, "rank 0's watchdog fired")
                                result.stopped = halt.line
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
    if halt:
        raise CollapsedError(f"{cfg.run}: the watchdog stopped the run, {halt.line}; checkpoint and verdict "
                             f"saved ({run.uri(runfolder.WATCHDOG)})")
    pointer = ckpt.read_pointer(run)
    result.checkpoint = pointer["uri"] if pointer else None
    return result
