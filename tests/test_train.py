import json
import re
import signal
import traceback
from pathlib import Path

import pytest
import torch
from helpers import assert_device_rates, assert_states_equal, cli_train, latest_step, tiny_config, wait_for
from PIL import Image
from torch.overrides import TorchFunctionMode

from facegan import checkpoint as ckpt
from facegan.config import ConfigError
from facegan.loop import Hooks, fit
from facegan.prepare import prepare
from facegan.schedule import DeviceRates, get_lr
from facegan.storage import open_store

quiet = Hooks(log=lambda *_: None)


def test_tiny_run_writes_checkpoints_grids_metrics(dataset32, store_uri, monkeypatch):
    import threading

    from facegan import runfolder

    run_uri = f"{store_uri}/runs/tiny"
    seen, encoded_on = [], []
    encode = runfolder.jsonl
    monkeypatch.setattr(runfolder, "jsonl", lambda rows: encoded_on.append(threading.current_thread()) or encode(rows))
    result = fit(tiny_config(dataset32, run_uri),
                   Hooks(progress=lambda s, t, m: seen.append(s), log=lambda *_: None))
    assert result.finished and result.step == 12
    assert seen == [2, 4, 6, 8, 10, 12]
    run = open_store(run_uri)
    keys = run.list()
    # keep_last=2: step 4 pruned
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [8, 12]
    for step in (4, 8, 12):
        assert f"samples/step-{step:07d}.png" in keys
    assert {"config.json", "latest.json", "loss.png", "metrics.jsonl"} <= set(keys)
    rows = [json.loads(x) for x in run.get_bytes("metrics.jsonl").decode().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    # the rows are encoded by the checkpoint writer, never on the training thread
    assert len(encoded_on) == 3 and threading.main_thread() not in encoded_on
    for r in rows:
        assert {"loss_d", "loss_g", "d_real", "d_fake", "img_per_s", "lr_g", "lr_d"} <= set(r)
        assert 0 < r["d_real"] < 1 and r["img_per_s"] > 0
    import io

    grid = Image.open(io.BytesIO(run.get_bytes("samples/step-0000012.png")))
    assert grid.size == (2 + 2 * 34, 2 + 2 * 34)  # 4 samples, 2x2 grid of 32 px with padding 2
    state = ckpt.load(run_uri)
    assert state["step"] == 12 and state["dataset_id"]
    assert {"G", "D", "G_ema", "opt_g", "opt_d", "rng", "config", "version"} <= set(state)
    assert result.checkpoint == run.uri("checkpoints/step-0000012.pt")


def test_resume_after_stop_is_bit_identical(dataset32, tmp_path):
    full = tiny_config(dataset32, str(tmp_path / "full"))
    fit(full, quiet)
    stop_at = {"n": 0}

    def stop():
        stop_at["n"] += 1
        return stop_at["n"] == 5  # stop after step 5: not on a checkpoint boundary

    cut = tiny_config(dataset32, str(tmp_path / "cut"))
    first = fit(cut, Hooks(should_stop=stop, log=lambda *_: None))
    assert first.step == 5 and first.stopped and not first.finished
    assert ckpt.load(cut.run)["step"] == 5
    second = fit(cut, quiet)
    assert second.finished
    assert_states_equal(ckpt.load(full.run), ckpt.load(cut.run))
    # metrics after the resume point were made again, not duplicated
    rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
    assert [json.loads(r)["window_steps"] for r in rows] == [2, 2, 1, 2, 2, 2]  # step 6's row: step 6 alone


def test_kill9_then_resume_is_bit_identical(dataset32, tmp_path):
    full = tiny_config(dataset32, str(tmp_path / "full"), steps=30, ckpt_every=3)
    fit(full, quiet)
    cut = tiny_config(dataset32, str(tmp_path / "cut"), steps=30, ckpt_every=3)
    proc = cli_train(cut)
    run_dir = Path(cut.run)
    wait_for(lambda: latest_step(run_dir) >= 9, proc=proc)
    proc.kill()  # SIGKILL: no handler runs, as in a spot interruption without notice
    proc.wait()
    killed_at = latest_step(run_dir)
    assert 9 <= killed_at < 30
    result = fit(cut, quiet)
    assert result.finished
    assert_states_equal(ckpt.load(full.run), ckpt.load(cut.run))


def test_kill9_during_checkpoint_write_keeps_latest_valid(raw_faces, tmp_path):
    ds = str(tmp_path / "ds64")
    prepare(raw_faces, ds, resolution=64, workers=1, limit=16, log=lambda *_: None)
    # 64 px pytorch/examples-size nets: each checkpoint is ~80 MB, written every step
    cfg = tiny_config(ds, str(tmp_path / "run"), steps=10_000, ckpt_every=1, keep_last=2, batch_size=2)
    cfg = cfg.replace(model=cfg.model.__class__(resolution=64))
    proc = cli_train(cfg)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    temp_files = lambda: [p.name for p in ckpt_dir.glob(".*.tmp")] if ckpt_dir.is_dir() else []  # noqa: E731
    wait_for(lambda: latest_step(tmp_path / "run") >= 1, proc=proc, timeout=180)
    in_flight = wait_for(temp_files, proc=proc, interval=0.001, timeout=120)
    proc.kill()
    proc.wait()
    assert in_flight, "the kill must land while a checkpoint file is half written"
    pointer = json.loads((tmp_path / "run" / "latest.json").read_text())
    state = ckpt.load(cfg.run)  # the pointer names a complete, loadable checkpoint
    assert state["step"] == pointer["step"] >= 1
    assert all(not k.endswith(".tmp") for k in open_store(cfg.run).list())
    resumed = fit(cfg.replace(steps=pointer["step"] + 2), quiet)
    assert resumed.finished and resumed.step == pointer["step"] + 2


def test_sigterm_checkpoints_then_exits_nonzero(dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "run"), steps=100_000, ckpt_every=50, log_every=10)
    proc = cli_train(cfg)
    wait_for(lambda: latest_step(tmp_path / "run") >= 50, proc=proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, out
    import re

    stopped_at = int(re.search(r"stopping at step (\d+)", out).group(1))
    assert stopped_at > 50
    assert latest_step(tmp_path / "run") == stopped_at  # checkpointed where the signal stopped it
    assert "interrupted by signal 15" in out
    assert ckpt.load(cfg.run)["step"] == stopped_at


def test_resume_with_other_config_is_refused(dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "run"), steps=4)
    fit(cfg, quiet)
    with pytest.raises(ConfigError, match=r"different config \(lr_g 0.0002 -> 0.001\)"):
        fit(cfg.replace(lr_g=1e-3), quiet)
    more = fit(cfg.replace(steps=6, ckpt_every=3), quiet)  # longer runs and other intervals are fine
    assert more.finished and more.step == 6


def test_only_a_run_folder_is_trained_into(dataset32, tmp_path):
    """A folder that is not a run (photos, or a user's own loss.png) is refused untouched; a run keeps
    a user's file beside its own; a run that lost its config.json resumes from its checkpoint."""
    from facegan import runfolder

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "me.jpg").write_bytes(b"mine")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "loss.png").write_bytes(b"my own plot")
    for folder, named in ((photos, "me.jpg"), (mine, "loss.png")):
        expected = (rf"{re.escape(str(folder))}: holds 1 file\(s\) that are not a run's \({named}\) and no "
                    r"config.json: not a run; train into a new or empty folder")
        with pytest.raises(ConfigError, match=expected):
            fit(tiny_config(dataset32, str(folder), steps=2), quiet)
        assert [p.name for p in folder.iterdir()] == [named]
    (mine / "lease.json").write_text("{}")  # what a run stopped before its first step leaves is a run's
    (mine / "loss.png").unlink()
    runfolder.check_run_folder(open_store(str(mine)))  # no error: a run may start here
    shown = tmp_path / "made-in-finder"  # a new folder a file browser showed: as good as empty
    shown.mkdir()
    for name in (".DS_Store", "Thumbs.db", "desktop.ini"):
        (shown / name).write_bytes(b"the file browser's")
    assert fit(tiny_config(dataset32, str(shown), steps=2), quiet).step == 2
    assert (shown / ".DS_Store").read_bytes() == b"the file browser's"

    run = tmp_path / "run"
    cfg = tiny_config(dataset32, str(run), steps=4)
    fit(cfg, quiet)
    (run / "notes.txt").write_text("lr sweep 1")  # the user's file in a run: kept
    (run / "config.json").unlink()  # lost: the checkpoint still makes it a run
    assert fit(cfg.replace(steps=6, ckpt_every=3), quiet).step == 6
    assert (run / "notes.txt").read_text() == "lr sweep 1" and (run / "config.json").exists()


def test_resolution_mismatch_with_dataset(dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="is 32px but model.resolution=64"):
        fit(cfg.replace(model=cfg.model.__class__(resolution=64)), quiet)


def test_linear_decay_schedule(dataset32, tmp_path):
    cfg = tiny_config(dataset32, "r", steps=100, lr_schedule="linear", decay_start=0.5, lr_g=1e-3)
    assert get_lr(1, 1e-3, cfg) == 1e-3
    assert get_lr(50, 1e-3, cfg) == 1e-3
    assert get_lr(75, 1e-3, cfg) == pytest.approx(0.5e-3)
    assert get_lr(100, 1e-3, cfg) == 0.0
    assert get_lr(75, 1e-3, cfg.replace(lr_schedule="constant")) == 1e-3


def test_device_rates_are_written_in_place_and_survive_a_state_load():
    """A captured CUDA graph reads its rates from fixed addresses: `set` writes the same tensors
    each step, and puts them back into the groups after a load_state_dict (which brings floats from
    an old checkpoint, or the saved tensors)."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=1.0)
    old = opt.state_dict()  # a float rate, as checkpoints before DeviceRates hold
    rates = DeviceRates({"lr_g": opt}, torch.float64, torch.device("cpu"))
    tensor, address = rates.tensors["lr_g"], rates.tensors["lr_g"].data_ptr()
    assert rates.set({"lr_g": 0.25}) == {"lr_g": 0.25}
    assert opt.param_groups[0]["lr"] is tensor and tensor.item() == 0.25
    opt.load_state_dict(old)
    assert opt.param_groups[0]["lr"] == 1.0
    rates.set({"lr_g": 0.5})
    assert opt.param_groups[0]["lr"] is tensor and tensor.data_ptr() == address and tensor.item() == 0.5


@pytest.mark.parametrize("fused", [False, True])
def test_a_tensor_rate_updates_as_the_float_rate_does(fused):
    """The dtype of `Runtime.lr_dtype`, per Adam implementation: the CPU's single-tensor Adam
    computes its step size in the rate's dtype, so a float64 tensor gives the float rate's update
    to the bit (the CPU digests of test_equivalence hold; a float32 one changes them). Fused Adam,
    CUDA's, reads a float32 tensor rate: here its CPU kernel takes the same Tensor-rate overload and
    matches the float rate to float32 rounding."""
    def trained(lr) -> torch.Tensor:
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(1000))
        opt = torch.optim.Adam([w], lr=2e-4, betas=(0.5, 0.999), **({"fused": True} if fused else {}))
        if isinstance(lr, torch.Tensor):
            opt.param_groups[0]["lr"] = lr
        for _ in range(20):
            opt.zero_grad()
            (w.sin() * torch.randn(1000)).sum().backward()
            opt.step()
        return w.detach()

    reference = trained(2e-4)
    if fused:
        assert torch.allclose(trained(torch.tensor(2e-4, dtype=torch.float32)), reference, rtol=1e-6, atol=0)
    else:
        assert torch.equal(trained(torch.tensor(2e-4, dtype=torch.float64)), reference)
        assert not torch.equal(trained(torch.tensor(2e-4, dtype=torch.float32)), reference)


def test_hinge_loss_trains_and_resumes_exactly(dataset32, tmp_path):
    cfg = tiny_config(dataset32, str(tmp_path / "a"), steps=6, loss="hinge", augment="translation",
                      r1_gamma=1.0, r1_every=2)
    n = iter(range(100))
    assert fit(cfg, Hooks(should_stop=lambda: next(n) == 2, log=lambda *_: None)).step == 3
    fit(cfg, quiet)
    straight = fit(cfg.replace(run=str(tmp_path / "b")), quiet)
    assert straight.finished
    from helpers import assert_states_equal

    assert_states_equal(ckpt.load(cfg.run), ckpt.load(straight.run))
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_d"] >= 0 for r in rows)  # hinge D loss is non-negative


class ConvDtypes(TorchFunctionMode):
    """Records the dtype of every convolution's output made inside the training step."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.nn.functional.conv2d, torch.nn.functional.conv_transpose2d) and any(
            f.name == "step" and f.filename.endswith("dcgan.py") for f in traceback.extract_stack()
        ):
            self.dtypes.add(out.dtype)
        return out


def test_bf16_step_runs_in_bf16_and_resumes_exactly(dataset32, tmp_path):
    """precision=bf16 (what "auto" picks on an Ampere+ GPU) runs the convolutions in bf16 under
    autocast, here on the CPU's autocast, and still resumes bit-identically."""
    cfg = tiny_config(dataset32, str(tmp_path / "a"), steps=6, precision="bf16", augment="color")
    n = iter(range(100))
    logs = []
    with ConvDtypes() as convs:
        assert fit(cfg, Hooks(should_stop=lambda: next(n) == 2, log=logs.append)).step == 3
    assert convs.dtypes == {torch.bfloat16}  # every convolution of the step
    assert any("bf16 autocast" in line for line in logs)
    fit(cfg, quiet)
    straight = fit(cfg.replace(run=str(tmp_path / "b")), quiet)
    assert_states_equal(ckpt.load(cfg.run), ckpt.load(straight.run))
    rows = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor([r["loss_d"], r["loss_g"]])).all() for r in rows)

    with ConvDtypes() as convs:  # the default on a CPU: fp32 throughout
        fit(tiny_config(dataset32, str(tmp_path / "c"), steps=2), quiet)
    assert convs.dtypes == {torch.float32}


class HostReads(TorchFunctionMode):
    """Records tensor reads that force a device->host sync on CUDA, with the code that made them;
    also `t[i] = number`: on CUDA PyTorch makes the number a CPU tensor and copies it to the device,
    a pageable copy that CUDA graph capture refuses (seen on an H200 in DiffAugment's cutout)."""

    READS = {"item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__int__", "__float__", "__index__",
             "__repr__", "__format__"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[str]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name == "__setitem__" and isinstance(args[2], int | float | bool):
            name = "__setitem__ of a number"
        if name in self.READS or name == "__setitem__ of a number":
            frames = traceback.extract_stack()[:-1]
            self.seen.append((name, [f"{Path(f.filename).name}:{f.name}" for f in frames]))
        return func(*args, **(kwargs or {}))


def test_host_read_detector_sees_item_bool_printing_and_number_writes():
    x = torch.ones(3)
    with HostReads() as reads:
        x.sum().item(), bool(x.any()), f"{x}", x.tolist()
        x[0] = 2.0
        x[1] = torch.zeros(())  # a tensor value is no host write
    assert [name for name, _ in reads.seen] == ["item", "__bool__", "__format__", "tolist", "__setitem__ of a number"]


def test_training_step_never_reads_back_from_the_device(dataset32, tmp_path):
    """The step (sampling, DiffAugment, losses, R1, EMA, the running sums) makes no host read:
    on CUDA each one would stall the GPU. Reads happen only at log and checkpoint steps. Nor does
    it write a Python number into a tensor (a host-to-device copy that CUDA graph capture refuses)."""
    cfg = tiny_config(dataset32, str(tmp_path / "s"), steps=6, log_every=3, ckpt_every=6,
                      augment="color,translation,cutout", r1_gamma=1.0, r1_every=2)
    with HostReads() as reads:
        result = fit(cfg, Hooks(log=lambda *_: None))
    assert result.finished
    in_step = [
        (name, where) for name, where in reads.seen
        if "dcgan.py:step" in where
        # CPU Adam reads its step count with .item(); CUDA uses fused Adam, which keeps it on the GPU
        and not any(w.startswith(("adam.py", "optimizer.py")) for w in where)
    ]
    assert in_step == [], f"host reads inside the training step: {in_step[:3]}"
    assert any(name == "tolist" for name, _ in reads.seen)  # the log step's one read is seen
    assert_device_rates(cfg.run, cfg, {"opt_g": cfg.lr_g, "opt_d": cfg.lr_d})
