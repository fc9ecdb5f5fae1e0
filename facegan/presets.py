"""Named training presets: starting points that explicit options override.

- `udacity32`: the seeds' 32x32 network (conv_dim 32, z 100), BCE, batch 64.
- `dcgan64`: the classic pytorch/examples DCGAN at 64x64 (ngf = ndf = 64, z 100), batch 128.
- `dcgan64-plus`: dcgan64 + EMA generator, DiffAugment (color, translation, cutout), spectral
  norm in D, lazy R1, and best-by-FID checkpoints (FID every 5,000 steps on 10k samples).
- `dcgan128`: the deeper 128x128 seed extension (one more block on each side), linear LR decay.
- `resnet64`, `resnet128`, `resnet32-small` (RESNET_PRESETS): SNGAN's ResNet GAN at mimicry's budgets,
  and a small one for CPU checks.
- `cyclegan64`, `cyclegan128` (TRANSLATE_PRESETS): the attribute-swap CycleGAN at 64 and 128 px.
"""

from __future__ import annotations

from typing import Any

from facegan.config import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    "udacity32": {
        "model": {"resolution": 32, "z_dim": 100, "ngf": 32, "ndf": 32},
        "batch_size": 64, "ema_decay": 0.0, "steps": 20_000,
    },
    "dcgan64": {
        "model": {"resolution": 64, "z_dim": 100, "ngf": 64, "ndf": 64},
        "batch_size": 128, "ema_decay": 0.0, "steps": 30_000,
    },
    "dcgan64-plus": {
        "model": {"resolution": 64, "z_dim": 100, "ngf": 64, "ndf": 64, "spectral_norm": True},
        "batch_size": 128, "ema_decay": 0.999, "augment": "color,translation,cutout",
        "r1_gamma": 0.1, "r1_every": 16, "lr_d": 2e-4, "lr_g": 2e-4, "steps": 60_000,
        "ckpt_every": 1000, "metrics": "fid", "metric_every": 5000, "metric_samples": 10_000,
    },
    "dcgan128": {
        "model": {"resolution": 128, "z_dim": 100, "ngf": 64, "ndf": 64},
        "batch_size": 64, "ema_decay": 0.999, "lr_schedule": "linear", "decay_start": 0.5,
        "steps": 60_000,
    },
}


# ResNet GAN runs, SNGAN's recipe as mimicry trains it on CelebA (hinge loss, Adam(2e-4, 0, 0.9),
# linear decay from the start; 100k generator steps at batch 64): 64 px with n_dis 5 (mimicry: FID
# 5.71), 128 px with n_dis 2 (mimicry: FID 12.93); plus a small one for CPU checks. The EMA
# generator (0.999) is facegan's addition, for sampling.
RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "resnet64": {
        "model": {"resolution": 64, "z_dim": 128, "ngf": 1024, "ndf": 1024},
        "batch_size": 64, "n_dis": 5, "steps": 100_000, "ema_decay": 0.999, "ckpt_every": 1000,
    },
    "resnet128": {
        "model": {"resolution": 128, "z_dim": 128, "ngf": 1024, "ndf": 1024},
        "batch_size": 64, "n_dis": 2, "steps": 100_000, "ema_decay": 0.999, "ckpt_every": 1000,
    },
    "resnet32-small": {
        "model": {"resolution": 32, "z_dim": 64, "ngf": 128, "ndf": 128},
        "batch_size": 32, "n_dis": 2, "steps": 2_000, "ema_decay": 0.99, "ckpt_every": 500,
    },
}


# Attribute-swap (CycleGAN) runs: the CycleGAN recipe at 64 and 128 px (6 residual blocks, LSGAN,
# cycle 10, identity 0.5, Adam 2e-4/0.5, pool 50, linear decay over the second half).
TRANSLATE_PRESETS: dict[str, dict[str, Any]] = {
    "cyclegan64": {
        "model": {"resolution": 64, "ngf": 64, "ndf": 64, "blocks": 6},
        "batch_size": 16, "steps": 40_000, "lr_schedule": "linear", "decay_start": 0.5, "ckpt_every": 1000,
    },
    "cyclegan128": {
        "model": {"resolution": 128, "ngf": 64, "ndf": 64, "blocks": 6},
        "batch_size": 8, "steps": 60_000, "lr_schedule": "linear", "decay_start": 0.5, "ckpt_every": 1000,
    },
}


def preset(name: str, table: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The settings of a named preset of `table` (PRESETS by default), a copy; an unknown name
    is a ConfigError."""
    table = PRESETS if table is None else table
    if name not in table:
        raise ConfigError(f"preset={name!r} is unknown; choose one of {', '.join(table)}")
    p = table[name]
    return {**p, "model": dict(p["model"])}


def resolve(name: str | None, overrides: dict[str, Any], saved: dict[str, Any] | None = None,
            dataset_resolution: int | None = None, table: dict[str, dict[str, Any]] | None = None,
            session: tuple[str, ...] = ()) -> dict[str, Any]:
    """Settings for a run, lowest precedence first: the run's saved config (`saved`, resuming;
    without its `session` fields, which describe where and how long a session runs, not the run:
    a run trained on a GPU may resume on another machine), the preset `name` (of `table`, PRESETS
    by default), the explicit `overrides`; model fields are merged, not replaced. A model
    resolution that none of them gives is the dataset's (`dataset_resolution`)."""
    base = {k: v for k, v in (saved or {}).items() if k not in session}
    base["model"] = dict(base.get("model", {}))
    for layer in (preset(name, table) if name else {}, overrides):
        base.update({k: v for k, v in layer.items() if k != "model"})
        base["model"].update(layer.get("model", {}))
    if "resolution" not in base["model"] and dataset_resolution is not None:
        base["model"]["resolution"] = dataset_resolution
    return base
