"""The collapse watchdog: a run driven into collapse on the CPU is stopped within a bounded number
of steps, with its checkpoint and verdict written; the same run healthy is not; a stopped run is
not resumed while the watchdog stops; the gallery shows its best checkpoint with a note."""

from __future__ import annotations

import json
import threading

import pytest

from facegan import checkpoint as ckpt
from facegan import gallery, models, runfolder, watchdog
from facegan.config import ModelConfig, TrainConfig
from facegan.errors import CollapsedError, StorageError
from facegan.loop import Hooks, fit
from facegan.presets import resolve
from facegan.storage import LocalStore, open_store


def toy(dataset: str, run: str, **overrides) -> TrainConfig:
    """A udacity32 run at toy width on the synthetic faces, logging every 5 steps, with the
    watchdog's default thresholds."""
    settings = resolve("udacity32", {"model": {"ngf": 16, "ndf": 16}, "batch_size": 32, "steps": 200,
                                     "ckpt_every": 25, "log_every": 5, "keep_last": 20, "device": "cpu",
                                     "seed": 1, **overrides})
    return TrainConfig(dataset=dataset, run=run, **{**settings, "model": ModelConfig(**settings["model"])})


def quiet(rows: list | None = None, lines: list | None = None) -> Hooks:
    return Hooks(progress=lambda s, t, r: rows.append(r) if rows is not None else None,
                 log=lambda m: lines.append(m) if lines is not None else None)


def test_a_discriminator_that_wins_is_stopped_and_a_healthy_run_is_not(dataset32, tmp_path):
    """A generator that cannot learn (lr_g 1e-7): D(x) - D(G(z)) reaches the default 0.99 and
    stays; the watchdog stops the run `watchdog_windows` windows later. The same run at the
    preset's rates (measured: the gap peaks at 0.978 on these 96 faces by step 300) runs out."""
    healthy = fit(toy(dataset32, str(tmp_path / "healthy")), quiet())
    assert healthy.finished and not open_store(healthy.run).exists(runfolder.WATCHDOG)

    rows: list[dict] = []
    # the default keep_last (3): the 20-window streak spans 4 checkpoints, so the best before it is
    # older than the newest 3 and stays only because the watchdog protects it from pruning
    cfg = toy(dataset32, str(tmp_path / "store" / "runs" / "dead"), lr_g=1e-7, steps=400, keep_last=3)
    with pytest.raises(CollapsedError) as caught:
        fit(cfg, quiet(rows))
    message = str(caught.value)
    assert "\n" not in message and "collapsed at step" in message and "saturation" in message
    saturated = [r["step"] for r in rows if r["d_real"] - r["d_fake"] >= cfg.watchdog_gap]
    onset = saturated[0]
    run = open_store(cfg.run)
    verdict = json.loads(run.get_bytes(runfolder.WATCHDOG))
    # fired at the 20th saturated window in a row, within a bounded number of steps of the onset
    assert verdict["signal"] == "saturation" and verdict["since"] <= onset
    assert verdict["step"] == rows[-1]["step"] <= onset + cfg.watchdog_windows * cfg.log_every
    assert verdict["stopped"] and verdict["mode"] == "stop" and verdict["line"] in message
    # checkpoint first: latest.json is the stop's step; the best is the newest one before the onset
    assert ckpt.read_pointer(run)["step"] == verdict["step"]
    assert verdict["best_step"] < verdict["since"] and run.exists(verdict["best"])
    kept = [step for step, _ in ckpt.list_checkpoints(run)]
    assert len(kept) == 4 and kept[0] == verdict["best_step"] < verdict["since"] <= kept[1]
    state, _, origin = ckpt.load_chosen(run.uri(verdict["best"]))  # listed, verified: --init-from takes it
    assert state["step"] == verdict["best_step"] and origin["sha256"]

    # the nightly gallery shows the best checkpoint before the collapse, with a note
    night = gallery.publish(str(tmp_path / "store"), fixed=2, fresh=2, interpolation_steps=2)
    assert night["pointer"] == runfolder.WATCHDOG and night["step"] == verdict["best_step"]
    assert night["stopped"] == {"signal": "saturation", "step": verdict["step"], "line": verdict["line"]}
    page = open_store(str(tmp_path / "store")).get_bytes(f"galleries/{night['date']}/index.html").decode()
    assert f"stopped: collapsed at step {verdict['step']} (saturation)" in page

    # a stopped run stays stopped; --watchdog warn resumes it and only records
    with pytest.raises(CollapsedError, match="the watchdog stopped this run, collapsed at step"):
        fit(cfg.replace(steps=500), quiet())
    lines: list[str] = []
    result = fit(cfg.replace(steps=500, watchdog="warn"), quiet(lines=lines))
    assert result.finished and result.step == 500
    warned = json.loads(run.get_bytes(runfolder.WATCHDOG))
    assert warned["mode"] == "warn" and not warned["stopped"] and warned["step"] > verdict["step"]
    # the collapsed checkpoints are not "healthy": the new alarm names the same best, still kept
    assert warned["best_step"] == verdict["best_step"] and run.exists(warned["best"])
    assert any("watchdog (warn): collapsed at step" in line for line in lines)
    # ... and lists the stopped session's alarm before its own: a resume does not lose the record
    every = cfg.watchdog_windows * cfg.log_every  # warn mode: an alarm each full streak after the stop
    assert [a["step"] for a in warned["alarms"]] == [verdict["step"] + k * every for k in range(4)]
    assert warned["alarms"][0] == {k: verdict[k] for k in ("signal", "step", "since", "detail")}

    # a later session that sees no trouble (here: a gap of 1 is never reached) prunes to the newest 3
    # and keeps what watchdog.json names
    assert fit(cfg.replace(steps=575, watchdog="warn", watchdog_gap=1.0), quiet()).finished
    assert json.loads(run.get_bytes(runfolder.WATCHDOG)) == warned
    assert run.exists(warned["best"])
    assert [step for step, _ in ckpt.list_checkpoints(run)] == [warned["best_step"], 525, 550, 575]


def test_a_verdict_never_names_a_checkpoint_a_store_outage_dropped(dataset32, tmp_path, monkeypatch):
    """The run folder refuses writes from step 20 to step 100 (a store outage): the writer retries
    step 25's checkpoint, step 50's waits, and step 75's replaces it unwritten. The saturation that
    begins at step 71 (measured) stops the run at step 170; its verdict names step 25, the newest
    healthy checkpoint that was written, not step 50 (the figures are this CPU's; the test asserts
    only what makes step 50 the candidate)."""
    down = threading.Event()
    put = LocalStore.put_bytes

    def flaky(self, key, data):
        if down.is_set() and "dropped" in str(self.root):
            raise StorageError(f"{self.uri(key)}: S3 endpoint unreachable (test outage)", transient=True)
        put(self, key, data)

    monkeypatch.setattr(LocalStore, "put_bytes", flaky)
    lines: list[str] = []
    cfg = toy(dataset32, str(tmp_path / "dropped"), lr_g=1e-7, steps=400, keep_last=3)
    hooks = Hooks(progress=lambda step, total, row: (down.set if 20 <= step < 100 else down.clear)(),
                  log=lines.append)
    with pytest.raises(CollapsedError, match="saturation"):
        fit(cfg, hooks)
    assert "checkpoint step 50 replaced by step 75 (the store is still unreachable)" in lines
    run = open_store(cfg.run)
    verdict = watchdog.read_verdict(run)
    assert verdict["since"] > 50  # step 50 was healthy: the newest before the trouble, had it been written
    assert verdict["best_step"] == 25 and run.exists(verdict["best"])
    listed = [step for step, _ in ckpt.list_checkpoints(run)]  # (which of 100-150 the retries took varies)
    assert listed[0] == 25 and listed[-1] == verdict["step"] and 50 not in listed


def test_a_generator_forced_to_a_constant_is_stopped_at_the_next_checkpoint(dataset32, tmp_path, monkeypatch):
    """From step 60 every generator's output is its first face repeated (mode collapse); the fixed
    samples' diversity falls to 0 of its peak and the next checkpoint (step 75) stops the run. The
    run was interrupted at step 50 and resumed: the peak and the healthy checkpoints from before
    the interruption are the ones it is judged against (a fresh peak would be 0 and never fire)."""
    forced = threading.Event()
    forward = models.Generator.forward

    def collapsed(self, z):
        out = forward(self, z)
        return out[:1].expand_as(out).contiguous() if forced.is_set() else out

    monkeypatch.setattr(models.Generator, "forward", collapsed)
    cfg = toy(dataset32, str(tmp_path / "mode"))
    hooks = Hooks(progress=lambda step, total, row: forced.set() if step >= 60 else None, log=lambda m: None)
    assert fit(cfg.replace(steps=50), hooks).finished  # a spot interruption at step 50
    with pytest.raises(CollapsedError, match="diversity"):
        fit(cfg, hooks)
    verdict = watchdog.read_verdict(open_store(cfg.run))
    assert verdict["signal"] == "diversity" and verdict["step"] == 75
    assert verdict["best_step"] == 50 and "fell to 0.000" in verdict["detail"]


class _Cfg:
    watchdog, watchdog_gap, watchdog_windows, watchdog_diversity, watchdog_patience = "stop", 0.99, 3, 0.25, 2


def test_the_metric_signal_fires_after_patience_evaluations_worse_than_the_best():
    lines: list[str] = []
    dog = watchdog.Watchdog(_Cfg, None, "fid", True, None, lines.append)
    fired = [dog.checkpoint(step, None, {"fid": value}) for step, value in
             ((100, 50.0), (200, 40.0), (300, 41.0), (400, 39.0), (500, 45.0), (600, 44.0))]
    assert fired[:5] == [None] * 5  # 41 was worse once, then 39 a new best
    assert fired[5].signal == "metric" and fired[5].since == 400 and "worse than its best 39" in fired[5].detail
    assert dog.best_checkpoint(fired[5]) == 400
    resumed = watchdog.Watchdog(_Cfg, None, "fid", True, None, lines.append)  # resumed after step 500
    resumed.replay([{"step": s, "fid": v} for s, v in ((100, 50.0), (200, 40.0), (300, 41.0), (400, 39.0),
                                                      (500, 45.0))])
    assert resumed.checkpoint(600, None, {"fid": 44.0}).since == 400  # the same alarm as never stopped
    higher = watchdog.Watchdog(_Cfg, None, "precision", False, None, lines.append)  # higher is better
    assert [higher.checkpoint(s, None, {"precision": v}) for s, v in ((1, 0.5), (2, 0.6), (3, 0.55))] == [None] * 3
    assert higher.checkpoint(4, None, {"precision": 0.58}).since == 2
    # a NaN or infinite score is never the best (it would win no comparison after it: a false alarm
    # against every real score), and counts as worse than a real one
    nan = watchdog.Watchdog(_Cfg, None, "fid", True, None, lines.append)
    assert [nan.checkpoint(s, None, {"fid": v}) for s, v in ((1, float("nan")), (2, float("inf")), (3, 40.0),
                                                             (4, 39.0), (5, float("nan")))] == [None] * 5
    assert nan.checkpoint(6, None, {"fid": 41.0}).since == 4


def test_a_checkpoints_watchdog_state_carries_the_streak_on_and_a_damaged_one_is_ignored():
    row = lambda step, real, fake: {"step": step, "d_real": real, "d_fake": fake, "window_steps": 10}  # noqa: E731
    dog = watchdog.Watchdog(_Cfg, ("d_real", "d_fake"), None, True, None, lambda m: None)
    assert [dog.window(row(s, 1.0, 0.0)) for s in (10, 20)] == [None, None]  # 2 of 3 windows, then a stop
    resumed = watchdog.Watchdog(_Cfg, ("d_real", "d_fake"), None, True, None, lambda m: None)
    resumed.restore(dog.state())
    alarm = resumed.window(row(30, 1.0, 0.0))
    assert alarm.signal == "saturation" and alarm.since == 1 and alarm.step == 30
    for damaged in (None, "x", {**dog.state(), "peak": float("nan")}, {**dog.state(), "saturated": "2"},
                    {**dog.state(), "healthy": [1.5]}, {k: v for k, v in dog.state().items() if k != "peak"}):
        fresh = watchdog.Watchdog(_Cfg, ("d_real", "d_fake"), None, True, None, lambda m: None)
        fresh.restore(damaged)
        assert fresh.window(row(30, 1.0, 0.0)) is None and fresh.peak == (0, 0.0)


def test_saturation_needs_windows_in_a_row_and_off_computes_nothing():
    dog = watchdog.Watchdog(_Cfg, ("d_real", "d_fake"), None, True, None, lambda m: None)
    row = lambda step, real, fake: {"step": step, "d_real": real, "d_fake": fake, "window_steps": 10}  # noqa: E731
    assert dog.window(row(10, 0.999, 0.001)) is None and dog.window(row(20, 0.999, 0.001)) is None
    assert dog.window(row(30, 0.9, 0.1)) is None  # the streak breaks
    assert [dog.window(row(s, 1.0, 0.0)) for s in (40, 50)] == [None, None]
    alarm = dog.window(row(60, 1.0, 0.0))
    assert alarm.signal == "saturation" and alarm.since == 31 and alarm.step == 60

    class Off(_Cfg):
        watchdog = "off"

    off = watchdog.Watchdog(Off, ("d_real", "d_fake"), "fid", True, None, lambda m: None)
    assert all(off.window(row(s, 1.0, 0.0)) is None for s in range(10))
    assert off.checkpoint(1, None, {"fid": 1.0}) is None  # no sampler is even called


def test_pruning_keeps_the_checkpoint_a_verdict_names_or_a_running_streak_would():
    """`Watchdog.kept`: nothing while healthy; during a saturation streak the newest healthy
    checkpoint before it; after an alarm its verdict's best. Checkpoints taken inside the streak (and
    at the alarm's step) are not healthy, so a later alarm names the same best."""
    dog = watchdog.Watchdog(_Cfg, ("d_real", "d_fake"), None, True, None, lambda m: None)
    row = lambda step, gap: {"step": step, "d_real": gap, "d_fake": 0.0, "window_steps": 10}  # noqa: E731
    for step in (10, 20):
        assert dog.window(row(step, 0.5)) is None and dog.checkpoint(step, None, {}) is None
    assert dog.kept() == ()
    assert dog.window(row(30, 1.0)) is None and dog.checkpoint(30, None, {}) is None  # streak since 21
    assert dog.kept() == (20,)
    assert dog.window(row(40, 1.0)) is None
    alarm = dog.window(row(50, 1.0))
    assert alarm.since == 21 and dog.checkpoint(50, None, {}) is None
    assert dog.best_checkpoint(alarm) == 20 and dog.kept() == (20,) and dog.checkpoints == [10, 20]
    later = [dog.window(row(s, 1.0)) for s in (60, 70, 80)][-1]  # warn mode: another full streak
    assert later.since == 51 and dog.best_checkpoint(later) == 20 and dog.kept() == (20,)


def test_a_dropped_checkpoint_is_never_named_and_an_earlier_verdict_is_carried_on():
    """`forget` (a checkpoint a store outage dropped): neither the newest healthy checkpoint nor the
    metric's best is named when it was never written, also after a resume (`state` keeps the drops).
    `inherit` (an earlier session's watchdog.json): what it names stays kept until this session's
    verdict replaces it, which lists the earlier alarms up to the resume point; damaged parts of it
    are ignored."""
    dog = watchdog.Watchdog(_Cfg, None, "fid", True, None, lambda m: None)
    for step, fid in ((100, 50.0), (200, 40.0), (300, 39.0)):
        assert dog.checkpoint(step, None, {"fid": fid}) is None
    dog.forget(300)  # the metric's best, dropped unwritten
    alarm = [dog.checkpoint(s, None, {"fid": 45.0}) for s in (400, 500)][-1]
    assert alarm.since == 300 and dog.best_checkpoint(alarm) == 200 and dog.kept() == (200,)
    resumed = watchdog.Watchdog(_Cfg, None, "fid", True, None, lambda m: None)
    resumed.restore(dog.state())
    resumed.replay([{"step": s, "fid": v} for s, v in ((100, 50.0), (200, 40.0), (300, 39.0))])
    assert resumed.best_checkpoint(alarm) == 200

    earlier = json.loads(dog.verdict("/runs/a"))
    later = watchdog.Watchdog(_Cfg, None, "fid", True, None, lambda m: None)
    later.inherit({**earlier, "alarms": [*earlier["alarms"], {**earlier["alarms"][0], "step": 900}, "x"]}, 500)
    assert later.kept() == (200,)  # named by watchdog.json; the alarm at 900 was in a lost stretch
    for step, fid in ((600, 30.0), (700, 31.0), (800, 32.0)):
        later.checkpoint(step, None, {"fid": fid})
    new = json.loads(later.unrecorded("/runs/a"))
    assert later.kept() == (600,) and new["best_step"] == 600
    assert [a["step"] for a in new["alarms"]] == [500, 800]
    for damaged in (None, [], {"best_step": "200", "alarms": "x"}):
        fresh = watchdog.Watchdog(_Cfg, None, "fid", True, None, lambda m: None)
        fresh.inherit(damaged, 500)
        assert fresh.kept() == () and fresh.earlier == []
