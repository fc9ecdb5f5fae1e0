"""The kinds of folder facegan writes, told apart by the files that mark them: a run, a dataset,
a night of the gallery, an export, a sample. A command that reads faces from a folder, or writes
its own files into one, asks `kind_of` first, so a slip of the path (a run's sample grids taken
for faces, a sample written into a dataset) is named instead of mixing two things' files."""

from __future__ import annotations

import json
from typing import NamedTuple

from facegan.storage import StorageError, Store, overlap


class Kind(NamedTuple):
    """A kind of facegan folder: `name` (run, dataset, gallery, export, sample), `what` it is
    ("a facegan run (config.json, latest.json)": the files that mark it) and `why` its pictures are
    not faces."""

    name: str
    what: str
    why: str


def kind_of(folder: Store) -> Kind | None:
    """What facegan wrote `folder` as, or None when it is none of facegan's kinds."""
    from facegan import runfolder
    from facegan.data import FORMAT, MANIFEST
    from facegan.export import CARD_JSON
    from facegan.sample import PICTURES
    from facegan.sample import RECORD as SAMPLE_RECORD

    if folder.exists(runfolder.CONFIG):
        marks = [n for n in (runfolder.LATEST, runfolder.CKPT_DIR, runfolder.SAMPLES, runfolder.LOSS_PLOT)
                 if folder.exists(n) or folder.list(n)]
        if marks:
            return Kind("run", f"a facegan run ({runfolder.CONFIG}, {', '.join(marks)})",
                        "its pictures are sample grids and plots, not faces")
    if folder.exists(MANIFEST):
        try:
            manifest = json.loads(folder.get_bytes(MANIFEST))
        except (StorageError, ValueError, RecursionError):
            manifest = None
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
            return Kind("dataset", f"a facegan dataset ({MANIFEST})", "prepared already")
        if isinstance(manifest, dict) and {"fixed_seeds", "faces"} <= manifest.keys():  # facegan.gallery's
            return Kind("gallery", f"a night of the facegan gallery ({MANIFEST})",
                        "its grids and plots are not faces (its faces/ folder holds the single generated faces)")
    if folder.exists(CARD_JSON):
        return Kind("export", f"a facegan export ({CARD_JSON})", "a generator, not faces")
    if folder.exists(SAMPLE_RECORD) and folder.exists(PICTURES[0]):
        return Kind("sample", f"a facegan sample folder ({SAMPLE_RECORD})",
                    f"its {' and '.join(PICTURES)} are not faces (its faces/ folder holds the single generated faces)")
    return None


def not_own(folder: Store, source: str | None = None, mine: str | None = None) -> str | None:
    """Why `folder` cannot take a command's output, or None when it can: it is a folder facegan
    wrote as a kind other than `mine` (`kind_of`: a sample's output may go into an earlier sample's
    folder), or it overlaps the run or export `source` names (a checkpoint .pt in a run: that run;
    the same folder, or one inside the other)."""
    made = kind_of(folder)
    if made and made.name != mine:
        return made.what
    from facegan import runfolder

    in_run = runfolder.run_of(source) if source and source.endswith(".pt") else None
    where = in_run[0] if in_run else source if source and not source.endswith(".pt") else None
    if where and overlap(folder.uri(), where):
        return f"overlaps {where}, what it comes from (the same folder, or one inside the other)"
    return None
