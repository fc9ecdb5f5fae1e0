"""Whether a setting fits in memory: checked against the device before allocating, so a batch
size, width or sample count that cannot fit is a one-line error naming both numbers, not an
allocator traceback or the kernel's OOM killer.

`free_bytes(device)` is what the device can still give: a GPU's free memory (`cudaMemGetInfo`),
or on the CPU the kernel's MemAvailable, capped by the container's cgroup limit. `check` compares
a need with it. Needs are lower bounds computed from the settings alone (the images a step holds,
the faces a sample writes), or measured (the networks and optimizer state, once built); an
allocation that still fails is recognised by `out_of_memory` and reported the same way.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch

from facegan.errors import ConfigError

_CGROUP = Path("/sys/fs/cgroup")


def gib(n: float) -> str:
    """Bytes as a short human figure ("3.2 GiB", "12 MiB")."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.1f} KiB"


def _cgroup_room() -> int | None:
    """Bytes the cgroup (v2) may still allocate, or None without a limit."""
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((_CGROUP / "memory.current").read_text()))
    except (OSError, ValueError):
        return None


def free_bytes(device: torch.device | str) -> int:
    """What `device` can still allocate, in bytes."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:  # not Linux: physical memory
        import os

        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    room = _cgroup_room()
    return available if room is None else min(available, room)


def check(need: int, what: str, device: torch.device | str, error: type[Exception] = ConfigError) -> None:
    """Raise `error` when `need` bytes (for `what`, e.g. "batch_size=1000000 at 64 px") exceed what
    `device` has free; the message names both."""
    free = free_bytes(device)
    if need > free:
        raise error(f"{what} needs at least {gib(need)} of memory, but {torch.device(device)} has {gib(free)} free; "
                    "use a smaller setting")


@contextlib.contextmanager
def refused_if_out_of_memory(what: str, device: torch.device | str):
    """Run the block; an allocation in it that fails (CUDA out of memory, or the CPU allocator's)
    becomes a one-line ConfigError: "<what> does not fit in memory: it asked for X, D has Y free"."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not out_of_memory(exc):
            raise
        raise ConfigError(f"{what} does not fit in memory: {failure(exc, device)}") from None


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation that failed (CUDA out of memory, or the CPU allocator's)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower())


def failure(exc: BaseException, device: torch.device | str) -> str:
    """What a failed allocation asked for and what `device` has free, in one short phrase."""
    text = str(exc)
    asked = re.search(r"tried to allocate (\d+) bytes", text, re.IGNORECASE)
    if asked:
        need = f"it asked for {gib(int(asked.group(1)))}"
    else:
        found = re.search(r"tried to allocate ([\d.]+ [KMGT]iB)", text, re.IGNORECASE)
        need = f"it asked for {found.group(1)}" if found else "an allocation failed"
    return f"{need}, {torch.device(device)} has {gib(free_bytes(device))} free"
