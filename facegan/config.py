"""One frozen configuration for a training run, passed down from the entry point.

`TrainConfig` holds everything that decides what a run computes; `ModelConfig` the part that
decides the networks' shapes. Both are immutable, serialise to plain JSON (`to_dict`) and
validate themselves on construction, so a bad value fails before any heavy work starts with
a one-line message that names the field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

RESOLUTIONS = (32, 64, 128)
NORMS = ("batch", "none")
SCHEDULES = ("constant", "linear")
LOSSES = ("bce", "hinge")
AUGMENTS = ("color", "translation", "cutout")
PRECISIONS = ("auto", "bf16", "fp32")
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda (= cuda:$LOCAL_RANK or cuda:0) or cuda:N"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the DCGAN pair.

    resolution: output side in pixels (32, 64 or 128).
    z_dim: latent size; ngf/ndf: base widths of generator and discriminator;
    norm: normalisation inside the blocks ("batch" or "none");
    spectral_norm: spectral normalisation on every discriminator convolution.
    """

    resolution: int = 64
    z_dim: int = 100
    ngf: int = 64
    ndf: int = 64
    norm: str = "batch"
    spectral_norm: bool = False

    def __post_init__(self) -> None:
        if self.resolution not in RESOLUTIONS:
            raise ConfigError(
                f"model.resolution={self.resolution!r} is not supported; choose one of {RESOLUTIONS}"
            )
        for name in ("z_dim", "ngf", "ndf"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}={value!r} must be a positive integer")
        if self.norm not in NORMS:
            raise ConfigError(f"model.norm={self.norm!r} must be one of {NORMS}")


# Fields that may change between an interrupted run and its resumption without changing
# what the finished run computes (how long it runs, how often it saves, where it logs), or
# that change only its floating-point rounding (device, precision, compile).
RESUMABLE_FIELDS = frozenset(
    {"steps", "ckpt_every", "keep_last", "log_every", "max_seconds", "device", "sample_count",
     "compile", "precision", "fid_every", "fid_samples", "fid_weights"}
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; see README "Training" for the meaning of each field."""

    dataset: str
    run: str
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = 10_000
    batch_size: int = 128
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_schedule: str = "constant"
    decay_start: float = 0.5
    label_smoothing: float = 1.0
    ema_decay: float = 0.999
    ckpt_every: int = 500
    keep_last: int = 3
    log_every: int = 50
    sample_count: int = 64
    seed: int = 0
    device: str = "auto"
    max_seconds: float | None = None
    loss: str = "bce"
    augment: str = ""
    r1_gamma: float = 0.0
    r1_every: int = 16
    fid_every: int = 0
    fid_samples: int = 5000
    fid_weights: str = ""
    compile: bool = False
    precision: str = "auto"

    def __post_init__(self) -> None:
        if not self.dataset:
            raise ConfigError("dataset is empty; give the dataset URI (s3://... or a folder)")
        if not self.run:
            raise ConfigError("run is empty; give the run URI (s3://... or a folder)")
        if isinstance(self.model, dict):  # accepted for convenience, stored as ModelConfig
            object.__setattr__(self, "model", ModelConfig(**self.model))
        for name in ("steps", "batch_size", "ckpt_every", "keep_last", "log_every", "sample_count",
                     "r1_every", "fid_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        for name in ("lr_g", "lr_d"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ConfigError(f"{name}={value!r} must be a number in (0, 1)")
        for name in ("beta1", "beta2", "ema_decay", "decay_start"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"{name}={value!r} must be a number in [0, 1)")
        if not 0.5 < self.label_smoothing <= 1.0:
            raise ConfigError(
                f"label_smoothing={self.label_smoothing!r} is the real-label target, in (0.5, 1]"
            )
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"lr_schedule={self.lr_schedule!r} must be one of {SCHEDULES}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device={self.device!r} must be 'auto', 'cpu' or 'cuda[:N]'")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"max_seconds={self.max_seconds!r} must be positive")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r} must be one of {LOSSES}")
        bad = [a for a in self.augment_list if a not in AUGMENTS]
        if bad:
            raise ConfigError(f"augment={self.augment!r}: unknown {bad}; use a comma list of {AUGMENTS}")
        if self.r1_gamma < 0:
            raise ConfigError(f"r1_gamma={self.r1_gamma!r} must be >= 0")
        if isinstance(self.fid_every, bool) or self.fid_every < 0:
            raise ConfigError(f"fid_every={self.fid_every!r} must be 0 (off) or a positive integer")
        if self.fid_every and self.fid_every % self.ckpt_every:
            raise ConfigError(
                f"fid_every={self.fid_every} must be a multiple of ckpt_every={self.ckpt_every} "
                "(FID is measured on checkpoints)"
            )

    @property
    def augment_list(self) -> list[str]:
        """DiffAugment policies, in order."""
        return [a.strip() for a in self.augment.split(",") if a.strip()]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the model config nested under "model")."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from `to_dict` output; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        data = dict(data)
        if isinstance(data.get("model"), dict):
            model_known = {f.name for f in fields(ModelConfig)}
            bad = sorted(set(data["model"]) - model_known)
            if bad:
                raise ConfigError(f"unknown model config field(s): {', '.join(bad)}")
            data["model"] = ModelConfig(**data["model"])
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def differences(self, other: TrainConfig) -> list[str]:
        """Names of fields that differ and would change what the run computes."""
        mine, theirs = self.to_dict(), other.to_dict()
        free = RESUMABLE_FIELDS - ({"steps"} if "linear" in (self.lr_schedule, other.lr_schedule) else set())
        return sorted(k for k in mine if k not in free and k != "run" and mine[k] != theirs[k])
