"""The collapse watchdog: it stops a run that has collapsed, so nobody pays for a dead GPU night.

Three signals, each computed where the lifecycle already reads the host (`facegan.loop.fit`):

    saturation   D(x) - D(G(z)) of the log window's averages at or above `watchdog_gap` for
                 `watchdog_windows` windows in a row: the discriminator has won and G's gradient
                 is gone (the averages are reduced over the data-parallel group, so every
                 process sees the same ones and decides alike).
    diversity    at each checkpoint, the mean pairwise distance of the run's fixed-input samples
                 (the sampler the metrics score, a private seed) over that of as many real images;
                 fallen below `watchdog_diversity` of the highest it reached in this session, the
                 generator makes one face (mode collapse). An untrained generator's near-constant
                 faces are no collapse: the signal waits until the share has reached MIN_PEAK.
    metric       the first listed metric worse than its best for `watchdog_patience` evaluations
                 in a row (0: off).

`--watchdog stop` (the default) checkpoints, writes the verdict into the run folder
(`watchdog.json`: what fired, at which step, from when, the best checkpoint so far) and ends the
run with "collapsed at step N (signal: ...)"; a stopped run is not resumed while the watchdog
stops (`refuse_resume`). `warn` only logs and records; `off` computes nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import torch

from facegan.errors import CollapsedError
from facegan.runfolder import WATCHDOG, checkpoint_key
from facegan.storage import Store

DIVERSITY_SAMPLES = 32  # fixed-input samples and real images whose pairwise distances are compared
DIVERSITY_SIDE = 16  # both are compared at this side (average-pooled): coarse shape, not pixel noise
MIN_PEAK = 0.05  # the share of the real images' diversity a run must have reached before it can collapse
#                  (measured: DCGANs at init 0.0-0.1, learning runs on the CPU 0.4-0.5 by step 400)


@dataclass(frozen=True)
class Alarm:
    """One firing of a signal: what, at which step, since which step, and in what figures."""

    signal: str  # "saturation", "diversity" or "metric"
    step: int
    since: int  # the step the trouble began (the first saturated window, the best score, the collapsed
    #             checkpoint): the best checkpoint before an alarm is older than this
    detail: str

    @property
    def line(self) -> str:
        return f"collapsed at step {self.step} ({self.signal}: {self.detail})"


@torch.no_grad()
def pairwise(images: torch.Tensor) -> float:
    """Mean L2 distance between distinct pairs of images (N, 3, H, W) in [-1, 1], compared at
    DIVERSITY_SIDE px (average-pooled)."""
    x = images.float()
    if x.shape[-1] > DIVERSITY_SIDE:
        x = torch.nn.functional.adaptive_avg_pool2d(x, DIVERSITY_SIDE)
    flat = x.flatten(1)
    n = len(flat)
    return float(torch.cdist(flat, flat).sum() / (n * (n - 1)))


def real_sample(images: torch.Tensor, n: int = DIVERSITY_SAMPLES) -> torch.Tensor:
    """A fixed choice of `n` of the dataset's uint8 (N, H, W, 3) images, as (n, 3, H, W) in [-1, 1]
    (a private generator: the training RNG is untouched)."""
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:min(n, len(images))]
    return images[pick.to(images.device)].permute(0, 3, 1, 2).float() / 127.5 - 1


def diversity(sampler, real: torch.Tensor) -> float:
    """The fixed-input samples' mean pairwise distance over the real images' (`real_sample`)."""
    fake = torch.cat(list(sampler(len(real), len(real))))
    return pairwise(fake) / max(pairwise(real), 1e-12)


class Watchdog:
    """The signals' running state through a run (rank 0 alone sees checkpoints). A resumed run
    carries every signal on: the metric's history from its rows (`replay`), the saturation streak
    and the diversity peak from the checkpoint it resumes (`state`, `restore`), so an interruption
    neither delays nor hides a collapse."""

    def __init__(self, cfg, d_outputs: tuple[str, str] | None, metric: str | None, lower_is_better: bool,
                 images: torch.Tensor | None, log) -> None:
        self.cfg, self.d_outputs, self.metric, self.lower = cfg, d_outputs, metric, lower_is_better
        self.on = cfg.watchdog != "off"
        self.real = real_sample(images) if self.on and images is not None and len(images) >= 2 else None
        self.log = log
        self.saturated = 0  # windows in a row
        self.saturated_since = 0
        self.best: tuple[int, float] | None = None  # (step, score) of the metric's best so far
        self.worse = 0  # evaluations in a row worse than the best
        self.peak = (0, 0.0)  # (step, share) of the highest fixed-sample diversity so far
        self.alarms: list[Alarm] = []
        self.recorded = 0  # alarms written into the run folder
        self.checkpoints: list[int] = []  # steps checkpointed with no alarm (the best before a collapse)
        self.dropped: set[int] = set()  # steps whose checkpoint a store outage dropped (never written)
        self.earlier: list[dict] = []  # alarms of earlier sessions, from the run folder's verdict (`inherit`)
        self.named: int | None = None  # the checkpoint the run folder's verdict names: kept from pruning

    def window(self, row: dict) -> Alarm | None:
        """Look at one log window's averaged row (every process alike)."""
        if not self.on or not self.d_outputs:
            return None
        real, fake = (row[k] for k in self.d_outputs)
        if real - fake < self.cfg.watchdog_gap:
            self.saturated = 0
            return None
        if not self.saturated:
            self.saturated_since = row["step"] - row.get("window_steps", 1) + 1
        self.saturated += 1
        if self.saturated < self.cfg.watchdog_windows:
            return None
        self.saturated = 0  # in warn mode the next alarm needs another full streak
        return self.fire(Alarm("saturation", row["step"], self.saturated_since,
                               f"D(x) {real:.3f} - D(G(z)) {fake:.3f} >= {self.cfg.watchdog_gap:g} for "
                               f"{self.cfg.watchdog_windows} log windows"))

    def state(self) -> dict:
        """What a checkpoint keeps of the running signals (every process has the same streak)."""
        return {"saturated": self.saturated, "saturated_since": self.saturated_since,
                "peak_step": self.peak[0], "peak": self.peak[1], "healthy": list(self.checkpoints),
                "dropped": sorted(self.dropped)}

    def restore(self, state: object) -> None:
        """Carry on from a checkpoint's `state()`; one written before it was kept, or damaged, is
        ignored (the streak and peak then start again)."""
        kinds = {"saturated": int, "saturated_since": int, "peak_step": int, "peak": float, "healthy": list}
        if not isinstance(state, dict) or any(type(state.get(k)) is not t for k, t in kinds.items()):
            return
        if (state["saturated"] < 0 or not math.isfinite(state["peak"])
                or any(type(s) is not int for s in state["healthy"])):
            return
        self.saturated, self.saturated_since = state["saturated"], state["saturated_since"]
        self.peak = (state["peak_step"], state["peak"])
        self.checkpoints = list(state["healthy"])
        dropped = state.get("dropped", [])  # (kept since the outage fix; older checkpoints have none)
        if isinstance(dropped, list) and all(type(s) is int for s in dropped):
            self.dropped = set(dropped)

    def inherit(self, verdict: object, start: int) -> None:
        """Carry on from the run folder's watchdog.json of an earlier session (`read_verdict`; None when
        there is none): the checkpoint it names is kept from pruning until this session's verdict
        replaces the file (`unrecorded`: written with its checkpoint, before pruning), and its
        alarms up to the resume point `start` are listed again in a new verdict (later ones were in a
        lost stretch the run trains again). Parts not of a verdict's shape are ignored."""
        if not isinstance(verdict, dict):
            return
        named = verdict.get("best_step")
        self.named = named if type(named) is int else None
        fields = {"signal": str, "step": int, "since": int, "detail": str}
        alarms = verdict.get("alarms")
        self.earlier = [{k: a[k] for k in fields} for a in (alarms if isinstance(alarms, list) else [])
                        if isinstance(a, dict) and all(type(a.get(k)) is t for k, t in fields.items())
                        and a["step"] <= start]

    def forget(self, step: int) -> None:
        """The checkpoint at `step` was dropped unwritten (`CheckpointWriter.replacing`): no verdict
        names it and pruning need not keep it."""
        self.dropped.add(step)
        self.checkpoints = [s for s in self.checkpoints if s != step]

    def checkpoint(self, step: int, sampler, scores: dict[str, float]) -> Alarm | None:
        """Look at a checkpoint (rank 0): the fixed samples' diversity, and the metric if scored."""
        if not self.on:
            return None
        alarm = None
        if self.real is not None and self.cfg.watchdog_diversity:
            share = diversity(sampler, self.real)
            self.log(f"step {step}: watchdog: fixed-sample diversity {share:.3f} (the real images': 1)")
            at, peak = self.peak
            if share > peak:
                self.peak = (step, share)
            elif peak >= MIN_PEAK and share < self.cfg.watchdog_diversity * peak:
                alarm = Alarm("diversity", step, step, f"the fixed samples' diversity fell to {share:.3f} of the real "
                                                     f"images', from {peak:.3f} at step {at}")
        if self.metric in scores:  # judged whatever else fired, so its best stays the best
            judged = self.judge(step, scores[self.metric])
            alarm = alarm or judged
        fired_here = bool(self.alarms) and self.alarms[-1].step == step  # (saturation fires in `window`)
        if alarm is None and not fired_here:
            self.checkpoints.append(step)
        return self.fire(alarm) if alarm else None

    def judge(self, step: int, value: float) -> Alarm | None:
        """The metric signal's look at one score (not yet fired)."""
        if not self.cfg.watchdog_patience:
            return None
        better = self.best is None or (value < self.best[1] if self.lower else value > self.best[1])
        if math.isfinite(value) and better:
            self.best, self.worse = (step, value), 0
            return None
        if self.best is None:  # only NaN or infinite scores so far: nothing to be worse than
            return None
        self.worse += 1  # worse than the best, or not a number at all
        if self.worse < self.cfg.watchdog_patience:
            return None
        self.worse = 0  # in warn mode the next alarm needs another full run of worse scores
        return Alarm("metric", step, self.best[0], f"{self.metric} {value:.4g} worse than its best "
                                                   f"{self.best[1]:.4g} (step {self.best[0]}) for "
                                                   f"{self.cfg.watchdog_patience} evaluations")

    def replay(self, rows: list[dict]) -> None:
        """Take in a resumed run's earlier scores of the metric (its rows up to the resume point), so
        its best and patience count carry on; what would have fired then did not stop it."""
        if self.on and self.metric:
            for row in rows:
                if isinstance(row.get(self.metric), int | float):
                    self.judge(row["step"], row[self.metric])

    def kept(self) -> tuple[int, ...]:
        """Steps of the checkpoints that pruning must keep (`checkpoint.write_checkpoint`'s `protect`):
        the best before the last alarm, which its verdict names, and while a saturation streak runs,
        the newest healthy checkpoint before it, which its alarm would name (the newest `keep_last`
        checkpoints may all lie inside the streak), and the one an earlier session's verdict names."""
        steps = {self.named}
        if self.alarms:
            steps.add(self.best_checkpoint(self.alarms[-1]))
        if self.saturated:
            steps.add(next((s for s in reversed(self.checkpoints) if s < self.saturated_since), None))
        return tuple(sorted(s for s in steps if s is not None))

    def fire(self, alarm: Alarm) -> Alarm:
        # checkpoints taken once the trouble had begun were not healthy (the metric's best itself was)
        self.checkpoints = [s for s in self.checkpoints
                            if s < alarm.since or (alarm.signal == "metric" and s == alarm.since)]
        self.alarms.append(alarm)
        self.log(f"watchdog ({self.cfg.watchdog}): {alarm.line}")
        return alarm

    def best_checkpoint(self, alarm: Alarm) -> int | None:
        """The step of the run's best checkpoint before `alarm`: the metric's best when one is scored
        (and its checkpoint was written), else the newest checkpoint saved with no alarm before the
        trouble began."""
        if self.best is not None and self.best[0] not in self.dropped:
            return self.best[0]
        before = [s for s in self.checkpoints if s < alarm.since]
        return before[-1] if before else None

    def unrecorded(self, run_uri: str) -> bytes | None:
        """watchdog.json (see `verdict`) when an alarm fired since the last call, else None: what a
        checkpoint writes beside its state."""
        if len(self.alarms) == self.recorded:
            return None
        self.recorded = len(self.alarms)
        self.named = None  # this verdict replaces the earlier session's before anything is pruned
        return self.verdict(run_uri)

    def verdict(self, run_uri: str) -> bytes:
        """watchdog.json: the mode, every alarm of the run so far (earlier sessions' up to the resume
        point, then this one's), and (for the last) the best checkpoint before it."""
        last = self.alarms[-1]
        best = self.best_checkpoint(last)
        return json.dumps({
            "mode": self.cfg.watchdog, "stopped": self.cfg.watchdog == "stop", "line": last.line, **asdict(last),
            "best": None if best is None else checkpoint_key(best), "best_step": best,
            "alarms": [*self.earlier, *(asdict(a) for a in self.alarms)], "run": run_uri,
        }, indent=1).encode()


def read_verdict(run: Store) -> dict | None:
    """A run's watchdog.json (None when the watchdog never fired)."""
    return run.get_json(WATCHDOG) if run.exists(WATCHDOG) else None


def refuse_resume(cfg, run: Store, verdict: object) -> None:
    """A run the watchdog stopped is not resumed while `cfg.watchdog` is "stop": a CollapsedError
    names the verdict (`read_verdict(run)`) and the ways on."""
    found = verdict if cfg.watchdog == "stop" and isinstance(verdict, dict) else None
    if found and found.get("stopped"):
        best = f"; its best checkpoint is {run.uri(found['best'])}" if found.get("best") else ""
        raise CollapsedError(
            f"{cfg.run}: the watchdog stopped this run, {found['line']}{best}; start a new run (e.g. "
            "--init-from its best checkpoint with lower learning rates), or resume with --watchdog warn")
