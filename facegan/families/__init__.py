"""Model families and the one registry that names them.

A family is a recipe the run lifecycle (`facegan.loop.fit`) trains: its config class (with the
option table the CLI and flows are made from), its presets, the parts a checkpoint holds, the
named scalars its step returns (which the metrics rows, progress lines, flow report and loss plot
read), and a module holding the torch side: `build(setup)` -> the run's recipe and
`generators(state, device, ema)` -> its trained networks. Everything here imports no torch, so
`facegan --help` stays instant; the family's module is imported when a run trains or samples.

Adding a family: one module with `build` and `generators`, and one `register(Family(...))` line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from facegan.config import ResNetConfig, RunConfig, TrainConfig, TranslateConfig
from facegan.errors import ConfigError
from facegan.presets import PRESETS, RESNET_PRESETS, TRANSLATE_PRESETS
from facegan.registry import Registry


@dataclass(frozen=True)
class Scalar:
    """One value the family's step returns: its metrics-row key, its label in progress lines,
    reports and the loss plot, its format, whether the progress line and report show it, and the
    loss plot's panel it is drawn in."""

    key: str
    label: str
    fmt: str = ".3f"
    shown: bool = True
    panel: str = "losses"


@dataclass(frozen=True)
class Family:
    """What the lifecycle, checkpoints, CLI, flows and gallery know of a model family."""

    name: str
    config: type[RunConfig]
    presets: dict[str, dict[str, Any]]
    parts: tuple[str, ...]  # the state dicts a checkpoint holds (validated on every load)
    scalars: tuple[Scalar, ...]  # what step(i) returns, in order
    module: str  # the torch side: build(setup) -> recipe, generators(state, device, ema) -> {name: net}
    #              (a `noise` family's net has `z_dim`: it maps (N, z_dim) latents to images),
    #              and for a family that is not `noise`, gallery_section(state, device) (see facegan.gallery)
    #              and checkpoint_sampler(state, dataset, samples, device) -> (sampler, which generator):
    #              what its run's metrics scored, for scoring a checkpoint outside the run
    what: str  # what a run of it makes, for help and reports
    noise: bool = False  # its generator draws faces from noise: sampled, the gallery's faces, scored by FID
    nets: tuple[str, ...] = ()  # the parts that are network weights: what a new run takes with init_from
    d_outputs: tuple[str, str] | None = None  # the scalars that are D's mean outputs on real and on generated
    #                                           images, in [0, 1] (the watchdog's saturation signal)
    use: str = ""  # for a family that is not `noise`: how its networks are used instead (said when
    #                asked to sample faces from one of its checkpoints)

    def plot_series(self) -> list[list[str]]:
        """The loss plot's lines: [key, label, panel] per scalar (JSON-able, for facegan.plots)."""
        return [[s.key, s.label, s.panel] for s in self.scalars]

    def recipes(self) -> ModuleType:
        """The family's torch module (imported on first use)."""
        return importlib.import_module(self.module)


REGISTRY: Registry[Family] = Registry("family")
register, get = REGISTRY.register, REGISTRY.find  # add a family; the family called `name`
DEFAULT = "dcgan"  # the family of a new run when none is named (`facegan train`, the train-dcgan flow)
LEGACY = "dcgan"  # the family of a checkpoint written before checkpoints named their family
SWAP = "cyclegan"  # the family of `facegan translate train|apply` and the train-cyclegan flow


def name_of_state(state: dict) -> str:
    """The family of a loaded checkpoint (see LEGACY for those that name none)."""
    return state.get("family", LEGACY)


def of_preset(name: str) -> Family:
    """The family whose presets include `name`, or a ConfigError listing every family's."""
    for family in REGISTRY.values():
        if name in family.presets:
            return family
    known = ", ".join(p for f in REGISTRY.values() for p in f.presets)
    raise ConfigError(f"preset={name!r} is unknown; choose one of {known}")


def of_config(cfg: RunConfig | type[RunConfig]) -> Family:
    """The family a run config (or config class) belongs to."""
    return get(cfg.family)


def name_of_saved(config: dict) -> str:
    """The family of a run's saved config.json: its "family" key; configs written before that key
    existed (dd87acf and earlier) are an attribute swap when they name an attribute."""
    if "family" in config:
        return config["family"]
    return SWAP if "attribute" in config else LEGACY


def of_saved(config: dict) -> Family:
    """The registered family of a run's saved config.json (see `name_of_saved`)."""
    return get(name_of_saved(config))


_LOSSES = (Scalar("loss_d", "loss_d"), Scalar("loss_g", "loss_g"))
_D = "discriminator outputs"
register(Family(
    name="dcgan", config=TrainConfig, presets=PRESETS, module="facegan.families.dcgan",
    parts=("G", "D", "G_ema", "opt_g", "opt_d"), nets=("G", "D", "G_ema"),
    scalars=(*_LOSSES, Scalar("d_real", "D(x)", ".2f", panel=_D), Scalar("d_fake", "D(G(z))", ".2f", panel=_D)),
    what="faces from noise (DCGAN)", noise=True, d_outputs=("d_real", "d_fake"),
))
register(Family(
    name="resnet", config=ResNetConfig, presets=RESNET_PRESETS, module="facegan.families.resnet",
    parts=("G", "D", "G_ema", "opt_g", "opt_d"), nets=("G", "D", "G_ema"),
    scalars=(*_LOSSES, Scalar("d_real", "D(x)", ".2f", panel=_D), Scalar("d_fake", "D(G(z))", ".2f", panel=_D)),
    what="faces from noise (ResNet GAN, SNGAN's recipe)", noise=True, d_outputs=("d_real", "d_fake"),
))
register(Family(
    name="cyclegan", config=TranslateConfig, presets=TRANSLATE_PRESETS, module="facegan.families.cyclegan",
    parts=("G_AB", "G_BA", "D_A", "D_B", "opt_g", "opt_d", "pool"), nets=("G_AB", "G_BA", "D_A", "D_B"),
    scalars=(*_LOSSES, Scalar("cycle", "cycle"), Scalar("identity", "identity"),
             Scalar("d_real", "D_B(B)", ".2f", shown=False, panel=_D),
             Scalar("d_fake", "D_B(G_AB(A))", ".2f", shown=False, panel=_D)),
    what="an attribute swap (CycleGAN)", d_outputs=("d_real", "d_fake"),
    use="`facegan translate apply` uses it on photos (Python: facegan.translate.load_translator)",
))
