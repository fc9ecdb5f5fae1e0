import io
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, tiny_config
from PIL import Image

from facegan.cli import main
from facegan.sample import generate, interpolate, load_generator
from facegan.train import Hooks, train


@pytest.mark.parametrize("cmd", ["prepare", "train", "sample", "fid", "synth"])
def test_help(cmd):
    out = subprocess.run([sys.executable, "-m", "facegan.cli", cmd, "--help"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "usage: facegan" in out.stdout


@pytest.fixture(scope="module")
def trained_run(dataset32, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "r")
    train(tiny_config(dataset32, run, steps=4, ema_decay=0.5), Hooks(log=lambda *_: None))
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
        (["train", "--dataset", "d", "--run", "r", "--resolution", "48"], "model.resolution=48"),
        (["train", "--dataset", "d", "--run", "r", "--steps", "-3"], "steps=-3 must be a positive integer"),
        (["train", "--dataset", "d", "--run", "r", "--precision", "half"], "precision='half' must be one of"),
        (["sample", "/nonexistent/run", "/tmp/out"], "latest.json missing"),
        (["prepare", "/nonexistent/raw", "/tmp/out"], "no such folder"),
    ],
)
def test_bad_input_is_one_line_error(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
