"""The learning-rate schedule every model family uses (constant, or CycleGAN's linear decay), and
the optimizers' rates as device tensors (`DeviceRates`)."""

from __future__ import annotations

from typing import Any

import torch


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


class DeviceRates:
    """Each optimizer's learning rate as a 0-dim tensor on the run's device, written in place.

    The optimizers read their rate from these tensors, so a training step takes its rates from
    device memory and not from Python floats baked into its kernels: the step can later be captured
    once as a CUDA graph and replayed with each step's rates. The schedule is computed on the host
    from the step number (which the host knows: no read from the device) and written with `fill_`
    (on CUDA a kernel launch, no sync). The tensors' dtype is `Runtime.lr_dtype`: float32 on CUDA,
    what fused Adam's kernel reads; float64 on the CPU, where Adam's update computes its step size
    in the rate's dtype, so results are bit-identical to the Python floats it replaced.
    """

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], dtype: torch.dtype,
                 device: torch.device) -> None:
        """`optimizers`: {rate name (a metrics column, e.g. "lr_g"): the optimizer it drives}."""
        self.optimizers = optimizers
        self.tensors = {name: torch.zeros((), dtype=dtype, device=device) for name in optimizers}

    def set(self, rates: dict[str, float]) -> dict[str, float]:
        """Write `rates` ({name: rate}) into the tensors, and make every parameter group read its
        tensor (again: loading an optimizer's state replaces its groups' rates); returns `rates`."""
        for name, rate in rates.items():
            tensor = self.tensors[name]
            tensor.fill_(rate)
            for group in self.optimizers[name].param_groups:
                group["lr"] = tensor
        return rates
