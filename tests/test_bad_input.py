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
from helpers import tiny_config, tmpfs

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
    "prepare: file:// with a '#'": (lambda t, d, r, raw: (["prepare", str(raw), f"file://{t}/ds#2"], [t / "ds"]),
                                    "a file:// URI's path ends at '?' or '#'"),
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


# ------------------------------------------------------------------ the table, class by class
# Each class is generated over every command or option it applies to: the same hostile pass is run
# again with other inputs, so a class is covered, not an example.


def _add(name: str, build, expected: str) -> None:
    assert name not in CASES, name
    CASES[name] = (build, expected)


def _train(t, d, *extra, command=("train",)):
    return [*command, "--dataset", d, "--run", str(t / "run"), *extra]


# numbers must be plain ASCII: int() and float() would also take "2_0", " 7", "٣" and "１"
INT_FLAGS = ["--steps", "--batch-size", "--ckpt-every", "--log-every", "--keep-last", "--sample-count", "--z-dim",
             "--ngf", "--ndf", "--seed", "--metric-every", "--metric-samples"]
BAD_INTS = ["2_0", "\u0663", "\uff11", "1e3", "0x10", ""]
for flag in INT_FLAGS:
    for value in BAD_INTS:
        _add(f"train: {flag} {value!r}", lambda t, d, r, raw, f=flag, v=value: (_train(t, d, f, v), []),
             f"argument {flag}: {value!r} is not an integer")
for flag in ["--lr-g", "--lr-d", "--beta1", "--ema-decay", "--r1-gamma"]:
    for value in ["1_0", "\u0663", "abc"]:
        _add(f"train: {flag} {value!r}", lambda t, d, r, raw, f=flag, v=value: (_train(t, d, f, v), []),
             f"argument {flag}: {value!r} is not a number")
for command, flag in [("sample", "--count"), ("sample", "--seed"), ("sample", "--interpolation-steps"),
                      ("fid", "--samples"), ("fid", "--batch"), ("synth", "--count"), ("prepare", "--workers"),
                      ("prepare", "--limit"), ("prepare", "--resolution")]:
    for value in ["2_0", "\u0663"]:
        def build(t, d, r, raw, c=command, f=flag, v=value):
            head = {"sample": ["sample", r, str(t / "o")], "fid": ["fid", r, "--dataset", d],
                    "synth": ["synth", str(t / "o")], "prepare": ["prepare", str(raw), str(t / "o")]}[c]
            return [*head, f, v], [t / "o"]
        _add(f"{command}: {flag} {value!r}", build, f"argument {flag}: {value!r} is not an integer")

# choices and lists that parse but mean nothing
for name, extra, expected in [
    ("--preset ''", ["--preset", ""], "argument --preset: invalid choice: ''"),
    ("--preset unknown", ["--preset", "dcgan65"], "argument --preset: invalid choice: 'dcgan65'"),
    ("--augment ,,,", ["--augment", ",,,"], "augment=',,,' has an empty entry"),
    ("--augment color,,", ["--augment", "color,,"], "augment='color,,' has an empty entry"),
    ("--augment blur", ["--augment", "blur"], "augment='blur': unknown ['blur']"),
    ("--metrics ''", ["--metrics", "", "--metric-every", "4", "--ckpt-every", "4"], "metrics is empty"),
    ("--metric-samples 3 --metrics precision",
     ["--metrics", "precision", "--metric-samples", "3", "--metric-every", "4", "--ckpt-every", "4"],
     "metric_samples=3: precision needs at least 4 images"),
    ("--lr-schedule cosine", ["--lr-schedule", "cosine"], "lr_schedule='cosine' must be one of"),
    ("--device tpu", ["--device", "tpu"], "device='tpu' must be 'auto', 'cpu' or 'cuda[:N]'"),
    ("--precision fp8", ["--precision", "fp8"], "precision='fp8' must be one of"),
]:
    _add(f"train: {name}", lambda t, d, r, raw, e=extra: (_train(t, d, *e), [t / "run"]), expected)
for value, expected in [("", "metrics is empty"), ("fid,,kid", "has an empty name"),
                        ("kid,kid", "names a metric twice"), ("fid,is", "metric 'is' is unknown")]:
    _add(f"score: --metrics {value!r}",
         lambda t, d, r, raw, v=value: (["score", r, "--dataset", d, "--metrics", v], []), expected)
_add("score: --samples 3 --metrics fid,recall",
     lambda t, d, r, raw: (["score", r, "--dataset", d, "--samples", "3", "--metrics", "fid,recall"], []),
     "samples=3: recall needs at least 4 images")
_add("train: --family ''", lambda t, d, r, raw: (["train", "--family", "", "--dataset", d, "--run", str(t / "r")], []),
     "argument --family: invalid choice: ''")

# empty strings as paths: '' must never mean the current folder
EMPTY = {
    "prepare source": lambda t, d, r, raw: ["prepare", "", str(t / "o")],
    "prepare out": lambda t, d, r, raw: ["prepare", str(raw), ""],
    "train --dataset": lambda t, d, r, raw: ["train", "--dataset", "", "--run", str(t / "o")],
    "train --run": lambda t, d, r, raw: ["train", "--dataset", d, "--run", ""],
    "translate train --run": lambda t, d, r, raw: ["translate", "train", "--dataset", d, "--run", ""],
    "sample checkpoint": lambda t, d, r, raw: ["sample", "", str(t / "o")],
    "sample out": lambda t, d, r, raw: ["sample", r, ""],
    "fid checkpoint": lambda t, d, r, raw: ["fid", "", "--dataset", d],
    "fid --dataset": lambda t, d, r, raw: ["fid", r, "--dataset", ""],
    "synth out": lambda t, d, r, raw: ["synth", ""],
    "translate apply run": lambda t, d, r, raw: ["translate", "apply", "", str(raw), str(t / "o"),
                                                 "--direction", "add"],
}
for name, argv in EMPTY.items():
    _add(f"empty path: {name}", lambda t, d, r, raw, a=argv: (a(t, d, r, raw), [t / "o"]), "empty")

# a run and a dataset in one place, a dataset prepared over its own source
for command in (("train",), ("translate", "train")):
    for name, where in [("the dataset", lambda d: d), ("inside the dataset", lambda d: d + "/run"),
                        ("around the dataset", lambda d: str(Path(d).parent))]:
        _add(f"{' '.join(command)}: --run {name}",
             lambda t, d, r, raw, c=command, w=where: ([*c, "--dataset", d, "--run", w(d)], []), "overlap")
_add("synth: into a folder of other JPEGs (real CelebA, say)",
     lambda t, d, r, raw: (["synth", str(raw), "--count", "2", "--seed", "5"], []), "000001.jpg: already there")
_add("synth: beside another attribute table",
     lambda t, d, r, raw: (["synth", str(_write(t / "celeba" / "list_attr_celeba.txt", b"2\n").parent / "img"),
                            "--count", "2", "--makeup", "0.5"], [t / "celeba" / "img"]),
     "list_attr_celeba.txt: already there and not the attribute table")
_add("prepare: output is the source", lambda t, d, r, raw: (["prepare", str(raw), str(raw)], []),
     "the output is the source folder")
_add("prepare: into a run folder", lambda t, d, r, raw: (["prepare", str(raw), r], []),
     "no manifest.json: not a dataset; prepare into an empty folder")
_add("prepare: into the folder holding the source", lambda t, d, r, raw: (["prepare", str(raw), str(raw.parent)], []),
     "no manifest.json: not a dataset; prepare into an empty folder")
_add("prepare: from a run folder (sample grids and plots, not faces)",
     lambda t, d, r, raw: (["prepare", r, str(t / "o")], [t / "o"]),
     "a facegan run (config.json, latest.json, checkpoints")
_add("prepare: from a dataset", lambda t, d, r, raw: (["prepare", d, str(t / "o")], [t / "o"]),
     "a facegan dataset (manifest.json): prepared already; give img_align_celeba/")
_add("train: into the folder of photos",
     lambda t, d, r, raw: (["train", "--dataset", d, "--run", str(raw), "--steps", "2", "--batch-size", "8"], []),
     "no config.json: not a run; train into a new or empty folder")


def _train_over_own_plot(t, d, r, raw):
    _write(t / "run" / "loss.png", b"the user's own plot")
    return _train(t, d, "--steps", "2", "--batch-size", "8"), []


_add("train: into a folder holding the user's loss.png", _train_over_own_plot,
     "(loss.png) and no config.json: not a run")

# destinations that cannot be written
for name, where, expected in [
    ("an existing file", lambda t, raw: str(sorted(raw.iterdir())[0]), "is a file, not a folder ("),
    ("/proc", lambda t, raw: "/proc/facegan-x", "cannot "),
    ("a 300-character name", lambda t, raw: str(t / ("x" * 300)), "cannot "),
]:
    for command in ("synth", "prepare", "train", "sample", "export"):
        def build(t, d, r, raw, c=command, w=where):
            out = w(t, raw)
            return {"synth": ["synth", out, "--count", "2"], "prepare": ["prepare", str(raw), out],
                    "train": ["train", "--dataset", d, "--run", out, "--steps", "1"],
                    "sample": ["sample", r, out, "--count", "2"], "export": ["export", r, out]}[c], []
        _add(f"{command}: destination {name}", build, expected)

# stored documents of the wrong shape: config.json, the manifest, pointers, a checkpoint's fields
DEEP = "[" * 100_000 + "]" * 100_000
for name, text, expected in [
    ("a list", "[]", "config.json: not a run config"),
    ("a string", '"x"', "config.json: not a run config"),
    ("nested too deep", DEEP, "config.json: not a facegan document (JSON nested too deep)"),
    ("steps a string", json.dumps({"steps": "many"}), "damaged run config: steps='many' must be an integer"),
    ("batch_size a float", json.dumps({"batch_size": 8.5}), "damaged run config: batch_size=8.5 must be an integer"),
    ("lr_g a string", json.dumps({"lr_g": "fast"}), "damaged run config: lr_g='fast' must be a number"),
    ("compile a string", json.dumps({"compile": "yes"}), "damaged run config: compile='yes' must be true or false"),
    ("model a list", json.dumps({"model": [1]}), "damaged run config: model=[1] must be the model's settings"),
    ("model.ngf a string", json.dumps({"model": {"ngf": "8"}}), "damaged run config: model.ngf='8' must be an integer"),
    ("model.z_dim true", json.dumps({"model": {"z_dim": True}}), "model.z_dim=True must be an integer"),
    ("not JSON", "{", "config.json: not valid JSON"),
]:
    _add(f"train: config.json {name}",
         lambda t, d, r, raw, x=text: (_train_on(t, d, _run_copy(r, t, lambda p: (p / "config.json").write_text(x))),
                                       []),
         expected)
for name, change, expected in [
    ("count true", lambda m: m.update(count=True), "field 'count' missing or not int"),
    ("count a string", lambda m: m.update(count="12"), "field 'count' missing or not int"),
    ("count 1e12", lambda m: m.update(count=10**12), "shard counts do not add up"),
    ("shards a dict", lambda m: m.update(shards={}), "field 'shards' missing or not list"),
    ("resolution a string", lambda m: m.update(resolution="32"), "field 'resolution' missing or not int"),
    ("shard count true", lambda m: m["shards"][0].update(count=True), "shards[0] is not a shard record"),
    ("version true", lambda m: m.update(version=True), "is not a format version"),
    ("a list", lambda m: m.clear(), "not a facegan dataset manifest"),
    ("id changed", lambda m: m.update(id="0" * 16), "id does not match"),
]:
    _add(f"train: manifest {name}",
         lambda t, d, r, raw, c=change: (["train", "--dataset", _dataset_copy(d, t, c), "--run", str(t / "run")],
                                         [t / "run"]),
         expected)
_add("train: manifest nested too deep",
     lambda t, d, r, raw: (["train", "--dataset", _dataset_text(d, t, DEEP), "--run", str(t / "run")], [t / "run"]),
     "JSON nested too deep")
for name, pointer, expected in [
    ("a list", [1], "damaged pointer"),
    ("step -5", {"step": -5, "key": "checkpoints/step-0000004.pt"}, "damaged pointer"),
    ("a key outside the run", {"step": 4, "key": "../../x.pt"}, "damaged pointer"),
    ("a malformed sha256", {"step": 4, "key": "checkpoints/step-0000004.pt", "sha256": "abc"}, "damaged pointer"),
    ("a wrong sha256", {"step": 4, "key": "checkpoints/step-0000004.pt", "sha256": "0" * 64}, "damaged: its sha256"),
]:
    for command in ("sample", "fid", "export", "train --init-from"):
        def build(t, d, r, raw, c=command, p=pointer):
            run = _run_copy(r, t, lambda f: (f / "latest.json").write_text(json.dumps(p)))
            return {"sample": ["sample", run, str(t / "o")], "fid": ["fid", run, "--dataset", d],
                    "export": ["export", run, str(t / "o")],
                    "train --init-from": ["train", "--dataset", d, "--run", str(t / "o"), "--init-from", run]}[c], \
                [t / "o"]
        _add(f"{command}: latest.json {name}", build, expected)
for value in (-5, True, 1e30, 10**12, "4"):
    _add(f"sample: checkpoint step {value!r}",
         lambda t, d, r, raw, v=value: (["sample", _checkpoint_copy(r, t, lambda s: s.update(step=v)), str(t / "o")],
                                        [t / "o"]),
         "damaged checkpoint, step")
_add("sample: a flipped byte in the checkpoint",
     lambda t, d, r, raw: (["sample", _run_copy(r, t, _flip_latest), str(t / "o")], [t / "o"]), "damaged: its sha256")
_add("fid: a flipped byte in the checkpoint",
     lambda t, d, r, raw: (["fid", _run_copy(r, t, _flip_latest), "--dataset", d], []), "damaged: its sha256")
_add("export: a flipped byte in the checkpoint",
     lambda t, d, r, raw: (["export", _run_copy(r, t, _flip_latest), str(t / "o")], [t / "o"]), "damaged: its sha256")
_add("train: --init-from a flipped byte in the checkpoint",
     lambda t, d, r, raw: (["train", "--dataset", d, "--run", str(t / "o"),
                            "--init-from", _run_copy(r, t, _flip_latest)], [t / "o"]), "damaged: its sha256")

# export: only into an empty folder or an earlier export; only what has trained
for name, where in [("the run itself", lambda t, d, r: r), ("the dataset", lambda t, d, r: d),
                    ("a folder of other files", lambda t, d, r: str(_write(t / "other" / "notes.txt", b"x").parent))]:
    _add(f"export: into {name}", lambda t, d, r, raw, w=where: (["export", r, w(t, d, r)], []), "not an earlier export")
# tensorboard: where it fetches to must be a folder it can make
_add("tensorboard: --out a file",
     lambda t, d, r, raw: (["tensorboard", r, "--out", str(_write(t / "notes.txt", b"x")), "--fetch-only"], []),
     "notes.txt: is a file, not a folder (")
_add("tensorboard: --out inside a file",
     lambda t, d, r, raw: (["tensorboard", r, "--out", str(_write(t / "notes.txt", b"x") / "tb"), "--fetch-only"],
                           [t / "notes.txt" / "tb"]), "notes.txt: is a file, not a folder (")
for name, where, expected in [
    ("the run's own tb/ folder", lambda t, d, r: f"{r}/tb", "tb: overlaps /"),
    ("the run itself", lambda t, d, r: r, ": a facegan run (config.json"),
    ("a folder holding the run", lambda t, d, r: str(Path(r).parent), "what it comes from (the same folder, or one"),
    ("the dataset", lambda t, d, r: d, ": a facegan dataset (manifest.json); fetch into a folder of its own"),
    ("another run", lambda t, d, r: _run_copy(r, t, lambda f: None), ": a facegan run (config.json, latest.json"),
]:
    _add(f"tensorboard: --out {name}",
         lambda t, d, r, raw, w=where: (["tensorboard", r, "--out", w(t, d, r), "--fetch-only"], []), expected)
_add("tensorboard: --out another run's fetch",
     lambda t, d, r, raw: (["tensorboard", r, "--out", str(_fetched(_run_copy(r, t, lambda f: None), t / "tb")),
                            "--fetch-only"], []),
     "already there and fetched from")
_add("export: a run that never trained", lambda t, d, r, raw: (["export", str(t / "none"), str(t / "o")], [t / "o"]),
     "no checkpoint")
_add("export: a dataset as the source", lambda t, d, r, raw: (["export", d, str(t / "o")], [t / "o"]), "no checkpoint")
for value in ("0", "0.01", "1.5", "nan", "abc", "-1"):
    _add(f"sample: --truncation {value}",
         lambda t, d, r, raw, v=value: (["sample", r, str(t / "o"), "--truncation", v], [t / "o"]), "--truncation")
for name, extra, expected in [
    ("--freeze-d -1", ["--freeze-d", "-1"], "freeze_d=-1 must be 0 (off) or a positive integer"),
    ("--freeze-d 99", ["--freeze-d", "99", "--steps", "1"], "freeze_d=99 must be less than the discriminator's"),
    ("--init-from a run that never trained", ["--init-from", "/nonexistent/run"], "no checkpoint"),
    ("--watchdog always", ["--watchdog", "always"], "watchdog='always' must be one of ('off', 'warn', 'stop')"),
    ("--watchdog-gap 1.5", ["--watchdog-gap", "1.5"], "watchdog_gap=1.5 must be a number in (0, 1]"),
    ("--watchdog-windows 0", ["--watchdog-windows", "0"], "watchdog_windows=0 must be a positive integer"),
    ("--watchdog-diversity 1", ["--watchdog-diversity", "1"], "watchdog_diversity=1.0 must be a number in [0, 1)"),
    ("--watchdog-patience -1", ["--watchdog-patience", "-1"], "watchdog_patience=-1 must be 0 (off)"),
]:
    _add(f"train: {name}", lambda t, d, r, raw, e=extra: (_train(t, d, *e), [t / "run"]), expected)
_add("train: --init-from another resolution",
     lambda t, d, r, raw: (_train(t, _prepared64(t, raw), "--init-from", r, "--steps", "1"), [t / "run"]),
     "does not fit this run")

# stored arrays that pass their sha256 but are wrong (the manifest re-hashed to match)
for name, payload, expected in [  # payload(shape the manifest gives the first shard)
    ("object dtype", lambda n: _npy_header("|O", n) + b"\0" * 64, "the manifest says"),
    ("float dtype", lambda n: _npy_of(__import__("numpy").zeros(n, "float32")), "the manifest says"),
    ("short data", lambda n: _npy_of(__import__("numpy").zeros(n, "uint8"))[:-100], "bytes of data"),
    ("a header claiming 1e11 elements", lambda n: _npy_header("|u1", (10**11, *n[1:])), "the manifest says"),
    ("not an array", lambda n: b"hello", "not a .npy array"),
    ("Fortran order", lambda n: _npy_header("|u1", n, True) + bytes(__import__("math").prod(n)), "Fortran order"),
]:
    _add(f"train: shard {name}",
         lambda t, d, r, raw, p=payload: (["train", "--dataset", _shard_replaced(d, t, p), "--run", str(t / "run")],
                                          [t / "run"]),
         expected)

# sizes that cannot fit: refused before anything is allocated (and nothing, not config.json, written)
for name, extra, expected in [
    ("--batch-size 1e9", ["--batch-size", "1000000000"], "batch_size=1000000000 at 32 px"),
    ("--z-dim 1e9", ["--z-dim", "1000000000"], "Adam's moments) needs at least"),
    ("--ngf 1e9", ["--ngf", "1000000000"], "Adam's moments) needs at least"),
    ("--ndf 1e9", ["--ndf", "1000000000"], "Adam's moments) needs at least"),
]:
    _add(f"train: {name}", lambda t, d, r, raw, e=extra: (_train(t, d, "--steps", "1", *e), [t / "run"]), expected)
for name, extra in [("--ngf 1e9", ["--ngf", "1000000000"]), ("--blocks 1e9", ["--blocks", "1000000000"]),
                    ("--batch-size 1e9", ["--batch-size", "1000000000", "--pool-size", "1000000000"])]:
    _add(f"translate train: {name}",
         lambda t, d, r, raw, e=extra: (["translate", "train", "--dataset", _labelled(t, raw), "--run", str(t / "run"),
                                         "--steps", "1", "--attribute", "Heavy_Makeup", *e], [t / "run"]),
         "needs at least")
# sample: into a folder of its own, not one facegan wrote as something else nor the source's
for name, where, expected in [
    ("the run itself", lambda t, d, r: r, ": a facegan run (config.json, latest.json"),
    ("the run's samples/", lambda t, d, r: f"{r}/samples", "samples: overlaps /"),
    ("the dataset", lambda t, d, r: d, ": a facegan dataset (manifest.json); sample into a folder of its own"),
    ("an export", lambda t, d, r: str(_write(t / "ex" / "model_card.json", b"{}").parent), ": a facegan export"),
]:
    _add(f"sample: into {name}", lambda t, d, r, raw, w=where: (["sample", r, w(t, d, r)], []), expected)
_add("sample: from a run's checkpoint into a folder inside that run",
     lambda t, d, r, raw: (["sample", f"{r}/checkpoints/step-0000004.pt", f"{r}/mine"], [Path(r) / "mine"]),
     "/mine: overlaps")
_add("sample: --count 1e9", lambda t, d, r, raw: (["sample", r, str(t / "o"), "--count", "1000000000"], [t / "o"]),
     "argument --count: 1000000000 is out of range, must be at least 1 and at most 1000000")
_add("sample: --interpolation-steps 1e9",
     lambda t, d, r, raw: (["sample", r, str(t / "o"), "--interpolation-steps", "1000000000"], [t / "o"]),
     "1000000000 interpolation steps at 32 px needs at least")

# raw input
_add("prepare: an attribute table whose row count is not a plain decimal",
     lambda t, d, r, raw: (["prepare", str(raw), str(t / "o"), "--attributes",
                            str(_write(t / "attrs.txt", "\u00b2\nA B\n000001.jpg 1 -1\n".encode()))], [t / "o"]),
     "line 1: '\u00b2' is not the row count")
_add("prepare: no image has a row in the attribute table",
     lambda t, d, r, raw: (["prepare", str(raw), str(t / "o"), "--attributes",
                            str(_write(t / "attrs.txt", b"202599\nA B\nother.jpg 1 -1\n"))], [t / "o"]),
     "has a row in the attribute table")
_add("prepare: a zip whose only entry name is there twice",
     lambda t, d, r, raw: (["prepare", str(_zip_twice(t / "twice.zip", raw)), str(t / "o")], [t / "o"]),
     "duplicate entry name in the archive")
_add("prepare: a folder of one FIFO", lambda t, d, r, raw: (["prepare", str(_fifo_folder(t)), str(t / "o")], [t / "o"]),
     "not a regular file")


def _prepared64(t: Path, raw: Path) -> str:
    from facegan.prepare import prepare

    out = t / "ds64"
    prepare(raw, str(out), resolution=64, workers=1, log=lambda *_: None)
    return str(out)


def _train_on(t: Path, d: str, run: str) -> list[str]:
    return ["train", "--dataset", d, "--run", run]


def _fetched(run: str, out: Path) -> Path:
    """`out` after `facegan tensorboard RUN --out OUT --fetch-only`."""
    from facegan import tensorboard
    from facegan.storage import open_store

    assert tensorboard.fetch(open_store(run), out)
    return out


def _run_copy(run_dir: str, tmp: Path, change) -> str:
    import shutil

    copy = tmp / "run-copy"
    shutil.copytree(run_dir, copy)
    change(copy)
    return str(copy)


def _flip_latest(run: Path) -> None:
    pointer = json.loads((run / "latest.json").read_text())
    path = run / pointer["key"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _dataset_text(dataset32: str, tmp: Path, text: str) -> str:
    import shutil

    out = tmp / "ds"
    shutil.copytree(dataset32, out)
    (out / "manifest.json").write_text(text)
    return str(out)


def _npy_header(descr: str, shape: tuple, fortran: bool = False) -> bytes:
    header = repr({"descr": descr, "fortran_order": fortran, "shape": shape}).encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _npy_of(arr) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _shard_replaced(dataset32: str, tmp: Path, payload) -> str:
    """A copy of the dataset whose first shard is `payload(its shape)`, its sha256 and the id
    updated to match."""
    import hashlib

    from facegan.data import manifest_id

    def change(m: dict) -> None:
        payload_bytes = payload((m["shards"][0]["count"], m["resolution"], m["resolution"], 3))
        (tmp / "ds" / m["shards"][0]["name"]).write_bytes(payload_bytes)
        m["shards"][0]["sha256"] = hashlib.sha256(payload_bytes).hexdigest()
        m["id"] = manifest_id(m)

    return _dataset_copy(dataset32, tmp, change)


def _labelled(tmp: Path, raw: Path) -> str:
    from facegan.prepare import prepare
    from facegan.synthetic import make_faces

    src = make_faces(tmp / "mraw" / "img_align_celeba", 6, seed=2, makeup=0.5)
    out = str(tmp / "mds")
    prepare(src, out, resolution=32, workers=1, attributes=str(src.parent / "list_attr_celeba.txt"),
            log=lambda *_: None)
    return out


def _zip_twice(path: Path, raw: Path) -> Path:
    import warnings

    with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate it writes
        for p in sorted(raw.iterdir())[:2]:
            z.write(p, "face.jpg")
    return path


def _fifo_folder(tmp: Path) -> Path:
    import os

    folder = tmp / "fifo"
    folder.mkdir()
    os.mkfifo(folder / "face.jpg")
    return folder


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
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


def _snapshot(*roots: Path) -> dict:
    """Every file (its sha256) and folder under `roots`: what a bad input must leave as it was."""
    import hashlib

    seen = {}
    for root in roots:
        for p in sorted(Path(root).rglob("*")) if Path(root).exists() else []:
            seen[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_fifo() else "dir"
    return seen


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2(case, tmp_path, dataset32, run_dir, raw_faces, capsys):
    build, expected = CASES[case]
    argv, untouched = build(tmp_path, dataset32, run_dir, raw_faces)
    before = _snapshot(tmp_path, Path(dataset32), Path(run_dir), raw_faces)
    assert main(argv) == 2, case
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], (case, err)
    assert lines[0].startswith(f"facegan {argv[0]}")
    assert "Traceback" not in out + err
    for path in untouched:
        assert not Path(path).exists(), f"{case}: {path} was written"
    assert _snapshot(tmp_path, Path(dataset32), Path(run_dir), raw_faces) == before, f"{case}: something changed"


def test_bad_input_table_size():
    """The figure README states: how many bad inputs the table tries."""
    assert len(CASES) >= 150


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

    real_stat = os.stat

    def stat(path, *args, **kwargs):  # what a folder without permissions does for a user who is not root
        if "/locked/" in os.fspath(path):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat)
    m = prepare(src, str(tmp_path / "ds"), resolution=32, workers=1, log=lambda *_: None).manifest
    assert m["count"] == 4
    assert {"file": "locked/", "reason": "unreadable folder (Permission denied)"} in m["skipped"]
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(DatasetError, match=r"src: cannot read this folder \(permission denied\)"):
        prepare(src, str(tmp_path / "ds2"), resolution=32, workers=1, log=lambda *_: None)


@pytest.fixture(params=["an immutable folder", "a full disk"])
def unwritable(request, tmp_path):
    """A destination folder no write can go into: `chattr +i`, or a 64 KiB tmpfs filled to the last
    byte (skipped where this machine does not allow it)."""
    import subprocess

    folder = tmp_path / "dest"
    folder.mkdir()
    if request.param == "an immutable folder":
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("chattr +i is not permitted here")
        yield folder, "Operation not permitted"
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        with tmpfs(folder, "64k"):
            try:
                with open(folder / "filler", "wb") as f:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            except OSError:  # full: that is the point
                pass
            yield folder, "No space left on device"


@pytest.mark.parametrize("command", ["synth", "prepare", "train", "sample"])
def test_a_destination_that_takes_no_write_is_one_line_exit_2(command, unwritable, dataset32, run_dir, raw_faces,
                                                              capsys):
    folder, reason = unwritable
    out = str(folder / "out")
    argv = {"synth": ["synth", out, "--count", "2"], "prepare": ["prepare", str(raw_faces), out],
            "train": ["train", "--dataset", dataset32, "--run", out, "--steps", "1"],
            "sample": ["sample", run_dir, out, "--count", "2"]}[command]
    before = _snapshot(folder, Path(dataset32), Path(run_dir))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot " in err[0] and reason in err[0], err
    assert _snapshot(folder, Path(dataset32), Path(run_dir)) == before
