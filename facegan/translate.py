"""Using a trained attribute swap: `apply` it to photos, `load_translator` for one direction.

The swap is trained by facegan.loop.fit with the CycleGAN family (facegan.families.cyclegan).
"""

from __future__ import annotations

from pathlib import Path

import torch

from facegan import data, export, families
from facegan.config import ConfigError
from facegan.cyclegan import ResnetGenerator
from facegan.errors import DatasetError
from facegan.families.cyclegan import load_generators
from facegan.images import to_png
from facegan.runtime import use_device
from facegan.storage import canonical, open_store

DIRECTIONS = {"remove": "G_AB", "add": "G_BA"}  # apply --direction: A (attribute on) -> B, B -> A


# ------------------------------------------------------------------ using a trained run


def load_translator(run_or_checkpoint: str, direction: str, device: str = "auto") -> tuple[ResnetGenerator, dict]:
    """The generator of `direction` ("remove": A->B, "add": B->A) of a translation checkpoint (a
    run URI, a .pt URI, or a folder that `facegan export` wrote, verified against its model card),
    in eval mode on `device`; returns (network, checkpoint state)."""
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction={direction!r} must be one of {', '.join(DIRECTIONS)}")
    state = export.load_any(run_or_checkpoint)
    if families.name_of_state(state) != families.SWAP:
        raise ConfigError(f"{run_or_checkpoint} is a {families.name_of_state(state)} checkpoint, not an attribute swap")
    return load_generators(state, use_device(device))[DIRECTIONS[direction]], state


def apply(run_or_checkpoint: str, source: str | Path, out_uri: str, direction: str, device: str = "auto",
          log=print) -> list[str]:
    """Translate a face image, or every image in a folder, with a trained run (or a checkpoint or an
    export of one, as `load_translator` takes): each input is cropped and resized as `prepare`
    does, translated, and written as `<name>.png` under `out_uri`. Unreadable images are listed
    and skipped; none readable is a DatasetError, as is an output that would replace an input image
    or two inputs of one name (checked before anything is written). Returns the keys written."""
    from facegan.prepare import IMAGE_SUFFIXES, process_image

    net, state = load_translator(run_or_checkpoint, direction, device)
    resolution = state["config"]["model"]["resolution"]
    source = Path(source).expanduser()
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise DatasetError(f"{source}: no such image or folder")
    out = open_store(out_uri)
    keys: dict[str, Path] = {}
    for path in files:  # checked before anything is written: no input is ever written over
        key = f"{path.stem}.png"
        if key in keys:
            raise DatasetError(f"{source}: {keys[key].name} and {path.name} would both be written as {key}; "
                               "rename one")
        if canonical(out.uri(key)) == canonical(path):
            raise DatasetError(f"{out_uri}: would write over the input image {path.name}; translate into another "
                               "folder")
        keys[key] = path
    written, skipped = [], []
    dev = next(net.parameters()).device
    for path in files:
        try:
            face = process_image(path.read_bytes(), resolution, path.suffix.lower() in (".jpg", ".jpeg"))
        except (ValueError, OSError) as exc:
            skipped.append(f"{path.name} ({exc})")
            continue
        x = data.to_unit(torch.tensor(face)[None].to(dev))
        with torch.no_grad():
            y = net(x)
        key = f"{path.stem}.png"
        out.put_bytes(key, to_png(y))
        written.append(key)
    if skipped:
        log(f"skipped {len(skipped)}: {'; '.join(skipped[:5])}")
    if not written:
        raise DatasetError(f"{source}: no readable face image among {len(files)} file(s)")
    log(f"translated {len(written)} face(s) ({direction} {state['config']['attribute']}) to {out.uri()}")
    return written
