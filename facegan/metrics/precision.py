"""The precision metric (Kynkaanniemi et al. 2019, k = 3): the share of generated images whose
pool features (`facegan.metrics.inception`) lie within the real images' manifold
(`facegan.metrics.manifold`). How many of the faces look like faces; higher is better."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from facegan.metrics import manifold
from facegan.metrics.inception import Features, shared_features


@dataclass
class PrecisionScorer:
    """Scores generated features against the real manifold (its radii computed once)."""

    features: Features

    name = "precision"

    @cached_property
    def real_radii(self) -> torch.Tensor:
        """The real manifold's radii, computed at the first scoring."""
        return manifold.radii(self.features.real)

    @property
    def protocol(self) -> dict:
        return {**self.features.protocol, "k": manifold.K}

    def from_features(self, generated: torch.Tensor) -> dict:
        """{"precision": ...} of generated images' features (`Features.generated`)."""
        return {"precision": manifold.share_inside(generated, self.features.real, self.real_radii)}


def scorer(cfg, images: torch.Tensor, manifest: dict, device, log, shared: dict | None = None) -> PrecisionScorer:
    """The precision scorer of a training run, over the run's one Inception pass (`shared`)."""
    return PrecisionScorer(shared_features(cfg, images, manifest, device, log, shared))
