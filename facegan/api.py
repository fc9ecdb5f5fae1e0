"""The Python API: load a trained face generator and make faces, or score a checkpoint, in a few lines.

    import facegan
    gen = facegan.load("runs/demo")           # a run folder, a checkpoint .pt, or an export; s3:// too
    faces = gen.faces(16, seed=0)             # numpy uint8 (16, R, R, 3): the pixels of its PNGs
    pictures = gen.pictures(4, truncation=0.7)  # PIL images, latents truncated (facegan.sample.latents)
    scores = facegan.score("runs/demo", "datasets/faces", metrics="fid,kid")  # what `facegan score` prints

A seed is a face: `gen.faces(1, seed=s)` is the face `facegan sample --seed s` writes first.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from facegan.config import check_seed
from facegan.errors import ConfigError
from facegan.images import to_uint8
from facegan.sample import LoadedGenerator, generate, load_generator


class Generator:
    """A trained generator of faces from noise, on the device it was loaded to."""

    def __init__(self, loaded: LoadedGenerator) -> None:
        self.loaded = loaded

    @property
    def resolution(self) -> int:
        """The side of its square faces, in pixels."""
        return self.loaded.config.model.resolution

    @property
    def step(self) -> int:
        """The training step its weights are from."""
        return self.loaded.step

    def tensor(self, n: int, seed: int = 0, truncation: float | None = None) -> torch.Tensor:
        """Faces of seeds seed .. seed+n-1 as floats (n, 3, R, R) in [-1, 1], on the CPU. `n` is a
        positive integer and `seed` an integer in [0, 2**63), as `facegan sample`'s --count and
        --seed (a ConfigError otherwise)."""
        return generate(self.loaded, _seeds(n, seed), truncation)

    def faces(self, n: int, seed: int = 0, truncation: float | None = None) -> np.ndarray:
        """Faces of seeds seed .. seed+n-1 as 8-bit RGB pixels, a numpy uint8 array (n, R, R, 3)."""
        return to_uint8(self.tensor(n, seed, truncation)).numpy()

    def pictures(self, n: int, seed: int = 0, truncation: float | None = None) -> list[Image.Image]:
        """Faces of seeds seed .. seed+n-1 as PIL images (RGB, R x R)."""
        return [Image.fromarray(face) for face in self.faces(n, seed, truncation)]


def _seeds(n: int, seed: int) -> range:
    """The seeds of n faces from `seed` on; a ConfigError for an n or seed `facegan sample` would refuse."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} must be a positive integer (how many faces)")
    check_seed(seed)
    return range(seed, seed + n)


def load(uri: str, device: str = "cpu", ema: bool = True) -> Generator:
    """The generator of a run folder (its latest checkpoint), a checkpoint `.pt` or a folder that
    `facegan export` wrote, local or s3://, on `device` ("cpu", "auto", "cuda[:N]"); the EMA
    generator unless `ema` is False. A family that does not draw faces from noise (an attribute
    swap) is a ConfigError: see `facegan.translate`."""
    return Generator(load_generator(uri, ema=ema, device=device))


def score(checkpoint: str, dataset: str, metrics: str | list[str] = "fid", samples: int = 10_000,
          weights: str | None = None, device: str = "auto", ema: bool = True, resize: int = 299, batch: int = 50,
          log=print) -> dict:
    """The scores of a checkpoint (a run, a `.pt`, an export; any family) against `dataset`, as
    `facegan score` prints them: each of `metrics`' fields (a comma list or a list of fid, kid,
    precision, recall: {"fid": ..., "kid": ..., "kid_std": ...}), the checkpoint, its step, the generator
    scored and the protocol. `weights`: the FID Inception weights URI (default
    $FACEGAN_FID_WEIGHTS, else pytorch-fid's release); `resize` below 299 leaves the FID protocol."""
    from facegan import metrics as registry

    request = registry.Request(dataset, samples, weights or "", resize)
    wanted = registry.names(metrics if isinstance(metrics, str) else ",".join(metrics))
    fields, protocol, scored = registry.score_checkpoint(checkpoint, request, wanted, device,
                                                         ema=ema, log=log, batch=batch)
    return {**fields, "checkpoint": checkpoint, "step": scored.step, "generator": scored.which, "protocol": protocol}
