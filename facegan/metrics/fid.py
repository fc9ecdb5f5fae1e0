"""The FID metric: Fréchet Inception Distance with the standard FID Inception network.

Mean and covariance of the 2048-d pool features (`facegan.metrics.inception`: the network, its
verified weights, the cached real features, generated images rounded to 8 bits) of n real and n
generated images; d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). Statistics are summed in
float64 batch by batch. Every score carries its protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facegan.errors import FIDError  # noqa: F401 - exported here too
from facegan.metrics.inception import (  # noqa: F401 - the network and its weights, exported here too
    FEATURES,
    RESIZE,
    WEIGHTS_NAME,
    Features,
    FIDInceptionV3,
    load_weights,
    shared_features,
)

# ------------------------------------------------------------------ statistics


class RunningStats:
    """Mean and covariance of feature rows, accumulated batch by batch in float64."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.sum = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)

    def add(self, feats: torch.Tensor) -> None:
        f = feats.detach().double().cpu().numpy()
        self.n += len(f)
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise FIDError(f"FID needs at least 2 samples, got {self.n}")
        mu = self.sum / self.n
        sigma = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, sigma


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are real
    and non-negative for covariance matrices (tiny negative round-off is clipped).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    eig = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


ROWS = 50  # feature rows summed at a time: the sums do not depend on the batch the network ran


def statistics(rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of feature rows (n, 2048), summed ROWS at a time in float64."""
    stats = RunningStats(FEATURES)
    for chunk in rows.split(ROWS):
        stats.add(chunk)
    return stats.finish()


@dataclass
class FIDTracker:
    """Scores generators against one dataset's real statistics (from its cached features)."""

    features: Features
    mu: np.ndarray
    sigma: np.ndarray

    name = "fid"

    @classmethod
    def create(cls, dataset_uri: str, samples: int, weights_uri: str | None = None,
               device: str | torch.device = "cpu", images: torch.Tensor | None = None,
               manifest: dict | None = None, log=print, batch: int = 50, resize: int = RESIZE) -> FIDTracker:
        """The network and the real statistics (`Features.create`: see there for the cache and
        `resize`)."""
        features = Features.create(dataset_uri, samples, weights_uri, device, images, manifest, log, batch, resize)
        return cls.of(features)

    @classmethod
    def of(cls, features: Features) -> FIDTracker:
        """The FID scorer over a `Features` pass (shared with the run's other metrics)."""
        mu, sigma = statistics(features.real)
        return cls(features, mu, sigma)

    @property
    def protocol(self) -> dict:
        return self.features.protocol

    @property
    def device(self) -> torch.device:
        return self.features.device

    def from_features(self, generated: torch.Tensor) -> dict:
        """{"fid": ...} of generated images' features (`Features.generated`)."""
        mu, sigma = statistics(generated)
        return {"fid": frechet_distance(mu, sigma, self.mu, self.sigma)}

    def score(self, sampler) -> float:
        """FID of the images `sampler(n, batch)` makes (n = the protocol's samples)."""
        return self.from_features(self.features.generated(sampler))["fid"]


def scorer(cfg, images: torch.Tensor, manifest: dict, device, log, shared: dict | None = None) -> FIDTracker:
    """The FID scorer of a training run (the metric registry's entry point), over the run's one
    Inception pass (`shared`)."""
    return FIDTracker.of(shared_features(cfg, images, manifest, device, log, shared))
