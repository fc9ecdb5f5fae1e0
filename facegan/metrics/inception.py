"""The Inception pass every feature metric shares (FID, KID, precision, recall).

The network is pytorch-fid's TF-ported InceptionV3 (`FIDInceptionV3` below: torchvision's
Inception3 with the FID variants of the A, C and E blocks), whose weights file is
`pt_inception-2015-12-05-6726825d.pth`. Weights are loaded from a configured URI (https,
s3://, or a local path), checked against their sha256 before use (the full digest when one
is configured, otherwise the 8-hex prefix in the file name, as torch hub does), and never
replaced by other weights: a missing or wrong file is a one-line `FIDError` saying where to
put it.

`Features` holds the network and the pool features (2048-d) of the first n dataset images,
computed once per dataset build, weights, n and resize, and cached next to the dataset as
`inception-<weights>-<n>[-r<resize>].npz` (or, where the dataset cannot be written, as a job's
least-privilege role reads datasets only, in this machine's cache). Its `generated(sampler)`
extracts the features of n generated images, each batch rounded to 8 bits first (what a PNG of
it holds, as StyleGAN, torch-fidelity and torchmetrics score), so generated and real images reach
the network the same way. One `Features` per run feeds every metric listed (`shared`): one pass over the generated
images per scoring, whatever the metrics.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.inception import Inception3, InceptionA, InceptionC, InceptionE

from facegan import data
from facegan.errors import FIDError
from facegan.images import quantize
from facegan.runtime import use_device
from facegan.storage import StorageError, cache_root, open_store, put_cached, split_uri

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
WEIGHTS_ENV = "FACEGAN_FID_WEIGHTS"
WEIGHTS_SHA256_ENV = "FACEGAN_FID_WEIGHTS_SHA256"
FEATURES = 2048
RESIZE = 299  # the FID protocol's Inception input side
MIN_RESIZE = 75  # the smallest input InceptionV3 takes
SHARED = "inception"  # the scorers' shared dict holds their one `Features` under this key




# ------------------------------------------------------------------ the network


class _FIDInceptionA(InceptionA):
    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        # TF's average pooling does not count the padding
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class _FIDInceptionC(InceptionC):
    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b = layer(b)
        branch_pool = self.branch_pool(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return torch.cat([branch1x1, branch7x7, b, branch_pool], 1)


class _FIDInceptionE(InceptionE):
    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__(in_channels)
        self.pool = pool  # "avg" in Mixed_7b, "max" in Mixed_7c (a quirk of the TF graph)

    def forward(self, x):
        branch1x1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "max":
            pooled = F.max_pool2d(x, 3, 1, 1)
        else:
            pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID InceptionV3: images (N, 3, H, W) in [-1, 1] -> pool3 features (N, 2048)."""

    def __init__(self, resize: int = RESIZE) -> None:
        super().__init__()
        self.resize = resize  # the input side; 299 is the FID protocol
        net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b = _FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = _FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = _FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = _FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = _FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = _FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = _FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = _FIDInceptionE(1280, "avg")
        net.Mixed_7c = _FIDInceptionE(2048, "max")
        self.net = net

    def load_weights(self, state: dict) -> None:
        """Load pytorch-fid's state dict (keys of torchvision's Inception3)."""
        self.net.load_state_dict(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = F.interpolate(x.float(), size=(self.resize, self.resize), mode="bilinear", align_corners=False)
        # input already in [-1, 1], the range the TF graph expects
        for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3, n.maxpool1,
                      n.Conv2d_3b_1x1, n.Conv2d_4a_3x3, n.maxpool2,
                      n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c,
                      n.Mixed_6d, n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
            x = layer(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048)


# ------------------------------------------------------------------ weights


def _read_uri(uri: str, cache: Path) -> bytes:
    if uri.startswith(("https://", "http://")):
        local = cache / uri.rsplit("/", 1)[-1]
        if not local.is_file():
            try:
                with urllib.request.urlopen(uri, timeout=60) as r:
                    data = r.read()
            except OSError as exc:
                raise FIDError(
                    f"FID weights: cannot download {uri} ({exc}); download {WEIGHTS_NAME} yourself and set "
                    f"{WEIGHTS_ENV} (or --weights, --metric-weights) to its path or s3:// URI"
                ) from None
            put_cached(cache, local.name, data)
        return local.read_bytes()
    try:
        store, key = split_uri(uri)
        return store.get_bytes(key)
    except StorageError as exc:
        raise FIDError(
            f"FID weights: {exc}; put {WEIGHTS_NAME} there or set {WEIGHTS_ENV} (or --weights, --metric-weights) to it"
        ) from None


def load_weights(uri: str | None = None, sha256: str | None = None) -> tuple[FIDInceptionV3, dict]:
    """The FID network with verified weights from `uri` (default $FACEGAN_FID_WEIGHTS, else the
    pytorch-fid release URL); returns (network in eval mode, weights description)."""
    uri = uri or os.environ.get(WEIGHTS_ENV) or WEIGHTS_URL
    sha256 = (sha256 or os.environ.get(WEIGHTS_SHA256_ENV) or "").lower()
    cache = cache_root("fid")
    data = _read_uri(uri, cache)
    digest = hashlib.sha256(data).hexdigest()
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    prefix = re.search(r"-([0-9a-f]{8,64})\.pth?$", name)
    if sha256:
        expected, how = sha256, "configured sha256"
    elif prefix:
        expected, how = prefix.group(1), "hash prefix in the file name"
    else:
        raise FIDError(
            f"FID weights {uri}: no sha256 to check against; name the file like {WEIGHTS_NAME} or set "
            f"{WEIGHTS_SHA256_ENV}"
        )
    if not digest.startswith(expected):
        raise FIDError(
            f"FID weights {uri}: sha256 {digest[:16]}... does not match the {how} {expected[:16]}; "
            f"replace it with the real {WEIGHTS_NAME}"
        )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        with torch.random.fork_rng(devices=[]):  # layer init must not move the training RNG
            net = FIDInceptionV3()
        net.load_weights(state)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the same user error
        raise FIDError(f"FID weights {uri}: not FID InceptionV3 weights ({str(exc).splitlines()[0][:160]})") from None
    return net.eval().requires_grad_(False), {"uri": uri, "name": name, "sha256": digest}


# ------------------------------------------------------------------ features


def to_8_bits(images: torch.Tensor) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] rounded to the 8-bit levels their PNGs hold, in [-1, 1] again,
    by the arithmetic `facegan.data.to_unit` applies to the dataset's uint8 images (on their device)."""
    return quantize(images.float().clamp(-1, 1).add(1).div(2)).float().div_(127.5).sub_(1.0)


@dataclass
class Features:
    """The Inception network and the real images' features (float32 (n, 2048), on the CPU) of one
    dataset, for one protocol (samples, resize, weights)."""

    net: nn.Module
    real: torch.Tensor
    protocol: dict
    device: torch.device
    batch: int = 50

    @classmethod
    def create(cls, dataset_uri: str, samples: int, weights_uri: str | None = None,
               device: str | torch.device = "cpu", images: torch.Tensor | None = None,
               manifest: dict | None = None, log: Callable[[str], None] = print, batch: int = 50,
               resize: int = RESIZE) -> Features:
        """Load weights, then the real features from the cache next to the dataset, or this
        machine's ($FACEGAN_CACHE/features/<dataset id>/: where the dataset cannot be written), or
        compute and cache them (a cache that cannot be written is logged, never an error).
        `resize` other than 299 leaves the FID protocol (faster, for smoke checks); the protocol
        records it and the cached features are kept apart."""
        if not MIN_RESIZE <= resize <= RESIZE:
            raise FIDError(f"resize={resize}: the Inception input side must be {MIN_RESIZE}..{RESIZE}")
        store = open_store(dataset_uri)  # the dataset first: a bad URI is named before any download
        if manifest is None:
            manifest = data.read_manifest(store)
        device = use_device(str(device))
        net, weights = load_weights(weights_uri)
        net = net.to(device)
        net.resize = resize
        n = min(samples, manifest["count"])
        key = f"inception-{weights['sha256'][:8]}-{n}{'' if resize == RESIZE else f'-r{resize}'}.npz"
        places = (store, open_store(cache_root("features") / manifest["id"]))  # beside the dataset, else here
        for place in places:
            real = read_cached_features(place, key, manifest["id"], n, log) if place.exists(key) else None
            if real is not None:
                log(f"metrics: real statistics from {place.uri(key)}")
                break
        else:
            if images is None:
                images, _ = data.load(dataset_uri)
            log(f"metrics: computing real statistics of {n} images")
            real = real_features(net, images, n, batch, device)
            buf = io.BytesIO()
            np.savez(buf, features=real.numpy(), dataset_id=np.array(manifest["id"]))
            for place in places:  # a dataset the job may only read (least privilege, a read-only mount): here
                try:
                    place.put_bytes(key, buf.getvalue())
                    log(f"metrics: real statistics cached as {place.uri(key)}")
                    break
                except StorageError as exc:
                    log(f"metrics: cannot cache the real statistics: {exc}")
        protocol = {
            "samples": n, "reference": {"dataset": store.root, "id": manifest["id"], "images": n},
            "resize": f"bilinear to {resize}x{resize}", "features": f"pool3 ({FEATURES})",
            "generated": "rounded to 8 bits",
            "weights": {"name": weights["name"], "sha256": weights["sha256"]},
        }
        return cls(net, real, protocol, device, batch)

    @torch.no_grad()
    def generated(self, sampler) -> torch.Tensor:
        """The features (float32 (n, 2048), on the CPU) of the n images `sampler(n, batch)` makes
        (n = the protocol's samples), each batch rounded to 8 bits first."""
        return torch.cat([self.net(to_8_bits(images)).float().cpu()
                          for images in sampler(self.protocol["samples"], self.batch)])


@torch.no_grad()
def real_features(net: nn.Module, images: torch.Tensor, n: int, batch: int, device) -> torch.Tensor:
    """The features of the first n dataset images (manifest order: deterministic), float32 on the CPU."""
    return torch.cat([net(data.to_unit(images[i:min(i + batch, n)].to(device))).float().cpu()
                      for i in range(0, min(n, len(images)), batch)])


def read_cached_features(store, key: str, dataset_id: str, n: int, log) -> torch.Tensor | None:
    """The cached real features of dataset `dataset_id`, or None (logged) when the cache file is
    damaged, malformed or belongs to another build of the dataset: it is then computed again and
    replaced."""
    where = store.uri(key)
    try:
        with np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False) as z:
            features, ref_id = z["features"], str(z["dataset_id"])
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file fails in many ways
        log(f"metrics: {where} is damaged ({type(exc).__name__}); computing the statistics again")
        return None
    if ref_id != dataset_id:
        log(f"metrics: {where} holds features of an older build of the dataset ({ref_id}, now {dataset_id}); "
            "computing them again")
        return None
    if features.shape != (n, FEATURES) or features.dtype != np.float32 or not np.isfinite(features).all():
        log(f"metrics: {where} does not hold {n} x {FEATURES} features; computing them again")
        return None
    return torch.from_numpy(features.copy())


def shared_features(cfg, images: torch.Tensor, manifest: dict, device, log, shared: dict | None) -> Features:
    """The run's one `Features` (in `shared`, the dict a run's scorers share; made on first use)
    for its metric protocol, reusing the dataset tensor the run already holds."""
    shared = {} if shared is None else shared
    if SHARED not in shared:
        shared[SHARED] = Features.create(cfg.dataset, cfg.metric_samples, cfg.metric_weights or None, device,
                                         images=images, manifest=manifest, log=log, resize=cfg.metric_resize)
    return shared[SHARED]
