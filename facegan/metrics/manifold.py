"""k-nearest-neighbour balls around feature sets: the manifold estimate of improved precision and
recall (Kynkaanniemi et al. 2019). A set's manifold is the union of balls around its points, each
of radius the distance to its k-th nearest neighbour in the set; a point is in the manifold when
it lies in any ball. Distances are computed in blocks of rows, on the features' device."""

from __future__ import annotations

import torch

from facegan.metrics import MANIFOLD_K as K  # the paper's neighbourhood size

BLOCK = 1000  # rows per distance block: BLOCK x N floats at a time


def radii(x: torch.Tensor, k: int = K) -> torch.Tensor:
    """(N,) distance of each row of x to its k-th nearest other row."""
    return torch.cat([torch.cdist(rows, x).kthvalue(k + 1, dim=1).values for rows in x.split(BLOCK)])


def share_inside(points: torch.Tensor, centres: torch.Tensor, centre_radii: torch.Tensor) -> float:
    """The share of `points` within the balls around `centres` (radii `centre_radii`)."""
    inside = [(torch.cdist(rows, centres) <= centre_radii).any(dim=1) for rows in points.split(BLOCK)]
    return float(torch.cat(inside).float().mean())
