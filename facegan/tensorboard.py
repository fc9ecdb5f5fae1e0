"""TensorBoard event files of a run, written with each checkpoint into `<run>/tb/`.

One file per checkpoint, `tb/events.out.tfevents.<step:010d>.facegan`, holds:

    train/<key>     every number of the training rows since the previous checkpoint (what
                    metrics.jsonl holds but its step and time: losses, D outputs, learning rates,
                    img/s, window length, ETA), at the row's step and wall time;
    metric/<field>  each metric scored at this checkpoint (fid, kid, kid_std, precision, recall);
    samples         the checkpoint's fixed-input sample picture.

The names sort by step, so TensorBoard reads them in training order, and a checkpoint written again
(a run resumed from an older one) writes the same name. A resumed run first deletes the files past
its step (`purge_after`), which a lost session may have left: together the files hold exactly the
rows of metrics.jsonl and metric-*.jsonl, on S3 as in a folder.

They are made on the checkpoint writer's thread (`facegan.checkpoint.Render`), never the training
step's, and uploaded with the checkpoint. The writer is tensorboardX's protobufs and record framing
(`RecordWriter`, masked crc32c): a small, long-kept package (numpy, protobuf), where
torch.utils.tensorboard would pull all of TensorBoard (its server, grpcio, werkzeug) into the
training image. TensorBoard itself only reads: `make tensorboard RUN=<uri>` (`fetch`, then
`tensorboard --logdir`).
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from facegan.storage import Store

DIR = "tb"
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


def checkpoint_events(step: int, wall_time: float, rows: list[dict], scores: dict[str, dict],
                      picture: Callable[[], bytes | None] | None) -> bytes:
    """The event file of the checkpoint at `step`: `rows` (training rows since the previous
    checkpoint), `scores` ({metric: its fields} scored now) and `picture()`'s PNG."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.record_writer import RecordWriter

    events = [Event(wall_time=wall_time, step=step, file_version="brain.Event:2")]
    for row in rows:
        values = [Summary.Value(tag=f"train/{k}", simple_value=v) for k, v in numbers(row).items()]
        events.append(Event(wall_time=row.get("time", wall_time), step=row["step"], summary=Summary(value=values)))
    values = [Summary.Value(tag=f"metric/{k}", simple_value=v) for fields in scores.values()
              for k, v in numbers(fields).items()]
    if values:
        events.append(Event(wall_time=wall_time, step=step, summary=Summary(value=values)))
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
    """Copy the run's event files into the folder `out` (for `tensorboard --logdir out`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key in sorted(k for k in run.list(f"{DIR}/") if step_of(k) is not None):
        path = out / key.rsplit("/", 1)[-1]
        run.get_file(key, path)
        paths.append(path)
    return paths
