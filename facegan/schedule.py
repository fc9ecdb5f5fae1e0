"""The learning-rate schedule both model families use: constant, or CycleGAN's linear decay."""

from __future__ import annotations

from typing import Any


def get_lr(step: int, base_lr: float, cfg: Any) -> float:
    """Learning rate for `step` (1-based) of a run config with `lr_schedule`, `decay_start` and
    `steps`: constant, or constant until decay_start x steps, then linearly to zero at the last
    step (CycleGAN's "linear" policy)."""
    if cfg.lr_schedule == "constant":
        return base_lr
    start = int(cfg.decay_start * cfg.steps)
    if step <= start:
        return base_lr
    return base_lr * max(0.0, (cfg.steps - step) / max(1, cfg.steps - start))


def set_lr(optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of `optimizer`."""
    for group in optimizer.param_groups:
        group["lr"] = lr
