"""A small synthetic stand-in for raw CelebA, for the demo and the tests.

CelebA cannot be downloaded here; `make_faces` draws cartoon faces (skin-toned oval, hair, eyes,
brows, nose, mouth; random tones, sizes and positions) as 178x218 JPEGs named like CelebA's
`img_align_celeba/000001.jpg`, so `prepare` takes the same code path it takes on real data.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

SKIN = [(255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (141, 85, 36)]
HAIR = [(20, 20, 20), (90, 56, 37), (165, 107, 70), (230, 200, 140), (120, 120, 120)]


def draw_face(rng: random.Random, size: tuple[int, int] = (178, 218)) -> Image.Image:
    """One cartoon face centred where aligned CelebA puts faces."""
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
    return img.filter(ImageFilter.GaussianBlur(0.8))


def make_faces(folder: str | Path, count: int, seed: int = 0) -> Path:
    """Write `count` synthetic faces as CelebA-style JPEGs into `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for i in range(1, count + 1):
        draw_face(rng).save(folder / f"{i:06d}.jpg", quality=90)
    return folder
