"""TensorBoard event files of a run, written with each checkpoint into `<run>/tb/`.

One file per checkpoint, `tb/events.out.tfevents.<step:010d>.facegan`, holds:

    train/<key>     every number of the training rows since the previous event file (what
                    metrics.jsonl holds but its step and time: losses, D outputs, learning rates,
                    img/s, window length, ETA), at the row's step and wall time;
    metric/<field>  each metric scored since then (fid, kid, kid_std, precision, recall), at the
                    step it was scored;
    samples         the checkpoint's fixed-input sample picture.

The names sort by step, so TensorBoard reads them in training order, and a checkpoint written again
(a run resumed from an older one) writes the same name. A resumed run first deletes the files past
its step (`purge_after`), which a lost session may have left: together the files hold exactly the
rows of metrics.jsonl and metric-*.jsonl, on S3 as in a folder.

They are made on the checkpoint writer's thread (`facegan.checkpoint.Render`), never the training
step's, and uploaded with the checkpoint. "Since the previous event file" is counted there, as each
file is made (`Events`): a checkpoint the writer drops (replaced by a newer one while the store is
unreachable) leaves its rows and scores to the next file, so none is lost; only its picture is.
The writer is tensorboardX's protobufs and record framing
(`RecordWriter`, masked crc32c): a small, long-kept package (numpy, protobuf), where
torch.utils.tensorboard would pull all of TensorBoard (its server, grpcio, werkzeug) into the
training image. TensorBoard itself only reads: `make tensorboard RUN=<uri>` (`fetch`, then
`tensorboard --logdir`).
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from facegan import folders, lease
from facegan.errors import ConfigError
from facegan.storage import Store, open_store

DIR = "tb"
RECORD = "fetched.json"  # in a folder `fetch` wrote: which run's event files it holds
RECORD_FORMAT = "facegan-tensorboard-fetch/1"
SKIPPED = ("step", "time")  # row fields that are the event's step and wall time, not scalars
_KEY = re.compile(rf"^{DIR}/events\.out\.tfevents\.(\d{{10}})\.facegan$")
_COLOUR_TYPES = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> TensorBoard colorspace (channels)


def event_key(step: int) -> str:
    """The key of the event file written with the checkpoint of `step`."""
    return f"{DIR}/events.out.tfevents.{step:010d}.facegan"


def step_of(key: str) -> int | None:
    """The checkpoint step of an event file's key (None: not one of facegan's)."""
    found = _KEY.match(key)
    return int(found.group(1)) if found else None


def numbers(row: dict) -> dict[str, float]:
    """A row's scalars: its numeric fields but the step and time."""
    return {k: float(v) for k, v in row.items()
            if k not in SKIPPED and isinstance(v, int | float) and not isinstance(v, bool)}


class Events:
    """Makes each checkpoint's event file with what the files made before it do not hold.

    It counts the training rows and each metric's rows already in event files. `render` is called
    on the training thread at a checkpoint and hands over what may be new; the count moves on only
    when the writer's thread makes the file (in checkpoint order), so the rows of a checkpoint that
    was never written go into the next one's file.
    """

    def __init__(self, rows: list[dict], scored: dict[str, list[dict]]) -> None:
        """`rows` and `scored` ({metric: its rows}): those already in the run's event files."""
        self.rows, self.scored = len(rows), {name: len(r) for name, r in scored.items()}

    def render(self, step: int, wall_time: float, rows: list[dict], scored: dict[str, list[dict]],
               picture: Callable[[], bytes | None] | None):
        """The event file of the checkpoint at `step`, to be made on the writer's thread: the rows
        of `rows` and `scored` that no file made so far holds, and `picture()`'s PNG (a
        `facegan.checkpoint.Render`)."""
        from facegan.checkpoint import Render  # torch: not for `facegan tensorboard`, which only fetches

        # each count read once: the writer's thread may move it on meanwhile (then less is new)
        start, starts = self.rows, {name: self.scored.get(name, 0) for name in scored}
        return Render(self._make, step, wall_time, start, rows[start:],
                      {name: (starts[name], r[starts[name]:]) for name, r in scored.items()}, picture)

    def _make(self, step: int, wall_time: float, start: int, rows: list[dict],
              scored: dict[str, tuple[int, list[dict]]], picture) -> bytes:
        data = checkpoint_events(step, wall_time, rows[self.rows - start:],
                                 [r for name, (at, new) in scored.items() for r in new[self.scored.get(name, 0) - at:]],
                                 picture)
        self.rows = start + len(rows)
        self.scored.update({name: at + len(new) for name, (at, new) in scored.items()})
        return data


def checkpoint_events(step: int, wall_time: float, rows: list[dict], scores: list[dict],
                      picture: Callable[[], bytes | None] | None) -> bytes:
    """The event file of the checkpoint at `step`: `rows` (training rows), `scores` (metric rows,
    each with the step it was scored at) and `picture()`'s PNG."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.record_writer import RecordWriter

    events = [Event(wall_time=wall_time, step=step, file_version="brain.Event:2")]
    for row in rows:
        values = [Summary.Value(tag=f"train/{k}", simple_value=v) for k, v in numbers(row).items()]
        events.append(Event(wall_time=row.get("time", wall_time), step=row["step"], summary=Summary(value=values)))
    for score in scores:
        values = [Summary.Value(tag=f"metric/{k}", simple_value=v) for k, v in numbers(score).items()]
        events.append(Event(wall_time=wall_time, step=score["step"], summary=Summary(value=values)))
    png = picture() if picture else None
    if png:
        width, height, _, colour = struct.unpack(">IIBB", png[16:26])  # the IHDR chunk
        image = Summary.Image(height=height, width=width, colorspace=_COLOUR_TYPES.get(colour, 3),
                              encoded_image_string=png)
        events.append(Event(wall_time=wall_time, step=step, summary=Summary(value=[
            Summary.Value(tag="samples", image=image)])))
    with tempfile.TemporaryDirectory(prefix="facegan-tb-") as tmp:  # tensorboardX frames records into a file
        path = os.path.join(tmp, "events")
        writer = RecordWriter(path)
        for event in events:
            writer.write(event.SerializeToString())
        writer.close()
        return Path(path).read_bytes()


def purge_after(run: Store, step: int) -> list[str]:
    """Delete the run's event files of checkpoints after `step` (a resumed run's start); returns
    their keys."""
    gone = [k for k in run.list(f"{DIR}/") if (step_of(k) or 0) > step]
    for key in gone:
        run.delete(key)
    return gone


def fetch(run: Store, out: str | Path) -> list[Path]:
    """Copy the run's event files into the folder `out` (for `tensorboard --logdir out`), and record
    which run and files they are in `out/fetched.json`. Fetching the same run there again mirrors
    it: event files the earlier fetch wrote that the run no longer has (a session a resume purged)
    are removed. Only event files an earlier fetch of this run recorded are written over or removed:
    one of another run's fetch, one no fetch wrote (a run's own tb/ folder) or a `fetched.json` that
    is not such a record is a ConfigError naming it, before anything is written. Nothing else in
    `out` is touched. A folder that overlaps the run's, or that facegan wrote as something else (a
    run, a dataset, an export, ...: `folders.not_own`), is a ConfigError. One fetch at a time
    writes into a folder: it holds the folder's lease (`facegan.lease`) meanwhile, and a second is
    a LeaseError."""
    out = Path(out)
    folder = open_store(out)  # a file where the folder should be: the lease's write names it
    why = folders.not_own(folder, run.uri())
    if why:  # a slip of the path: `tensorboard --logdir` would show the run's tb/ twice, or mix the files in
        raise ConfigError(f"{out}: {why}; fetch into a folder of its own (one folder per run: "
                          "`tensorboard --logdir` their parent shows them side by side)")
    _earlier(folder, out, run)  # a folder of someone else's files is refused before the lease is written into it
    with lease.Lease(folder, what="TensorBoard folder", doing="fetched into", instead="fetch into another folder",
                     owns=False):
        earlier = _earlier(folder, out, run)  # again: another fetch may have ended meanwhile
        names = {key.rsplit("/", 1)[-1]: key for key in run.list(f"{DIR}/") if step_of(key) is not None}
        # first a record naming the earlier files and these: stopped midway, every file there is still known as ours
        folder.put_json(RECORD, {"format": RECORD_FORMAT, "run": run.uri(), "files": sorted(earlier | set(names))})
        paths = []
        for name, key in sorted(names.items()):
            run.get_file(key, out / name)
            paths.append(out / name)
        for name in sorted(earlier - set(names)):  # before the final record: stopped here, the record still lists them
            (out / name).unlink(missing_ok=True)
        folder.put_json(RECORD, {"format": RECORD_FORMAT, "run": run.uri(), "files": sorted(names)})
    return paths


def _earlier(folder: Store, out: Path, run: Store) -> set[str]:
    """The event files an earlier fetch of `run` recorded in `folder` (at `out`); an event file
    there that no fetch of `run` wrote is a ConfigError naming it."""
    fetched_from, earlier = _fetched(folder)
    others, earlier = (set(), earlier) if fetched_from == run.uri() else (earlier, set())
    present = sorted(p.name for p in out.iterdir() if step_of(f"{DIR}/{p.name}") is not None) if out.is_dir() else []
    for name in present:
        if name in earlier:
            continue
        whose = f"fetched from {fetched_from}" if name in others else "not written by facegan tensorboard"
        raise ConfigError(f"{out / name}: already there and {whose}; fetch {run.uri()} into another folder (one "
                          "folder per run: `tensorboard --logdir` their parent shows them side by side)")
    return earlier


def _fetched(folder: Store) -> tuple[str | None, set[str]]:
    """(run, event file names) an earlier `fetch` recorded in `folder` ((None, set()) without a
    record); a `fetched.json` that is not such a record (the user's own, or damaged) is a
    ConfigError."""
    if not folder.exists(RECORD):
        return None, set()
    try:
        record = json.loads(folder.get_bytes(RECORD))
    except (ValueError, RecursionError):
        record = None
    if not (isinstance(record, dict) and record.get("format") == RECORD_FORMAT and isinstance(record.get("run"), str)
            and isinstance(record.get("files"), list)):
        raise ConfigError(f"{folder.uri(RECORD)}: already there and not a record of facegan tensorboard; fetch "
                          "into another folder")
    return record["run"], {n for n in record["files"] if isinstance(n, str) and step_of(f"{DIR}/{n}") is not None}
