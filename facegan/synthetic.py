"""A small synthetic stand-in for raw CelebA, for the demo and the tests.

CelebA cannot be downloaded here; `make_faces` draws cartoon faces (skin-toned oval, hair, eyes,
brows, nose, mouth; random tones, sizes and positions) as 178x218 JPEGs named like CelebA's
`img_align_celeba/000001.jpg`, so `prepare` takes the same code path it takes on real data.
With `makeup`, some faces wear eye shadow and lipstick and `list_attr_celeba.txt` labels them,
for the attribute-swap (CycleGAN) model.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from facegan.attributes import CELEBA_ATTRIBUTES, TABLE_NAME, format_table
from facegan.errors import StorageError
from facegan.storage import local_write_error, make_folders, remove_folders

SKIN = [(255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36)]
HAIR = [(20, 20, 20), (90, 56, 37), (165, 107, 70), (230, 200, 140), (120, 120, 120)]
EYE_SHADOW = [(110, 40, 160), (40, 90, 200), (30, 150, 120)]
LIPSTICK = [(220, 20, 60), (200, 0, 90), (240, 60, 30)]
MAKEUP_ATTRIBUTES = ("Heavy_Makeup", "Wearing_Lipstick")  # what a synthetic face with makeup is labelled


def draw_face(rng: random.Random, size: tuple[int, int] = (178, 218), makeup: bool | None = None) -> Image.Image:
    """One cartoon face centred where aligned CelebA puts faces.

    `makeup` True/False draws the face with or without eye shadow and lipstick; both draw the
    same random numbers, so one `rng` state gives the same face either way (a pair that differs
    only in the attribute). None: no makeup and the random stream of earlier versions."""
    w, h = size
    bg = tuple(rng.randint(40, 220) for _ in range(3))
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    cx, cy = w // 2 + rng.randint(-4, 4), int(h * 0.55) + rng.randint(-4, 4)
    fw, fh = rng.randint(46, 58), rng.randint(60, 74)
    skin, hair = rng.choice(SKIN), rng.choice(HAIR)
    d.ellipse((cx - fw - 6, cy - fh - 14, cx + fw + 6, cy + fh // 3), fill=hair)  # hair mass
    d.ellipse((cx - fw, cy - fh, cx + fw, cy + fh), fill=skin)  # face
    eye_y, eye_dx = cy - fh // 5, fw // 2
    for sx in (-1, 1):
        ex = cx + sx * eye_dx
        d.ellipse((ex - 9, eye_y - 5, ex + 9, eye_y + 5), fill=(250, 250, 250))
        iris = rng.choice([(60, 40, 20), (40, 90, 160), (60, 120, 60)])
        d.ellipse((ex - 4, eye_y - 4, ex + 4, eye_y + 4), fill=iris)
        d.line((ex - 10, eye_y - 12, ex + 10, eye_y - 13 + rng.randint(-2, 2)), fill=hair, width=3)
    d.polygon([(cx, cy - 4), (cx - 6, cy + 14), (cx + 6, cy + 14)], fill=tuple(int(c * 0.85) for c in skin))
    mw, my = rng.randint(12, 22), cy + fh // 2
    smile = rng.randint(-4, 8)
    d.arc((cx - mw, my - 6 - smile, cx + mw, my + 6 + smile), 10, 170, fill=(150, 40, 50), width=3)
    if makeup is not None:
        shadow, lipstick = rng.choice(EYE_SHADOW), rng.choice(LIPSTICK)  # drawn either way
        if makeup:
            for sx in (-1, 1):  # eye shadow on the lid, between brow and eye
                ex = cx + sx * eye_dx
                d.ellipse((ex - 12, eye_y - 12, ex + 12, eye_y - 3), fill=shadow)
            d.ellipse((cx - mw - 2, my - 7, cx + mw + 2, my + 9 + max(smile, 0)), fill=lipstick)  # full lips
    return img.filter(ImageFilter.GaussianBlur(0.8))


def drawn(count: int, seed: int = 0, makeup: float | None = None) -> Iterator[tuple[str, bytes]]:
    """What `make_faces` writes, in order: each face as (`000001.jpg`, its JPEG bytes), then with
    `makeup` (TABLE_NAME, the attribute table)."""
    rng = random.Random(seed)
    labels = random.Random(seed + 1)
    rows = {}
    for i in range(1, count + 1):
        on = None if makeup is None else labels.random() < makeup
        jpeg = io.BytesIO()
        draw_face(rng, makeup=on).save(jpeg, format="JPEG", quality=90)
        if on is not None:
            row = np.array([labels.random() < 0.5 for _ in CELEBA_ATTRIBUTES])
            row[[CELEBA_ATTRIBUTES.index(a) for a in MAKEUP_ATTRIBUTES]] = on
            rows[f"{i:06d}.jpg"] = row
        yield f"{i:06d}.jpg", jpeg.getvalue()
    if makeup is not None:
        yield TABLE_NAME, format_table(CELEBA_ATTRIBUTES, rows).encode()


def make_faces(folder: str | Path, count: int, seed: int = 0, makeup: float | None = None) -> Path:
    """Write `count` synthetic faces as CelebA-style JPEGs into `folder`; returns the folder.

    `makeup` (a fraction in [0, 1]): that share of faces wears eye shadow and lipstick, and
    `list_attr_celeba.txt` is written beside the folder in CelebA's format, Heavy_Makeup and
    Wearing_Lipstick labelling it (the other 38 attributes are random).

    A file of those names that is already there is never replaced: the same call again finds
    the same bytes and leaves them; anything else there (real CelebA images, its attribute
    table) is a StorageError naming it, raised before anything is written."""
    if not str(folder).strip():
        raise StorageError("the output folder is empty; name a folder to write the faces into")
    folder = Path(folder)
    place = lambda name: folder.parent / name if name == TABLE_NAME else folder / name  # noqa: E731
    made = []
    try:
        names = [f"{i:06d}.jpg" for i in range(1, count + 1)] + ([TABLE_NAME] if makeup is not None else [])
        there = {name for name in names if os.path.lexists(place(name))}
        missing = {}  # with files there: what to write, kept while all of them are checked first
        for name, blob in drawn(count, seed, makeup) if there else ():
            if name not in there:
                missing[name] = blob
            elif not place(name).is_file() or place(name).read_bytes() != blob:
                what = "attribute table" if name == TABLE_NAME else "synthetic face"
                raise StorageError(f"{place(name)}: already there and not the {what} synth would write (synth "
                                   "never writes over a file); write into a new or empty folder")
        made = make_folders(folder)
        for name, blob in missing.items() if there else drawn(count, seed, makeup):
            place(name).write_bytes(blob)
    except OSError as exc:  # a file in the way, /proc, a read-only or full disk, a name too long
        for p in folder.glob("*.jpg") if made else []:  # what this call wrote into a folder it made
            p.unlink(missing_ok=True)
        remove_folders(made)
        raise local_write_error(f"{exc.filename or folder}: cannot write", folder, exc) from None
    return folder
