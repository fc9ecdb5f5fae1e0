"""Bad input through the real CLI: exit 2, one line that names the input, nothing half-written.

Each row is an input a hostile user or a damaged store gives; `make_case` builds what it needs
in a temp folder and returns (argv, expected text in the error, paths that must stay untouched).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from helpers import tiny_config

from facegan import checkpoint as ckpt
from facegan.cli import main
from facegan.loop import Hooks, fit
from facegan.prepare import process_image

quiet = Hooks(log=lambda *_: None)


@pytest.fixture(scope="module")
def run_dir(dataset32, tmp_path_factory) -> str:
    """A trained 4-step run (checkpoints at 2 and 4)."""
    run = str(tmp_path_factory.mktemp("bad") / "run")
    fit(tiny_config(dataset32, run, steps=4, ckpt_every=2), quiet)
    return run


def _zip_with_encrypted_entry(path: Path, raw: Path) -> Path:
    """A zip whose entries carry the 'encrypted' flag (zipfile itself cannot write encryption)."""
    with zipfile.ZipFile(path, "w") as z:
        for p in sorted(raw.iterdir())[:3]:
            z.write(p, p.name)
    data = bytearray(path.read_bytes())
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(sig)
        while at >= 0:
            data[at + flag_at] |= 0x01
            at = data.find(sig, at + 4)
    path.write_bytes(bytes(data))
    return path


def _dataset_copy(dataset32: str, tmp: Path, change) -> str:
    import shutil

    out = tmp / "ds"
    shutil.copytree(dataset32, out)
    m = json.loads((out / "manifest.json").read_text())
    change(m)
    (out / "manifest.json").write_text(json.dumps(m))
    return str(out)


def _checkpoint_copy(run_dir: str, tmp: Path, change) -> str:
    state = ckpt.load(run_dir)
    change(state)
    path = tmp / "damaged.pt"
    path.write_bytes(ckpt.to_bytes(state))
    return str(path)


CASES = {
    "prepare: a .zip that is not a zip": (
        lambda t, d, r, raw: (["prepare", str(_write(t / "fake.zip", b"not a zip")), str(t / "out")], [t / "out"]),
        "fake.zip: not a readable zip archive"),
    "prepare: every entry encrypted": (
        lambda t, d, r, raw: (["prepare", str(_zip_with_encrypted_entry(t / "enc.zip", raw)), str(t / "out")],
                              [t / "out"]),
        "no usable image among 3 files (encrypted)"),
    "prepare: --limit -5": (lambda t, d, r, raw: (["prepare", str(raw), str(t / "out"), "--limit", "-5"], [t / "out"]),
                            "argument --limit: -5 is out of range"),
    "prepare: --workers -1": (
        lambda t, d, r, raw: (["prepare", str(raw), str(t / "out"), "--workers", "-1"], [t / "out"]),
        "argument --workers: -1 is out of range"),
    "prepare: file://relative": (lambda t, d, r, raw: (["prepare", str(raw), "file://tmp/x"], []),
                                 "file://tmp/x: a file:// URI needs an absolute path"),
    "prepare: bad bucket name": (lambda t, d, r, raw: (["prepare", str(raw), "s3://Bad_Bucket/ds"], []),
                                 "'Bad_Bucket' is not a valid S3 bucket name"),
    "train: manifest shards are strings": (
        lambda t, d, r, raw: (["train", "--dataset", _dataset_copy(d, t, lambda m: m.update(shards=["x"])),
                               "--run", str(t / "run")], [t / "run"]),
        "shards[0] is not a shard record"),
    "train: shard without a name": (
        lambda t, d, r, raw: (["train", "--dataset", _dataset_copy(d, t, lambda m: m["shards"][0].pop("name")),
                               "--run", str(t / "run")], [t / "run"]),
        "shards[0] is not a shard record"),
    "train: manifest version -7": (
        lambda t, d, r, raw: (["train", "--dataset", _dataset_copy(d, t, lambda m: m.update(version=-7)),
                               "--run", str(t / "run")], [t / "run"]),
        "dataset version -7 is not a format version"),
    "train: --seed beyond 64 bits": (
        lambda t, d, r, raw: (["train", "--dataset", d, "--run", str(t / "run"), "--seed", str(2**70)], [t / "run"]),
        "seed=1180591620717411303424 must be an integer in [0, 2**63)"),
    "train: --r1-gamma nan": (
        lambda t, d, r, raw: (["train", "--dataset", d, "--run", str(t / "run"), "--r1-gamma", "nan"], [t / "run"]),
        "r1_gamma=nan must be a finite number"),
    "train: --r1-gamma inf": (
        lambda t, d, r, raw: (["train", "--dataset", d, "--run", str(t / "run"), "--r1-gamma", "inf"], [t / "run"]),
        "r1_gamma=inf must be a finite number"),
    "train: --max-seconds nan": (
        lambda t, d, r, raw: (["train", "--dataset", d, "--run", str(t / "run"), "--max-seconds", "nan"],
                              [t / "run"]),
        "max_seconds=nan must be a finite number"),
    "train: --nproc 0": (
        lambda t, d, r, raw: (["train", "--dataset", d, "--run", str(t / "run"), "--nproc", "0"], [t / "run"]),
        "argument --nproc: 0 is out of range"),
    "train: FID weights missing": (
        lambda t, d, r, raw: (["train", "--dataset", d, "--run", str(t / "run"), "--metric-every", "500",
                               "--metric-weights", str(t / "pt_inception-2015-12-05-6726825d.pth"), "--device", "cpu"],
                              [t / "run"]),
        "pt_inception-2015-12-05-6726825d.pth"),
    "train: damaged metrics.jsonl on resume": (
        lambda t, d, r, raw: (["train", "--dataset", d, "--run", _damaged_metrics(r, t), "--steps", "6"], []),
        "metrics.jsonl: line 2 is not a metrics row"),
    "sample: --count 0": (lambda t, d, r, raw: (["sample", r, str(t / "o"), "--count", "0"], [t / "o"]),
                          "argument --count: 0 is out of range"),
    "sample: --count -3": (lambda t, d, r, raw: (["sample", r, str(t / "o"), "--count", "-3"], [t / "o"]),
                           "argument --count: -3 is out of range"),
    "sample: --interpolation-steps 0": (
        lambda t, d, r, raw: (["sample", r, str(t / "o"), "--interpolation-steps", "0"], [t / "o"]),
        "argument --interpolation-steps: 0 is out of range"),
    "sample: checkpoint without G_ema": (
        lambda t, d, r, raw: (["sample", _checkpoint_copy(r, t, lambda s: s.pop("G_ema")), str(t / "o")],
                              [t / "o"]),
        "damaged checkpoint, G_ema missing"),
    "sample: checkpoint without rng": (
        lambda t, d, r, raw: (["sample", _checkpoint_copy(r, t, lambda s: s.pop("rng")), str(t / "o")], [t / "o"]),
        "damaged checkpoint, rng missing"),
    "sample: checkpoint with wrong shapes": (
        lambda t, d, r, raw: (["sample", _checkpoint_copy(r, t, _shrink_g_ema), str(t / "o")], [t / "o"]),
        "G_ema does not fit this model"),
    "fid: --batch 0": (lambda t, d, r, raw: (["fid", r, "--dataset", d, "--batch", "0"], []),
                       "argument --batch: 0 is out of range"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _shrink_g_ema(state: dict) -> None:
    key = next(k for k in state["G_ema"] if k.endswith("weight"))
    state["G_ema"][key] = state["G_ema"][key][:1]


def _damaged_metrics(run_dir: str, tmp: Path) -> str:
    import shutil

    copy = tmp / "run-copy"
    shutil.copytree(run_dir, copy)
    lines = (copy / "metrics.jsonl").read_text().splitlines()
    (copy / "metrics.jsonl").write_text("\n".join([lines[0], '{"step": 4, "loss_d": 0.5', *lines[2:]]) + "\n")
    return str(copy)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2(case, tmp_path, dataset32, run_dir, raw_faces, capsys):
    build, expected = CASES[case]
    argv, untouched = build(tmp_path, dataset32, run_dir, raw_faces)
    assert main(argv) == 2, case
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], (case, err)
    assert lines[0].startswith(f"facegan {argv[0]}: error: ")
    assert "Traceback" not in out + err
    for path in untouched:
        assert not Path(path).exists(), f"{case}: {path} was written"


def test_bad_input_table_size():
    """The figure README states: how many bad inputs the table tries."""
    assert len(CASES) >= 22


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (a decompression bomb's shape)."""
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.find(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def test_decompression_bombs_are_named_too_large_before_decoding():
    for w, h, size in ((12_000, 12_000, "12000x12000"), (200_000, 200_000, "40000000000 pixels")):
        with pytest.raises(ValueError, match=rf"too large: {size} is over 50 Mpx \(a decompression bomb\?\)"):
            process_image(_png_claiming(w, h), 32)  # 144 Mpx (a PIL warning only) and 40 Gpx (PIL refuses)


def test_unsafe_zip_entries_are_listed_as_skipped(raw_faces, tmp_path):
    from facegan.prepare import prepare

    z = tmp_path / "faces.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(raw_faces.iterdir())[:4]:
            zf.write(p, p.name)
        zf.writestr("../../evil.jpg", (sorted(raw_faces.iterdir())[0]).read_bytes())
    m = prepare(z, str(tmp_path / "ds"), resolution=32, workers=1, log=lambda *_: None).manifest
    assert m["count"] == 4
    assert {"file": "../../evil.jpg", "reason": "unsafe path in the archive"} in m["skipped"]
    assert not (tmp_path.parent / "evil.jpg").exists()


def test_a_bare_relative_checkpoint_path_works(run_dir, tmp_path, monkeypatch, capsys):
    import shutil

    state = ckpt.load(run_dir)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.pt").write_bytes(ckpt.to_bytes(state))
    assert main(["sample", "good.pt", "out", "--count", "2", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "out" / "faces").iterdir()) == ["000.png", "001.png"]
    shutil.rmtree(tmp_path / "out")


def test_training_that_diverges_stops_with_one_line_and_keeps_the_last_good_checkpoint(dataset32, tmp_path,
                                                                                        capsys):
    """r1_gamma near float32's limit makes the R1 term infinite at its first step (3): the losses
    turn NaN, training stops with a one-line error, and no NaN weights are saved."""
    run = tmp_path / "run"
    argv = ["train", "--dataset", dataset32, "--run", str(run), "--resolution", "32", "--ngf", "8", "--ndf", "8",
            "--z-dim", "16", "--batch-size", "8", "--steps", "12", "--ckpt-every", "2", "--log-every", "4",
            "--r1-gamma", "3e38", "--r1-every", "3", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the losses became NaN or infinite by step 4" in err[0], err
    state = ckpt.load(str(run))
    assert state["step"] == 2  # step 4's checkpoint was not written
    assert all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())


def test_unreadable_source_folders_are_listed_not_dropped(raw_faces, tmp_path, monkeypatch):
    """EACCES on a sub-folder (injected: tests run as root, who may read anything) is reported in
    the manifest's skipped list; an unreadable source root is a one-line error, not 'empty input'."""
    import os
    import shutil

    from facegan.errors import DatasetError
    from facegan.prepare import prepare

    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    for p in sorted(raw_faces.iterdir())[:4]:
        shutil.copy(p, src / p.name)
    shutil.copy(sorted(raw_faces.iterdir())[4], src / "locked" / "x.jpg")
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    m = prepare(src, str(tmp_path / "ds"), resolution=32, workers=1, log=lambda *_: None).manifest
    assert m["count"] == 4
    assert {"file": "locked/", "reason": "unreadable folder (Permission denied)"} in m["skipped"]
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(DatasetError, match=r"src: cannot read this folder \(permission denied\)"):
        prepare(src, str(tmp_path / "ds2"), resolution=32, workers=1, log=lambda *_: None)
