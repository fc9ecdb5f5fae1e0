"""One trainer per run: two real `facegan train` processes on one run, on a local folder and on
moto's S3 over HTTP; expiry, take-over and loss of the lease; orphaned temp files."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from helpers import cli_train, tiny_config, train_argv, wait_for

from facegan import checkpoint as ckpt
from facegan import runfolder
from facegan.errors import LeaseError
from facegan.lease import Lease
from facegan.storage import open_store


def _latest(run_uri: str) -> int:
    pointer = ckpt.read_pointer(open_store(run_uri))
    return pointer["step"] if pointer else 0


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_second_trainer_on_a_run_is_refused_until_the_first_is_gone(where, dataset32, tmp_path, request, capsys):
    """Two real processes: a `facegan train` subprocess holds the run; this test process is the
    second trainer (the CLI in-process), refused, and after a kill -9 of the first, it takes over."""
    from facegan.cli import main

    root = str(tmp_path / "store") if where == "local" else request.getfixturevalue("bucket")
    cfg = tiny_config(dataset32, f"{root}/runs/shared", steps=100_000, ckpt_every=5, log_every=5)
    first = cli_train(cfg)
    try:
        wait_for(lambda: _latest(cfg.run) >= 5, proc=first, timeout=180)
        capsys.readouterr()
        assert main(train_argv(cfg.replace(seed=8))) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "this run is being trained by another process" in err[0], err
        assert f"pid {first.pid}" in err[0]
        assert first.poll() is None  # the first one trains on, its folder untouched by the second
        assert open_store(cfg.run).get_json("config.json")["seed"] == cfg.seed
    finally:
        first.kill()  # kill -9: no release; the lease names a dead process of this host
        first.wait()
    killed_at = _latest(cfg.run)
    assert main(train_argv(cfg.replace(steps=killed_at + 2))) == 0
    assert f"from step {killed_at}" in capsys.readouterr().out and _latest(cfg.run) == killed_at + 2
    assert not open_store(cfg.run).exists(runfolder.LEASE)  # released at the end


def _lease_of(host: str, pid: int, expires_in: float) -> bytes:
    return json.dumps({"holder": "x", "host": host, "pid": pid, "expires": time.time() + expires_in}).encode()


def test_lease_expiry_and_take_over(store_uri):
    run = open_store(f"{store_uri}/runs/r")
    run.put_bytes(runfolder.LEASE, _lease_of("gpu-box-7", 4242, 60))  # alive elsewhere, not expired
    with pytest.raises(LeaseError, match=r"being trained by another process \(host gpu-box-7, pid 4242\)"):
        Lease(run).acquire()
    run.put_bytes(runfolder.LEASE, _lease_of("gpu-box-7", 4242, -1))  # expired: a crashed holder elsewhere
    with Lease(run) as lease:
        held = json.loads(run.get_bytes(runfolder.LEASE))
        assert held["holder"] == lease.me["holder"] and held["pid"] == os.getpid()
        with pytest.raises(LeaseError):  # and now we are the live holder
            Lease(run).acquire()
    assert not run.exists(runfolder.LEASE)


def test_a_damaged_lease_in_a_run_is_expired(store_uri):
    """A lease.json that is not a lease (damaged, or JSON of another shape) in a folder facegan owns
    blocks nobody; in a folder of the user's (`owns` False) it is theirs: refused, left as it is."""
    run = open_store(f"{store_uri}/runs/r")
    for damaged in (b"[1, 2]", b'"text"', b"{half", b'{"expires": 9e99}'):
        run.put_bytes(runfolder.LEASE, damaged)
        with pytest.raises(LeaseError, match="lease.json: already there and not a facegan lease; keep out"):
            Lease(run, owns=False, instead="keep out").acquire()
        assert run.get_bytes(runfolder.LEASE) == damaged
        with Lease(run):
            assert json.loads(run.get_bytes(runfolder.LEASE))["pid"] == os.getpid()
        assert not run.exists(runfolder.LEASE)


def test_a_holder_learns_it_lost_the_lease(store_uri):
    run = open_store(f"{store_uri}/runs/r")
    lease = Lease(run, ttl=0.4).acquire()
    try:
        run.put_bytes(runfolder.LEASE, _lease_of(socket.gethostname(), os.getpid(), 60))  # someone took it over
        wait_for(lambda: lease.lost, timeout=10)
        assert "another process took over this run" in lease.lost
    finally:
        lease.release()
    assert run.exists(runfolder.LEASE)  # not ours to delete


def test_conditional_writes(store_uri):
    store = open_store(store_uri)
    first = store.put_if("k.json", b"1", None)
    assert first and store.put_if("k.json", b"2", None) is None  # exists
    assert store.put_if("k.json", b"2", "not-the-etag") is None
    second = store.put_if("k.json", b"2", first)
    assert second and store.get_versioned("k.json") == (b"2", second)
    assert store.get_versioned("missing.json") is None


def test_the_lease_holder_removes_orphaned_temp_files(dataset32, tmp_path):
    from facegan.loop import Hooks, fit

    cfg = tiny_config(dataset32, str(tmp_path / "run"), steps=2)
    fit(cfg, Hooks(log=lambda *_: None))
    orphan = tmp_path / "run" / "checkpoints" / ".step-0000004.pt.abc123.tmp"  # as a kill -9 mid-write leaves
    orphan.write_bytes(b"half a checkpoint")
    fit(cfg.replace(steps=4), Hooks(log=lambda *_: None))
    assert not orphan.exists()
