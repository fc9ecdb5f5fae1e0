"""CelebA's attribute table (`list_attr_celeba.txt`): parsing it, and writing it (synthetic data).

The file as CelebA ships it::

    202599                                     line 1: the number of rows
    5_o_Clock_Shadow Arched_Eyebrows ... Young line 2: the 40 attribute names
    000001.jpg -1  1  1 -1 ...                 one row per image: file name, then -1/1 per name

`parse` reads exactly that (any whitespace between fields) and returns the names and a bool row
per file name; anything else is a DatasetError naming the line. A table with fewer rows than its
line 1 says (the first 20,000 rows of the real file, say) is a partial table: taken, and marked
so (`declared`); more rows than it says is an error. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from facegan.errors import DatasetError

TABLE_NAME = "list_attr_celeba.txt"
# CelebA's 40 attributes in the file's order
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


@dataclass(frozen=True)
class AttributeTable:
    """A parsed attribute table: the attribute names, and per file name a bool row (True = 1)."""

    names: tuple[str, ...]
    rows: dict[str, np.ndarray]
    declared: int | None = None  # the row count line 1 gives (None: the same as len(rows))

    @property
    def partial(self) -> bool:
        """Whether the table holds fewer rows than its line 1 says."""
        return self.declared is not None and len(self.rows) < self.declared

    def column(self, name: str) -> int:
        """Index of attribute `name`; an unknown name is a DatasetError listing the known ones."""
        return column(self.names, name)


def column(names: list[str] | tuple[str, ...], name: str) -> int:
    """Index of attribute `name` in `names`; unknown: a DatasetError that lists them."""
    if name not in names:
        raise DatasetError(f"attribute {name!r} is not in the dataset's attributes ({', '.join(names)})")
    return list(names).index(name)


def parse(text: str, where: str) -> AttributeTable:
    """Parse a table in CelebA's format; `where` names the file in errors ("<where>: line N: ...")."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise DatasetError(f"{where}: line {len(lines) + 1}: missing (a row count line, then the attribute names)")
    head = lines[0].split()
    if len(head) != 1 or not re.fullmatch(r"[0-9]+", head[0]):  # str.isdigit() also takes "²" and "٣"
        raise DatasetError(f"{where}: line 1: {lines[0][:60]!r} is not the row count")
    names = tuple(lines[1].split())
    if not names or len(set(names)) != len(names):
        raise DatasetError(f"{where}: line 2: the attribute names are missing or repeated")
    rows: dict[str, np.ndarray] = {}
    for number, line in enumerate(lines[2:], 3):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise DatasetError(f"{where}: line {number}: {len(fields) - 1} values for {len(names)} attributes")
        values = fields[1:]
        if any(v not in ("1", "-1") for v in values):
            bad = next(v for v in values if v not in ("1", "-1"))
            raise DatasetError(f"{where}: line {number}: value {bad[:20]!r} is not -1 or 1")
        if fields[0] in rows:
            raise DatasetError(f"{where}: line {number}: {fields[0]} appears twice")
        rows[fields[0]] = np.array([v == "1" for v in values], dtype=bool)
    if len(rows) > int(head[0]):
        raise DatasetError(f"{where}: line 1 says {head[0]} rows but the table has {len(rows)}")
    return AttributeTable(names, rows, int(head[0]) if len(rows) < int(head[0]) else None)


def format_table(names: list[str] | tuple[str, ...], rows: dict[str, np.ndarray]) -> str:
    """A table in CelebA's exact layout (row count, names line with a trailing space, values
    right-aligned in 2 columns after the file name)."""
    out = [str(len(rows)), " ".join(names) + " "]
    for name, row in rows.items():
        out.append(name + " " + " ".join(" 1" if v else "-1" for v in row))
    return "\n".join(out) + "\n"
