"""The recall metric (Kynkaanniemi et al. 2019, k = 3): the share of real images whose pool
features (`facegan.metrics.inception`) lie within the generated images' manifold
(`facegan.metrics.manifold`). How much of the faces' variety the generator covers; a collapsed
generator scores near 0; higher is better."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facegan.metrics import manifold
from facegan.metrics.inception import Features, shared_features


@dataclass
class RecallScorer:
    """Scores generated features by how much of the real set their manifold covers."""

    features: Features

    name = "recall"

    @property
    def protocol(self) -> dict:
        return {**self.features.protocol, "k": manifold.K}

    def from_features(self, generated: torch.Tensor) -> dict:
        """{"recall": ...} of generated images' features (`Features.generated`)."""
        return {"recall": manifold.share_inside(self.features.real, generated, manifold.radii(generated))}


def scorer(cfg, images: torch.Tensor, manifest: dict, device, log, shared: dict | None = None) -> RecallScorer:
    """The recall scorer of a training run, over the run's one Inception pass (`shared`)."""
    return RecallScorer(shared_features(cfg, images, manifest, device, log, shared))
