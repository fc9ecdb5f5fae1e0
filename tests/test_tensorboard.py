"""TensorBoard event files: written with every checkpoint into <run>/tb/ (on moto S3 here), read
back with TensorBoard's own EventAccumulator they equal metrics.jsonl and the metric streams, also
across a resume that found a lost session's file; `facegan tensorboard` serves them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
from helpers import tiny_config

from facegan import runfolder, tensorboard
from facegan.loop import Hooks, fit
from facegan.storage import open_store


def accumulate(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def evented(bucket_module, dataset32, fid_weights, tmp_path_factory):
    """A run on S3 that scores FID and KID at every checkpoint, stopped at step 8 and resumed to 12,
    with a lost session's event files for steps 12 and 16 left in between; its events fetched into a
    folder beside the user's notes, both before the resume (with the lost session's) and after."""
    run_uri = f"{bucket_module}/runs/tb"
    cfg = tiny_config(dataset32, run_uri, steps=8, metrics="fid,kid", metric_every=4, metric_samples=16,
                      metric_weights=fid_weights, metric_resize=75)
    fit(cfg, Hooks(log=lambda *_: None))
    run = open_store(run_uri)
    for step in (12, 16):
        run.put_bytes(tensorboard.event_key(step), b"a lost session's file")  # e.g. uploaded, then kill -9
    out = tmp_path_factory.mktemp("tb")
    (out / "notes.txt").write_text("the user's")
    assert [tensorboard.step_of(f"tb/{p.name}") for p in tensorboard.fetch(run, out)] == [4, 8, 12, 16]
    fit(cfg.replace(steps=12), Hooks(log=lambda *_: None))  # purges the lost 12 and 16, writes 12 anew
    return run, tensorboard.fetch(run, out), out


@pytest.fixture(scope="module")
def bucket_module(moto_endpoint):
    import uuid

    import boto3

    name = f"facegan-tb-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"


def test_event_files_equal_the_metrics_streams_after_a_resume(evented):
    run, files, out = evented
    assert [tensorboard.step_of(f"tb/{p.name}") for p in files] == [4, 8, 12]  # one per checkpoint
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in files] + ["fetched.json", "notes.txt"]
    assert json.loads((out / "fetched.json").read_text())["files"] == [p.name for p in files]  # no stale step 16
    acc = accumulate(out)
    rows, scored = runfolder.read_metrics(run)
    assert len(rows) == 6 and set(scored) == {"fid", "kid"}
    tags = acc.Tags()["scalars"]
    for key in tensorboard.numbers(rows[0]):  # losses, D outputs, learning rates, img/s, ...
        events = acc.Scalars(f"train/{key}")
        assert [e.step for e in events] == [r["step"] for r in rows]  # each row once: the lost file is gone
        assert [e.value for e in events] == [np.float32(r[key]) for r in rows], key
        assert [e.wall_time for e in events] == pytest.approx([r["time"] for r in rows])
    assert {"train/loss_d", "train/d_real", "train/lr_g", "train/img_per_s"} <= set(tags)
    for field_rows in scored.values():
        for key in tensorboard.numbers({k: v for k, v in field_rows[0].items() if not k.endswith("_protocol")}):
            events = acc.Scalars(f"metric/{key}")
            assert [(e.step, e.value) for e in events] == [(r["step"], np.float32(r[key])) for r in field_rows]
    assert {"metric/fid", "metric/kid", "metric/kid_std"} <= set(tags)
    images = acc.Images("samples")
    assert [i.step for i in images] == [4, 8, 12]
    for image in images:  # the very PNG of the checkpoint's sample picture
        assert image.encoded_image_string == run.get_bytes(runfolder.sample_key(image.step))


def test_facegan_tensorboard_serves_a_runs_events(evented, tmp_path):
    run, _, _ = evented
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tmp_path / "tmp"  # where the fetched files go without --out: removed when the command ends
    temp.mkdir()
    server = subprocess.Popen([sys.executable, "-m", "facegan.cli", "tensorboard", run.root, "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(temp)})
    try:
        deadline, tags = time.monotonic() + 90, {}
        while time.monotonic() < deadline and "train/loss_d" not in json.dumps(tags):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.load(r)
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()[-2000:]
                time.sleep(0.5)
        assert "metric/fid" in tags.get(".", {}) and "train/loss_d" in tags["."], tags
        assert len(list(temp.glob("facegan-tb-*"))) == 1
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0  # TensorBoard, handed the SIGTERM, ends cleanly
    assert not list(temp.glob("facegan-tb-*"))  # SIGTERM ended TensorBoard too, then the folder went
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5)


def test_a_fetch_writes_over_only_what_an_earlier_fetch_of_the_same_run_wrote(tmp_path, capsys):
    """Two runs fetched into one folder would mix (the second's files over the first's of the same
    step) and delete the first's others; into a run's own tb/ folder, delete its events. Refused,
    before anything is written; the same run again mirrors it, also after a fetch stopped midway."""
    from facegan.cli import main
    from facegan.config import ConfigError

    a, b = open_store(tmp_path / "runs" / "a"), open_store(tmp_path / "runs" / "b")
    for run, steps in ((a, (2, 4, 6)), (b, (2, 4))):  # fetch copies the files as they are
        for step in steps:
            run.put_bytes(tensorboard.event_key(step), f"{run.root} {step}".encode())
    out = tmp_path / "tb"

    def files(folder):
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    def name(step):
        return tensorboard.event_key(step).removeprefix(f"{tensorboard.DIR}/")

    assert len(tensorboard.fetch(a, out)) == 3
    fetched_a = files(out)
    with pytest.raises(ConfigError, match=rf"0000000002\.facegan: already there and fetched from {a.root}; fetch "):
        tensorboard.fetch(b, out)
    assert main(["tensorboard", b.root, "--out", str(out), "--fetch-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"fetched from {a.root}; fetch {b.root} into another folder" in err
    assert files(out) == fetched_a
    own = tmp_path / "runs" / "a" / "tb"  # a run's own event files: no fetch wrote them
    with pytest.raises(ConfigError, match="already there and not written by facegan tensorboard"):
        tensorboard.fetch(b, own)
    assert sorted(p.name for p in own.iterdir()) == [name(s) for s in (2, 4, 6)]
    (out / "fetched.json").write_text('{"files": "not a record"}')
    with pytest.raises(ConfigError, match="fetched.json: already there and not a record of facegan tensorboard"):
        tensorboard.fetch(a, out)
    (out / "fetched.json").write_bytes(fetched_a["fetched.json"])

    a.delete(tensorboard.event_key(6))  # a resume purged step 6, then wrote step 4 again
    a.put_bytes(tensorboard.event_key(4), b"step 4 again")

    def stopped(key, path):  # the fetch stopped at its second file
        if key == tensorboard.event_key(4):
            raise KeyboardInterrupt
        get_file(key, path)

    get_file, a.get_file = a.get_file, stopped
    with pytest.raises(KeyboardInterrupt):
        tensorboard.fetch(a, out)
    a.get_file = get_file
    assert json.loads((out / "fetched.json").read_text())["files"] == [name(s) for s in (2, 4, 6)]
    assert [tensorboard.step_of(f"tb/{p.name}") for p in tensorboard.fetch(a, out)] == [2, 4]
    assert files(out) == {"fetched.json": (out / "fetched.json").read_bytes(), name(2): fetched_a[name(2)],
                          name(4): b"step 4 again"}
    for leftover in [p for p in out.iterdir() if p.name != "fetched.json"]:
        leftover.unlink()  # its event files gone, the folder takes another run
    assert len(tensorboard.fetch(b, out)) == 2


def test_one_fetch_at_a_time_writes_into_a_folder(tmp_path):
    """A fetch holds its folder's lease while it writes: a second one into that folder (two would
    interleave their files under one record) is refused, writing nothing."""
    from facegan.errors import LeaseError
    from facegan.lease import Lease

    run = open_store(tmp_path / "runs" / "a")
    run.put_bytes(tensorboard.event_key(2), b"step 2")
    out = tmp_path / "tb"
    out.mkdir()
    with Lease(open_store(out), what="TensorBoard folder", owns=False):  # another fetch, writing
        with pytest.raises(LeaseError, match=r"tb/lease\.json: this TensorBoard folder is being fetched into by "
                                             r"another process .*fetch into another folder"):
            tensorboard.fetch(run, out)
        assert [p.name for p in out.iterdir()] == ["lease.json"]  # the other's lease alone
    assert [p.name for p in tensorboard.fetch(run, out)] == ["events.out.tfevents.0000000002.facegan"]
    assert sorted(p.name for p in out.iterdir()) == ["events.out.tfevents.0000000002.facegan",
                                                     "fetched.json"]  # and no lease left


def test_without_tensorboard_no_events_are_written_and_the_command_says_so(dataset32, tmp_path, capsys,
                                                                         monkeypatch):
    import tempfile

    from facegan.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    result = fit(tiny_config(dataset32, str(tmp_path / "run"), steps=4, tensorboard=False), Hooks(log=lambda *_: None))
    assert not open_store(result.run).list("tb/")
    assert main(["tensorboard", result.run, "--fetch-only"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "tb: no event files" in err
    assert not list(tmp_path.glob("facegan-tb-*"))  # the empty folder it fetched into is gone


def test_a_checkpoint_the_writer_drops_leaves_its_rows_and_scores_to_the_next_file(tmp_path):
    """While the store is unreachable the writer replaces a waiting checkpoint with a newer one:
    the newer one's event file holds the dropped one's rows and scores too. A file handed over
    while the one before is still being made holds only its own rows."""
    from facegan import checkpoint as ckpt

    def row(step: int) -> dict:
        return {"step": step, "loss_d": float(step), "time": 1000.0 + step}

    def made(render, name: str) -> None:  # as the writer does: a host copy, made on its thread
        copy, ready = ckpt.to_host(render)
        ready()
        (tmp_path / name).mkdir()
        (tmp_path / name / tensorboard.event_key(0).split("/")[-1]).write_bytes(copy())

    rows, scored = [row(2)], {"fid": []}
    events = tensorboard.Events(rows, scored)  # step 2's row: in a file already (e.g. before a resume)
    rows.append(row(4))
    scored["fid"].append({"step": 4, "fid": 9.0, "fid_protocol": {"samples": 16}})
    events.render(4, 1004.0, rows, scored, None)  # dropped: never made
    rows += [row(6), row(8)]
    scored["fid"].append({"step": 8, "fid": 7.0, "fid_protocol": {"samples": 16}})
    made(events.render(8, 1008.0, rows, scored, None), "a")
    acc = accumulate(tmp_path / "a")
    assert [(e.step, e.value) for e in acc.Scalars("train/loss_d")] == [(4, 4.0), (6, 6.0), (8, 8.0)]
    assert [(e.step, e.value) for e in acc.Scalars("metric/fid")] == [(4, 9.0), (8, 7.0)]

    rows.append(row(10))
    in_flight = events.render(10, 1010.0, rows, scored, None)
    rows.append(row(12))
    after = events.render(12, 1012.0, rows, scored, None)  # handed over before step 10's file was made
    made(in_flight, "b")
    made(after, "c")
    assert [e.step for e in accumulate(tmp_path / "b").Scalars("train/loss_d")] == [10]
    assert [e.step for e in accumulate(tmp_path / "c").Scalars("train/loss_d")] == [12]
    assert "metric/fid" not in accumulate(tmp_path / "c").Tags()["scalars"]
