"""Data is never lost or silently corrupted, checked with real processes: two prepares into one
dataset at once (a local folder and S3 over moto's HTTP server), a run folder without a usable
latest.json, a flipped byte in a checkpoint on resume and on sample, a killed prepare's workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, assert_states_equal, tiny_config, train_argv

from facegan import checkpoint as ckpt
from facegan import data
from facegan.loop import Hooks, fit
from facegan.storage import open_store

quiet = Hooks(log=lambda *_: None)


def facegan(*argv: str) -> subprocess.Popen:
    """`facegan ARGV` in a real process (S3 settings come from the environment, as moto's fixture sets)."""
    return subprocess.Popen([sys.executable, "-m", "facegan.cli", *argv], cwd=ROOT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def many_faces(tmp_path_factory):
    """800 raw faces: a few seconds of prepare work at 128 px, long enough to be caught in the act."""
    from facegan.synthetic import make_faces

    return make_faces(tmp_path_factory.mktemp("many") / "raw", 800, seed=3)


def test_two_prepares_into_one_dataset_at_once_one_is_refused_and_the_dataset_is_whole(store_uri, many_faces):
    """The first prepare holds the dataset's lease (frozen with SIGSTOP while it does, so the
    overlap is certain); the second exits 2 naming it and writes nothing; the first completes."""
    first = facegan("prepare", str(many_faces), store_uri, "--resolution", "128", "--workers", "1")
    folder = open_store(store_uri)
    try:
        wait_for(lambda: folder.exists("lease.json") or first.poll() is not None)
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "the first prepare ended before the second started"
        before = {k: folder.get_bytes(k) for k in folder.list()}
        code, out, err = finish(facegan("prepare", str(many_faces), store_uri, "--resolution", "128"))
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "this dataset is being prepared by another process" in lines[0], err
        assert f"pid {first.pid}" in lines[0] and "prepare into another folder" in lines[0]
        assert {k: folder.get_bytes(k) for k in folder.list()} == before  # the refused one wrote nothing
    finally:
        first.send_signal(signal.SIGCONT)
    code, out, err = finish(first)
    assert code == 0, err
    manifest = data.read_manifest(folder)
    images, _ = data.load(store_uri, manifest=manifest)  # every shard the manifest names is there and verifies
    assert images.shape[0] == manifest["count"] == 800
    assert not folder.exists("lease.json")


def test_a_killed_prepare_leaves_no_worker_running(many_faces, tmp_path):
    proc = facegan("prepare", str(many_faces), str(tmp_path / "ds"), "--resolution", "128", "--workers", "4")

    def children() -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        return [int(p) for p in found]

    wait_for(lambda: len(children()) >= 2 or proc.poll() is not None)
    workers = children()
    assert proc.poll() is None and workers, "prepare ended before its workers could be seen"
    proc.kill()
    proc.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for its reaper is dead too
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"

    wait_for(lambda: not any(alive(p) for p in workers), timeout=20)


@pytest.fixture
def trained(dataset32, tmp_path):
    """(config of a 12-step run, a run trained 8 of them: checkpoints at 4 and 8)."""
    cfg = tiny_config(dataset32, str(tmp_path / "run"), keep_last=3)
    fit(tiny_config(dataset32, cfg.run, steps=8, keep_last=3), quiet)
    return cfg


def _resume_by_cli(cfg) -> tuple[int, str, str]:
    return finish(facegan(*train_argv(cfg)), timeout=300)


def test_a_run_without_latest_json_resumes_from_its_newest_intact_checkpoint(trained, tmp_path):
    run = tmp_path / "run"
    (run / "latest.json").unlink()
    code, out, err = _resume_by_cli(trained)
    assert code == 0, err
    assert "resuming from checkpoints/step-0000008.pt, the newest intact checkpoint (sha256 verified)" in out
    straight = tiny_config(trained.dataset, str(tmp_path / "straight"), keep_last=3)
    fit(straight, quiet)
    assert_states_equal(ckpt.load(str(run)), ckpt.load(straight.run))  # as if nothing had happened


def test_a_folder_in_place_of_latest_json_loses_no_checkpoint_and_trains_no_step(trained, tmp_path):
    """Resume points latest.json at the checkpoint it fell back to before training: a latest.json
    that cannot be written is refused then, not after steps whose checkpoints nothing could name."""
    run = tmp_path / "run"
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    (run / "latest.json").unlink()
    (run / "latest.json").mkdir()
    code, out, err = _resume_by_cli(trained)
    assert "resuming from checkpoints/step-0000008.pt, the newest intact checkpoint (sha256 verified)" in out
    assert code == 2 and err.strip().count("\n") == 0 and f"{run / 'latest.json'}: cannot write (Is a directory)" in err
    assert "step 9" not in out and {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before


@pytest.mark.parametrize("damage", ["missing", "not JSON", "names no checkpoint"])
def test_a_finished_run_with_a_damaged_latest_json_is_repaired_by_its_next_session(damage, trained, tmp_path,
                                                                                 capsys):
    """A run already at its steps (a scheduled flow's next night) whose latest.json is gone or
    damaged: the session says there is nothing to train and exits 0 (it raised on the damaged
    pointer after saying so), and latest.json names the newest intact checkpoint again, so
    `facegan sample` (and the gallery, export) read the run (they refused it before)."""
    from facegan.cli import main

    run = tmp_path / "run"
    pointer = (run / "latest.json").read_text()
    {"missing": lambda: (run / "latest.json").unlink(), "not JSON": lambda: (run / "latest.json").write_text("{"),
     "names no checkpoint": lambda: (run / "latest.json").write_text("[]")}[damage]()
    capsys.readouterr()
    assert main(train_argv(trained.replace(steps=8))) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "the run is already at step 8" in out and f"checkpoint {run / 'checkpoints' / 'step-0000008.pt'}" in out
    repaired = ckpt.read_pointer(open_store(str(run)))
    assert {k: v for k, v in repaired.items() if k != "written_at"} == \
        {k: v for k, v in json.loads(pointer).items() if k != "written_at"}
    assert main(["sample", str(run), str(tmp_path / "faces"), "--count", "2"]) == 0, capsys.readouterr().err


def test_a_flipped_byte_in_the_latest_checkpoint_is_skipped_on_resume_and_refused_by_sample(trained, tmp_path):
    run = tmp_path / "run"
    path = run / "checkpoints" / "step-0000008.pt"
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    path.write_bytes(bytes(damaged))

    code, out, err = finish(facegan("sample", str(run), str(tmp_path / "faces"), "--count", "2"))
    assert code == 2 and not (tmp_path / "faces").exists()
    assert err.strip().count("\n") == 0 and f"{path}: damaged: its sha256 is" in err

    code, out, err = _resume_by_cli(trained)
    assert code == 0, err
    assert "skipped checkpoints/step-0000008.pt" in out
    assert "resuming from checkpoints/step-0000004.pt, the newest intact checkpoint" in out
    assert ckpt.load(str(run))["step"] == 12  # trained on from step 4; the damaged file was replaced
    assert ckpt.load(str(path))["step"] == 8


@pytest.mark.parametrize("damage", ["truncated", "wrong keys", "an older build of the dataset"])
def test_a_broken_or_stale_fid_cache_is_rebuilt(fid_weights, dataset32, tmp_path, damage):
    import io
    import shutil

    import numpy as np

    from facegan.metrics.fid import FIDTracker

    ds = tmp_path / "ds"
    shutil.copytree(dataset32, ds)
    make = lambda logs: FIDTracker.create(str(ds), samples=8, weights_uri=fid_weights, log=logs.append,  # noqa: E731
                                          batch=4, resize=75)
    fresh = make([])
    (cache,) = ds.glob("inception-*-8-r75.npz")  # this protocol's (the shared dataset may hold others)
    real = fresh.features.real.numpy()
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:100])
    elif damage == "wrong keys":
        buf = io.BytesIO()
        np.savez(buf, mean=real)
        cache.write_bytes(buf.getvalue())
    else:
        buf = io.BytesIO()
        np.savez(buf, features=real + 1, dataset_id=np.array("0123456789abcdef"))
        cache.write_bytes(buf.getvalue())
    logs = []
    again = make(logs)
    assert "computing the statistics again" in logs[0] or "computing them again" in logs[0], logs
    # The same features give the same statistics up to BLAS round-off: OpenBLAS's f.T @ f may take
    # another kernel path for another buffer alignment (CI's CPU did), so the covariance is compared
    # to 1e-9 of its scale; the mean, which no BLAS call touches, is compared to the bit.
    assert np.array_equal(again.mu, fresh.mu)
    assert np.abs(again.sigma - fresh.sigma).max() <= 1e-9 * np.abs(fresh.sigma).max()
    make(logs)
    assert "real statistics from" in logs[-1]  # the rebuilt cache is used from then on


@pytest.mark.parametrize("where", ["a moved copy", "a copy on S3"])
def test_a_run_resumes_on_the_same_dataset_at_another_path(dataset32, tmp_path, where, request):
    import shutil
    from pathlib import Path

    if where == "a moved copy":
        moved = tmp_path / "moved-ds"
        shutil.copytree(dataset32, moved)
    else:
        moved = request.getfixturevalue("bucket") + "/datasets/faces-32"
        store = open_store(moved)
        for p in Path(dataset32).iterdir():
            store.put_file(p.name, p)
    fit(tiny_config(dataset32, str(tmp_path / "run"), steps=4), quiet)
    said = []
    result = fit(tiny_config(str(moved), str(tmp_path / "run"), steps=8), Hooks(log=said.append))
    assert result.step == 8
    assert any(f"the dataset's path changed ({dataset32} -> {moved}); it is the same dataset" in s for s in said)


def test_prepare_takes_a_partial_attribute_table_and_skips_a_damaged_zip_entry(makeup_raw, tmp_path):
    import zipfile

    from facegan.prepare import prepare

    lines = (makeup_raw.parent / "list_attr_celeba.txt").read_text().splitlines()
    partial = tmp_path / "partial.txt"
    partial.write_text("\n".join(["202599", *lines[1:12]]) + "\n")  # line 1 as the real file's; 10 rows
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(makeup_raw.iterdir())[:10]:
            z.write(p, p.name)
    data = bytearray(archive.read_bytes())
    first = data.find(b"PK\x03\x04")
    data[first + 30 + len("000001.jpg") + 40] ^= 0xFF  # inside the first entry's compressed bytes
    archive.write_bytes(bytes(data))
    said = []
    m = prepare(archive, str(tmp_path / "ds"), resolution=32, workers=1, attributes=str(partial),
                log=said.append).manifest
    assert any("is a partial table: 10 of the 202599 rows" in s for s in said)
    assert m["attributes"]["table_rows"] == {"held": 10, "declared": 202599}
    damaged = [s for s in m["skipped"] if s["file"] == "000001.jpg"]
    assert m["count"] == 9 and len(damaged) == 1 and damaged[0]["reason"].startswith("unreadable ("), m["skipped"]
