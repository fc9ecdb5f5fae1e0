"""The dataset contract (uint8 shards plus a JSON manifest) and reading it; `facegan.prepare` makes it.

Layout under a dataset URI::

    manifest.json            format, version, resolution, count, shards, source, skipped, id
                             (and "attributes": names, file, sha256 when prepared with labels)
    shard-<build>-00000.npy  uint8 array (N, H, W, 3), numpy .npy format (the manifest names them)
    shard-<build>-00001.npy  ...
    attributes-<build>.npy   optional: bool (N, K) CelebA attribute labels, rows as the images'

`load()` verifies the manifest and every shard's sha256 and returns one uint8 tensor
(N, H, W, 3); `BatchSampler` draws batches from it on the device.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import numpy as np
import torch

from facegan import memory
from facegan.config import RESOLUTIONS
from facegan.errors import DatasetError  # noqa: F401 - exported here too
from facegan.storage import StorageError, Store, cache_root, open_store, put_cached

FORMAT = "facegan-dataset"
VERSION = 1
MANIFEST = "manifest.json"
SHARD_NAME = re.compile(r"shard-(?:[0-9a-f]{8}-)?\d{5}\.npy")  # a build's shards, and the older layout
ATTRIBUTES_NAME = "attributes"  # attributes-<build>.npy: bool (N, K) labels in row order, optional


def manifest_id(manifest: dict, names: bool = True) -> str:
    """Content id of a dataset: sha256 over resolution, the shard hashes and, when the dataset
    has labels, their hash and the attribute names (first 16 hex). Renaming a column changes the
    id, so a run never resumes on relabelled data. `names=False`: the id datasets prepared before
    the names were part of it carry (still accepted, see `read_manifest`)."""
    parts = [manifest["resolution"], [s["sha256"] for s in manifest["shards"]]]
    if "attributes" in manifest:
        parts.append(manifest["attributes"]["sha256"])
        if names:
            parts.append(manifest["attributes"]["names"])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


# ------------------------------------------------------------------ loading


def read_manifest(store: Store) -> dict:
    """Read and validate `manifest.json`; a wrong manifest is a DatasetError naming the field."""
    where = store.uri(MANIFEST)
    try:
        m = store.get_json(MANIFEST)
    except StorageError as exc:
        raise DatasetError(f"{exc} (is this a prepared dataset?)") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DatasetError(f"{where}: not a facegan dataset manifest (format != {FORMAT!r})")
    version = m.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DatasetError(f"{where}: dataset version {version!r} is not a format version (1..{VERSION})")
    if version > VERSION:
        raise DatasetError(f"{where}: dataset version {version!r} is newer than {VERSION}")
    for key, kind in (("resolution", int), ("count", int), ("shards", list)):
        if not isinstance(m.get(key), kind) or isinstance(m.get(key), bool):
            raise DatasetError(f"{where}: field {key!r} missing or not {kind.__name__}")
    for i, shard in enumerate(m["shards"]):
        if not (isinstance(shard, dict) and isinstance(shard.get("name"), str) and SHARD_NAME.fullmatch(shard["name"])
                and isinstance(shard.get("count"), int) and not isinstance(shard["count"], bool)
                and shard["count"] >= 0
                and isinstance(shard.get("sha256"), str) and len(shard["sha256"]) == 64):
            raise DatasetError(f"{where}: shards[{i}] is not a shard record (name shard-*.npy, count, sha256)")
    if m["resolution"] not in RESOLUTIONS or m["count"] < 1:
        raise DatasetError(f"{where}: resolution {m['resolution']} / count {m['count']} is not a usable dataset")
    if sum(s.get("count", 0) for s in m["shards"]) != m["count"]:
        raise DatasetError(f"{where}: shard counts do not add up to count={m['count']}")
    a = m.get("attributes")
    if a is not None and not (isinstance(a, dict) and isinstance(a.get("names"), list) and a["names"]
                              and all(isinstance(n, str) for n in a["names"])
                              and isinstance(a.get("file"), str) and a["file"].startswith(f"{ATTRIBUTES_NAME}-")
                              and isinstance(a.get("sha256"), str) and len(a["sha256"]) == 64):
        raise DatasetError(f"{where}: attributes is not a labels record (names, file attributes-*.npy, sha256)")
    if m.get("id") not in (manifest_id(m), manifest_id(m, names=False)):  # the second: prepared before 2026-12
        raise DatasetError(f"{where}: id does not match the shard hashes and attribute names")
    return m


def _read_shard(store: Store, shard: dict, resolution: int, cache: Path | None) -> np.ndarray:
    name = shard["name"]
    cached = cache / f"{shard['sha256']}.npy" if cache else None
    data = None
    if cached is not None and cached.is_file():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            cached.unlink()  # a damaged cache entry is refetched, never used
            data = None
    if data is None:
        data = store.get_bytes(name)
        if hashlib.sha256(data).hexdigest() != shard["sha256"]:
            raise DatasetError(f"{store.uri(name)}: sha256 mismatch, shard is corrupt")
        if cached is not None:
            put_cached(cached.parent, cached.name, data)
    return parse_array(data, (shard["count"], resolution, resolution, 3), np.uint8, store.uri(name))


def parse_array(data: bytes, shape: tuple[int, ...], dtype, where: str) -> np.ndarray:
    """The .npy array in `data`, checked to be `shape` and `dtype` from its header alone, before
    anything is allocated (a header may claim 1e11 elements or an object dtype; the file may be
    short): a DatasetError names the file and both shapes."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        found, fortran, kind = read(buf)
    except (ValueError, OSError, SyntaxError) as exc:
        raise DatasetError(f"{where}: not a .npy array ({str(exc)[:120]})") from None
    if kind != np.dtype(dtype) or tuple(found) != tuple(shape) or fortran:
        raise DatasetError(f"{where}: array {tuple(found)} {kind}{' (Fortran order)' if fortran else ''}, the "
                           f"manifest says {tuple(shape)} {np.dtype(dtype)}")
    need = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) - buf.tell() != need:
        raise DatasetError(f"{where}: {len(data) - buf.tell()} bytes of data, {tuple(shape)} {np.dtype(dtype)} "
                           f"needs {need}")
    return np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=buf.tell()).reshape(shape).copy()


def fetch(uri: str, cache: str | Path | None = None) -> dict:
    """Pull a remote dataset's shards into the local cache (hash-verified); returns the manifest.

    A later `load` of the same URI reads from the cache. Local datasets need no fetching.
    """
    store = open_store(uri)
    m = read_manifest(store)
    if store.remote:
        cache_dir = Path(cache) if cache else cache_root("shards")
        for shard in m["shards"]:
            cached = cache_dir / f"{shard['sha256']}.npy"
            if not cached.is_file():
                _read_shard(store, shard, m["resolution"], cache_dir)
    return m


def load(
    uri: str, cache: bool | str | Path = True, device: str | torch.device = "cpu", manifest: dict | None = None
) -> tuple[torch.Tensor, dict]:
    """Verify and load a dataset as one uint8 tensor (N, H, W, 3) on `device`.

    With `cache` (default: $FACEGAN_CACHE or ~/.cache/facegan) shards of a remote store are kept
    locally by sha256 and reused across runs; every byte is hash-checked either way. `manifest`:
    the dataset's manifest when the caller has already read it with `read_manifest`.
    """
    store = open_store(uri)
    m = manifest or read_manifest(store)
    res = m["resolution"]
    cache_dir = None
    if cache and store.remote:
        cache_dir = Path(cache) if isinstance(cache, (str, Path)) else cache_root("shards")
    what = f"dataset {store.uri()} ({m['count']} images at {res} px)"
    for where in {"cpu", str(device)}:  # the host copy, and the device's
        memory.check(m["count"] * res * res * 3, what, where, DatasetError)
    out = torch.empty((m["count"], res, res, 3), dtype=torch.uint8)
    at = 0
    for shard in m["shards"]:
        arr = _read_shard(store, shard, res, cache_dir)
        out[at : at + len(arr)] = torch.from_numpy(arr)
        at += len(arr)
    return out.to(device), m


def load_rows(uri: str, manifest: dict, rows: list[int]) -> torch.Tensor:
    """Only the images at `rows` (uint8 (len(rows), H, W, 3), in that order), reading just the
    shards that hold them (hash-checked): a few faces of a large dataset, e.g. for a gallery."""
    store, res = open_store(uri), manifest["resolution"]
    out = torch.empty((len(rows), res, res, 3), dtype=torch.uint8)
    at = 0
    for shard in manifest["shards"]:
        wanted = [(i, r - at) for i, r in enumerate(rows) if at <= r < at + shard["count"]]
        if wanted:
            arr = _read_shard(store, shard, res, None)
            for i, r in wanted:
                out[i] = torch.from_numpy(arr[r])
        at += shard["count"]
    return out


def load_attributes(uri: str, manifest: dict) -> tuple[list[str], np.ndarray]:
    """The dataset's labels: (attribute names, bool array (N, K) in the images' row order),
    hash-checked; a dataset prepared without an attribute table is a DatasetError."""
    store = open_store(uri)
    a = manifest.get("attributes")
    if a is None:
        raise DatasetError(f"{store.uri()} has no attributes; prepare it with --attributes list_attr_celeba.txt")
    data = store.get_bytes(a["file"])
    if hashlib.sha256(data).hexdigest() != a["sha256"]:
        raise DatasetError(f"{store.uri(a['file'])}: sha256 mismatch, the labels are corrupt")
    labels = parse_array(data, (manifest["count"], len(a["names"])), np.bool_, store.uri(a["file"]))
    return list(a["names"]), labels


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1], the networks' input range."""
    return images.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class BatchSampler:
    """Draws random batches from a uint8 (N, H, W, 3) tensor, on its device.

    Indices are drawn with replacement by `torch.randint` on the device (the global generator
    of that device, so checkpointed RNG state makes runs resumable), half the images are
    flipped horizontally, and pixels are scaled to [-1, 1] as float (N, 3, H, W).
    """

    def __init__(self, images: torch.Tensor, batch_size: int, channels_last: bool = False,
                 rows: torch.Tensor | None = None) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != torch.uint8:
            raise DatasetError(f"images must be uint8 (N, H, W, 3), got {tuple(images.shape)} {images.dtype}")
        self.images = images
        self.rows = rows  # draw only these rows (a domain of a labelled dataset), None: all; no copy
        self.batch_size = batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return len(self.images) if self.rows is None else len(self.rows)

    def sample(self, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """One batch (B, 3, H, W) float32 in [-1, 1], or slice `rank` of `size` equal slices of it.

        Every data-parallel process draws the same global indices and flips and keeps its own
        slice, so the processes together see exactly the single-process batch.
        """
        rank, size = part
        dev = self.images.device
        idx = torch.randint(0, len(self), (self.batch_size,), device=dev)
        if self.rows is not None:
            idx = self.rows[idx]
        flip = torch.rand(self.batch_size, device=dev) < 0.5
        if size > 1:
            n = self.batch_size // size
            idx, flip = idx[rank * n:(rank + 1) * n], flip[rank * n:(rank + 1) * n]
        x = self.images[idx]  # (B, H, W, 3) uint8
        x = torch.where(flip[:, None, None, None], x.flip(2), x)  # horizontal flip
        return to_unit(x).contiguous(memory_format=self.memory_format)  # (B, 3, H, W) in [-1, 1]
