"""Where code runs: the one place that picks a device, sets it up and names what differs on CUDA.

Every entry point (training, FID, sampling, the gallery, the flows, the benchmarks, each DDP
process) turns its `device` option into a `torch.device` through `use_device`, so CUDA is
always an *indexed* device (`cuda` -> `cuda:<LOCAL_RANK or 0>`): `torch.cuda.set_device`,
DDP's `device_ids` and NCCL all need the index. The CUDA-only choices of the training step
(fused Adam, cuDNN autotuning, bf16 by default on GPUs that compute it natively, NCCL) are the
properties of `Runtime`, each walked on a GPU by `python -m bench.smoke --device cuda`.

Also here: deterministic seeding and `GracefulStop` (SIGTERM/SIGINT -> checkpoint and return).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
from dataclasses import dataclass

import numpy as np
import torch

from facegan.config import DEVICE_HELP, ConfigError


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """The indexed device for a `device` option: "auto", "cpu", "cuda" or "cuda:N".

    "auto" is CUDA when a GPU is visible, else the CPU. A bare "cuda" becomes `cuda:<local_rank>`,
    where `local_rank` defaults to $LOCAL_RANK (set by torchrun for each process) or 0. An index
    past the visible GPUs, or CUDA on a machine without one, is a ConfigError naming the option.
    """
    text = (name or "").strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return torch.device("cpu")
    if text != "cuda" and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise ConfigError(f"device={name!r} is not a device; use {DEVICE_HELP}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine")
    if text == "cuda":
        index = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    else:
        index = int(text[5:])
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f"device={name!r} resolves to cuda:{index}, but this machine has {count} GPU(s)")
    return torch.device("cuda", index)


def use_device(name: str, local_rank: int | None = None) -> torch.device:
    """`resolve_device`, and on CUDA make it the current device of this process (as DDP, NCCL
    and every kernel launched without an explicit device expect)."""
    device = resolve_device(name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # takes an indexed device or an int, never a bare "cuda"
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the step, or None for fp32.

    "auto" is bf16 on a CUDA GPU that computes it natively (Ampere and newer) and fp32 elsewhere
    (CPUs, and older GPUs such as the T4, where bf16 is emulated); "bf16" autocasts on any
    device, the CPU included; "fp32" never does.
    """
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Runtime:
    """A training process's device and what follows from it: every CUDA-only choice is here."""

    device: torch.device
    amp: torch.dtype | None  # bf16 autocast, or None for fp32

    @classmethod
    def create(cls, device: str, precision: str, local_rank: int | None = None) -> Runtime:
        """Set up `device` (see `use_device`) and resolve `precision` for it."""
        dev = use_device(device, local_rank)
        return cls(dev, autocast_dtype(precision, dev))

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def plots_apart(self) -> bool:
        """Draw the checkpoints' curves in a separate process: on CUDA the step is bound by the
        CPU dispatching kernels, and a matplotlib figure on the writer's thread holds the GIL
        for ~0.25 s (see `facegan.plots`); on the CPU the step's own kernels release the GIL."""
        return self.cuda

    @property
    def adam_options(self) -> dict:
        """Fused Adam on CUDA (one kernel for all parameters; step count stays on the GPU)."""
        return {"fused": True} if self.cuda else {}

    @property
    def lr_dtype(self) -> torch.dtype:
        """The dtype of the optimizers' learning-rate tensors (`facegan.schedule.DeviceRates`):
        float32 on CUDA, the type fused Adam's kernel reads a tensor rate as; float64 elsewhere,
        where Adam's single-tensor update computes its step size in the rate's dtype, so a float64
        rate is exactly the Python float (and the result the bit-identical one) it replaced."""
        return torch.float32 if self.cuda else torch.float64

    @property
    def ddp_device_ids(self) -> list[int] | None:
        return [self.device.index] if self.cuda else None

    @property
    def process_group_backend(self) -> str:
        return "nccl" if self.cuda else "gloo"

    def autocast(self):
        """The step's autocast context (a no-op for fp32)."""
        return torch.autocast(self.device.type, dtype=self.amp or torch.bfloat16, enabled=self.amp is not None)

    def hardware(self) -> str:
        """What trains, for the record (a model card): the GPU's name, or the CPU with its threads."""
        if self.cuda:
            return f"{torch.cuda.get_device_name(self.device)} ({self.device}, {'bf16' if self.amp else 'fp32'})"
        return f"cpu ({torch.get_num_threads()} threads, {'bf16' if self.amp else 'fp32'})"

    def synchronize(self) -> None:
        """Wait for the device's queued work (for timing); a no-op on the CPU."""
        synchronize(self.device)

    @contextlib.contextmanager
    def fixed_shape_kernels(self):
        """cuDNN autotuning for the fixed-shape step on CUDA (as pytorch/examples' dcgan); the
        process's setting is restored afterwards."""
        before = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = self.cuda
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = before

    def describe(self) -> str:
        return f"device {self.device}, {'bf16 autocast' if self.amp else 'fp32'}"


def synchronize(device: torch.device) -> None:
    """Wait for `device`'s queued work (for timing); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), numpy and python."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class GracefulStop:
    """Context manager: SIGTERM/SIGINT set a flag instead of killing the process.

    Use `stop.requested` as (part of) `Hooks.should_stop`; the loop then checkpoints and returns,
    and the caller exits non-zero. Outside the main thread it installs nothing.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, object] = {}

    def requested(self) -> bool:
        return self.signal is not None

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.signal = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
