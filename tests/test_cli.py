import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, tiny_config, tmpfs
from PIL import Image

from facegan.cli import main
from facegan.images import to_png
from facegan.loop import Hooks, fit
from facegan.sample import generate, interpolate, load_generator


@pytest.mark.parametrize("cmd", ["prepare", "train", "sample", "score", "fid", "synth", "translate",
                                 "translate train", "translate apply"])
def test_help(cmd, capsys):
    assert main([*cmd.split(), "--help"]) == 0
    assert f"usage: facegan {cmd}" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained_run(dataset32, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "r")
    fit(tiny_config(dataset32, run, steps=4, ema_decay=0.5), Hooks(log=lambda *_: None))
    return run


def test_cli_sample_writes_grid_faces_interpolation(trained_run, tmp_path, capsys):
    assert main(["sample", trained_run, str(tmp_path / "out"), "--count", "6", "--seed", "3"]) == 0
    assert "from G_ema at step 4" in capsys.readouterr().out
    faces = sorted(p.name for p in (tmp_path / "out" / "faces").iterdir())
    assert faces == [f"{i:03d}.png" for i in range(6)]
    face = Image.open(tmp_path / "out" / "faces" / "000.png")
    assert face.size == (32, 32)  # a single face is saved without grid padding
    strip = Image.open(tmp_path / "out" / "interpolation.png")
    assert strip.size == (2 + 8 * 34, 36)
    capsys.readouterr()
    assert main(["prepare", str(tmp_path / "out"), str(tmp_path / "ds")]) == 2  # its grid is no face ...
    err = capsys.readouterr().err.strip()
    assert "out: a facegan sample folder (sample.json): its grid.png and interpolation.png are not faces" in err
    assert "\n" not in err and not (tmp_path / "ds").exists()
    assert main(["prepare", str(tmp_path / "out" / "faces"), str(tmp_path / "ds"), "--resolution", "32"]) == 0
    assert "prepared 6 images at 32px" in capsys.readouterr().out  # ... its faces are


def test_seeds_are_stable_and_interpolation_ends_at_seeds(trained_run):
    gen = load_generator(trained_run)
    a = generate(gen, [5, 6])
    b = generate(gen, [6])
    assert torch.allclose(a[1], b[0], atol=1e-6)  # a seed is the same face in any batch
    walk = interpolate(gen, 5, 6, steps=5)
    end_err = max((walk[0] - a[0]).abs().max(), (walk[-1] - a[1]).abs().max())
    mid_gap = min((walk[2] - a[0]).abs().max(), (walk[2] - a[1]).abs().max())
    assert end_err < 1e-6 < mid_gap and mid_gap > 100 * end_err  # ends are the seeds' faces
    raw = load_generator(trained_run, ema=False)
    assert raw.which == "G" and not torch.allclose(generate(raw, [5]), a[:1])


def test_cli_train_end_to_end_and_progress_lines(dataset32, tmp_path, capsys):
    rc = main(["train", "--dataset", dataset32, "--run", str(tmp_path / "run"), "--resolution", "32",
               "--ngf", "8", "--ndf", "8", "--z-dim", "16", "--steps", "4", "--batch-size", "4",
               "--log-every", "2", "--ckpt-every", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "step 4/4 (100.0%)" in out and "img/s ETA" in out
    assert "config:" in out and (tmp_path / "run" / "config.json").is_file()
    assert Image.open(io.BytesIO((tmp_path / "run" / "loss.png").read_bytes())).size[0] > 100


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--dataset", "/nonexistent/ds", "--run", "/tmp/x"], "manifest.json: no such object"),
        (["train", "--dataset", "DS", "--run", "RUN", "--resolution", "48"], "model.resolution=48"),
        (["train", "--dataset", "DS", "--run", "RUN", "--resolution", "64"], "is 32px but model.resolution=64"),
        (["train", "--dataset", "DS", "--run", "RUN", "--steps", "-3"], "steps=-3 must be a positive integer"),
        (["train", "--dataset", "DS", "--run", "RUN", "--precision", "half"], "precision='half' must be one of"),
        (["train", "--dataset", "DS", "--run", "RUN", "--device", "gpu"], "device='gpu' must be"),
        (["sample", "/nonexistent/run", "/tmp/out"], "latest.json missing"),
        (["prepare", "/nonexistent/raw", "/tmp/out"], "no such folder"),
    ],
)
def test_bad_input_is_one_line_error(argv, message, capsys, dataset32, tmp_path):
    argv = [{"DS": dataset32, "RUN": str(tmp_path / "run")}.get(a, a) for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err.strip() and len(err.strip().splitlines()) == 1
    assert "config:" not in out  # validated first: no config dump before the error
    assert not (tmp_path / "run").exists()  # nothing written


def test_help_is_fast_complete_and_imports_no_torch():
    """`facegan --help`, `facegan train --help` and `facegan translate train --help` answer
    without importing torch, and every training option shows its meaning and default (from the
    option table in facegan.config)."""
    code = (
        "import io, sys, contextlib, time\n"
        "t = time.perf_counter()\n"
        "from facegan.cli import main\n"
        "for argv in (['--help'], ['train', '--help'], ['translate', 'train', '--help']):\n"
        "    print('=== HELP', argv)\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    print(buf.getvalue())\n"
        "print('SECONDS', time.perf_counter() - t)\n"
        "print('TORCH', sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'torchvision'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "2000"})  # one line per option
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "TORCH []" in text
    assert float(text.split("SECONDS ")[1].split()[0]) < 3.0  # today's import of torch alone takes longer
    from facegan.config import TrainConfig, TranslateConfig, all_options

    sections = text.split("=== HELP")
    for cls, section in ((TrainConfig, sections[2]), (TranslateConfig, sections[3])):
        help_text = " ".join(section.split())  # argparse wraps lines
        for f in all_options(cls):
            flag = f"--{f.name.replace('_', '-')}"
            assert flag in help_text, flag
            entry = help_text.split(f"{flag} {f.name.upper()}" if f.type != "bool" else f"{flag}, --no-{flag[2:]}")[-1]
            assert " ".join(f.metadata["help"].split()) in entry and "[default:" in entry.split("--")[0], flag


def test_a_run_resumes_and_is_fine_tuned_in_its_own_family_without_family(dataset32, tmp_path, capsys):
    """`facegan train --run R` resumes R in R's family (its saved settings are the defaults, its
    family too), `--help` with it lists that family's options, and `--init-from R` starts a new run
    of R's family with R's networks; a --family given still wins, and is refused on R. A linear
    decay's run keeps its steps, and the refusal says why."""
    run, tuned = str(tmp_path / "r"), str(tmp_path / "tuned")
    base = ["--dataset", dataset32, "--batch-size", "4", "--device", "cpu", "--ckpt-every", "2", "--log-every", "2"]
    assert main(["train", "--family", "resnet", "--run", run, *base, "--steps", "2", "--ngf", "16", "--ndf", "16",
                 "--n-dis", "1", "--lr-schedule", "constant"]) == 0
    capsys.readouterr()
    assert main(["train", "--run", run, *base, "--steps", "4"]) == 0  # no --family: the run's
    assert f"resuming {run} from step 2" in capsys.readouterr().out
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["family"] == "resnet" and saved["steps"] == 4
    assert main(["train", "--run", run, "--help"]) == 0
    assert "--n-dis" in capsys.readouterr().out  # a resnet option
    assert main(["train", "--run", tuned, "--init-from", run, *base, "--steps", "1"]) == 0
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["model"] == saved["model"]
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["family"] == "resnet"
    from facegan.loop import config_for_run  # the library's one config builder takes the same rule

    assert config_for_run(dataset32, str(tmp_path / "new"), None, {"init_from": run}).family == "resnet"
    capsys.readouterr()
    assert main(["train", "--family", "dcgan", "--run", run, *base, "--steps", "6"]) == 2
    assert "holds a resnet run, not a dcgan one" in capsys.readouterr().err
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["lr_schedule"] == "linear"  # resnet's
    assert main(["train", "--run", tuned, *base, "--steps", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "(steps 1 -> 3, the length of its linear lr decay)" in err and "\n" not in err, err


def test_resume_takes_the_runs_saved_settings_and_names_changes(dataset32, tmp_path, capsys):
    run = str(tmp_path / "run")
    flags = ["--ngf", "8", "--ndf", "8", "--z-dim", "16", "--batch-size", "4", "--ckpt-every", "2",
             "--log-every", "2", "--seed", "5", "--lr-g", "0.0003", "--device", "cpu"]
    assert main(["train", "--dataset", dataset32, "--run", run, "--steps", "2", *flags]) == 0  # no --resolution
    capsys.readouterr()
    # resume with only what changes: every other setting is the run's (seed, widths, lr, 32 px from the dataset)
    assert main(["train", "--dataset", dataset32, "--run", run, "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "from step 2" in out and "step 4/4" in out
    from facegan import checkpoint as ckpt

    saved = ckpt.load(run)["config"]
    assert saved["seed"] == 5 and saved["lr_g"] == 0.0003 and saved["model"]["ngf"] == 8
    assert saved["model"]["resolution"] == 32 and saved["steps"] == 4
    # a finished run asked for fewer steps: nothing trains, and the line says so
    assert main(["train", "--dataset", dataset32, "--run", run, "--steps", "3"]) == 0
    assert "the run is already at step 4, not below steps=3: nothing to train" in capsys.readouterr().out
    assert ckpt.load(run)["step"] == 4
    # a change that alters the result is refused, naming each field's old and new value
    assert main(["train", "--dataset", dataset32, "--run", run, "--ngf", "16", "--seed", "6"]) == 2
    err = capsys.readouterr().err
    assert "different config (model.ngf 8 -> 16, seed 5 -> 6)" in err


def test_sample_says_what_it_wrote(trained_run, tmp_path, capsys):
    assert main(["sample", trained_run, str(tmp_path / "o"), "--count", "3", "--interpolation-steps", "5"]) == 0
    out = capsys.readouterr().out
    assert "wrote 3 faces (faces/000.png ...), grid.png, interpolation.png and sample.json (5 steps)" in out


def test_one_sample_at_a_time_writes_into_a_folder_and_touches_nothing_else_there(trained_run, tmp_path, capsys):
    """A sample holds its folder's lease while it writes: a second one into that folder is refused
    (two would interleave their grids and faces under one record). The folder is the user's: hidden
    `.*.tmp` files of other tools stay (only a run, dataset or export folder's lease holder removes
    temp files), and a `lease.json` of the user's is neither replaced nor removed."""
    from facegan.lease import Lease
    from facegan.storage import open_store

    out = tmp_path / "mine"
    (out / "notes").mkdir(parents=True)
    theirs = {out / ".draft.md.tmp": b"an editor's", out / "notes" / ".todo.tmp": b"another tool's"}
    for path, data in theirs.items():
        path.write_bytes(data)
    with Lease(open_store(str(out)), what="sample folder", owns=False):  # another sample writes there now
        capsys.readouterr()
        assert main(["sample", trained_run, str(out), "--count", "2"]) == 2
        err = capsys.readouterr().err.strip()
        assert "this sample folder is being sampled into by another process" in err and "\n" not in err, err
        assert "sample into another folder" in err and not (out / "grid.png").exists()
    assert main(["sample", trained_run, str(out), "--count", "2"]) == 0
    assert (out / "grid.png").exists() and not (out / "lease.json").exists()  # released at the end
    assert {path: path.read_bytes() for path in theirs} == theirs
    (out / "lease.json").write_text('{"mine": true}')  # a file of the user's by that name
    capsys.readouterr()
    assert main(["sample", trained_run, str(out), "--count", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "lease.json: already there and not a facegan lease; sample into another folder" in err, err
    assert (out / "lease.json").read_text() == '{"mine": true}'


def test_a_sample_that_would_fill_the_disk_is_refused_before_it_writes(trained_run, tmp_path, capsys):
    """Faces are made and written a batch at a time, so a count is bounded by the disk, not by
    memory: one whose faces (estimated from the first batch) would not fit in the folder's free
    space is refused while holding the lease, before any face is written; an empty folder of the
    user's stays empty, a new one is not left. A real 512 KiB tmpfs (skipped where mounting one
    is not permitted)."""
    small = tmp_path / "small"
    small.mkdir()
    with tmpfs(small, "512k"):
        (small / "empty").mkdir()
        for folder in (small / "empty", small / "new"):
            assert main(["sample", trained_run, str(folder), "--count", "2000"]) == 2
            err = capsys.readouterr().err.strip()
            assert re.fullmatch(r"facegan sample: error: 2000 faces at 32 px need about [0-9.]+ [KM]iB \(from the "
                                rf"first 64\), {folder} has [0-9.]+ KiB free; ask for fewer faces", err), err
        assert not any((small / "empty").iterdir()) and not (small / "new").exists()
        assert main(["sample", trained_run, str(small / "fits"), "--count", "70", "--seed", "3"]) == 0  # 2 batches
        faces = sorted((small / "fits" / "faces").iterdir())
        drawn = generate(load_generator(trained_run), range(3, 73))  # the faces of seeds 3..72, at once
        assert [p.read_bytes() for p in faces] == [to_png(image[None]) for image in drawn]
        assert (small / "fits" / "grid.png").read_bytes() == to_png(drawn[:64])  # the first 64


def test_face_keys_sort_as_drawn():
    """faces/NNN.png is padded to the digits of the last face's number: 50,000 faces for an outside
    FID tool list in the order drawn (faces/1000.png sorted before faces/101.png)."""
    from facegan.sample import face_key

    assert [face_key(i, 16) for i in (0, 15)] == ["faces/000.png", "faces/015.png"]
    keys = [face_key(i, 50_000) for i in range(0, 50_000, 997)]
    assert keys[0] == "faces/00000.png" and keys[-1] == "faces/49850.png" and keys == sorted(keys)


def test_sample_records_what_it_drew_and_never_mixes_two_samples(trained_run, tmp_path, monkeypatch, capsys):
    """A folder sampled again with fewer faces held faces of both draws (faces/002.png from an earlier
    checkpoint beside a new grid); the faces the earlier sample recorded and this one did not write
    go, and nothing else in the folder is touched. Only files a sample recorded are written over:
    a face of the user's, or a sample.json that is not a record, is refused before anything is
    written; a sample stopped midway leaves every file it wrote recorded."""
    out = tmp_path / "o"
    assert main(["sample", trained_run, str(out), "--count", "5", "--seed", "7"]) == 0
    (out / "faces" / "mine.png").write_bytes(b"not a sample's")
    (out / "faces" / "900.png").write_bytes(b"not in the record")
    assert main(["sample", trained_run, str(out), "--count", "2", "--truncation", "0.5"]) == 0
    assert sorted(p.name for p in (out / "faces").iterdir()) == ["000.png", "001.png", "900.png", "mine.png"]
    record = json.loads((out / "sample.json").read_text())
    assert record == {"source": trained_run, "generator": "G_ema", "step": 4, "seed": 0, "count": 2,
                      "truncation": 0.5, "interpolation_steps": 8,
                      "files": ["faces/000.png", "faces/001.png", "grid.png", "interpolation.png"]}
    (out / "faces" / "002.png").write_bytes(b"the user's face")
    capsys.readouterr()
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(["sample", trained_run, str(out), "--count", "3"]) == 2
    assert "faces/002.png: already there and not written by an earlier facegan sample" in capsys.readouterr().err
    (out / "sample.json").write_text("{damaged")  # an unreadable record: nothing is known to be ours
    files[out / "sample.json"] = b"{damaged"
    assert main(["sample", trained_run, str(out), "--count", "1"]) == 2
    assert "sample.json: already there and not a record of facegan sample" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files

    from facegan.storage import LocalStore

    again = tmp_path / "again"
    assert main(["sample", trained_run, str(again), "--count", "1"]) == 0
    put, written = LocalStore.put_bytes, []

    def stop_at_fifth_write(self, key, data):
        if len(written) == 4:
            raise KeyboardInterrupt  # the sample is stopped midway
        written.append(key)
        put(self, key, data)

    monkeypatch.setattr(LocalStore, "put_bytes", stop_at_fifth_write)
    with pytest.raises(KeyboardInterrupt):
        main(["sample", trained_run, str(again), "--count", "4"])
    monkeypatch.undo()
    # two faces written, at once (which two: the writers' race); at least one is not the first sample's
    assert written[:2] == ["sample.json", "grid.png"] and len(written) == 4, written
    assert set(written[2:]) < {"faces/000.png", "faces/001.png", "faces/002.png", "faces/003.png"}, written
    assert main(["sample", trained_run, str(again), "--count", "4"]) == 0  # the stopped one's record lists it
    assert sorted(p.name for p in (again / "faces").iterdir()) == ["000.png", "001.png", "002.png", "003.png"]
