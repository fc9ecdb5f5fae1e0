"""Metrics of a generator against its dataset, and the one registry that names them.

A metric is a module with `scorer(cfg, images, manifest, device, log, shared)` -> an object
with `features` (the feature pass it scores: an object whose `generated(sampler)` extracts the
features of the images a sampler makes), `from_features(generated)` -> its row's fields
({"kid": mean, "kid_std": std}) and `protocol` (samples, resize, weights' sha256, ...). `shared`
is one dict for all of a run's scorers: metrics of one feature network (FID, KID, precision,
recall: `inception.py`) share one network, one set of real features and, through `score_all`,
one pass over the generated images per scoring. A sampler is `sampler(n, batch)` -> batches of
images in [-1, 1] (`facegan.sample.noise_sampler` for a generator of faces from noise): scoring
needs no more, so any family can be scored. Results go to the run's `metric-<name>.jsonl`;
`best.json` follows the first metric a run lists. This module imports no torch: the metric's
module is imported when a run or a command scores.

Adding a metric: one module with `scorer`, and one `register(Metric(...))` line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple

from facegan.errors import ConfigError, DatasetError
from facegan.registry import Registry


@dataclass(frozen=True)
class Metric:
    """What the lifecycle, the run folder, the report and the gallery know of a metric."""

    name: str
    lower_is_better: bool
    module: str  # scorer(cfg, images, manifest, device, log) -> object with score(sampler) and protocol
    what: str
    min_samples: int = 2  # the fewest images (generated, and real) it can score

    def scorers(self) -> ModuleType:
        """The metric's module (imported on first use: it loads torch and its feature network)."""
        return importlib.import_module(self.module)


REGISTRY: Registry[Metric] = Registry("metric")
register, get = REGISTRY.register, REGISTRY.find  # add a metric; the metric called `name`
MANIFOLD_K = 3  # improved precision and recall's neighbourhood: each image's k-th nearest other image


def too_few(n: int, metrics: list[str]) -> str | None:
    """Why `n` images are too few for one of `metrics` ("precision needs at least 4 images"), or None."""
    for name in metrics:
        if n < get(name).min_samples:
            return f"{name} needs at least {get(name).min_samples} images"
    return None


def check_samples(cfg, metrics: list[str], option: str = "metric_samples") -> None:
    """A ConfigError naming `option` when a run's config `cfg` (or a `Request`) asks for fewer
    samples than one of `metrics` needs. Checked when scoring starts, not when a config is built:
    a run saved with too few still loads, and resumes once given more."""
    if few := too_few(cfg.metric_samples, metrics):
        raise ConfigError(f"{option}={cfg.metric_samples}: {few}")


def names(text: str) -> list[str]:
    """The metric names of a comma list ("fid,kid"), in order; empty parts are an error."""
    if not text.strip():
        return []
    parts = [p.strip() for p in text.split(",")]
    if not all(parts):
        raise ConfigError(f"metrics={text!r} has an empty name; give a comma list of {', '.join(REGISTRY)}")
    for p in parts:
        get(p)
    if len(set(parts)) != len(parts):
        raise ConfigError(f"metrics={text!r} names a metric twice")
    return parts


@dataclass(frozen=True)
class Request:
    """A scoring outside a run (`facegan score`, the evaluate flow): the fields of a run's config
    that a scorer reads."""

    dataset: str
    metric_samples: int
    metric_weights: str = ""  # "" = $FACEGAN_FID_WEIGHTS, else pytorch-fid's release URL
    metric_resize: int = 299  # the Inception input side; 299 is the FID protocol


def scorers_for(cfg, metrics: list[str], images, manifest: dict | None, device, log, shared: dict) -> dict:
    """{name: scorer} of each of `metrics` for a run's config `cfg` (or a `Request`), over the one
    feature pass `shared` holds (made by the first scorer that needs it); `images` and `manifest`:
    the dataset already in memory, or None to read what is needed. Fewer samples than a metric
    needs is a ConfigError (`check_samples`), and a dataset holding fewer images a DatasetError
    naming it."""
    check_samples(cfg, metrics)
    scorers = {name: get(name).scorers().scorer(cfg, images, manifest, device, log, shared) for name in metrics}
    for name, scorer in scorers.items():
        n = scorer.protocol["samples"]  # metric_samples, or fewer when the dataset holds fewer
        if few := too_few(n, [name]):
            raise DatasetError(f"{cfg.dataset} holds {n} images, too few to score: {few}")
    return scorers


def score(sampler, request: Request, metrics: list[str], device, log=print, batch: int = 50) -> tuple[dict, dict]:
    """Every one of `metrics`' fields ({"fid": ..., "kid": ..., "kid_std": ...}) for the images
    `sampler` makes, against `request.dataset`, with one Inception pass; and the protocol they were
    scored under (the union of the metrics' protocols: the shared features' and each metric's own
    settings, e.g. KID's subsets). An empty list, or too few samples for a metric, is a ConfigError."""
    from facegan.metrics import inception

    if not metrics:
        raise ConfigError(f"metrics is empty; give a comma list of {', '.join(REGISTRY)}")
    check_samples(request, metrics, "samples")  # before the weights and real features load
    shared = {inception.SHARED: inception.Features.create(  # made here for `batch`, which a run's config lacks
        request.dataset, request.metric_samples, request.metric_weights or None, device, log=log, batch=batch,
        resize=request.metric_resize)}
    scorers = scorers_for(request, metrics, None, None, device, log, shared)
    fields = {k: v for row in score_all(scorers, sampler).values() for k, v in row.items()}
    return fields, {k: v for s in scorers.values() for k, v in s.protocol.items()}


class Scored(NamedTuple):
    """Which generator of a checkpoint `score_checkpoint` scored."""

    step: int
    which: str  # "G_ema", "G", or a translation's "G_BA"


def score_checkpoint(uri: str, request: Request, metrics: list[str], device: str = "auto", ema: bool = True,
                     log=print, batch: int = 50) -> tuple[dict, dict, Scored]:
    """`score` of a checkpoint (a run, a `.pt`, an export folder) on `device`, with the sampler its
    run scored: for a family that draws from noise its EMA generator (G when `ema` is False) on
    seeded latents; for a translation its family's `checkpoint_sampler` (a swap: `request.dataset`'s
    faces without the attribute, with it added). What `facegan score` and the evaluate flow run.
    Returns (fields, protocol, which generator at which step)."""
    from facegan import families  # here: facegan.config imports this module, families imports config
    from facegan.runtime import use_device
    from facegan.sample import load_generator, noise_sampler, read_state

    check_samples(request, metrics, "samples")  # bad input before the checkpoint loads
    dev = use_device(str(device))
    state = read_state(uri, ema)
    family = families.get(families.name_of_state(state))
    if family.noise:
        gen = load_generator(state, ema=ema, device=dev)
        sampler, which = noise_sampler(gen.net, gen.z_dim, dev), gen.which
    else:
        sampler, which = family.recipes().checkpoint_sampler(state, request.dataset, request.metric_samples, dev)
    fields, protocol = score(sampler, request, metrics, dev, log, batch)
    return fields, protocol, Scored(state["step"], which)


def score_all(scorers: dict, sampler) -> dict[str, dict]:
    """Each scorer's row fields for the images `sampler` makes; scorers over one feature pass
    (`scorer.features`) share one extraction of the generated images."""
    extracted: dict[int, object] = {}
    out = {}
    for name, scorer in scorers.items():
        key = id(scorer.features)
        if key not in extracted:
            extracted[key] = scorer.features.generated(sampler)
        out[name] = scorer.from_features(extracted[key])
    return out


register(Metric("fid", lower_is_better=True, module="facegan.metrics.fid",
                what="Fréchet Inception Distance (pytorch-fid's Inception, pool3 features)"))
register(Metric("kid", lower_is_better=True, module="facegan.metrics.kid",
                what="Kernel Inception Distance (unbiased MMD^2, cubic kernel, 100 subsets; the same features)"))
register(Metric("precision", lower_is_better=False, module="facegan.metrics.precision", min_samples=MANIFOLD_K + 1,
                what=f"improved precision, k = {MANIFOLD_K} (generated faces within the real manifold; the same "
                     "features)"))
register(Metric("recall", lower_is_better=False, module="facegan.metrics.recall", min_samples=MANIFOLD_K + 1,
                what=f"improved recall, k = {MANIFOLD_K} (real faces within the generated manifold; the same "
                     "features)"))
