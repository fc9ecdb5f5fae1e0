"""Using a trained attribute swap: `apply` it to photos, `load_translator` for one direction.

The swap is trained by facegan.loop.fit with the CycleGAN family (facegan.families.cyclegan).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from facegan import data, export, families, folders
from facegan.config import ConfigError
from facegan.cyclegan import ResnetGenerator
from facegan.errors import DatasetError, LeaseError
from facegan.families.cyclegan import load_generators
from facegan.images import to_png
from facegan.lease import Lease
from facegan.runtime import use_device
from facegan.storage import Store, canonical, open_store

DIRECTIONS = {"remove": "G_AB", "add": "G_BA"}  # apply --direction: A (attribute on) -> B, B -> A
RECORD = "translations.json"  # the files `apply` wrote into a folder, each with what made it
RECORD_FORMAT = "facegan-translations"


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
    does, translated, and written as `<name>.png` under `out_uri`, listed (with the run, step,
    direction and input) in `translations.json` there. Unreadable images are listed and skipped;
    none readable is a DatasetError, as is an output that would replace an input image, a file
    there that no earlier `apply` wrote, two inputs of one name, or an output folder facegan wrote
    as something else or that overlaps the run (`folders.not_own`; all checked before anything is
    written: an earlier apply's outputs are written over, nothing else). Returns the keys written."""
    from facegan.prepare import process_image

    net, state = load_translator(run_or_checkpoint, direction, device)
    resolution = state["config"]["model"]["resolution"]
    source = Path(source).expanduser()
    files = _inputs(source)
    out = open_store(out_uri)
    why = folders.not_own(out, str(run_or_checkpoint))
    if why:
        raise DatasetError(f"{out_uri}: {why}; translate into a folder of its own")
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
    _checked_record(out, keys)  # a folder of someone else's files is refused before the lease is written into it
    made = {"run": run_or_checkpoint, "step": state["step"], "direction": direction,
            "attribute": state["config"]["attribute"]}
    written, skipped = [], []
    dev = next(net.parameters()).device
    with Lease(out, what="output folder", doing="translated into", instead="translate into another folder",
               owns=False) as held:
        recorded = _checked_record(out, keys)  # again: another apply may have ended meanwhile
        record = lambda outputs: {**recorded, **{k: {**made, "input": str(keys[k])} for k in outputs}}  # noqa: E731
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
            if held.lost:  # another process took the folder over: it owns the record now
                raise LeaseError(held.lost)
            if not written:  # first the record names every output this apply may write: if it is
                # stopped midway, the outputs already there are still known as an apply's
                _write_record(out, record(keys))
            out.put_bytes(key, to_png(y))
            written.append(key)
        if written:
            _write_record(out, record(written))  # without the outputs of inputs that could not be read
    if skipped:
        log(f"skipped {len(skipped)}: {'; '.join(skipped[:5])}")
    if not written:
        raise DatasetError(f"{source}: no readable face image among {len(files)} file(s)")
    log(f"translated {len(written)} face(s) ({direction} {state['config']['attribute']}) to {out.uri()}")
    return written


def _inputs(source: Path) -> list[Path]:
    """The images `apply` reads: `source` itself, or the image files in the folder `source`
    (sorted; not its subfolders'). A file that is not an image, a folder without one, or one that
    cannot be read is a DatasetError saying what to give instead."""
    from facegan.prepare import IMAGE_SUFFIXES, made_by_facegan

    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:  # CelebA comes as a .zip, which prepare takes
            raise DatasetError(f"{source}: not an image file ({source.suffix or 'no suffix'}); give an image or a "
                               "folder of images" + (" (unzip it first)" if source.suffix.lower() == ".zip" else ""))
        return [source]
    if not source.is_dir():
        raise DatasetError(f"{source}: no such image or folder")
    made = made_by_facegan(source)
    if made:  # a slip of the path: its pictures would be taken for faces
        raise DatasetError(f"{source}: {made}; give a face image or a folder of faces")
    try:
        entries = sorted(source.iterdir())
    except OSError as exc:
        raise DatasetError(f"{source}: cannot read the folder ({exc.strerror or exc})") from None
    files = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:  # CelebA unzips to img_align_celeba/: the folder above it is an easy slip
        holding = [p for p in entries if p.is_dir() and not p.name.startswith(".") and _holds_images(p)]
        raise DatasetError(f"{source}: no image file in the folder" + (
            f" (its subfolders are not read; {holding[0]} holds images)" if holding else ""))
    return files


def _holds_images(folder: Path) -> bool:
    """Whether `folder` holds a file with an image suffix (False when it cannot be read)."""
    from facegan.prepare import IMAGE_SUFFIXES

    try:
        return any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir())
    except OSError:
        return False


def _checked_record(out: Store, keys) -> dict:
    """The record of `out` (see `_recorded`); an output key of `keys` already there that no earlier
    `apply` wrote is a DatasetError."""
    recorded = _recorded(out)
    present = set(out.list())
    for key in keys:
        if key in present and key not in recorded:
            raise DatasetError(f"{out.uri(key)}: already there and not written by an earlier translate apply; "
                               "translate into another folder")
    return recorded


def _recorded(out: Store) -> dict:
    """{key: what made it} of the outputs earlier `apply` calls wrote into `out` ({} when there is no
    record). A `translations.json` that is not such a record (the user's own, say) is refused."""
    if not out.exists(RECORD):
        return {}
    try:
        record = json.loads(out.get_bytes(RECORD))
    except (ValueError, RecursionError):
        record = None
    files = record.get("files") if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None
    if not isinstance(files, dict):
        raise DatasetError(f"{out.uri(RECORD)}: already there and not a record of translate apply; "
                           "translate into another folder")
    return files


def _write_record(out: Store, files: dict) -> None:
    """Write the record of `out`'s translations: {key: what made it}."""
    out.put_json(RECORD, {"format": RECORD_FORMAT, "files": dict(sorted(files.items()))})
