"""Sampling faces from a checkpoint: seeded batches, grids, single images, interpolations."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from facegan import export, families, folders, lease, memory
from facegan.config import SAMPLE_MAX_FACES, TRUNCATION_MIN, ConfigError, RunConfig
from facegan.images import to_png
from facegan.runtime import use_device
from facegan.storage import open_store


@dataclass
class LoadedGenerator:
    """A generator ready for sampling, with where it came from."""

    net: torch.nn.Module  # latents (N, z_dim) -> images (N, 3, R, R) in [-1, 1]
    config: RunConfig
    step: int
    which: str  # "G_ema" or "G"

    @property
    def z_dim(self) -> int:
        return self.net.z_dim


def read_state(state_or_uri, ema: bool = True) -> dict:
    """The state of a checkpoint (a loaded dict as it is, a run URI, a .pt URI, or an export
    folder), verified as it is read; asking the export of a family that draws from noise for its
    plain G (`ema` False) is a ConfigError: it holds the EMA generator only."""
    if isinstance(state_or_uri, dict):
        return state_or_uri
    named = families.REGISTRY.get(export.card_family(state_or_uri)) if not ema and export.is_export(state_or_uri) \
        else None
    if named is not None and named.noise:
        raise ConfigError(f"{state_or_uri} is an export: it holds the EMA generator only (leave out --no-ema)")
    return export.load_any(state_or_uri)


def load_generator(state_or_uri, ema: bool = True, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Build the generator of a checkpoint (a loaded dict, a run URI, a .pt URI, or a folder that
    `facegan export` wrote) of a family that draws faces from noise, in eval mode, on `device`
    ("auto", "cpu", "cuda", "cuda:N"; see `facegan.runtime.use_device`); the EMA generator unless
    `ema` is False."""
    device = use_device(str(device))
    state = read_state(state_or_uri, ema)
    family = families.get(families.name_of_state(state))
    if not family.noise:
        where = "the checkpoint" if isinstance(state_or_uri, dict) else str(state_or_uri)
        raise ConfigError(f"{where} is {family.what}, which does not draw faces from noise"
                          + (f"; {family.use}" if family.use else ""))
    (which, net), = family.recipes().generators(state, device, ema).items()
    return LoadedGenerator(net, family.config.from_dict(state["config"]), state["step"], which)


def noise_sampler(net: torch.nn.Module, z_dim: int, device: torch.device, seed: int = 0):
    """A metric's sampler for a generator of faces from noise: `sampler(n, batch)` yields n images
    in batches, from latents of a private generator seeded with `seed` (the training RNG is
    untouched, so scoring during training keeps runs resumable); the net is in eval mode meanwhile."""
    @torch.no_grad()
    def sample(n: int, batch: int):
        gen = torch.Generator().manual_seed(seed)
        was_training = net.training
        net.eval()
        try:
            for i in range(0, n, batch):
                yield net(torch.randn(min(batch, n - i), z_dim, generator=gen).to(device))
        finally:
            net.train(was_training)

    return sample


def truncation_threshold(psi: float | None) -> float | None:
    """The |z| bound of the truncation trick at `psi`, the share of a standard normal's mass kept:
    t with P(|z| <= t) = psi, i.e. sqrt(2) erfinv(psi) (psi 0.5 -> 0.674, 0.7 -> 1.036, 0.9 ->
    1.645); None for no truncation (psi None or 1). A psi outside [TRUNCATION_MIN, 1] is a ConfigError."""
    if psi is None or (psi == 1 and not isinstance(psi, bool)):
        return None
    if isinstance(psi, bool) or not isinstance(psi, int | float) or not TRUNCATION_MIN <= psi <= 1:
        raise ConfigError(f"truncation={psi!r} must be a number from {TRUNCATION_MIN} to 1 (1: no truncation)")
    return float(2 ** 0.5 * torch.erfinv(torch.tensor(float(psi), dtype=torch.float64)))


def latents(seeds: list[int] | range, z_dim: int, truncation: float | None = None) -> torch.Tensor:
    """One latent per seed, each from its own generator: a seed means the same face everywhere.
    With `truncation` (psi, see `truncation_threshold`) each value beyond the threshold is drawn
    again from the seed's generator until it falls within (a truncated normal; BigGAN's truncation
    trick): fewer odd faces, less variety. psi None or 1: untruncated, as without it."""
    bound = truncation_threshold(truncation)
    out = []
    for s in seeds:
        gen = torch.Generator().manual_seed(s)
        z = torch.randn(z_dim, generator=gen)
        if bound is not None:
            while (far := z.abs() > bound).any():
                z[far] = torch.randn(int(far.sum()), generator=gen)
        out.append(z)
    return torch.stack(out)


BATCH = 64  # faces generated at once: memory stays bounded by the output, whatever the count


@torch.no_grad()
def generate(gen: LoadedGenerator, seeds: list[int] | range, truncation: float | None = None) -> torch.Tensor:
    """Images (N, 3, R, R) in [-1, 1] for the given seeds (latents truncated at psi `truncation`,
    see `latents`), generated BATCH at a time."""
    device = next(gen.net.parameters()).device
    check_output(gen, len(seeds), "faces")
    truncation_threshold(truncation)  # a bad psi is refused before any face is made
    return torch.cat([gen.net(latents(seeds[i:i + BATCH], gen.z_dim, truncation).to(device)).float().cpu()
                      for i in range(0, len(seeds), BATCH)])


def check_output(gen: LoadedGenerator, count: int, what: str) -> None:
    """`count` images of the generator fit in host memory (as floats, their 8-bit copies and a
    grid PNG's rows), or a ConfigError names both figures."""
    side = gen.config.model.resolution
    memory.check(count * 3 * side * side * (4 + 2), f"{count} {what} at {side} px", "cpu")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents a and b (z_dim,) at fractions t (T,) -> (T, z_dim)."""
    a_n, b_n = a / a.norm(), b / b.norm()
    omega = torch.acos((a_n * b_n).sum().clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t[:, None]
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


@torch.no_grad()
def interpolate(gen: LoadedGenerator, seed_a: int, seed_b: int, steps: int = 8,
                truncation: float | None = None) -> torch.Tensor:
    """Images (steps, 3, R, R) walking the latent sphere from seed_a's face to seed_b's (their
    latents truncated at psi `truncation`)."""
    check_output(gen, steps, "interpolation steps")
    za, zb = latents([seed_a, seed_b], gen.z_dim, truncation)
    z = slerp(za, zb, torch.linspace(0, 1, steps))
    device = next(gen.net.parameters()).device
    return torch.cat([gen.net(z[i:i + BATCH].to(device)).float().cpu() for i in range(0, steps, BATCH)])


def face_key(i: int, count: int = 0) -> str:
    """The key of face `i` of `count`: `faces/NNN.png`, zero-padded to the digits of the last
    face's number (at least 3), so that a listing sorts them as drawn."""
    return f"faces/{i:0{max(3, len(str(count - 1)))}d}.png"


def face_pngs(images: torch.Tensor, first: int = 0, count: int = 0) -> dict[str, bytes]:
    """Single-face PNGs `faces/NNN.png` (numbered from `first`, of `count`: `face_key`) for images
    (N, 3, R, R)."""
    return {face_key(first + i, count): to_png(img[None]) for i, img in enumerate(images)}


def interpolation_png(gen: LoadedGenerator, seed_a: int, seed_b: int, steps: int,
                      truncation: float | None = None) -> bytes:
    """One strip of `steps` faces walking from seed_a's face to seed_b's."""
    return to_png(interpolate(gen, seed_a, seed_b, steps, truncation), nrow=steps)


RECORD = "sample.json"  # what the last `save_samples` into a folder drew, and the files it wrote
PICTURES = ("grid.png", "interpolation.png")  # the files `save_samples` writes beside its faces
GRID_FACES = BATCH  # grid.png shows the first faces, this many at most: a picture to look at
WRITERS = 8  # faces encoded and written at once (PNG encoding and S3 PUTs wait, not compute)
_FACE = re.compile(r"faces/(\d{3,})\.png")  # a face's key (face_key), its number


def _drawn(key: str, count: int | None = None) -> bool:
    """Whether `key` is a file `save_samples` writes (one drawing `count` faces, when given)."""
    face = _FACE.fullmatch(key)
    return key in PICTURES or bool(
        face and (count is None or (int(face[1]) < count and key == face_key(int(face[1]), count))))


def save_samples(gen: LoadedGenerator, out_uri: str, count: int, seed: int = 0,
                 interpolation_steps: int = 8, truncation: float | None = None,
                 source: str | None = None) -> list[str]:
    """Write faces/NNN.png (`face_key`), grid.png (the first GRID_FACES of them) and
    interpolation.png under `out_uri` (latents truncated at psi `truncation`, see `latents`), then
    `sample.json` (the generator, step, seed, count, truncation, `source` and the files). The faces
    are made, encoded and written a batch at a time (WRITERS at once), so memory stays bounded
    whatever the count (50k faces for an outside FID tool); a count whose faces would not fit in
    the local disk's free space (estimated from the first batch) is a ConfigError naming both
    figures, before anything is written. Only files an earlier `save_samples` there recorded are
    written over: any other file of those names, or a `sample.json` that is not such a record, is a
    ConfigError naming it, before anything is made. Faces the earlier record lists and this one did
    not write again (it drew fewer) are removed, so the folder never mixes two samples; nothing else
    there is touched. One sample at a time writes into a folder: it holds the folder's lease
    (`facegan.lease`) meanwhile, and a second is a LeaseError. A folder facegan wrote as something
    else (a run, a dataset, an export, ...), or one inside or around the `source` folder, is a
    ConfigError too. Returns the keys written."""
    if not 1 <= count <= SAMPLE_MAX_FACES:
        raise ConfigError(f"count={count} must be from 1 to {SAMPLE_MAX_FACES}")
    store = open_store(out_uri)
    why = folders.not_own(store, source, mine="sample")
    if why:
        raise ConfigError(f"{store.uri()}: {why}; sample into a folder of its own")
    _earlier(store, count)  # a folder of someone else's files is refused before the lease is written into it
    with lease.Lease(store, what="sample folder", doing="sampled into", instead="sample into another folder",
                     owns=False):
        earlier = _earlier(store, count)  # again: another sample may have ended meanwhile
        seeds = range(seed, seed + count)
        with ThreadPoolExecutor(WRITERS) as pool:
            first = generate(gen, seeds[:BATCH], truncation)
            walk = interpolation_png(gen, seed, seed + 1, interpolation_steps, truncation)  # made before any write
            pngs = list(pool.map(lambda image: to_png(image[None]), first))
            _check_room(store, count, sum(map(len, pngs)) / len(pngs), gen.config.model.resolution)
            files = [PICTURES[0], *(face_key(i, count) for i in range(count)), PICTURES[1]]
            record = {"source": source, "generator": gen.which, "step": gen.step, "seed": seed, "count": count,
                      "truncation": truncation, "interpolation_steps": interpolation_steps}
            # first a record naming the earlier files and these: stopped midway, every file there is still ours
            drawn = set(files)
            store.put_json(RECORD, {**record, "files": sorted(earlier | drawn)})
            store.put_bytes(PICTURES[0], to_png(first[:GRID_FACES]))
            list(pool.map(store.put_bytes, files[1:1 + len(pngs)], pngs))
            for start in range(BATCH, count, BATCH):  # one batch in flight: a stop waits for one at most
                images = generate(gen, seeds[start:start + BATCH], truncation)
                keys = files[1 + start:1 + start + len(images)]
                list(pool.map(lambda key, image: store.put_bytes(key, to_png(image[None])), keys, images))
        store.put_bytes(PICTURES[1], walk)
        for key in earlier - drawn:  # before the final record: stopped here, the record still lists them
            store.delete(key)
        store.put_json(RECORD, {**record, "files": sorted(files)})
    return [*files, RECORD]


def _check_room(store, count: int, face_bytes: float, side: int) -> None:
    """`count` faces of about `face_bytes` each (and the grid) fit in the store's free space (a
    local disk's; S3 has no limit), or a ConfigError names both figures."""
    room = store.room()
    need = int(face_bytes * (count + GRID_FACES) * 1.1)  # 10%: faces vary in size
    if room is not None and need > room:
        raise ConfigError(f"{count} faces at {side} px need about {memory.gib(need)} (from the first "
                          f"{min(count, BATCH)}), {store.uri()} has {memory.gib(room)} free; ask for fewer faces")


def _earlier(store, count: int) -> set[str]:
    """The files an earlier `save_samples` recorded in `store` (see `_recorded_files`); a file
    there that a sample of `count` faces would write and no record lists is a ConfigError."""
    earlier = _recorded_files(store)
    present = [key for key in PICTURES if store.exists(key)] + store.list("faces")
    for key in sorted(present):  # only the names a sample writes: the user's other files are not listed
        if _drawn(key, count) and key not in earlier:
            raise ConfigError(f"{store.uri(key)}: already there and not written by an earlier facegan sample; "
                              "sample into another folder")
    return earlier


def _recorded_files(store) -> set[str]:
    """The outputs an earlier `save_samples` recorded in `store` (none when there is no record); a
    `sample.json` that is not such a record (the user's own, or damaged) is a ConfigError."""
    if not store.exists(RECORD):
        return set()
    try:
        listed = json.loads(store.get_bytes(RECORD)).get("files")
    except (ValueError, RecursionError, AttributeError):
        listed = None
    if not isinstance(listed, list):
        raise ConfigError(f"{store.uri(RECORD)}: already there and not a record of facegan sample; "
                          "sample into another folder")
    return {key for key in listed if isinstance(key, str) and _drawn(key)}
