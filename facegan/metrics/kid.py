"""The KID metric: Kernel Inception Distance (Binkowski et al. 2018).

The unbiased estimate of the squared MMD between real and generated pool features
(`facegan.metrics.inception`) under the polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over
SUBSETS random subsets of SUBSET_SIZE images from each side (fewer when the protocol has fewer
samples); reported as its mean (`kid`) and standard deviation over the subsets (`kid_std`). With
SUBSET_SIZE samples or fewer every subset is the whole set, so it is computed once and `kid_std`
is 0: no spread is measured, the mean is the unbiased MMD^2 of the two whole sets (as clean-fid
computes it). The subsets are drawn by a seeded generator, as torch-fidelity draws them (rng seed
2020), so the same features give the same score. Unlike FID it has no bias from the sample count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facegan.metrics.inception import Features, shared_features

SUBSETS = 100
SUBSET_SIZE = 1000
SEED = 2020


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD^2 of equal-sized feature sets x, y (m, d) under (x.y / d + 1)^3."""
    m, d = x.shape
    k_xx, k_yy, k_xy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    off_xx = k_xx.sum() - np.trace(k_xx)
    off_yy = k_yy.sum() - np.trace(k_yy)
    return float((off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


def kid(real: torch.Tensor, generated: torch.Tensor, subsets: int = SUBSETS, subset_size: int = SUBSET_SIZE,
        seed: int = SEED) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over `subsets` subsets, in float64."""
    a, b = real.double().numpy(), generated.double().numpy()
    size = min(subset_size, len(a), len(b))
    if size == len(a) == len(b):  # every subset would be both whole sets: one MMD^2, no spread measured
        return mmd2_unbiased(b, a), 0.0
    rng = np.random.RandomState(seed)
    mmds = np.array([mmd2_unbiased(b[rng.choice(len(b), size, replace=False)],
                                   a[rng.choice(len(a), size, replace=False)]) for _ in range(subsets)])
    return float(mmds.mean()), float(mmds.std())


@dataclass
class KIDScorer:
    """Scores generated features against one dataset's real features."""

    features: Features

    name = "kid"

    @property
    def protocol(self) -> dict:
        n = self.features.protocol["samples"]
        return {**self.features.protocol, "subsets": SUBSETS, "subset_size": min(SUBSET_SIZE, n),
                "kernel": "polynomial, degree 3, gamma 1/d, coef 1"}

    def from_features(self, generated: torch.Tensor) -> dict:
        """{"kid": mean, "kid_std": std} of generated images' features (`Features.generated`)."""
        mean, std = kid(self.features.real, generated)
        return {"kid": mean, "kid_std": std}


def scorer(cfg, images: torch.Tensor, manifest: dict, device, log, shared: dict | None = None) -> KIDScorer:
    """The KID scorer of a training run, over the run's one Inception pass (`shared`)."""
    return KIDScorer(shared_features(cfg, images, manifest, device, log, shared))
