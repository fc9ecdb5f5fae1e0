"""Small helpers shared by tests (not fixtures)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from facegan.config import ModelConfig, RunConfig, TrainConfig, TranslateConfig, all_options, options

ROOT = Path(__file__).resolve().parent.parent


class ReachedCuda(Exception):
    """The CUDA stand-in's set_device was called with a valid device: the CUDA branch was reached
    (conftest.py's `fake_cuda`)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"cuda:{index}")
        self.index = index


def tiny_config(dataset: str, run: str, **overrides) -> TrainConfig:
    """A run small enough for a CPU test: 32 px, narrow nets, batch 8."""
    base = dict(
        dataset=dataset, run=run, model=ModelConfig(resolution=32, z_dim=16, ngf=8, ndf=8),
        steps=12, batch_size=8, ckpt_every=4, keep_last=2, log_every=2, sample_count=4,
        device="cpu", seed=7,
    )
    base.update(overrides)
    return TrainConfig(**base)


def assert_states_equal(a: dict, b: dict, nets: tuple[str, ...] = ("G", "D", "G_ema")) -> None:
    """Network (`nets`: a DCGAN's by default) and optimizer states are bit-identical."""
    for part in nets:
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs"
    for part in ("opt_g", "opt_d"):
        for pid, s in a[part]["state"].items():
            for k, v in s.items():
                assert torch.equal(v, b[part]["state"][pid][k]), f"{part}[{pid}].{k} differs"


def assert_device_rates(run: str, cfg: RunConfig, base: dict[str, float]) -> None:
    """The last checkpoint's optimizers (`base`: {part: base rate}) read their learning rate from a
    0-dim tensor (float64 on the CPU: `Runtime.lr_dtype`) holding the schedule's rate at its step:
    the step took its rates from device memory (`facegan.schedule.DeviceRates`)."""
    from facegan import checkpoint as ckpt
    from facegan.schedule import get_lr

    state = ckpt.load(run)
    for part, rate in base.items():
        for group in state[part]["param_groups"]:
            lr = group["lr"]
            assert isinstance(lr, torch.Tensor) and lr.dim() == 0 and lr.dtype == torch.float64, f"{part}: {lr!r}"
            assert lr.item() == get_lr(state["step"], rate, cfg), f"{part}: {lr.item()} at step {state['step']}"


def train_argv(cfg: RunConfig) -> list[str]:
    """`facegan train` (a TrainConfig) or `facegan translate train` (a TranslateConfig) arguments
    that give `cfg`: its dataset and run, and each option (model options included) whose value is
    not the default, flagged as the CLI names it."""
    from facegan import families

    cls = type(cfg)
    if cls is TranslateConfig:
        command = ["translate", "train"]
    else:
        command = ["train"] if cls.family == families.DEFAULT else ["train", "--family", cls.family]
    argv = [*command, "--dataset", cfg.dataset, "--run", cfg.run]
    model_options = {f.name for f in options(cls.model_class)}
    for f in all_options(cls):
        value = getattr(cfg.model if f.name in model_options else cfg, f.name)
        flag = f.name.replace("_", "-")
        if value == f.default:
            continue
        if isinstance(value, bool):
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            argv += [f"--{flag}", str(value)]
    return argv


def cli_train(cfg: RunConfig, extra_env: dict | None = None) -> subprocess.Popen:
    """Start `facegan train` (or `translate train`) for a config in a subprocess (see train_argv)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "facegan.cli", *train_argv(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout: float = 120.0, interval: float = 0.05, proc=None):
    """Poll until predicate() is truthy; fail with the process output if it exits first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}): {proc.stdout.read()}")
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def latest_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "latest.json").read_text())["step"]
    except (FileNotFoundError, ValueError):
        return 0


@contextmanager
def tmpfs(folder: Path, size: str):
    """A real tmpfs of `size` ("64k") mounted on the existing `folder` for the block, then unmounted;
    the test is skipped where this machine does not permit mounting one."""
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
