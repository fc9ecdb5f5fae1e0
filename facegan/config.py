"""One frozen configuration for a training run, passed down from the entry point.

`TrainConfig` holds everything that decides what a DCGAN run computes, `ModelConfig` the part
that decides the networks' shapes; `TranslateConfig` and `CycleModelConfig` are the same for an
attribute-swap (CycleGAN) run. Both run configs share `RunConfig`'s checks. All are immutable,
serialise to plain JSON (`to_dict`) and validate themselves on construction, so a bad value
fails before any heavy work starts with a one-line message that names the field.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from facegan import storage
from facegan.errors import ConfigError, DatasetError  # noqa: F401 - ConfigError: exported here too
from facegan.metrics import names as metric_names

RESOLUTIONS = (32, 64, 128)
NORMS = ("batch", "none")
SCHEDULES = ("constant", "linear")
LOSSES = ("bce", "hinge")
AUGMENTS = ("color", "translation", "cutout")
PRECISIONS = ("auto", "bf16", "fp32")
WATCHDOG_MODES = ("off", "warn", "stop")  # facegan.watchdog
SEED_LIMIT = 2**63  # seeds (a run's, a face's) are integers in [0, SEED_LIMIT)
SAMPLE_MAX_FACES = 1_000_000  # faces one `facegan sample` draws at most (its record lists each: 17 MB of JSON)
TRUNCATION_MIN = 0.05  # the smallest truncation psi (facegan.sample.latents): below it, redrawing takes too long
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda (= cuda:$LOCAL_RANK or cuda:0) or cuda:N"


def check_seed(seed) -> None:
    """A ConfigError unless `seed` is an integer in [0, SEED_LIMIT) (a run's seed, a face's)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"seed={seed!r} must be an integer in [0, 2**63)")


def option(default: Any, help: str, shown_default: str | None = None, *,  # noqa: A002 - argparse's word
           resumable: bool = False, session: bool = False) -> Any:
    """A config field that is also a command-line option (`--name-with-dashes`) and a flow
    parameter: its default, its one-line help and its role live here and nowhere else.
    `shown_default` replaces the default in help where the entry points derive it (e.g. from the
    dataset). Roles: `resumable` - it may change when a run resumes, because it does not change what
    the finished run computes (how long or where it runs, how often it saves or logs) or changes
    only its floating-point rounding (device, precision, compile); `session` - it describes this
    session, not the run, and is never inherited from a run's saved config."""
    return field(default=default, metadata={"help": help, "shown_default": shown_default,
                                            "resumable": resumable or session, "session": session})


def options(cls: type) -> list[dataclasses.Field]:
    """The fields of a config class that are options, in declaration order."""
    return [f for f in fields(cls) if "help" in f.metadata]


def all_options(cls: type | None = None) -> list[dataclasses.Field]:
    """Every option of a run config class (TrainConfig by default): its model's, then the rest
    (their names are unique)."""
    cls = cls or TrainConfig
    return [*options(cls.model_class), *options(cls)]


_OPTION_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "float | None": float}


def shown_default(f: dataclasses.Field) -> str:
    """An option's default as help shows it."""
    return f.metadata["shown_default"] or ("none" if f.default in ("", None) else str(f.default))


def option_type(f: dataclasses.Field) -> type:
    """The plain Python type of an option (its annotation without `| None`)."""
    return _OPTION_TYPES[f.type]


def nest_options(flat: dict[str, Any], cls: type | None = None) -> dict[str, Any]:
    """Option values by flat name (None: not given) -> settings with model fields under "model"
    (the model of run config class `cls`, TrainConfig by default)."""
    model = {f.name for f in options((cls or TrainConfig).model_class)}
    out: dict[str, Any] = {"model": {}}
    for name, value in flat.items():
        if value is not None:
            (out["model"] if name in model else out)[name] = value
    return out


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the DCGAN pair.

    resolution: output side in pixels (32, 64 or 128).
    z_dim: latent size; ngf/ndf: base widths of generator and discriminator;
    norm: normalisation inside the blocks ("batch" or "none");
    spectral_norm: spectral normalisation on every discriminator convolution.
    """

    resolution: int = option(64, "image side in pixels: 32, 64 or 128", "the dataset's")
    z_dim: int = option(100, "latent vector size")
    ngf: int = option(64, "generator base width (channels of its last block; doubles towards 4x4)")
    ndf: int = option(64, "discriminator base width (channels of its first block)")
    norm: str = option("batch", "normalisation inside the blocks: batch or none")
    spectral_norm: bool = option(False, "spectral normalisation on every discriminator convolution")

    def __post_init__(self) -> None:
        check_model(self)
        _check_positive_ints(self, ("z_dim", "ngf", "ndf"), "model.")
        if self.norm not in NORMS:
            raise ConfigError(f"model.norm={self.norm!r} must be one of {NORMS}")

    @property
    def min_parameters(self) -> int:
        """A lower bound on G's and D's parameters (G's first and D's last layer), from the
        settings alone: sized before anything is built (see facegan.memory)."""
        return 16 * (self.z_dim * self.ngf + self.ndf) * (self.resolution // 8)


# options renamed since dd87acf (old name -> new): stored configs with the old names still load,
# and the CLI answers the old flags with the new name
RENAMED = {"fid_every": "metric_every", "fid_samples": "metric_samples", "fid_weights": "metric_weights",
           "fid_resize": "metric_resize"}


def resumable_fields(cls: type) -> frozenset[str]:
    """Fields of run config class `cls` that may change on resume (the `resumable` role)."""
    return frozenset(f.name for f in fields(cls) if f.metadata.get("resumable"))


def session_fields(cls: type) -> tuple[str, ...]:
    """Fields of run config class `cls` never inherited from a run's saved config (`session`)."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("session"))


def check_types(cfg: Any, prefix: str = "") -> None:
    """Every option of `cfg` (a run or model config) holds a value of its type, or a ConfigError
    names it: a config read back from JSON may hold strings for numbers, lists for values, ..."""
    for f in options(type(cfg)):
        value, kind = getattr(cfg, f.name), option_type(f)
        if value is None and f.type.endswith("| None"):
            continue
        words, fits = _TYPES[kind]
        if not fits(value):
            raise ConfigError(f"{prefix}{f.name}={value!r} must be {words}")


# per option type: how an error names it, and which stored values are of it (a bool is not a number)
_TYPES = {
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    str: ("a string", lambda v: isinstance(v, str)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
}


def check_model(model: Any) -> None:
    """The checks every model config makes first: option types and a supported resolution."""
    check_types(model, "model.")
    if model.resolution not in RESOLUTIONS:
        raise ConfigError(f"model.resolution={model.resolution!r} is not supported; choose one of {RESOLUTIONS}")


def _check_positive_ints(cfg: Any, names: tuple[str, ...], prefix: str = "") -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{prefix}{name}={value!r} must be a positive integer")


@dataclass(frozen=True)
class RunConfig:
    """What every run config shares: the run's place, the options every family has, their checks,
    JSON round trips and the comparison a resume makes. A family's config subclasses it with its
    `model` (a `model_class`) and its own options; it redeclares a shared option only where its
    default differs."""

    model_class: ClassVar[type]
    family: ClassVar[str]  # the model family's registered name (facegan.families)
    POSITIVE_INTS: ClassVar[tuple[str, ...]] = ("steps", "batch_size", "ckpt_every", "keep_last", "log_every",
                                                "sample_count", "metric_samples",
                                                "watchdog_windows")
    RATES: ClassVar[tuple[str, ...]] = ()  # learning rates, in (0, 1)
    FRACTIONS: ClassVar[tuple[str, ...]] = ("beta1", "beta2", "decay_start")  # in [0, 1)

    dataset: str = field(metadata={"session": True, "resumable": True})  # resume checks its id, not its path
    run: str = field(metadata={"session": True, "resumable": True})
    preset: str = field(default="", metadata={"resumable": True})  # the preset it started from (a label)
    model: Any = None  # the family's model config (a `model_class`; a dict is converted)
    steps: int = option(10_000, "training steps (one update of every network each)", resumable=True)
    batch_size: int = option(128, "images per step (the global batch when data-parallel)")
    beta1: float = option(0.5, "Adam beta1 of every optimizer")
    beta2: float = option(0.999, "Adam beta2 of every optimizer")
    lr_schedule: str = option("constant", "constant, or linear: constant until decay_start x steps, then "
                                          "linearly to zero (CycleGAN's decay)")
    decay_start: float = option(0.5, "fraction of the steps after which the linear schedule decays")
    ckpt_every: int = option(500, "checkpoint (full state, sample picture, metrics, loss plot) every N steps",
                             resumable=True)
    keep_last: int = option(3, "newest checkpoints kept (the metric's best and the watchdog's best before a "
                               "collapse are kept besides)",
                            resumable=True)
    log_every: int = option(50, "progress line and metrics row every N steps", resumable=True)
    sample_count: int = option(64, "faces in each checkpoint's fixed-input sample picture", resumable=True)
    seed: int = option(0, "random seed (initial weights, batches, latents, pools)")
    device: str = option("auto", DEVICE_HELP, session=True)
    max_seconds: float | None = option(None, "checkpoint and stop after this many seconds of wall-clock time",
                                       session=True)
    compile: bool = option(False, "torch.compile the networks (a compiler error falls back to eager)",
                           resumable=True)
    precision: str = option("auto", "auto (bf16 on GPUs that compute it natively, else fp32), bf16 or fp32",
                            resumable=True)
    metrics: str = option("fid", "metrics scored during training, a comma list (facegan.metrics: fid); the "
                                 "first decides best.json", resumable=True)
    metric_every: int = option(0, "score the metrics every N steps, a multiple of ckpt_every (0: off)",
                               resumable=True)
    metric_samples: int = option(5000, "generated and real images per score", resumable=True)
    metric_weights: str = option("", "URI of the Inception weights pt_inception-2015-12-05-6726825d.pth: https, "
                                     "s3:// or a path (empty: $FACEGAN_FID_WEIGHTS, else the pytorch-fid "
                                     "release)", resumable=True)
    metric_resize: int = option(299, "Inception input side: 299 is the FID protocol (comparable with published "
                                     "scores); 75-298 only for quick smoke checks", resumable=True)
    tensorboard: bool = option(True, "write TensorBoard event files (losses, D outputs, learning rates, img/s, "
                                     "metrics, sample pictures) into <run>/tb/ with each checkpoint", resumable=True)
    watchdog: str = option("stop", "the collapse watchdog (facegan.watchdog): stop (checkpoint, write "
                                   "watchdog.json, end the run), warn (log and record) or off", resumable=True)
    watchdog_gap: float = option(0.99, "saturation: D(x) - D(G(z)) of a log window at or above this counts",
                                 resumable=True)
    watchdog_windows: int = option(20, "saturation fires after this many saturated log windows in a row",
                                   resumable=True)
    watchdog_diversity: float = option(0.25, "diversity fires when a checkpoint's fixed samples differ among "
                                             "themselves less than this share of the most they did (0: off)",
                                       resumable=True)
    watchdog_patience: int = option(5, "metric fires after the first metric is worse than its best for this "
                                       "many evaluations in a row (0: off)", resumable=True)
    init_from: str = option("", "start a new run from another run's weights (fine-tuning): a run URI (its best "
                                "checkpoint, else its latest) or a checkpoint .pt; the optimizers start afresh; the "
                                "model options but the resolution default to the source's")
    # where a run started from, recorded by facegan.loop.fit when init_from is given: the checkpoint's
    # {"uri", "step", "sha256"}
    init_origin: dict | None = field(default=None, metadata={"resumable": True})

    def __post_init__(self) -> None:
        """Checks every run config makes (a family's config makes its own after these)."""
        if isinstance(self.model, dict):  # accepted for convenience, stored as the model class
            object.__setattr__(self, "model", self.model_class(**self.model))
        if not isinstance(self.model, self.model_class):
            raise ConfigError(f"model={self.model!r} must be the model's settings (a JSON object)")
        check_types(self)
        for f in options(type(self)):
            value = getattr(self, f.name)
            if f.type in ("float", "float | None") and isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name}={value!r} must be a finite number")
        check_seed(self.seed)
        if not self.dataset:
            raise ConfigError("dataset is empty; give the dataset URI (s3://... or a folder)")
        if not self.run:
            raise ConfigError("run is empty; give the run URI (s3://... or a folder)")
        if storage.overlap(self.run, self.dataset):
            raise ConfigError(f"run={self.run!r} and dataset={self.dataset!r} overlap (the same folder, or one "
                              "inside the other); a run's files must not mix with a dataset's: use another run URI")
        _check_positive_ints(self, self.POSITIVE_INTS)
        for name in self.RATES:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ConfigError(f"{name}={value!r} must be a number in (0, 1)")
        for name in self.FRACTIONS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError(f"{name}={value!r} must be a number in [0, 1)")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"lr_schedule={self.lr_schedule!r} must be one of {SCHEDULES}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ConfigError(f"device={self.device!r} must be 'auto', 'cpu' or 'cuda[:N]'")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"max_seconds={self.max_seconds!r} must be positive")
        if self.watchdog not in WATCHDOG_MODES:
            raise ConfigError(f"watchdog={self.watchdog!r} must be one of {WATCHDOG_MODES}")
        if not isinstance(self.watchdog_gap, (int, float)) or not 0 < self.watchdog_gap <= 1:
            raise ConfigError(f"watchdog_gap={self.watchdog_gap!r} must be a number in (0, 1]")
        if not isinstance(self.watchdog_diversity, (int, float)) or not 0 <= self.watchdog_diversity < 1:
            raise ConfigError(f"watchdog_diversity={self.watchdog_diversity!r} must be a number in [0, 1) (0: off)")
        if (isinstance(self.watchdog_patience, bool) or not isinstance(self.watchdog_patience, int)
                or self.watchdog_patience < 0):
            raise ConfigError(f"watchdog_patience={self.watchdog_patience!r} must be 0 (off) or a positive integer")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} must be one of {PRECISIONS}")
        metric_names(self.metrics)
        resize = self.metric_resize
        if isinstance(resize, bool) or not isinstance(resize, int) or not 75 <= resize <= 299:
            raise ConfigError(f"metric_resize={resize!r} must be an integer in 75..299 (299: the FID protocol)")
        if isinstance(self.metric_every, bool) or not isinstance(self.metric_every, int) or self.metric_every < 0:
            raise ConfigError(f"metric_every={self.metric_every!r} must be 0 (off) or a positive integer")
        if self.metric_every and self.metric_every % self.ckpt_every:
            raise ConfigError(f"metric_every={self.metric_every} must be a multiple of ckpt_every={self.ckpt_every} "
                              "(metrics are scored on checkpoints)")
        if self.metric_every and not self.metrics.strip():
            raise ConfigError(f"metric_every={self.metric_every} but metrics is empty; name them, e.g. --metrics fid")
        origin = self.init_origin
        if origin is not None and not (isinstance(origin, dict) and isinstance(origin.get("uri"), str)
                                       and isinstance(origin.get("step"), int)
                                       and isinstance(origin.get("sha256"), str | None)):
            raise ConfigError(f"init_origin={origin!r} must be the checkpoint a run started from "
                              "({\"uri\": ..., \"step\": ..., \"sha256\": ...})")
        if self.init_from and storage.overlap(self.run, self.init_from.rsplit("/checkpoints/", 1)[0]):
            raise ConfigError(f"init_from={self.init_from!r} is this run ({self.run}); start from another run")

    def check_dataset(self, manifest: dict) -> None:
        """The run fits the dataset of `manifest` (read by facegan.data): the model's resolution
        is the dataset's, or a ConfigError naming both."""
        if manifest["resolution"] != self.model.resolution:
            raise ConfigError(f"dataset {self.dataset} is {manifest['resolution']}px but model.resolution="
                              f"{self.model.resolution}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: the family's name, then the fields (the model config nested
        under "model")."""
        return {"family": self.family, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from `to_dict` output; unknown keys are an error that names them."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, not {type(data).__name__}")
        data = dict(data)
        for old, new in RENAMED.items():  # configs written by dd87acf and before
            if old in data and new not in data:
                data[new] = data.pop(old)
        family = data.pop("family", cls.family)  # configs written by dd87acf and before have none
        if family != cls.family:
            raise ConfigError(f"config of a {family!r} run, not a {cls.family} one")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        if isinstance(data.get("model"), dict):
            model_known = {f.name for f in fields(cls.model_class)}
            bad = sorted(set(data["model"]) - model_known)
            if bad:
                raise ConfigError(f"unknown model config field(s): {', '.join(bad)}")
            data["model"] = cls.model_class(**data["model"])
        return cls(**data)

    def replace(self, **changes: Any):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def differences(self, other: RunConfig) -> list[str]:
        """Fields that differ and would change what the run computes, as "name old -> new"
        (model fields as "model.name"), sorted by name."""
        def flat(cfg: RunConfig) -> dict[str, Any]:
            d = cfg.to_dict()
            return {**{k: v for k, v in d.items() if k != "model"}, **{f"model.{k}": v for k, v in d["model"].items()}}

        mine, theirs = flat(self), flat(other)
        mine.pop("family"), theirs.pop("family")  # a family is checked apart, before any comparison
        free, why = resumable_fields(type(self)), {}
        if "linear" in (self.lr_schedule, other.lr_schedule):  # the decay's length is the run's length
            free -= {"steps"}
            why["steps"] = ", the length of its linear lr decay"
        return [f"{k} {mine[k]!r} -> {theirs.get(k)!r}{why.get(k, '')}" for k in sorted(mine)
                if k not in free and mine[k] != theirs.get(k)]


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Everything a training run needs; see README "Training" for the meaning of each field."""

    model_class: ClassVar[type] = ModelConfig
    family: ClassVar[str] = "dcgan"
    POSITIVE_INTS: ClassVar[tuple[str, ...]] = (*RunConfig.POSITIVE_INTS, "r1_every")
    RATES: ClassVar[tuple[str, ...]] = ("lr_g", "lr_d")
    FRACTIONS: ClassVar[tuple[str, ...]] = (*RunConfig.FRACTIONS, "ema_decay")

    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = option(10_000, "training steps (one D and one G update each)", resumable=True)
    lr_g: float = option(2e-4, "generator Adam learning rate")
    lr_d: float = option(2e-4, "discriminator Adam learning rate")
    label_smoothing: float = option(1.0, "D's target for real images (0.9: one-sided smoothing; 1: none)")
    ema_decay: float = option(0.999, "decay of the EMA generator's weights (0: the EMA generator is G)")
    loss: str = option("bce", "bce (non-saturating, with logits) or hinge")
    augment: str = option("", "DiffAugment before D: a comma list of color, translation, cutout")
    r1_gamma: float = option(0.0, "lazy R1 penalty weight on real images (0: off)")
    r1_every: int = option(16, "lazy R1 interval in steps")
    freeze_d: int = option(0, "freeze the discriminator's first N blocks (FreezeD, Mo et al. 2020: for "
                              "fine-tuning with init_from on few images; 0: off)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.freeze_d, bool) or not isinstance(self.freeze_d, int) or self.freeze_d < 0:
            raise ConfigError(f"freeze_d={self.freeze_d!r} must be 0 (off) or a positive integer")
        if not 0.5 < self.label_smoothing <= 1.0:
            raise ConfigError(
                f"label_smoothing={self.label_smoothing!r} is the real-label target, in (0.5, 1]"
            )
        if self.loss not in LOSSES:
            raise ConfigError(f"loss={self.loss!r} must be one of {LOSSES}")
        bad = [a for a in self.augment_list if a not in AUGMENTS]
        if self.augment.strip() and any(not a.strip() for a in self.augment.split(",")):
            raise ConfigError(f"augment={self.augment!r} has an empty entry; use a comma list of {AUGMENTS}")
        if bad:
            raise ConfigError(f"augment={self.augment!r}: unknown {bad}; use a comma list of {AUGMENTS}")
        if self.r1_gamma < 0:
            raise ConfigError(f"r1_gamma={self.r1_gamma!r} must be >= 0")

    @property
    def augment_list(self) -> list[str]:
        """DiffAugment policies, in order."""
        return [a.strip() for a in self.augment.split(",") if a.strip()]


@dataclass(frozen=True)
class ResNetModelConfig:
    """Shape of the SNGAN ResNet pair (facegan.resnet): resolution 32, 64 or 128; z_dim: latent
    size; ngf/ndf: the widest block's channels (the blocks halve from there, see facegan.resnet)."""

    resolution: int = option(64, "image side in pixels: 32, 64 or 128", "the dataset's")
    z_dim: int = option(128, "latent vector size")
    ngf: int = option(1024, "generator width (channels of its first block; its last four halve it)")
    ndf: int = option(1024, "discriminator width (channels of its last block; the blocks before halve it)")

    def __post_init__(self) -> None:
        check_model(self)
        _check_positive_ints(self, ("z_dim", "ngf", "ndf"), "model.")
        for name in ("ngf", "ndf"):
            if getattr(self, name) % 16:
                raise ConfigError(f"model.{name}={getattr(self, name)} must be a multiple of 16 "
                                  "(four blocks halve it)")

    @property
    def min_parameters(self) -> int:
        """A lower bound on G's and D's parameters (G's linear layer and one 3x3 conv at full width each)."""
        return 16 * self.z_dim * self.ngf + 9 * (self.ngf ** 2 + self.ndf ** 2)

    @property
    def g_widths(self) -> list[int]:
        """Channels of G's 4x4 map, then after each up-block (the last four halve)."""
        k = int(math.log2(self.resolution // 4))
        return [self.ngf >> max(0, j - (k - 4)) for j in range(k + 1)]

    @property
    def d_widths(self) -> list[int]:
        """Channels after each of D's down-blocks (up to ndf, at most five)."""
        n = min(int(math.log2(self.resolution // 4)) + 1, 5)
        return [self.ndf >> (n - 1 - j) for j in range(n)]


@dataclass(frozen=True)
class ResNetConfig(TrainConfig):
    """A ResNet GAN run, SNGAN's recipe: hinge loss, n_dis D updates per G update, Adam(2e-4, 0,
    0.9), a linear decay over the whole run; the DCGAN's options (EMA, DiffAugment, R1, label
    smoothing) apply as they do there."""

    model_class: ClassVar[type] = ResNetModelConfig
    family: ClassVar[str] = "resnet"
    POSITIVE_INTS: ClassVar[tuple[str, ...]] = (*TrainConfig.POSITIVE_INTS, "n_dis")

    model: ResNetModelConfig = field(default_factory=ResNetModelConfig)
    steps: int = option(100_000, "training steps (n_dis D updates, then one G update, each)", resumable=True)
    batch_size: int = option(64, "images per D and per G update (the global batch when data-parallel)")
    beta1: float = option(0.0, "Adam beta1 of both networks (SNGAN: 0)")
    beta2: float = option(0.9, "Adam beta2 of both networks (SNGAN: 0.9)")
    lr_schedule: str = option("linear", "linear: constant until decay_start x steps, then linearly to zero "
                                        "(SNGAN's decay from the start); or constant")
    decay_start: float = option(0.0, "fraction of the steps after which the linear schedule decays")
    loss: str = option("hinge", "hinge (SNGAN's) or bce (non-saturating, with logits)")
    n_dis: int = option(5, "discriminator updates per generator update (SNGAN: 5 at 64 px, 2 at 128 px)")


@dataclass(frozen=True)
class CycleModelConfig:
    """Shape of the CycleGAN networks (facegan.cyclegan): two ResNet generators, two PatchGANs.

    resolution: image side (32, 64 or 128); ngf/ndf: base widths; blocks: residual blocks of
    each generator; d_layers: stride-2 layers of each PatchGAN (0: by resolution, 1/2/3 at
    32/64/128 px, patches of 16/34/70 px).
    """

    resolution: int = option(64, "image side in pixels: 32, 64 or 128", "the dataset's")
    ngf: int = option(64, "generator base width (the first 7x7 convolution's channels)")
    ndf: int = option(64, "PatchGAN base width (channels of its first layer)")
    blocks: int = option(6, "residual blocks per generator (CycleGAN: 6 up to 128 px, 9 at 256)")
    d_layers: int = option(0, "PatchGAN stride-2 layers (0: 1, 2, 3 at 32, 64, 128 px: 16, 34, 70 px patches)")

    def __post_init__(self) -> None:
        check_model(self)
        _check_positive_ints(self, ("ngf", "ndf", "blocks"), "model.")
        if isinstance(self.d_layers, bool) or not isinstance(self.d_layers, int) or not 0 <= self.d_layers <= 4:
            raise ConfigError(f"model.d_layers={self.d_layers!r} must be 0 (by resolution) or 1..4")

    @property
    def min_parameters(self) -> int:
        """A lower bound on the four networks' parameters: both generators' residual blocks."""
        return 2 * self.blocks * 2 * 9 * (4 * self.ngf) ** 2

    @property
    def patch_layers(self) -> int:
        """The PatchGAN's stride-2 layers: d_layers, or by resolution."""
        return self.d_layers or {32: 1, 64: 2, 128: 3}[self.resolution]


@dataclass(frozen=True)
class TranslateConfig(RunConfig):
    """An attribute-swap run (CycleGAN): domain A = images with `attribute`, B = without."""

    model_class: ClassVar[type] = CycleModelConfig
    family: ClassVar[str] = "cyclegan"
    RATES: ClassVar[tuple[str, ...]] = ("lr",)

    model: CycleModelConfig = field(default_factory=CycleModelConfig)
    steps: int = option(40_000, "training steps (one update of both generators, then of both PatchGANs)",
                        resumable=True)
    batch_size: int = option(16, "images per domain per step (at most pool_size when the pool is on)")
    lr_schedule: str = option("linear", "linear: constant until decay_start x steps, then linearly to zero "
                                        "(CycleGAN's); or constant")
    sample_count: int = option(8, "fixed real faces per domain in each checkpoint's translation grid",
                               resumable=True)
    attribute: str = option("Heavy_Makeup", "the CelebA attribute that splits the dataset: A = on, B = off")
    lr: float = option(2e-4, "Adam learning rate of the generators and the PatchGANs")
    lambda_cycle: float = option(10.0, "weight of the cycle-consistency L1 loss (both directions)")
    lambda_identity: float = option(0.5, "identity L1 loss weight, as a fraction of lambda_cycle (0: off)")
    pool_size: int = option(50, "past fakes each PatchGAN also sees (CycleGAN's image pool; 0: off)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.attribute or not isinstance(self.attribute, str):
            raise ConfigError("attribute is empty; name a CelebA attribute, e.g. Heavy_Makeup")
        for name in ("lambda_cycle", "lambda_identity"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be >= 0")
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, int) or self.pool_size < 0:
            raise ConfigError(f"pool_size={self.pool_size!r} must be 0 (off) or a positive integer")
        if self.pool_size and self.batch_size > self.pool_size:
            raise ConfigError(f"batch_size={self.batch_size} must be at most pool_size={self.pool_size} "
                              "(each fake swaps with a distinct stored one)")

    def check_dataset(self, manifest: dict) -> None:
        """Also: the dataset has labels, and `attribute` is one of them (a DatasetError)."""
        from facegan.attributes import column

        super().check_dataset(manifest)
        if "attributes" not in manifest:
            raise DatasetError(f"{self.dataset} has no attributes; prepare it with --attributes list_attr_celeba.txt")
        column(manifest["attributes"]["names"], self.attribute)
